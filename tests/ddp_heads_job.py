"""Run under torchrun by tests/test_ranks.py: DDP without ``find_unused_parameters`` on the
two-head S4D model (``finetune.IdleHeads``). A video-only step leaves the image head exactly as
it was (zero gradient on every rank, then none: AdamW neither decays nor moves it) and, with
the routing forced onto two experts, gives the six idle experts zero gradients, a joint
epoch with accumulation finishes with every rank holding the same weights, and the same DDP
without the zero-weight touch fails: the touch is what lets DDP skip the search."""

import json

import torch
import torch.distributed as dist

from s4d import build_model
from s4d.runtime.dist import setup
from s4d.train.finetune import IdleHeads
from s4d.train.loop import classification_loss, train_epoch

d, device = setup("cpu")


def ddp_model():
    torch.manual_seed(0)
    model = build_model("s4d", "debug", video_classes=3)
    return model, torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False, broadcast_buffers=False)


def batch(task: str, g: torch.Generator) -> dict:
    shape = (2, 3, 4, 64, 64) if task == "video" else (2, 3, 64, 64)
    classes = 3 if task == "video" else 7
    return {"pixels": torch.randn(*shape, generator=g), "labels": torch.randint(0, classes, (2,), generator=g), "keys": ["k"]}


g = torch.Generator().manual_seed(100 + d.rank)  # different data per rank
model, ddp = ddp_model()
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
idle = IdleHeads(model.head)
opt.register_step_pre_hook(idle.before_step)
loss_fn = idle.touch(classification_loss())
image_before = [p.detach().clone() for p in model.head["image"].parameters()]
moae = next(b.moae for b in model.blocks if b.moae is not None)
with torch.no_grad():  # every token to experts 0 and 1 (the learned noise is far smaller than the gap)
    moae.router.gate.weight.zero_()
    moae.router.gate.bias.copy_(torch.tensor([50.0, 50.0] + [-50.0] * (moae.num_experts - 2)))

b = batch("video", g)
loss_fn(ddp, "video", b["pixels"], b["labels"]).backward()
image_grads_zero = all(p.grad is not None and not p.grad.any() for p in model.head["image"].parameters())
w1_grad = moae.experts.w1.grad  # (E, D, H): the experts are one parameter, so DDP sees all of them used
idle_experts_zero = bool(w1_grad[:2].any()) and not w1_grad[2:].any()
gathered = [None] * d.world
dist.all_gather_object(gathered, [p.grad.sum().item() for p in model.head["video"].parameters()])
opt.step()
opt.zero_grad(set_to_none=True)
image_kept = all(torch.equal(a, p) for a, p in zip(image_before, model.head["image"].parameters()))
no_image_state = all(p not in opt.state for p in model.head["image"].parameters())

schedule = ["video", "image", "video", "video", "image"]  # accumulation 2: groups of one task and of both
stats, steps = train_epoch(ddp, [(t, batch(t, g)) for t in schedule], opt, loss_fn=loss_fn, accum=2)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
every = [torch.zeros_like(flat) for _ in range(d.world)]
dist.all_gather(every, flat)

_, bare = ddp_model()  # the same DDP, heads not touched: the idle head breaks the next step
try:
    for t in ("video", "video"):
        b = batch(t, g)
        bare(b["pixels"], task=t).sum().backward()
    control_fails = False
except RuntimeError:
    control_fails = True

if d.main:
    print(
        json.dumps(
            {
                "image_grads_zero": image_grads_zero,
                "idle_experts_zero": idle_experts_zero,
                "video_grads_agree": gathered[0] == gathered[1],
                "image_kept": image_kept,
                "no_image_state": no_image_state,
                "steps": steps,
                "agree": all(torch.equal(every[0], x) for x in every[1:]),
                "control_fails": control_fails,
            }
        )
    )
