import pytest

from s4d.models import EncoderConfig, MAEConfig, ModelConfig, MoEConfig, model_config, moe_block_indices


@pytest.mark.parametrize(
    "position, expected",
    [
        ("later", (6, 7, 8, 9, 10, 11)),
        ("early", (0, 1, 2, 3, 4, 5)),
        ("middle", (3, 4, 5, 6, 7, 8)),
        ("alternate", (1, 3, 5, 7, 9, 11)),
    ],
)
def test_placement_of_six_expert_blocks(position, expected):
    assert moe_block_indices(12, 6, position) == expected


def test_placement_counts_and_errors():
    assert moe_block_indices(12, 2, "later") == (10, 11)
    assert moe_block_indices(12, 12, "early") == tuple(range(12))
    with pytest.raises(ValueError, match="count"):
        moe_block_indices(12, 13)
    with pytest.raises(ValueError, match="alternate"):
        moe_block_indices(12, 7, "alternate")
    with pytest.raises(ValueError, match="position"):
        moe_block_indices(12, 6, "sideways")


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: EncoderConfig(img_size=150), "encoder.img_size"),
        (lambda: EncoderConfig(num_frames=15), "encoder.num_frames"),
        (lambda: EncoderConfig(dim=100, num_heads=12), "encoder.dim"),
        (lambda: MoEConfig(top_k=9), "moe.top_k"),
        (lambda: MoEConfig(noise="loud"), "moe.noise"),
        (lambda: MoEConfig(capacity_factor=0), "moe.capacity_factor"),
        (lambda: ModelConfig(heads={"video": 0}), "heads.video"),
        (lambda: ModelConfig(heads={"video": 2}, class_names={"video": ("a",)}), "class_names.video"),
        (lambda: ModelConfig(moae=MoEConfig(blocks=(12,))), "moae.blocks"),
        (lambda: MAEConfig(mask_ratio_video=1.0), "mask_ratio_video"),
        (lambda: model_config("s4d", "huge"), "size"),
        (lambda: model_config("resnet"), "variant"),
    ],
)
def test_bad_config_names_the_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_variants_as_data():
    assert model_config("vit").heads == {"video": 7} and model_config("vit").moae is None
    mtl = model_config("vit-mtl", video_classes=11)
    assert mtl.heads == {"video": 11, "image": 7} and mtl.moae is None and mtl.moe_ffn is None
    moe = model_config("vit-moe")
    assert moe.moe_ffn.hidden_ratio == 4.0 and moe.moe_ffn.blocks == (6, 7, 8, 9, 10, 11) and moe.moae is None
    s4d = model_config("s4d", moe_count=4, moe_position="early", noise="fixed", noise_std=0.5)
    assert s4d.moae.blocks == (0, 1, 2, 3) and s4d.moae.noise == "fixed" and s4d.moae.hidden_dim(768) == 192


def test_config_json_round_trip():
    cfg = model_config("s4d", "debug", video_classes=3)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "class_names": {"video": ["a", "b", "c"]}})
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.class_names["video"] == ("a", "b", "c")
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    mae = MAEConfig(encoder=EncoderConfig(dim=64, num_heads=4))
    assert MAEConfig.from_dict(mae.to_dict()) == mae
