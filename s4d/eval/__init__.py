"""Scoring models by the DFER protocol: ``protocol`` (softmax per clip, mean per video, pooled
over ranks), ``metrics`` (UAR, WAR, confusion), ``data`` (the test-time loader settings and shard
folder), ``outputs`` (the one writer of summary.json, predictions.parquet and figures) and
``evaluate`` (``s4d eval``, with cross-task class mapping)."""

from .metrics import confusion, scores
from .protocol import pool, predict

__all__ = ["confusion", "pool", "predict", "scores"]
