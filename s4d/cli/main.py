"""The ``s4d`` app: its entry point, the error policy (known input errors are one line; anything
else is one line plus a traceback log) and the global flags. Commands register themselves on
``app`` from their modules (``s4d.cli`` imports them)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console

app = typer.Typer(
    name="s4d", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="S4D: facial expression recognition in face videos."
)
err_console = Console(stderr=True)
_DEBUG = {"on": False}


def run() -> None:
    """The ``s4d`` entry point: the app, with no traceback reaching the user. Known input errors
    are one line already (``one_line_errors``); anything else (a bug) becomes one line with its
    type and message and the path of a log file holding the traceback (``--debug`` shows it)."""
    import sys

    try:
        app(prog_name="s4d")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("[bold yellow]interrupted[/]")
        sys.exit(130)
    except Exception as err:  # an exception no command expected: a bug, reported in one line
        if _DEBUG["on"]:
            raise
        log = _write_traceback()
        text = str(err).strip().splitlines()
        print_error(f"unexpected {type(err).__name__}: {text[0][:300] if text else ''} (traceback in {log}; --debug shows it; please report it)")
        sys.exit(2)


def _write_traceback() -> str:
    import os
    import tempfile
    import time
    import traceback

    name = f"s4d-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        path = _log_folder() / name
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # something (a planted link?) has our name: never written through
            path = Path(tempfile.mkdtemp(prefix="s4d-logs-")) / name
            fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(traceback.format_exc())
        return str(path)
    except OSError:
        return "(no log: the log folder is not writable)"


def _log_folder() -> Path:
    """A folder only this user can use: ``$S4D_LOG_DIR`` or ``$XDG_STATE_HOME/s4d/logs``
    (default ``~/.local/state/s4d/logs``), created with mode 0700. One that is a symlink, owned
    by someone else or writable by group or others is refused for a fresh private temporary
    folder (another user could plant a link there that our write would follow)."""
    import os
    import stat
    import tempfile

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    folder = Path(os.environ.get("S4D_LOG_DIR") or Path(state) / "s4d" / "logs")
    try:
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        owner = os.getuid() if hasattr(os, "getuid") else st.st_uid
        mine = stat.S_ISDIR(st.st_mode) and st.st_uid == owner and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    except (OSError, RuntimeError):  # RuntimeError: no home directory
        mine = False
    return folder if mine else Path(tempfile.mkdtemp(prefix="s4d-logs-"))


def print_error(text: object) -> None:
    """``error: <text>`` on stderr, the text taken literally (a bracket in a message is not markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(text))}", highlight=False, soft_wrap=True)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known input errors become one clear line on stderr and exit code 2."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print("[bold yellow]interrupted:[/] re-run the same command to continue from the last finished step/epoch")
        raise typer.Exit(130) from None
    except (ValueError, FloatingPointError, RuntimeError) as err:  # NonFiniteLoss is a FloatingPointError
        if not _known(err):  # a bug: run() reports it with its traceback log (--debug shows it)
            raise
        print_error(err)
        raise typer.Exit(2) from None
    except OSError as err:  # a missing, unreadable, read-only or full file or folder: the message names it
        text = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
        print_error(text)
        raise typer.Exit(2) from None


def _known(err: BaseException) -> bool:
    """Errors that describe bad input: ``InputError`` (ManifestError, ShardError, MediaError,
    CheckpointError, ...), a non-finite loss, and the loader's GpuDecodeError (looked up only if
    the loader ran, so that answering an input error never imports torch). A bare ``ValueError``
    (from a library, or an invariant of ours) is not the user's fault: it is reported as a bug."""
    import sys

    from preprocess.errors import InputError

    if isinstance(err, (InputError, FloatingPointError)):
        return True
    loader = sys.modules.get("pipelines.loader")
    return loader is not None and isinstance(err, loader.GpuDecodeError)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"s4d {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    """S4D: Static for Dynamic facial expression recognition."""
    _DEBUG["on"] = debug
