"""Using a trained model on raw media: ``s4d predict`` (this package) and, beside it, the
analyses of ``s4d analyze`` (``s4d.analysis``)."""

from .predict import PredictConfig, Predictor, plot_timeline, summary_line, write_output

__all__ = ["PredictConfig", "Predictor", "plot_timeline", "summary_line", "write_output"]
