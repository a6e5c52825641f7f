"""Run under torchrun by tests/test_ranks.py: after ``start_run`` every rank draws its own random
numbers (torch, ``random``, numpy; MAE masks and MoAE router noise under DDP) while DDP gives
every rank rank 0's initial weights. Rank 0 prints one JSON line."""

import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

from s4d import build_model
from s4d.models import build_mae
from s4d.runtime.rundir import start_run

d, device, _ = start_run(SimpleNamespace(device="cpu", seed=0), Path(sys.argv[1]), print)


def gathered(obj):
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def weights(model: torch.nn.Module) -> list[float]:
    return [float(p.detach().double().sum()) for p in model.parameters()]


draws = gathered([torch.rand(4).tolist(), random.random(), float(np.random.rand())])

mae = build_mae("debug")
mae_ddp = torch.nn.parallel.DistributedDataParallel(mae, broadcast_buffers=False)  # broadcasts rank 0's weights
clips = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(7))  # the same clips on every rank
masks = gathered(mae_ddp(clips).masks.visible_BV.tolist())

clf = build_model("s4d", "debug", video_classes=3).train()
clf_ddp = torch.nn.parallel.DistributedDataParallel(clf, broadcast_buffers=False)
routed = []
router = next(b.moae for b in clf.blocks if b.moae is not None).router
router.register_forward_hook(lambda _m, _i, out: routed.append(out.weights_TK.detach()))
clf_ddp(clips, task="video")
noisy_gates = gathered(routed[0].tolist())
clf.eval()  # no noise at evaluation: the ranks' gates agree again, so only the noise differed
routed.clear()
with torch.no_grad():
    clf(clips, task="video")
quiet_gates = gathered(routed[0].tolist())

init = gathered([weights(mae), weights(clf)])
if d.main:
    print(
        json.dumps(
            {
                "torch_differs": draws[0][0] != draws[1][0],
                "random_differs": draws[0][1] != draws[1][1],
                "numpy_differs": draws[0][2] != draws[1][2],
                "masks_differ": masks[0] != masks[1],
                "noise_differs": noisy_gates[0] != noisy_gates[1],
                "gates_agree_without_noise": quiet_gates[0] == quiet_gates[1],
                "weights_agree": init[0] == init[1],
            }
        )
    )
