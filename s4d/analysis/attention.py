"""Where the classifier looks (the paper's Fig. 6): last-layer mean-token attention.

Our ``Classifier`` has no CLS token: it pools the mean of the last block's output tokens. The
last block's attention contributes ``mean_i sum_j A_ij v_j = sum_j (mean_i A_ij) v_j`` to that
pooled feature, so the attention of the *mean token*, ``a_j = mean over heads and queries i of
A_ij``, is exactly the weight with which key token ``j`` enters the pooled feature through the
last attention layer: the CLS attention of a CLS model, for a mean-pooled one. We use it rather
than attention rollout, which mixes in every earlier layer's residual guesswork and is not what
the head reads. ``A = softmax(q k^T / sqrt(d))`` is recomputed by a forward pre-hook on the last
block from that block's own input (the model's fused SDPA path is untouched).

A map sums to 1 over tokens; the figure shows only its positive part above uniform,
``max(a_j - 1/N, 0)`` (tokens attended more than average), as the paper shows only positive
values. Raw maps are kept as ``.npy``: (T', H/p, W/p) for a video (T' = frames / tubelet), (H/p,
W/p) for an image (p: the patch side, 16 for ViT-B/16).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocess.errors import InputError
from preprocess.safe_io import refuse_symlink, write_text
from preprocess.safe_json import dumps

from ..models import Classifier
from ..plots import plot_attention
from . import WRITES
from .outputs import claim_out

INDEX = WRITES["attention"][0]


@dataclass
class Prepared:
    """One input as the model sees it: ``x`` normalised, (3, T, H, W) for a clip or (3, H, W)
    for a still image; ``frames_THWC`` the same pixels as uint8 for display ((1, H, W, 3) for an
    image)."""

    name: str
    x: torch.Tensor
    frames_THWC: np.ndarray


@torch.no_grad()
def mean_token_attention(model: Classifier, x: torch.Tensor, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (B, 3, T, H, W) or (B, 3, H, W) -> (maps, probs): maps (B, T', H/p, W/p) for videos or
    (B, H/p, W/p) for images, float32, each summing to 1 (the last layer's mean-token attention,
    averaged over heads); probs (B, C) softmax of ``task``'s head."""
    block = model.blocks[-1]
    seen: list[torch.Tensor] = []

    def hook(module, args) -> None:
        q_BHNd, k_BHNd, _ = module.attn.heads(module.norm1(args[0]))
        scores_BHNN = (q_BHNd.float() @ k_BHNd.float().transpose(-2, -1)) * q_BHNd.shape[-1] ** -0.5
        seen.append(scores_BHNN.softmax(dim=-1).mean(dim=(1, 2)))  # (B, N): over heads, then over queries

    handle = block.register_forward_pre_hook(hook)
    try:
        logits = model(x, task)
    finally:
        handle.remove()
    enc = model.config.encoder
    h, w = x.shape[-2] // enc.patch, x.shape[-1] // enc.patch
    grid = (x.shape[2] // enc.tubelet, h, w) if x.ndim == 5 else (h, w)
    return seen[0].reshape(len(x), *grid).cpu().numpy(), logits.float().softmax(-1).cpu().numpy()


def positive_part(map_: np.ndarray) -> np.ndarray:
    """The shown part of a map (any shape, summing to 1): ``max(a - 1/N, 0)``."""
    return np.maximum(map_ - 1.0 / map_.size, 0.0)


def display_frames(frames_THWC: np.ndarray, tubelet: int) -> np.ndarray:
    """(T, H, W, 3) -> (T', H, W, 3): the first frame of each tubelet (an image: itself)."""
    return frames_THWC[::tubelet] if len(frames_THWC) > 1 else frames_THWC


def file_stem(name: str, taken: set[str]) -> str:
    """A safe, unique file stem for an input's name (``a/b.mp4`` -> ``attention_b``)."""
    stem = "attention_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "input")
    out, k = stem, 1
    while out in taken:
        k += 1
        out = f"{stem}-{k}"
    taken.add(out)
    return out


def check_models(models: list[tuple[str, Classifier]]) -> None:
    """Both rows must see the same pixels: same input side and clip length."""
    (first, a), *rest = models
    for name, b in rest:
        ea, eb = a.config.encoder, b.config.encoder
        if (ea.img_size, ea.num_frames) != (eb.img_size, eb.num_frames):
            raise InputError(
                f"-c {name}: takes {eb.img_size} px x {eb.num_frames} frames but -c {first} takes {ea.img_size} px x {ea.num_frames}; "
                "compare checkpoints of the same input geometry"
            )


def _earlier(out: Path) -> list[Path]:
    """The per-input files an earlier run listed in its index (only ours: attention_*)."""
    import json

    try:
        listed = json.loads((out / INDEX).read_text(encoding="utf-8")).get("inputs", [])
        names = [f for row in listed for f in row.get("files", [])]
    except (OSError, ValueError, AttributeError):
        return []
    return [out / n for n in names if re.fullmatch(r"attention_[A-Za-z0-9._-]+\.(png|npy)", n)]


def analyze_attention(
    models: list[tuple[str, Classifier]],
    inputs,
    out: Path,
    *,
    device: torch.device,
    force: bool = False,
    labels: tuple[str, ...] = ("S4D", "baseline"),
) -> dict[str, Any]:
    """For each ``Prepared`` input: maps of every model (the first is S4D, the second, if any,
    the baseline drawn under it), written as ``attention_<name>.png``, ``attention_<name>.npy``
    (the first model's map) and ``attention_<name>.baseline.npy``, plus ``attention.json``
    listing them. Returns that index."""
    check_models(models)
    inputs = iter(inputs)
    first = next(inputs, None)  # prepared before the folder is claimed: a bad first input leaves nothing behind
    if first is None:
        raise InputError("no inputs: give videos or images, or --manifest")
    stale = _earlier(Path(out)) if force else []
    out = claim_out(Path(out), "attention", force=force)
    for path in stale:
        if path.is_file() or path.is_symlink():
            path.unlink()
    taken: set[str] = set()
    rows: list[dict[str, Any]] = []
    index: dict[str, Any] = {
        "method": "last-layer mean-token attention (no CLS token: the classifier pools the mean token), heads averaged",
        "shown": "max(a - 1/N, 0): attention above uniform",
        "models": [{"label": lab, "checkpoint": name} for lab, (name, _) in zip(labels, models)],
        "inputs": rows,
    }
    for item in itertools.chain([first], inputs):
        stem = file_stem(item.name, taken)
        maps, tops = [], []
        for _, model in models:
            m, probs = mean_token_attention(model, item.x[None].to(device))  # an image goes as (1, 3, H, W): (1, h, w)
            maps.append(m[0])
            tops.append(int(probs[0].argmax()))
        files = []
        targets = [out / f"{stem}.png"] + [out / (f"{stem}.npy" if k == 0 else f"{stem}.{labels[k]}.npy") for k in range(len(maps))]
        for path in targets:
            if os.path.lexists(path):  # not ours: ours were listed in the index and removed (--force) or refused
                raise InputError(f"{path}: exists and is not listed in {out / INDEX}; move it or pick another --out")
        for k, m in enumerate(maps):
            npy = targets[k + 1]
            with open(refuse_symlink(npy), "wb") as f:
                np.save(f, m.astype(np.float32))
            files.append(npy.name)
        tubelet = models[0][1].config.encoder.tubelet
        shown = [positive_part(m if m.ndim == 3 else m[None]) for m in maps]
        row_labels = [f"{lab} (class {t})" for lab, t in zip(labels, tops)]
        png = plot_attention(targets[0], display_frames(item.frames_THWC, tubelet), list(zip(row_labels, shown)), item.name)
        files.insert(0, png.name)
        rows.append({"input": item.name, "shape": list(maps[0].shape), "predicted": tops, "files": files})
        write_text(out / INDEX, dumps(index, indent=2) + "\n")  # after each input: what is there is listed
    return index
