"""The doctor's checks, in the order they run (later ones use what earlier ones built)."""

from __future__ import annotations

from . import compute, data

CHECKS = [
    ("environment", compute.environment),
    ("shards (160 px, written here)", data.write_shards),
    ("DALI CPU decode", data.dali_cpu_decode),
    ("PyTorch loader decode", data.fallback_decode),
    ("DALI GPU decode (mixed)", data.dali_gpu_decode),
    ("GPU vs CPU decode", data.gpu_vs_cpu_decode),
    ("GPU augmentation", data.gpu_augmentation),
    ("loader vs model", data.loader_vs_model),
    ("MoAE bf16 grouped kernel", compute.moae_kernels),
    ("flash attention (bf16)", compute.flash_attention),
    ("step loop host syncs", compute.step_syncs),
    ("process group", compute.process_group),
    ("fine-tune + MAE epoch", compute.short_runs),
]
