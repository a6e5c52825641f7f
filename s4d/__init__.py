"""S4D: Static for Dynamic facial expression recognition (ViT + Mixture of Adapter Experts)."""

from .checkpoint import load_model, save_checkpoint
from .models import build_mae, build_model

__version__ = "0.1.0"
__all__ = ["build_mae", "build_model", "load_model", "save_checkpoint", "__version__"]
