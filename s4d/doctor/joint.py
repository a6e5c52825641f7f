"""Doctor check of the loader and the model in one loop: the real ``train_epoch`` fed by the real
``Loader`` (full training recipe, Mixup/CutMix) on the doctor's shards. Timed apart, the two hide
what only the joint loop shows: augmentation that makes the host wait, and steps that stall on
input. Reported: clips/s, and the share of the step loop's time spent inside the loader's
``next()`` (waiting for input)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import torch

from pipelines import Loader, LoaderConfig, open_dataset
from pipelines.mixing import BatchMixer

from .runner import Context

INPUT_BOUND = 0.25  # above this share of the loop's time in next(), the loader holds the model back


class Waited:
    """The items of an iterable, with the time spent inside its ``next()`` and the clips seen."""

    def __init__(self, items: Iterable[dict]) -> None:
        self._it: Iterator[dict] = iter(items)
        self.seconds, self.clips = 0.0, 0

    def __iter__(self) -> "Waited":
        return self

    def __next__(self) -> dict:
        t0 = time.perf_counter()
        try:
            batch = next(self._it)
        finally:
            self.seconds += time.perf_counter() - t0
        self.clips += len(batch["pixels"])
        return batch


def loader_in_the_loop(ctx: Context) -> dict[str, Any]:
    """One warm-up epoch (DALI graph built, kernels chosen), then a timed one over the same
    loader: ``base`` in bf16 on a GPU (16 frames, 160 px, 8 clips a step), ``debug`` in fp32
    on a CPU. The loader picks its backend as a run does (DALI when installed)."""
    from ..models import build_model
    from ..runtime.device import dali_device_id
    from ..train.loop import train_epoch

    s = ctx.need("shards")
    m = s["video"]
    size, batch, steps = ("base", 8, 24) if ctx.cuda else ("debug", 4, 12)
    torch.manual_seed(0)
    model = build_model("s4d", size, video_classes=len(m.classes)).to(ctx.device)
    enc = model.config.encoder
    ds = open_dataset(m, s["data"] / m.name, None, "train")
    cfg = LoaderConfig(batch_size=batch, train=True, size=enc.img_size, frames=enc.num_frames, stride=m.clip.stride)
    loader = Loader(ds, cfg, device_id=dali_device_id(ctx.device), num_samples=2 * batch)  # warm-up: 2 steps
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    mixers = {"video": BatchMixer(len(m.classes), 0.8, 1.0, 0.1)}
    amp = torch.bfloat16 if ctx.cuda else None

    def run(batches: Iterable[dict]):
        return train_epoch(model, (("video", b) for b in batches), opt, mixers=mixers, device=ctx.device, autocast_dtype=amp)

    run(loader.epoch(0))  # a whole epoch, so the timed one runs on the same graph (an abandoned epoch rebuilds it)
    loader.num_samples = steps * batch
    if ctx.cuda:
        torch.cuda.synchronize()
    waited = Waited(loader.epoch(1))
    t0 = time.perf_counter()
    stats, _ = run(waited)  # ends with the loop's own host sync (the NaN check); on a GPU one more below
    if ctx.cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    share = waited.seconds / seconds
    return {
        "model": f"{size} ({'bf16' if amp else 'fp32'})",
        "loader": f"{loader.backend}, decoded on {loader.decode_on}",
        "steps": stats.steps,
        "clips/s": round(waited.clips / seconds, 1),
        "waiting for input": f"{100 * share:.0f}% of step time ({1000 * waited.seconds / max(stats.steps, 1):.0f} ms a step)",
        "bound by": "input" if share > INPUT_BOUND else "the model",
    }
