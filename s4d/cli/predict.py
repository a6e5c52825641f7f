"""Inference and sharing commands: ``s4d predict`` (a trained model on raw videos and still
images), ``s4d export`` (a head as an ONNX model) and ``s4d export-hub`` (a run as a Hugging
Face Hub upload folder with its model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from preprocess.errors import InputError

from .main import app, err_console, one_line_errors, print_error


@app.command("predict")
def predict_cmd(
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Videos (any container/codec PyAV reads) or still images; with --out X.parquet also folders and .txt lists of paths."),
    ] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Our .safetensors or the authors' fine-tuned file.")] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Per-window results: a .json or .csv file (a folder for several inputs), or one .parquet table for folders and lists (resumable)."
        ),
    ] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Timeline PNG of class probabilities (a folder for several inputs).")] = None,
    hop: Annotated[Optional[int], typer.Option(help="Frames between window starts (default: half a window).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Frame stride in a window (default: the checkpoint's training stride).")] = None,
    align: Annotated[
        bool, typer.Option("--align/--no-align", help="Find, follow and align the face; --no-align for videos that are already face crops.")
    ] = True,
    classes: Annotated[Optional[str], typer.Option(help="Class names for checkpoints without them: 'a,b,c' or a manifest (e.g. dfew).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    faces: Annotated[
        str,
        typer.Option(
            help="main: the main face's timeline | all: one timeline per person (tracks by "
            "overlap + appearance); a photo gets one answer per face, largest first."
        ),
    ] = "main",
    live: Annotated[
        Optional[str],
        typer.Option(
            "--live", help="A live source PyAV opens (/dev/video0, rtsp://..., http://..., '-' for stdin): one JSON line per window as it completes."
        ),
    ] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="An exported head (s4d export) run by onnxruntime, instead of -c.")] = None,
) -> None:
    """Emotion of the main face (or every face) in a raw video, per-window timeline, or a still image."""
    from preprocess.media import MediaError

    from ..checkpoint.finite import NonFiniteOutput
    from ..infer import PredictConfig, Predictor, summary_line, write_output
    from ..plots import plot_timeline

    inputs = inputs or []
    with one_line_errors():
        if bool(inputs) == bool(live):
            raise InputError(
                "give input files (or folders, lists) or --live SOURCE, not both"
                if inputs
                else "give input files (or folders, lists) or --live SOURCE"
            )
        if live and (out is not None or plot is not None):
            raise InputError("--live prints its results as JSON lines on stdout; --out and --plot go with files")
    several = len(inputs) > 1
    table = out is not None and out.suffix.lower() == ".parquet"
    with one_line_errors():
        if out is not None and not several and not table and out.suffix.lower() not in (".json", ".csv"):
            raise InputError(f"--out {out}: use a .json or .csv file name (or .parquet for a table of many files)")
        if table and plot is not None:
            raise InputError("--plot goes with single files or --out FOLDER, not with a .parquet table")
        if not table:
            _refuse_folders_and_lists(inputs)
        from preprocess.ownership import guard

        for flag, given, folder in _destinations(out, plot, several=several and not table):
            if folder.is_dir():  # never into a training run's, an eval's or a shard folder
                guard(folder, "predict")
            _probe_writable(flag, given, folder)
        predictor = Predictor(
            PredictConfig(
                str(checkpoint) if checkpoint else None,
                hop=hop,
                stride=stride,
                align=align,
                classes=classes,
                device=device,
                onnx=str(onnx) if onnx else None,
                faces=faces,
            )
        )
    predictor = _NamingInput(predictor)
    if table:
        _predict_table(predictor, inputs, out)
        return
    if live:
        _predict_live(predictor, live)
        return
    failed = 0
    for path in inputs:
        try:
            result = predictor(path)
        except MediaError as err:  # report it and go on with the other inputs; exit 2 at the end
            print_error(err)
            failed += 1
            continue
        except NonFiniteOutput as err:  # NaN answers, naming the input: the model is broken, stop
            print_error(err)
            raise typer.Exit(2) from None
        typer.echo(summary_line(result))
        with one_line_errors():  # a write that fails now (a full disk): one line naming the file, not a traceback
            if out is not None:
                typer.echo(f"  windows: {write_output(result, out / f'{path.name}.json' if several else out)}")
            if plot is not None:
                typer.echo(f"  timeline: {plot_timeline(result, plot / f'{path.name}.png' if several else plot)}")
    if failed:
        raise typer.Exit(2)


def _refuse_folders_and_lists(inputs: list[Path]) -> None:
    """Without a .parquet table, inputs are media files: a folder or a .txt list of inputs is
    refused up front (naming it), before any file is predicted."""
    for path in inputs:
        if path.is_dir():
            raise InputError(f"{path} is a folder: give --out RESULTS.parquet to predict every video and image in it")
        if path.suffix.lower() == ".txt" and path.is_file():
            raise InputError(f"{path} is a list of inputs: give --out RESULTS.parquet to predict the files it lists")


def _destinations(out: Path | None, plot: Path | None, *, several: bool) -> list[tuple[str, Path, Path]]:
    """(flag, the path given, the folder predict writes into) for --out and --plot: the path
    itself for several inputs (a folder of per-file outputs), else its parent folder (a file,
    or a .parquet table beside its parts folder)."""
    given = [("--out", out), ("--plot", plot)]
    return [(flag, path, path if several else path.parent) for flag, path in given if path is not None]


def _probe_writable(flag: str, given: Path, folder: Path) -> None:
    """Create ``folder`` (and parents) and a probe file in it, then remove the probe: a
    read-only or impossible destination is one InputError naming it before any input is read."""
    import os

    from preprocess.safe_io import open_new

    probe = folder / f".s4d-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open_new(probe, "x"):
            pass
        probe.unlink()
    except OSError as err:
        where = "" if folder == given else f" (its folder {folder})"
        raise InputError(f"{flag} {given}: cannot write there{where}: {err.strerror or err}; choose a writable place") from None


class _NamingInput:
    """The predictor, with a NaN or inf answer (``NonFiniteOutput``) naming the input it was for."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def __call__(self, path):
        from ..checkpoint.finite import NonFiniteOutput
        from ..infer.many import predict_file

        try:
            return predict_file(self._predictor, path)
        except NonFiniteOutput as err:
            raise NonFiniteOutput(f"{path}: {err}") from None


