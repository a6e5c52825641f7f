"""Run under torchrun by tests/test_train.py: an uninterrupted DDP run, and the same run
stopped after one epoch and resumed; rank 0 compares the final weights."""

import json
import sys
from pathlib import Path

import torch

from s4d import load_model
from s4d.train.finetune import TrainConfig, train
from s4d.train.optim import OptimConfig

manifest, data_root, out = sys.argv[1:4]
quiet = lambda *_: None  # noqa: E731


def cfg(name):
    return TrainConfig(manifest=manifest, out=f"{out}/{name}", size="debug", epochs=3, video_batch=2, sfer=False,
                       data_root=data_root, backend="torch", optim=OptimConfig(base_lr=1e-3, warmup_epochs=0))


train(cfg("straight"), log=quiet)
assert train(cfg("resumed"), stop_after_epochs=1, log=quiet) is None
train(cfg("resumed"), log=quiet)
if torch.distributed.get_rank() == 0:
    a = load_model(Path(out) / "straight/checkpoints/last.safetensors").state_dict()
    b = load_model(Path(out) / "resumed/checkpoints/last.safetensors").state_dict()
    same = all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x)["loss"] for x in (Path(out) / n / "metrics.jsonl").read_text().splitlines()] for n in ("straight", "resumed")]
    print(json.dumps({"identical": same, "losses": losses}))
