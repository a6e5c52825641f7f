"""RandAugment's notation and op set (timm's ``rand-mM-nN[-mstdS][-pP][-inc1]``), shared by the
parameter draws (``augment_params``) and the ops (``randaug``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from preprocess.errors import InputError

OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)  # timm's _RAND_INCREASING_TRANSFORMS, in its order
LEVEL_DENOM = 10.0


@dataclass(frozen=True)
class RandAugmentSpec:
    """timm's ``rand-mM-nN[-mstdS][-pP][-inc1]`` string, parsed. Only the increasing op set is
    implemented (the reference uses ``inc1``)."""

    magnitude: float = 7.0
    num_ops: int = 4
    magnitude_std: float = 0.5
    prob: float = 0.5

    def __post_init__(self) -> None:
        if self.num_ops < 0:
            raise InputError(f"randaugment: n must be >= 0, got {self.num_ops}")
        if not 0 <= self.magnitude <= LEVEL_DENOM:
            raise InputError(f"randaugment: m must be in 0..10 (timm's scale), got {self.magnitude}")
        if self.magnitude_std < 0 or not 0 <= self.prob <= 1:
            raise InputError(f"randaugment: mstd must be >= 0 and p in 0..1, got {self.magnitude_std}, {self.prob}")

    @staticmethod
    def parse(text: str) -> "RandAugmentSpec":
        parts = text.split("-")
        if parts[0] != "rand":
            raise InputError(f"randaugment: {text!r} must start with 'rand-' (timm notation, e.g. rand-m7-n4-mstd0.5-inc1)")
        values: dict[str, float] = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d+)?)", part)
            if m is None:
                raise InputError(f"randaugment: unknown part {part!r} in {text!r} (known: m, n, mstd, p, inc)")
            values[m.group(1)] = float(m.group(2))
        if values.get("inc", 1.0) != 1.0:
            raise InputError(f"randaugment: only the increasing op set (inc1) is implemented, got {text!r}")
        return RandAugmentSpec(
            magnitude=values.get("m", 10.0), num_ops=int(values.get("n", 2)), magnitude_std=_mstd(values.get("mstd", 0.0)), prob=values.get("p", 0.5)
        )

    def __str__(self) -> str:
        return f"rand-m{self.magnitude:g}-n{self.num_ops}-mstd{self.magnitude_std:g}-p{self.prob:g}-inc1"


def _mstd(value: float) -> float:
    """timm's rule: ``mstd`` above 100 means a magnitude drawn uniformly on 0..m (infinity)."""
    return float("inf") if value > 100 else value
