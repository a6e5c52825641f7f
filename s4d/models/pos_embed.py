"""The fixed 1-D sinusoid position table (Transformer style) used by the encoder and decoder.

Checkpoints do not carry it, so it must match the reference formula exactly:
``angle[p, j] = p / 10000 ** (2 * (j // 2) / dim)``, sine on even columns, cosine on odd ones,
computed in float64 and stored as float32.
"""

from __future__ import annotations

import torch


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Return the (num_positions, dim) float32 table; row p encodes flattened token index p
    in (t, h, w) order."""
    pos_P1 = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j_D = torch.arange(dim, dtype=torch.float64)
    angle_PD = pos_P1 / torch.pow(10000.0, 2 * torch.div(j_D, 2, rounding_mode="floor") / dim)
    table_PD = torch.empty_like(angle_PD)
    table_PD[:, 0::2] = torch.sin(angle_PD[:, 0::2])
    table_PD[:, 1::2] = torch.cos(angle_PD[:, 1::2])
    return table_PD.to(torch.float32)
