"""The DFER test protocol, once: softmax per clip, mean over a video's clips, predictions of all
ranks pooled (never averaged). Test batches carry (B, K, 3, T, H, W): K clips per video."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..checkpoint.finite import check_finite
from ..runtime import autocast, to_device


def flat_clips(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, K, 3, T, H, W) -> ((B*K, 3, T, H, W), K); a batch of single inputs -> (x, 1)."""
    return (x.flatten(0, 1), x.shape[1]) if x.ndim == 6 else (x, 1)


def video_mean(per_clip: torch.Tensor, videos: int, clips: int) -> torch.Tensor:
    """(B*K, ...) per-clip values -> (B, ...) means over each video's K clips."""
    return per_clip.view(videos, clips, *per_clip.shape[1:]).mean(dim=1)


@torch.no_grad()
def predict(
    model: torch.nn.Module, batches: Iterable[dict], task: str, device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None
) -> dict:
    """Class probabilities (N, C) of every video by the test protocol, with its keys and labels.
    The probabilities stay on the device until the last batch: one wait for the whole pass, and
    one check on the host copy that all are finite (``NonFiniteOutput`` names the first bad key)."""
    model.eval()
    device = torch.device(device)
    keys, labels, probs = [], [], []
    for batch in batches:
        x = to_device(batch["pixels"], device)
        flat, clips = flat_clips(x)
        with autocast(device, autocast_dtype):
            p = model(flat, task=task).float().softmax(dim=-1)
        probs.append(video_mean(p, len(x), clips))
        keys += list(batch["keys"])
        labels.append(batch["labels"].numpy())
    out = torch.cat(probs).cpu().numpy() if probs else np.zeros((0, model.config.heads[task]), np.float32)
    check_finite(out, f"the {task} head", keys)
    return {"keys": keys, "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64), "probs": out}


def pool(parts: list[dict]) -> dict:
    """Predictions of all ranks in one set, ordered by key."""
    keys = [k for p in parts for k in p["keys"]]
    order = np.argsort(keys, kind="stable")
    labels = np.concatenate([p["labels"] for p in parts])
    probs = np.concatenate([p["probs"] for p in parts])
    return {"keys": [keys[i] for i in order], "labels": labels[order], "probs": probs[order]}
