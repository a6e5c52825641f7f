"""Using a trained model on raw media (``s4d predict``): settings (``config``), face preparation
as the training data was prepared (``faces``), the main face's track (``tracking``), sliding
windows (``windows``), the ``Predictor`` and what it writes (``outputs``)."""

from .config import PredictConfig
from .outputs import summary_line, write_output
from .predictor import Predictor

__all__ = ["PredictConfig", "Predictor", "summary_line", "write_output"]
