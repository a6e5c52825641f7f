"""The doctor's checks, in the order they run (later ones use what earlier ones built)."""

from __future__ import annotations

from . import compute, data, gpu_runs, joint, system

CHECKS = [
    ("environment", compute.environment),
    ("GPU visible to torch", system.torch_sees_gpu),
    ("shards (160 px, written here)", data.write_shards),
    ("DALI CPU decode", data.dali_cpu_decode),
    ("PyTorch loader decode", data.fallback_decode),
    ("DALI GPU decode (mixed)", data.dali_gpu_decode),
    ("GPU vs CPU decode", data.gpu_vs_cpu_decode),
    ("GPU augmentation", data.gpu_augmentation),
    ("loader vs model", data.loader_vs_model),
    ("loader + model (train_epoch)", joint.loader_in_the_loop),
    ("MoAE bf16 grouped kernel", compute.moae_kernels),
    ("flash attention (bf16)", compute.flash_attention),
    ("step loop host syncs", compute.step_syncs),
    ("--compile step", gpu_runs.compiled_step),
    ("process group", compute.process_group),
    ("DDP, 2 GPUs", gpu_runs.ddp_two_gpus),
    ("MTCNN on CUDA", gpu_runs.mtcnn_cuda),
    ("fine-tune + MAE epoch", compute.short_runs),
]
