"""The benchmark scripts run (tiny sizes) and print their ratios, so `make bench` does not rot."""

import os
import subprocess
import sys

import pytest


def run(*args):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_model_step_benchmark_checks_the_reference_style_model_and_prints_ratios():
    out = run("benchmarks/bench_model.py", "--size", "debug", "--batch", "2", "--iters", "1")
    assert "s4d-reference-style" in out and "S4D (MoAE) / plain ViT step-time ratio" in out
    assert "reference-style / S4D step-time ratio" in out and "command: python benchmarks/bench_model.py" in out


def test_reference_style_model_is_the_same_function():
    import torch

    from benchmarks.reference_style import LoopMoE, MaterialisedAttention, reference_style
    from s4d import build_model

    model = build_model("s4d", "debug", video_classes=3).eval()
    ref = reference_style(model)
    assert any(isinstance(m, LoopMoE) for m in ref.modules()) and any(isinstance(m, MaterialisedAttention) for m in ref.modules())
    x = torch.randn(2, 3, 4, 64, 64)
    torch.testing.assert_close(ref(x, task="video"), model(x, task="video"), atol=1e-5, rtol=1e-5)
    ref.train()(x, task="video").sum().backward()  # the loop path trains too
    assert ref.blocks[2].moae.experts.w1.grad is not None


@pytest.mark.parametrize("extra", [["--no-ddp"], []])
def test_scaling_benchmark(extra):
    out = run("benchmarks/bench_scaling.py", "--size", "debug", "--iters", "1", "--ddp-iters", "1", *extra)
    assert "16 x 224" in out and "token ratio" in out
    assert ("ratio to 1 process" in out) == (not extra)


def test_mfu_denominator_knows_the_h100_variants():
    from benchmarks.bench_model import peak_bf16

    assert peak_bf16("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16("NVIDIA H100 PCIe") == 756e12 and peak_bf16("NVIDIA H100 NVL") == 835e12
    assert peak_bf16("NVIDIA H200") == 989e12 and peak_bf16("Tesla T4") is None
