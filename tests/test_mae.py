import pytest
import torch

from s4d.models import build_mae, patchify, random_masking

from . import reference_impl as ref


def test_masking_counts_for_base_sizes():
    g = torch.Generator().manual_seed(1)
    video = random_masking(3, 800, 0.95, g)
    image = random_masking(3, 100, 0.90, g)
    assert video.visible_BV.shape == (3, 40) and video.masked_BM.shape == (3, 760)
    assert image.visible_BV.shape == (3, 10) and image.masked_BM.shape == (3, 90)
    for masks, n in ((video, 800), (image, 100)):
        both = torch.cat([masks.visible_BV, masks.masked_BM], dim=1).sort(dim=1).values
        assert torch.equal(both, torch.arange(n).expand(3, -1))  # a partition of the tokens
        assert (masks.visible_BV.diff(dim=1) > 0).all()  # ascending, like boolean indexing
    assert not torch.equal(video.visible_BV[0], video.visible_BV[1])  # per-sample, not tube


def test_masking_follows_the_generator():
    a = random_masking(2, 800, 0.95, torch.Generator().manual_seed(7))
    b = random_masking(2, 800, 0.95, torch.Generator().manual_seed(7))
    c = random_masking(2, 800, 0.95, torch.Generator().manual_seed(8))
    assert torch.equal(a.visible_BV, b.visible_BV) and not torch.equal(a.visible_BV, c.visible_BV)


def test_base_model_masks_by_modality():
    mae = build_mae("base")
    g = torch.Generator().manual_seed(0)
    assert mae.mask_for(torch.zeros(1, 3, 16, 160, 160), g).visible_BV.shape == (1, 40)
    assert mae.mask_for(torch.zeros(1, 3, 160, 160), g).visible_BV.shape == (1, 10)
    assert mae.decoder.head.out_features == 1536 and mae.encoder_to_decoder.bias is None
    assert mae.decoder_pos_embed.shape == (800, 384)


def test_targets_are_per_patch_per_channel_normalised_pixels():
    mae = build_mae("debug")
    x = torch.randn(2, 3, 4, 64, 64)
    pixels = x * mae.pixel_std + mae.pixel_mean
    expected = ref.normalised_patch_targets(pixels, tubelet=2, patch=16)
    torch.testing.assert_close(mae.targets(x), expected, atol=1e-4, rtol=1e-4)
    assert patchify(pixels, 2, 16).shape == (2, 32, 512, 3)


def test_image_targets_are_those_of_a_two_frame_copy():
    mae = build_mae("debug")
    img = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(mae.targets(img), mae.targets(img.unsqueeze(2).repeat(1, 1, 2, 1, 1)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 64, 64), (2, 3, 64, 64)])
def test_loss_ignores_visible_tokens(shape, monkeypatch):
    mae = build_mae("debug").eval()
    x = torch.randn(*shape)
    masks = mae.mask_for(x, torch.Generator().manual_seed(3))
    out = mae(x, masks=masks)
    assert out.pred_BMP.shape == (2, masks.masked_BM.shape[1], 1536)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.pred_BMP, out.target_BMP))

    real_targets = mae.targets

    def poisoned(inp):  # wreck the targets of visible tokens only
        t = real_targets(inp).clone()
        t.scatter_(1, masks.visible_BV[..., None].expand(-1, -1, t.shape[-1]), 1e6)
        return t

    monkeypatch.setattr(mae, "targets", poisoned)
    torch.testing.assert_close(mae(x, masks=masks).loss, out.loss)


@pytest.mark.parametrize("shape", [(2, 3, 4, 64, 64), (2, 3, 64, 64)])
def test_mae_equals_the_reference_step(shape):
    mae = build_mae("debug").eval()
    x = torch.randn(*shape)
    masks = mae.mask_for(x, torch.Generator().manual_seed(5))
    ours = mae(x, masks=masks)
    visible_BN = torch.zeros(2, masks.visible_BV.shape[1] + masks.masked_BM.shape[1], dtype=torch.bool)
    visible_BN.scatter_(1, masks.visible_BV, True)
    cfg = mae.config
    pred, loss = ref.mae_forward(
        mae.state_dict(),
        x,
        visible_BN,
        enc_heads=2,
        dec_heads=6,
        depth=4,
        dec_depth=4,
        num_tokens=32,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    )
    torch.testing.assert_close(ours.pred_BMP, pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.loss, loss, atol=1e-5, rtol=1e-5)


def test_visible_pixels_drive_the_prediction_masked_pixels_do_not():
    mae = build_mae("debug").eval()
    x = torch.randn(1, 3, 4, 64, 64)
    masks = mae.mask_for(x, torch.Generator().manual_seed(0))
    pred = mae(x, masks=masks).pred_BMP
    seen = masks.visible_BV[0, 0].item()
    ts, rs = divmod(seen, 16)
    hs, ws = divmod(rs, 4)
    z = x.clone()
    z[..., 2 * ts : 2 * ts + 2, 16 * hs : 16 * hs + 16, 16 * ws : 16 * ws + 16] += 5.0
    assert not torch.allclose(mae(z, masks=masks).pred_BMP, pred, atol=1e-3)
    # Change the pixels under one masked token: the prediction must not move.
    t = masks.masked_BM[0, 0].item()
    ti, rest = divmod(t, 16)
    hi, wi = divmod(rest, 4)
    y = x.clone()
    y[..., 2 * ti : 2 * ti + 2, 16 * hi : 16 * hi + 16, 16 * wi : 16 * wi + 16] += 5.0
    torch.testing.assert_close(mae(y, masks=masks).pred_BMP, pred)


def test_mae_trains_one_step():
    mae = build_mae("debug").train()
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 4, 64, 64)
    g = torch.Generator().manual_seed(0)
    masks = mae.mask_for(x, g)
    before = mae(x, masks=masks).loss
    for _ in range(5):
        opt.zero_grad()
        mae(x, masks=masks).loss.backward()
        opt.step()
    assert mae(x, masks=masks).loss < before
