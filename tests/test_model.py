import pytest
import torch

from s4d.checkpoint import to_reference
from s4d.models import MoEConfig, build_model, model_config, sinusoid_table
from s4d.models.moe import MixtureOfExperts

from . import reference_impl as ref

DEBUG = model_config("s4d", "debug").encoder  # 64 px, 4 frames, dim 32, depth 4


def video(b=2):
    return torch.randn(b, 3, DEBUG.num_frames, DEBUG.img_size, DEBUG.img_size)


def image(b=2):
    return torch.randn(b, 3, DEBUG.img_size, DEBUG.img_size)


@pytest.mark.parametrize("variant", ["s4d", "vit", "vit-mtl", "vit-moe"])
def test_shapes_for_video_and_image(variant):
    model = build_model(variant, "debug", video_classes=5, image_classes=7).eval()
    assert model(video(3)).shape == (3, 5)
    if "image" in model.head:
        assert model(image(2)).shape == (2, 7)
        assert model(video(2), task="image").shape == (2, 7)  # cross-task
    else:
        assert model(image(2)).shape == (2, 5)  # a one-head model uses its only head
        with pytest.raises(ValueError, match="no head for task 'image'"):
            model(image(2), task="image")


def test_image_is_a_replicated_two_frame_clip():
    model = build_model("s4d", "debug").eval()
    x = image(2)
    as_clip = x.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    tokens_img = model.embed(x)
    tokens_clip = model.patch_embed(as_clip) + model.pos_embed[: DEBUG.tokens_per_frame_pair]
    assert tokens_img.shape == (2, DEBUG.tokens_per_frame_pair, DEBUG.dim)
    torch.testing.assert_close(tokens_img, tokens_clip, atol=1e-5, rtol=1e-5)


