"""The one exception type for a user's mistake: a bad flag, file, dataset, manifest, checkpoint
or run folder. The CLI prints it as one line and exits 2; anything else that escapes is our bug
(one line naming the traceback log; ``--debug`` shows it). Raise it where input is validated,
with a message that names the input (file, field or flag) and says what to do.

It subclasses ``ValueError`` so that callers and tests that catch ``ValueError`` keep working;
the CLI tells the two apart, so a bare ``ValueError`` from a library or an internal invariant is
reported as a bug, not dressed as the user's fault."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user; the message is the whole one-line answer."""
