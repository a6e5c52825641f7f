"""Run under torchrun by tests/test_train.py: gradient accumulation under DDP (no_sync on all
but the batch that completes a group, and on the last, partial group): every rank ends with the
same weights although each saw different data."""

import json

import torch
import torch.distributed as dist

from s4d import build_model
from s4d.runtime.dist import setup
from s4d.train.loop import train_epoch

d, device = setup("cpu")
torch.manual_seed(0)  # same initial weights on every rank
model = build_model("vit", "debug", video_classes=3)
ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
g = torch.Generator().manual_seed(100 + d.rank)  # different data per rank
batches = [
    ("video", {"pixels": torch.randn(2, 3, 4, 64, 64, generator=g), "labels": torch.randint(0, 3, (2,), generator=g), "keys": ["k"]})
    for _ in range(3)
]  # 3 batches, accum 2: one full group and a partial one
stats, step = train_epoch(ddp, batches, opt, accum=2)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
every = [torch.zeros_like(flat) for _ in range(d.world)]
dist.all_gather(every, flat)
if d.main:
    print(json.dumps({"steps": step, "agree": all(torch.equal(every[0], x) for x in every[1:])}))
