"""S4D: Static for Dynamic facial expression recognition (ViT + Mixture of Adapter Experts).

The public names are imported on first use, so ``s4d --help`` and input errors answer
without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_PUBLIC = {
    "load_model": ".checkpoint",
    "load_classifier": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "build_mae": ".models",
    "build_model": ".models",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 's4d' has no attribute {name!r}")