def test_wrong_input_size_is_a_clear_error():
    model = build_model("s4d", "debug")
    with pytest.raises(ValueError, match="expects 64x64"):
        model(torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="configured for 4 frames"):
        model(torch.randn(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match="multiple of the tubelet"):
        model(torch.randn(1, 3, 3, 64, 64))


def test_position_table_matches_the_reference_formula():
    # The literal loop of the reference formula, computed independently in numpy.
    for n, d in [(800, 768), (800, 384), (8, 32)]:
        torch.testing.assert_close(sinusoid_table(n, d), ref.sinusoid_table_loop(n, d), atol=0, rtol=0)
    table = sinusoid_table(800, 768)
    assert table[0, 0] == 0 and table[0, 1] == 1  # sin(0), cos(0)
    assert torch.isclose(table[3, 2], torch.sin(torch.tensor(3 / 10000 ** (2 / 768))), atol=1e-7)
    model = build_model("s4d", "base")
    assert model.pos_embed.shape == (800, 768)
    assert "pos_embed" not in model.state_dict()  # fixed, never saved


def test_base_parameter_counts():
    D, H, E, F = 768, 192, 8, 3072
    patch = ref.num_params((D, 3, 2, 16, 16), (D,))
    block = ref.num_params((2 * D,), (3 * D, D), (2 * D,), (D, D), (D,), (2 * D,), (F, D), (F,), (D, F), (D,))
    head = ref.num_params((7, D), (7,))
    trunk = patch + 12 * block + 2 * D  # + fc_norm
    router = 2 * ref.num_params((E, D), (E,))
    expert = ref.num_params((H, D), (H,), (D, H), (D,))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    vit = build_model("vit", "base")
    assert count(vit) == trunk + head == 86_232_583  # ViT-B/16: ~86M
    s4d = build_model("s4d", "base")
    assert count(s4d) == trunk + 2 * head + 6 * (router + E * expert) == 100_513_646  # paper: 101M (train)
    # At test time one head runs and each token uses 2 of the 8 adapters: ~90M active (paper: 90M test).
    active = trunk + head + 6 * (router + 2 * expert)
    assert active == 89_856_871
    assert count(build_model("vit-moe", "base")) == trunk + 2 * head + 6 * (router + (E - 1) * ref.num_params((F, D), (F,), (D, F), (D,)))


def test_eval_is_deterministic_and_train_noise_is_random():
    model = build_model("s4d", "debug").eval()
    x = video()
    torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
    model.train()
    assert not torch.equal(model(x), model(x))  # learned router noise while training


def test_noise_at_eval_switch_and_fixed_noise():
    noisy = build_model("s4d", "debug", noise_at_eval=True).eval()
    x = video()
    assert not torch.equal(noisy(x), noisy(x))
    fixed = build_model("s4d", "debug", noise="fixed", noise_std=0.5)
    assert fixed.blocks[3].moae.router.noise is None
    fixed.train()
    assert not torch.equal(fixed(x), fixed(x))
    quiet = build_model("s4d", "debug", noise="none").train()
    torch.testing.assert_close(quiet(x), quiet(x), atol=0, rtol=0)


def test_gradients_reach_router_and_experts():
    model = build_model("s4d", "debug", balance_loss_weight=0.01).train()
    logits, aux = model(video(), return_aux=True)
    assert aux.balance_loss > 0 and len(aux.gates) == len(model.config.moae.blocks)
    (logits.logsumexp(-1).sum() + aux.balance_loss).backward()
    moae = model.blocks[-1].moae
    for name, p in [("gate", moae.router.gate.weight), ("noise", moae.router.noise.weight), ("w1", moae.experts.w1), ("w2", moae.experts.w2)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gates_are_top_k_and_sum_to_one():
    model = build_model("s4d", "debug").eval()
    _, aux = model(video(), return_aux=True)
    for gates_BNE in aux.gates:
        assert ((gates_BNE > 0).sum(-1) == 2).all()
        torch.testing.assert_close(gates_BNE.sum(-1), torch.ones(gates_BNE.shape[:2]))


def _moe_and_reference(cfg: MoEConfig, dim=32):
    moe = MixtureOfExperts(dim, cfg).eval()
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.5)
    sd = to_reference({f"blocks.0.moae.{k}": v for k, v in moe.state_dict().items()})
    sd = {k.replace("blocks.0.moe_layer", "m"): v for k, v in sd.items()}
    return moe, sd


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_equals_slow_reference_loop(top_k):
    moe, sd = _moe_and_reference(MoEConfig(blocks=(0,), num_experts=8, top_k=top_k, hidden_ratio=0.25))
    x = torch.randn(3, 10, 32)
    ours, _ = moe(x)
    torch.testing.assert_close(ours, ref.moe_layer(x, sd, "m", top_k), atol=1e-5, rtol=1e-5)


def test_capacity_dropping_equals_reference():
    cfg = MoEConfig(blocks=(0,), num_experts=4, top_k=2, capacity_factor=0.5)
    moe, sd = _moe_and_reference(cfg)
    x = torch.randn(4, 16, 32)
    ours, aux = moe(x)
    torch.testing.assert_close(ours, ref.moe_layer(x, sd, "m", 2, capacity_factor=0.5), atol=1e-5, rtol=1e-5)
    assert ((aux.gates_TE > 0).sum(-1) < 2).any()  # some tokens really were dropped


def test_dropless_output_does_not_depend_on_the_batch():
    model = build_model("s4d", "debug").eval()
    x = video(4)
    alone = model(x[:1])
    together = model(x)[:1]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)
    capped = build_model("s4d", "debug", capacity_factor=0.25).eval()
    capped.load_state_dict(model.state_dict())
    assert not torch.allclose(capped(x[:1]), capped(x)[:1], atol=1e-4)  # the reference's batch dependence


def test_residual_adapters_add_the_input():
    cfg = MoEConfig(blocks=(0,), num_experts=4, top_k=2, expert_residual=True)
    moe = MixtureOfExperts(32, cfg).eval()
    plain = MixtureOfExperts(32, MoEConfig(blocks=(0,), num_experts=4, top_k=2)).eval()
    plain.load_state_dict(moe.state_dict())
    x = torch.randn(2, 5, 32)
    # Gates of the kept experts sum to one, so sum_e g_e (x + A_e x) = x + sum_e g_e A_e x.
    torch.testing.assert_close(moe(x)[0], x + plain(x)[0], atol=1e-5, rtol=1e-5)


