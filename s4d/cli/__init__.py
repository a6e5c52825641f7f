"""The ``s4d`` command line: ``app`` (entry point and error policy), ``options`` (shared options,
configs and default folders built once) and one thin module per command group. Importing a
command module registers its commands, in this order in ``s4d --help``."""

from . import data, evaluation, predict, recipe, tools, training  # noqa: F401
from .main import app, run

__all__ = ["app", "run"]
