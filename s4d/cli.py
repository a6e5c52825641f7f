"""The ``s4d`` command line: one thin function per command, calling the library."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

app = typer.Typer(name="s4d", no_args_is_help=True, add_completion=False, help="S4D: facial expression recognition in face videos.")
err_console = Console(stderr=True)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known input errors become one clear line on stderr and exit code 2."""
    from .checkpoint import CheckpointError

    try:
        yield
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"s4d {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """S4D: Static for Dynamic facial expression recognition."""


@app.command("import-checkpoint")
def import_checkpoint(
    src: Annotated[Path, typer.Argument(help="Foreign checkpoint: the authors' .pt/.pth (fine-tuned or pre-training) or a VideoMAE-style encoder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination .safetensors (a .json config is written beside it).")],
    num_heads: Annotated[Optional[int], typer.Option(help="Attention heads (not stored in weights; default dim // 64).")] = None,
    img_size: Annotated[int, typer.Option(help="Input size in pixels the model was trained at.")] = 160,
    num_frames: Annotated[int, typer.Option(help="Frames per clip the model was trained at.")] = 16,
    top_k: Annotated[int, typer.Option(help="Experts per token for MoAE/MoE layers.")] = 2,
) -> None:
    """Convert a foreign checkpoint into ours (safetensors + JSON config)."""
    from .checkpoint import load_model, save_checkpoint

    with one_line_errors():
        if out.suffix != ".safetensors":
            raise ValueError(f"--out must end in .safetensors, got {out}")
        model, report = load_model(
            src, with_report=True, num_heads=num_heads, img_size=img_size, num_frames=num_frames, top_k=top_k
        )
        path = save_checkpoint(model, out, extra={"imported_from": str(src)})
    typer.echo(report.summary())
    typer.echo(f"wrote {path} and {path.with_suffix('.json')}")
