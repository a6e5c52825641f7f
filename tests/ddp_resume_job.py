"""Run under torchrun by tests/test_train.py: an uninterrupted DDP run, and the same run
stopped after one epoch and resumed, both selecting on a held-out part of the training fold;
rank 0 compares the final and the best weights, and every rank's held-out split, and checks that
the ranks' saved RNG states differ (each rank draws its own masks, noise and Mixup)."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines import open_dataset
from preprocess.manifest import load_manifest
from s4d import load_model
from s4d.train.config import TrainConfig
from s4d.train.finetune import train
from s4d.train.optim import OptimConfig
from s4d.train.select import holdout_split

manifest, data_root, out = sys.argv[1:4]
quiet = lambda *_: None  # noqa: E731


def cfg(name):
    return TrainConfig(
        manifest=manifest,
        out=f"{out}/{name}",
        size="debug",
        epochs=3,
        video_batch=2,
        sfer=False,
        data_root=data_root,
        backend="torch",
        optim=OptimConfig(base_lr=1e-3, warmup_epochs=0),
        select="val",
        val_fraction=0.25,
    )


train(cfg("straight"), log=quiet)
assert train(cfg("resumed"), stop_after_epochs=1, log=quiet) is None
train(cfg("resumed"), log=quiet)
m = load_manifest(manifest)
full = open_dataset(m, m.shard_dir(data_root), None, "train")
mine = [full.keys[i] for i in holdout_split(full.labels, 0.25, 0)[1]]  # what this rank computes
splits = [None] * dist.get_world_size()
dist.all_gather_object(splits, mine)
if dist.get_rank() == 0:
    same = {}
    for name in ("last", "best"):
        a = load_model(Path(out) / f"straight/checkpoints/{name}.safetensors").state_dict()
        b = load_model(Path(out) / f"resumed/checkpoints/{name}.safetensors").state_dict()
        same[name] = all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x)["loss"] for x in (Path(out) / n / "metrics.jsonl").read_text().splitlines()] for n in ("straight", "resumed")]
    held = json.loads((Path(out) / "straight/holdout.json").read_text())["keys"]
    rngs = torch.load(Path(out) / "straight/checkpoints/state.pt", weights_only=True)["rng"]
    print(
        json.dumps(
            {
                "identical": same["last"],
                "best_identical": same["best"],
                "losses": losses,
                "ranks_agree": all(s == held for s in splits) and len(held) > 0,
                "rank_rngs_differ": not torch.equal(rngs[0]["torch"], rngs[1]["torch"]) and rngs[0]["python"] != rngs[1]["python"],
            }
        )
    )
