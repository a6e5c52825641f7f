"""``s4d doctor``: a self-check of the installed system, CPU and GPU path, in minutes.

Each check is a function of a shared ``Context`` that returns its figures (a dict), raises
``Skip`` with a reason, or fails: ``Fail`` (the reason, and figures such as the fix) or any other
exception (shown as its name and first line). ``run_checks`` runs them in order and
returns one ``Result`` per check; status is ``ok``, ``skipped: reason`` or ``FAIL: reason``.
"""

from .runner import Context, Fail, Result, Skip, run_checks

__all__ = ["Context", "Fail", "Result", "Skip", "run_checks"]
