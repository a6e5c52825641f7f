"""Cost, counted (train.cost): parameters of the paper's Table V, FLOPs against hand formulas,
the top-k accounting of the experts, and the cost record of real (debug-size) runs."""

import json
import shutil

import pytest
import torch

from s4d.models import MoEConfig, build_model
from s4d.models.attention import Attention
from s4d.models.moe import MixtureOfExperts
from s4d.train.config import PretrainConfig
from s4d.train.cost import count_flops, estimate_pretrain, param_counts

from .test_train import _run_cfg, make_colour_task, make_stills

# Table V of the paper: (test, train) parameters in millions.
TABLE_V = {"vit": (86, 86), "vit-mtl": (86, 86), "s4d": (90, 101), "vit-moe": (115, 285)}


@pytest.mark.parametrize("variant", sorted(TABLE_V))
def test_table_v_parameters_at_base_size(variant):
    with torch.device("meta"):  # no memory for the weights
        counts = param_counts(build_model(variant, "base"), "video")
    test, train = TABLE_V[variant]
    assert abs(counts["params_test"] / 1e6 - test) <= 0.5, counts  # the paper rounds to millions
    assert abs(counts["params_train"] / 1e6 - train) <= 0.5, counts


def test_linear_and_attention_flops_match_hand_formulas():
    B, N, D, H = 3, 10, 32, 48
    fwd = 2 * B * N * D * H
    assert count_flops(lambda: torch.nn.Linear(D, H), (B, N, D), lambda m, x: m(x).sum(), backward=False) == fwd
    # backward: the weight's gradient only (the input needs none)
    assert count_flops(lambda: torch.nn.Linear(D, H), (B, N, D), lambda m, x: m(x).sum()) == 2 * fwd
    heads = 4
    attn_fwd = 2 * B * N * D * 3 * D + 2 * B * N * D * D + 2 * (2 * B * N * N * D)  # qkv, proj, q k^T and a v
    assert count_flops(lambda: Attention(D, heads), (B, N, D), lambda m, x: m(x).sum(), backward=False) == attn_fwd
    attn_bwd = 2 * B * N * D * 3 * D + 2 * (2 * B * N * D * D) + 5 * (2 * B * N * N * D)  # qkv weight; proj weight+input; 5 SDPA matmuls
    assert count_flops(lambda: Attention(D, heads), (B, N, D), lambda m, x: m(x).sum()) == attn_fwd + attn_bwd


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_experts_count_only_the_routed_top_k_tokens(top_k):
    B, N, D, E = 2, 6, 32, 8
    cfg = MoEConfig(blocks=(0,), num_experts=E, top_k=top_k, hidden_ratio=0.25)
    Hd = cfg.hidden_dim(D)
    flops = count_flops(lambda: MixtureOfExperts(D, cfg), (B, N, D), lambda m, x: m(x)[0].sum(), backward=False)
    T = B * N
    router = 2 * (2 * T * D * E)  # gate and learned-noise logits
    dense_experts = E * (2 * T * D * Hd + 2 * T * Hd * D)  # every expert on every token
    assert flops - router == dense_experts * top_k // E


def test_a_training_and_a_pretraining_run_record_their_cost(tmp_path):
    from s4d.train.finetune import train
    from s4d.train.pretrain import pretrain

    m, out = make_colour_task(tmp_path / "colour")
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")  # <data_root>/<manifest name>
    summary = train(_run_cfg(m, data / "colour", tmp_path, epochs=1), log=lambda *_: None)
    cost = json.loads((tmp_path / "run" / "summary.json").read_text())["cost"]
    assert summary["cost"] == cost and cost["counted"] == "one step of each batch kind x steps"
    with torch.device("meta"):
        counts = param_counts(build_model("s4d", "debug", video_classes=2))  # the default variant; sfer off keeps the image head
    assert (cost["params_train"], cost["params_test"]) == (counts["params_train"], counts["params_test"])
    assert cost["steps"] == {"video": 3}  # 12 training clips / 4 per batch, 1 epoch
    assert cost["tflops"] == pytest.approx(3 * cost["per_step_gflops"]["video"] / 1e3)

    stills = make_stills(tmp_path, data / "stills", 6)
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    (tmp_path / "stills.json").write_text(json.dumps(stills.to_dict()))
    mix = {"name": "mix", "sources": [{"manifest": "colour.json", "share": 0.5, "repeat": 2}, {"manifest": "stills.json", "share": 1.0}]}
    (tmp_path / "mix.json").write_text(json.dumps(mix))
    cfg = PretrainConfig(mixture=str(tmp_path / "mix.json"), out=str(tmp_path / "pre"), size="debug", epochs=1, video_batch=2, image_batch=2)
    cfg = PretrainConfig(**{**cfg.__dict__, "data_root": str(data), "backend": "torch"})
    estimate = estimate_pretrain(cfg)  # before the run, from the shard index
    assert "12 samples (shard index)" in estimate and "6 samples (shard index)" in estimate
    assert pretrain(cfg, log=lambda *_: None)
    cost = json.loads((tmp_path / "pre" / "summary.json").read_text())["cost"]
    assert cost["steps"] == {"video x2 views": 3, "image": 3} and cost["params_test"] < cost["params_train"]  # no decoder at test
    assert f"total: {cost['tflops']:.3g} TFLOPs" in estimate  # the estimate is what the run then counted


def test_estimate_of_the_released_mixture_before_any_shard(tmp_path):
    text = estimate_pretrain(PretrainConfig(mixture="pretrain", out=str(tmp_path / "o"), data_root=str(tmp_path / "none")))
    assert "voxceleb2 (video): 1,092,009 samples (manifest expected counts)" in text
    total = float(text.split("total: ")[1].split(" TFLOPs")[0])
    assert 5e6 < total < 1.2e7  # forward + backward; the paper's 1.4e6 counts forward multiply-adds (see the module)
