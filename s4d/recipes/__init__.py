"""The paper's experiments as named recipes (``tables/*.json``, one per table or figure): the
registry (``registry``), their rows as ``s4d`` commands (``commands``), ``s4d recipe run``
(``runner``) and ``s4d report`` beside the paper's numbers (``report``, ``markdown``, ``figure``)."""

from .commands import RunOptions, row_commands, shell_line
from .registry import Recipe, Row, Step, all_recipes, get_recipe

__all__ = ["Recipe", "Row", "RunOptions", "Step", "all_recipes", "get_recipe", "row_commands", "shell_line"]