def test_whole_classifier_equals_slow_reference():
    model = build_model("s4d", "debug", video_classes=5).eval()
    sd = to_reference(model.state_dict())
    x = video(2)
    expected = ref.classifier_forward(sd, x, depth=4, num_heads=2, task="video", num_tokens=DEBUG.num_tokens)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    img = image(2)
    expected = ref.classifier_forward(sd, img, depth=4, num_heads=2, task="image", num_tokens=DEBUG.num_tokens)
    torch.testing.assert_close(model(img), expected, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_and_stays_close():
    model = build_model("s4d", "debug").eval()
    x = video()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), model(x), atol=0.1, rtol=0.1)


def test_torch_compile_without_graph_breaks():
    model = build_model("s4d", "debug").eval()
    x = video()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: no host-sync breaks
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the grouped_mm path, as on a GPU
        torch.testing.assert_close(compiled(x).float(), model(x).float(), atol=0.05, rtol=0.05)


def _reference_init_state(dim: int, experts: int, hidden: int) -> dict[str, torch.Tensor]:
    """A reference-named MoAE built the way the authors' ``apply(_init_weights)`` leaves it:
    every Linear trunc_normal(std 0.02) with zero bias."""

    def linear(name: str, out: int, inp: int) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.nn.init.trunc_normal_(torch.empty(out, inp), std=0.02), f"{name}.bias": torch.zeros(out)}

    sd = {**linear("m.router.topkroute_linear", experts, dim), **linear("m.router.noise_linear", experts, dim)}
    for e in range(experts):
        sd |= linear(f"m.experts.{e}.fc1", hidden, dim) | linear(f"m.experts.{e}.fc2", dim, hidden)
    return sd


@pytest.mark.parametrize("variant", ["s4d", "vit-moe"])
def test_fresh_mixture_adds_what_the_reference_init_adds(variant):
    """A fresh MoAE (and ViT-MoE FFN) must add to a pretrained block what the reference's init
    adds (MoAE: ~0.07 rms on a unit-rms input at ViT-B width), not kaiming's ~1.0."""
    torch.manual_seed(0)
    model = build_model(variant, "base", video_classes=7)
    block = model.blocks[-1]
    moe = block.moae if variant == "s4d" else block.mlp
    assert isinstance(moe, MixtureOfExperts)
    for p in (moe.router.gate.weight, moe.router.noise.weight, moe.experts.w1, moe.experts.w2):
        assert abs(p.std().item() - 0.02) < 0.002
    assert not any(b.abs().sum() for b in (moe.router.gate.bias, moe.experts.b1, moe.experts.b2))
    x = torch.randn(2, 196, 768)
    with torch.no_grad():
        ours = moe.eval()(x)[0].pow(2).mean().sqrt().item()
        hidden = moe.experts.w1.shape[2]  # 192 (MoAE adapters) or 3072 (ViT-MoE FFN experts)
        reference = ref.moe_layer(x, _reference_init_state(768, 8, hidden), "m", top_k=2).pow(2).mean().sqrt().item()
    if variant == "s4d":
        assert 0.03 < reference < 0.15  # the reference scale itself (~0.07)
    assert 0.5 < ours / reference < 2.0, (ours, reference)


def test_expert_paths_agree_and_an_idle_expert_gets_no_gradient(monkeypatch):
    """grouped_mm (CPU fp32 here; bf16 on a GPU), the per-expert loop (fp32 on a GPU) and the
    dense fallback (compiled fp32) compute the same function, forward and backward."""
    from s4d.models import moe

    torch.manual_seed(0)
    experts = moe.GroupedExperts(4, 16, 32)
    counts = torch.tensor([3, 0, 5, 2])  # expert 1 receives no tokens
    x = torch.randn(10, 16)

    def run():
        experts.zero_grad()
        y = experts(x, counts)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in experts.parameters()]

    grouped = run()
    monkeypatch.setattr(moe, "_grouped_supported", lambda *a: False)
    looped = run()
    monkeypatch.setattr(moe.torch.compiler, "is_compiling", lambda: True)
    dense = run()
    for other in (looped, dense):
        assert torch.allclose(grouped[0], other[0], atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grouped[1], other[1]))
    assert grouped[1][0][1].abs().max() == 0 and grouped[1][1][1].abs().max() == 0  # w1, b1 of the idle expert