def _predict_live(predictor, source: str) -> None:
    """JSON lines on stdout as windows complete; Ctrl-C (or the source ending) prints the summary."""
    import json
    import sys

    from preprocess.media import iter_live

    with one_line_errors():
        fps, frames = iter_live(source)
        results = predictor.stream(frames, fps)  # an image model is refused here
    with one_line_errors():
        try:
            for line in results:
                print(json.dumps(line), flush=True)
        except KeyboardInterrupt:
            pass  # Ctrl-C ends a live run; the summary so far follows
    print(json.dumps({"summary": results.summary()}), flush=True)
    sys.stdout.flush()


def _predict_table(predictor, inputs: list[Path], out: Path) -> None:
    """Folders, lists and files into one resumable table, with a progress bar over files."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from ..infer.inputs import list_inputs
    from ..infer.many import predict_many

    with one_line_errors():
        files, problems = list_inputs(inputs)
        if not files and not problems:
            raise InputError(f"no videos or images in {', '.join(map(str, inputs))}")
        with Progress(
            "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True
        ) as bar:
            task = bar.add_task("predict: files", total=len(files))
            summary = predict_many(predictor, files, out, on_file=lambda path, status: bar.advance(task))
    failed = summary["failed"]
    typer.echo(
        f"{summary['files'] - len(failed)} of {summary['files']} file(s) in {summary['out']} ({summary['rows']} rows; "
        f"{summary['done_before']} done before)"
    )
    for reason in problems + [f"{reason}" if reason.startswith(path) else f"{path}: {reason}" for path, reason in failed]:
        print_error(reason)
    if failed or problems:
        typer.echo("re-run the same command to retry the files that failed; finished files are kept")
        raise typer.Exit(2)


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="A fine-tuned checkpoint (ours or the authors').")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write, or an existing folder to write CHECKPOINT-STEM_TASK.onnx into.")],
    task: Annotated[str, typer.Option(help="The head to export: video | image.")] = "video",
) -> None:
    """Export one head as ONNX: dynamic batch, class names and input settings in its metadata
    (s4d predict --onnx runs it with onnxruntime)."""
    from ..infer.onnx import export_onnx

    with one_line_errors():
        if task not in ("video", "image"):
            raise InputError(f"--task must be video or image, got {task!r}")
        path = export_onnx(checkpoint, out, task)
    typer.echo(f"wrote {path} ({task} head)")


@app.command("export-hub")
def export_hub_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder of s4d train or pretrain (one fold of s4d cv: RUN/fold_<f>).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder to write (then: huggingface-cli upload OWNER/REPO DIR).")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="last | best (the epoch --select val/test chose).")] = "last",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export in --out (it then holds only this one).")] = False,
) -> None:
    """Write a folder ready to upload to the Hugging Face Hub: model.safetensors + model.json,
    the training config, the run's scores and figures, and a model card that labels every
    score by how its checkpoint was chosen. --out must be new, empty, or (--force) an earlier export."""
    from ..checkpoint.hub_export import export_hub

    with one_line_errors():
        card = export_hub(run, out, checkpoint, force=force)
    typer.echo(f"wrote {card.parent} (model card {card.name}); upload: huggingface-cli upload OWNER/REPO {card.parent}")
