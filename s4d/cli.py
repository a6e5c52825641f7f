"""The ``s4d`` command line: one thin function per command, calling the library."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

app = typer.Typer(name="s4d", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="S4D: facial expression recognition in face videos.")
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
        err_console.print(f"[bold red]error:[/] unexpected {type(err).__name__}: {text[0][:300] if text else ''} "
                          f"(traceback in {log}; --debug shows it; please report it)", highlight=False, soft_wrap=True)
        sys.exit(2)


def _write_traceback() -> str:
    import os
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("S4D_LOG_DIR") or Path(tempfile.gettempdir()) / "s4d-logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"s4d-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(traceback.format_exc())
        return str(path)
    except OSError:
        return "(no log: the log folder is not writable)"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known input errors become one clear line on stderr and exit code 2."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print("[bold yellow]interrupted:[/] re-run the same command to continue from the last finished step/epoch")
        raise typer.Exit(130) from None
    except (ValueError, FloatingPointError, RuntimeError) as err:  # NonFiniteLoss is a FloatingPointError
        if not _known(err):
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as err:  # a missing, unreadable, read-only or full file or folder: the message names it
        text = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
        err_console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _known(err: BaseException) -> bool:
    """Errors that describe bad input: ValueError (ManifestError, ShardError, MediaError,
    CheckpointError, ...), a non-finite loss, and the loader's GpuDecodeError (looked up only if
    the loader ran, so that answering an input error never imports torch)."""
    import sys

    if isinstance(err, (ValueError, FloatingPointError)):
        return True
    loader = sys.modules.get("pipelines.loader")
    return loader is not None and isinstance(err, loader.GpuDecodeError)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"s4d {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    """S4D: Static for Dynamic facial expression recognition."""
    _DEBUG["on"] = debug


@app.command("import-checkpoint")
def import_checkpoint(
    src: Annotated[Path, typer.Argument(help="Foreign checkpoint: the authors' .pt/.pth (fine-tuned or pre-training) or a VideoMAE-style encoder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination .safetensors (a .json config is written beside it).")],
    num_heads: Annotated[Optional[int], typer.Option(help="Attention heads (not stored in weights; default dim // 64).")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Input size in pixels the model was trained at (default 160).")] = None,
    num_frames: Annotated[Optional[int], typer.Option(help="Frames per clip the model was trained at (default 16).")] = None,
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


@app.command("shards")
def shards(
    manifest: Annotated[Optional[str], typer.Option("--manifest", "-m", help="Manifest name (resolved in manifests/) or path.")] = None,
    raw: Annotated[Optional[Path], typer.Option("--raw", help="Root of the raw release, laid out as its owners ship it.")] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Own data: CSV of path,label[,split|fold]; a manifest is made from it.")] = None,
    align: Annotated[bool, typer.Option("--align/--no-align", help="With --csv: MTCNN-align faces (off for face crops).")] = True,
    size: Annotated[int, typer.Option(min=16, help="With --csv: stored frame side in pixels.")] = 160,
    frames: Annotated[int, typer.Option(min=1, help="With --csv: frames per training clip.")] = 16,
    stride: Annotated[int, typer.Option(min=1, help="With --csv: stride between sampled frames.")] = 4,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: DATA_ROOT/<manifest name>).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where generated data lives (default ./data).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")] = 1,
    part: Annotated[str, typer.Option("--part", help="Process only part i of n (e.g. 0/4) of the shards; for several hosts.")] = "0/1",
    device: Annotated[Optional[str], typer.Option(help="MTCNN device (default: cuda if present, else cpu).")] = None,
    merge_only: Annotated[bool, typer.Option("--merge-only", help="Only merge finished shards into index.parquet and shards.json.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be written (counts per partition and class, problems, the release form found); decodes nothing, writes nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print the report as one JSON object.")] = False,
    max_skipped: Annotated[float, typer.Option(min=0.0, max=1.0, help="Exit 2 when more than this share of the listed samples "
                                                                     "is skipped (the shards are still written).")] = 0.05,
    min_face_frames: Annotated[Optional[int], typer.Option(min=1, help="With alignment: keep a clip with at least this many face "
                                                                      "frames, stored over the span where the face is "
                                                                      "(default: one training window, frames x stride).")] = None,
) -> None:
    """Preprocess a raw dataset into WebDataset shards (resumable: re-run to continue)."""
    from preprocess.lock import folder_lock
    from preprocess.manifest import load_manifest
    from preprocess.own_data import manifest_from_csv
    from preprocess.run import parse_part

    with one_line_errors():
        if (manifest is None) == (csv is None):
            raise ValueError("give exactly one of --manifest (with --raw) or --csv")
        if csv is not None:
            m = manifest_from_csv(csv, align=align, size=size, frames=frames, stride=stride)
            raw = csv.resolve().parent
        else:
            m = load_manifest(manifest)
            if raw is None:
                raise ValueError("--raw is required with --manifest: the folder of the raw release")
        if as_json and not dry_run:
            raise ValueError("--json goes with --dry-run")
        if min_face_frames is not None:
            import dataclasses

            m = dataclasses.replace(m, preprocess=dataclasses.replace(m.preprocess, min_face_frames=min_face_frames))
        if dry_run:
            from preprocess.dryrun import dry_run as list_release, print_report

            report = list_release(m, raw)
            if as_json:
                typer.echo(json.dumps(report))
            else:
                print_report(report, Console())
            return
        target = out or m.shard_dir(data_root)
        # a second `s4d shards` on the same folder (or the same --part of it) would corrupt its outputs
        i, n = parse_part(part)
        lock = (".s4d.lock", "this shard folder") if n == 1 else (f".s4d.lock.part-{i}-of-{n}", f"part {i}/{n} of this shard folder")
        with folder_lock(target, lock[1], lock[0]):
            result = _write_shards(m, raw, target, merge_only, workers, part, device)
        if result is None:
            return
    _finish_shards(result, target, csv, max_skipped)


def _write_shards(m, raw, target, merge_only, workers, part, device):
    """Shards + index for one manifest into ``target``; None while other --part jobs are pending."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from preprocess.run import finalize, parse_part, run_shards

    (target / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2) + "\n")  # the manifest the shards were made with
    if not merge_only:
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True) as progress:
            bar = progress.add_task(f"{m.name}: shards", total=None)
            summary = run_shards(m, raw, target, workers=workers, part=parse_part(part), device=device,
                                 on_progress=lambda done, total: progress.update(bar, completed=done, total=total))
        typer.echo(f"{m.name}: {summary.done_now} shard(s) written now, {summary.done_before} already done, "
                   f"{summary.problems} sample problem(s) in this run")
        if summary.pending:
            typer.echo(f"{len(summary.pending)} shard(s) belong to other --part jobs; when every part has finished, "
                       "run the same command with --merge-only")
            return None
    return finalize(m, target)


def _finish_shards(result, target, csv, max_skipped) -> None:
    from preprocess.run import shortfalls

    _print_counts(result)
    typer.echo(f"wrote {target / 'shards.json'} and {target / 'index.parquet'}")
    if csv is not None:
        typer.echo(f"manifest for training: {target / 'manifest.json'}")
    short = shortfalls(result, max_skipped)
    if short:
        err_console.print(f"[bold red]error:[/] {'; '.join(short)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def _print_counts(summary: dict) -> None:
    from preprocess.run import kept_and_skipped

    total = sum(summary["counts"].values())
    typer.echo(f"{summary['manifest']}: {total} samples in {len(summary['shards'])} shard(s): "
               + ", ".join(f"{p} {k} kept / {s} skipped" for p, (k, s) in kept_and_skipped(summary).items()))
    if summary["problems"]:
        typer.echo(f"{len(summary['problems'])} sample(s) skipped, with reasons in shards.json, e.g.: {summary['problems'][0]['reason']}")
    if summary.get("excluded"):
        typer.echo("excluded on purpose: " + ", ".join(f"{k} {v}" for k, v in summary["excluded"].items()))
    for p, d in summary.get("expected_mismatch", {}).items():
        typer.echo(f"warning: partition {p}: expected {d['expected']} samples, wrote {d['written']}")


@app.command("inspect")
def inspect(
    target: Annotated[str, typer.Argument(help="A shard folder (with index.parquet) or a manifest name/path.")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where generated data lives (default ./data).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check everything: every tar against its sha256, every .idx against its tar, every index row against its sample's own record, nothing unlisted.")] = False,
) -> None:
    """Counts per partition and class, and face-detection statistics, of preprocessed shards."""
    from preprocess.inspect import describe, verify_folder

    with one_line_errors():
        checked = verify_folder(target, data_root) if verify else None  # first: describing broken data would fail vaguely
        typer.echo(describe(target, data_root))
        if checked:
            typer.echo(checked)


# ----------------------------------------------------------------------------- training
ManifestOpt = Annotated[str, typer.Option("--manifest", "-m", help="Video manifest name (in manifests/) or path (own data: DIR/manifest.json).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/<manifest>[-<fold>]).")]
VariantOpt = Annotated[str, typer.Option(help="s4d | vit | vit-mtl | vit-moe")]
SizeOpt = Annotated[str, typer.Option(help="debug | small | base")]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs.")]
VideoBatchOpt = Annotated[int, typer.Option(min=1, help="Video clips per batch (per process).")]
ImageBatchOpt = Annotated[int, typer.Option(min=1, help="Still images per batch (per process).")]
SferOpt = Annotated[bool, typer.Option("--sfer/--no-sfer", help="Joint training with the manifest's still-image source.")]
InitOpt = Annotated[Optional[Path], typer.Option(help="Initialise the encoder from a checkpoint (ours, or the authors' pre-trained file).")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where shards live (default ./data).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of sampling, augmentation and initialisation.")]
LrOpt = Annotated[float, typer.Option(help="Peak lr at a video batch of 32 (scaled linearly with the batch).")]
BackendOpt = Annotated[str, typer.Option(help="Loader: auto | dali | torch.")]
AmpOpt = Annotated[str, typer.Option(help="Mixed precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 | off.")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")]
AccumOpt = Annotated[int, typer.Option(min=1, help="Batches accumulated per optimiser step (the lr scales with the effective batch).")]
AlphaOpt = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Loss weight A of video batches, 1 - A of image batches "
                                                   "(default: weight 1 on both, as the reference).")]
SelectOpt = Annotated[str, typer.Option(help="Checkpoint reported beside the last epoch: last | val (best on a held-out part of the "
                                             "training fold) | test (the authors' protocol, best on the test split; labelled "
                                             "test-selected).")]
ValFractionOpt = Annotated[float, typer.Option(help="--select val: share of the training fold held out (class-stratified, seeded).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(min=1, help="DALI decoding threads per process (default: the CPU cores "
                                                                 "per rank on this node).")]
SelectMetricOpt = Annotated[str, typer.Option(help="--select val: uar | war (--select test always uses top-1, as the authors).")]


def _train_config(manifest, out, fold, variant, size, epochs, video_batch, image_batch, sfer, init, data_root, seed, lr, backend,
                  amp="auto", compile_=False, accum=1, alpha=None, select="last", val_fraction=0.1, select_metric="uar",
                  threads=None):
    from .train.finetune import TrainConfig
    from .train.optim import OptimConfig

    default_out = Path("runs") / (Path(manifest).stem if not Path(manifest).name == "manifest.json" else Path(manifest).parent.name)
    return TrainConfig(
        manifest=manifest, out=str(out or (default_out if fold is None else Path(f"{default_out}-{fold}"))), fold=fold,
        variant=variant, size=size, epochs=epochs, video_batch=video_batch, image_batch=image_batch, sfer=sfer,
        init=str(init) if init else None, data_root=str(data_root) if data_root else None, seed=seed, backend=backend,
        amp=amp, compile=compile_, accum=accum, alpha=alpha, select=select, val_fraction=val_fraction, select_metric=select_metric,
        loader_threads=threads, optim=OptimConfig(base_lr=lr),
    )


@app.command("train")
def train_cmd(
    manifest: ManifestOpt,
    out: OutOpt = None,
    fold: Annotated[Optional[str], typer.Option(help="Fold name (default: the manifest's first).")] = None,
    variant: VariantOpt = "s4d",
    size: SizeOpt = "base",
    epochs: EpochsOpt = 100,
    video_batch: VideoBatchOpt = 16,
    image_batch: ImageBatchOpt = 32,
    sfer: SferOpt = True,
    init: InitOpt = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    lr: LrOpt = 4e-5,
    backend: BackendOpt = "auto",
    amp: AmpOpt = "auto",
    compile_: CompileOpt = False,
    accum: AccumOpt = 1,
    alpha: AlphaOpt = None,
    select: SelectOpt = "last",
    val_fraction: ValFractionOpt = 0.1,
    select_metric: SelectMetricOpt = "uar",
    threads: ThreadsOpt = None,
) -> None:
    """Fine-tune on one fold (jointly with the still-image source); re-run to resume."""
    from .train.finetune import train

    with one_line_errors():
        cfg = _train_config(manifest, out, fold, variant, size, epochs, video_batch, image_batch, sfer, init, data_root, seed, lr, backend,
                            amp, compile_, accum, alpha, select, val_fraction, select_metric, threads)
        train(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("cv")
def cv_cmd(
    manifest: ManifestOpt,
    out: OutOpt = None,
    variant: VariantOpt = "s4d",
    size: SizeOpt = "base",
    epochs: EpochsOpt = 100,
    video_batch: VideoBatchOpt = 16,
    image_batch: ImageBatchOpt = 32,
    sfer: SferOpt = True,
    init: InitOpt = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    lr: LrOpt = 4e-5,
    backend: BackendOpt = "auto",
    amp: AmpOpt = "auto",
    compile_: CompileOpt = False,
    accum: AccumOpt = 1,
    alpha: AlphaOpt = None,
    select: SelectOpt = "last",
    val_fraction: ValFractionOpt = 0.1,
    select_metric: SelectMetricOpt = "uar",
    threads: ThreadsOpt = None,
) -> None:
    """Train and test every fold (resumable), then pool all folds' predictions into one UAR/WAR."""
    from .train.finetune import cross_validate

    with one_line_errors():
        cfg = _train_config(manifest, out, None, variant, size, epochs, video_batch, image_batch, sfer, init, data_root, seed, lr, backend,
                            amp, compile_, accum, alpha, select, val_fraction, select_metric, threads)
        cross_validate(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("eval")
def eval_cmd(
    manifest: ManifestOpt,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Our .safetensors or the authors' fine-tuned file.")],
    fold: Annotated[Optional[str], typer.Option(help="Fold whose test set to use (default: the first).")] = None,
    task: Annotated[Optional[str], typer.Option(help="Head to use: video | image (default: the manifest's modality).")] = None,
    out: OutOpt = None,
    data_root: DataRootOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """Test protocol on a manifest's test set: UAR, WAR, per-class recall, confusion matrix."""
    from .train.evaluate import evaluate_checkpoint

    with one_line_errors():
        target = out or Path("runs") / f"eval-{Path(manifest).stem}-{fold or 'main'}"
        evaluate_checkpoint(manifest, str(checkpoint), out=str(target), fold=fold, task=task,
                            data_root=str(data_root) if data_root else None, backend=backend, log=typer.echo)
    typer.echo(f"outputs in {target}")


@app.command("predict")
def predict_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Videos (any container/codec PyAV reads) or still images.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Our .safetensors or the authors' fine-tuned file.")],
    out: Annotated[Optional[Path], typer.Option(help="Per-window results: a .json or .csv file (a folder for several inputs).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Timeline PNG of class probabilities (a folder for several inputs).")] = None,
    hop: Annotated[Optional[int], typer.Option(help="Frames between window starts (default: half a window).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Frame stride in a window (default: the checkpoint's training stride).")] = None,
    align: Annotated[bool, typer.Option("--align/--no-align", help="Find, follow and align the face; --no-align for videos that are already face crops.")] = True,
    classes: Annotated[Optional[str], typer.Option(help="Class names for checkpoints without them: 'a,b,c' or a manifest (e.g. dfew).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
) -> None:
    """Emotion of the main face in a raw video (per-window timeline) or a still image."""
    from .infer import PredictConfig, Predictor, plot_timeline, summary_line, write_output

    from preprocess.media import MediaError

    several = len(inputs) > 1
    with one_line_errors():
        if out is not None and not several and out.suffix.lower() not in (".json", ".csv"):
            raise ValueError(f"--out {out}: use a .json or .csv file name")
        predictor = Predictor(PredictConfig(str(checkpoint), hop=hop, stride=stride, align=align, classes=classes, device=device))
    failed = 0
    for path in inputs:
        try:
            result = predictor(path)
        except MediaError as err:  # report it and go on with the other inputs; exit 2 at the end
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        typer.echo(summary_line(result))
        if out is not None:
            typer.echo(f"  windows: {write_output(result, out / f'{path.name}.json' if several else out)}")
        if plot is not None:
            typer.echo(f"  timeline: {plot_timeline(result, plot / f'{path.name}.png' if several else plot)}")
    if failed:
        raise typer.Exit(2)


@app.command("pretrain")
def pretrain_cmd(
    manifest: Annotated[str, typer.Option("--manifest", "-m", help="Pre-training mixture (default manifests/pretrain.json).")] = "pretrain",
    out: OutOpt = None,
    size: SizeOpt = "base",
    epochs: EpochsOpt = 100,
    video_batch: Annotated[int, typer.Option(min=1, help="Video clips per step (per process), each seen as the mixture's views.")] = 48,
    image_batch: ImageBatchOpt = 192,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    lr: Annotated[float, typer.Option(help="Peak lr at 512 samples per step (scaled linearly; video samples = clips x views).")] = 1.6e-3,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Dual-modal MAE pre-training on videos and still images (re-run to resume)."""
    import dataclasses

    from .train.pretrain import PretrainConfig, pretrain

    with one_line_errors():
        cfg = PretrainConfig(mixture=manifest, out=str(out or Path("runs") / f"pretrain-{Path(manifest).stem}"), size=size,
                             epochs=epochs, video_batch=video_batch, image_batch=image_batch,
                             data_root=str(data_root) if data_root else None, seed=seed, backend=backend,
                             loader_threads=threads)
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, base_lr=lr))
        pretrain(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out} (encoder for fine-tuning: s4d train --init {cfg.out}/checkpoints/last.safetensors)")


@app.command("doctor")
def doctor_cmd(
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON list of {name, status, detail} instead of rows.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda[:N]")] = "auto",
    debug: Annotated[bool, typer.Option(help="Keep the traceback of a failed check in its detail.")] = False,
) -> None:
    """Check this installation: environment, shards, DALI decoding on CPU and GPU, GPU
    augmentation, MoAE kernels, attention, host syncs, the process group, and one short
    fine-tuning and MAE epoch. GPU checks say "skipped" without CUDA. Exit 1 if any check fails."""
    from .doctor import run_checks
    from .doctor.checks import CHECKS
    from .runtime import resolve_device

    with one_line_errors():
        dev = resolve_device(device)

    def row(r) -> None:
        if not json_:
            figures = ", ".join(f"{k} {v}" for k, v in r.detail.items() if k != "traceback")
            typer.echo(f"{r.name:<30} {r.status:<10} {figures}" if r.status == "ok" else f"{r.name:<30} {r.status}")
            if "traceback" in r.detail:
                typer.echo(r.detail["traceback"], err=True)

    results = run_checks(CHECKS, dev, on_result=row, debug=debug)
    if json_:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    failed = [r.name for r in results if r.failed]
    if not json_:
        typer.echo(f"{len(results) - len(failed)} of {len(results)} checks did not fail"
                   + (f"; failed: {', '.join(failed)}" if failed else ""))
    raise typer.Exit(1 if failed else 0)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder for the generated data and runs.")] = Path("demo"),
    epochs: EpochsOpt = 60,
    seed: SeedOpt = 0,
) -> None:
    """The whole system on a generated face-expression dataset (shards, pretrain, train, eval)."""
    from .demo.run import run_demo

    with one_line_errors():
        summary = run_demo(out, epochs=epochs, seed=seed, log=typer.echo)
    run = out / "runs" / "train"
    ckpt = summary["checkpoint"]
    order = summary["analysis"]["frame_order"]
    pair = ("happy_onset", "happy_offset")
    typer.echo(f"\ndemo finished in {summary['seconds']:.0f} s: test UAR {100 * summary['uar']:.1f}%  WAR {100 * summary['war']:.1f}% "
               f"(4 classes, chance 25%)")
    typer.echo("frame order matters: recall of " + ", ".join(
        f"{c} {100 * order['recall'][c]:.0f}% -> {100 * order['recall_shuffled'][c]:.0f}%" for c in pair) + " with the frames shuffled")
    pred = summary["timeline"]["prediction"]
    typer.echo(f"predict on a new face acting all four (demo/story.webm): {pred['class']} {pred['probability']:.2f} overall")
    typer.echo("plots:")
    for path in (run / "confusion.png", run / "recall.png", summary["timeline"]["plot"], summary["analysis"]["experts"]["plot"],
                 summary["analysis"]["relevance"]["plot"]):
        typer.echo(f"  {path}")
    typer.echo("try next:")
    typer.echo(f"  s4d predict {summary['timeline']['video']} -c {ckpt} --no-align --hop 2 --plot story.png --out story.csv")
    typer.echo(f"  s4d eval -m {out}/manifests/demo_videos.json -c {ckpt} --data-root {out}/data --task image   # the image head on clips")
    typer.echo(f"  s4d analyze experts -m {out}/manifests/demo_videos.json -c {ckpt} --data-root {out}/data")
    typer.echo(f"  s4d inspect {out}/data/demo_videos")


analyze_app = typer.Typer(no_args_is_help=True, help="The paper's analyses of a trained model, as PNG + JSON.")
app.add_typer(analyze_app, name="analyze")
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="A fine-tuned checkpoint.")]
AnalyzeOutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNG + JSON (default runs/analyze-<manifest>).")]
FoldOpt = Annotated[Optional[str], typer.Option(help="Fold whose test split to use (default: the first).")]
LimitOpt = Annotated[int, typer.Option(help="At most this many samples per task (a random, fixed subset).")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda[:N]")]


def _analyze(kind: str, checkpoint: Path, manifest: str, fold, out, data_root, limit: int, backend: str, device: str) -> None:
    from .analysis.run import analyze_experts, analyze_relevance, collect_tasks
    from .runtime import resolve_device

    with one_line_errors():
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        resolve_device(device)
        target = out or Path("runs") / f"analyze-{Path(manifest).stem}"
        collected = collect_tasks(str(checkpoint), manifest, fold=fold, data_root=str(data_root) if data_root else None,
                                  limit=limit, backend=backend, device=device)
        ckpt = Path(checkpoint)
        title = f"{ckpt.parent.parent.name if ckpt.parent.name == 'checkpoints' else ckpt.stem} on {Path(manifest).stem}"
        result = (analyze_experts if kind == "experts" else analyze_relevance)(collected, target, title)
    if kind == "experts" and "task_difference" in result:
        diff = ", ".join(f"block {b}: {v:.2f}" for b, v in result["task_difference"].items())
        typer.echo(f"routing difference video vs image (0 = same experts, 1 = disjoint): {diff}")
    if kind == "relevance":
        typer.echo("closest still-image class: " + ", ".join(f"{v} -> {i}" for v, i in result["closest_image_class"].items()))
    typer.echo(f"{kind}: {result['plot']} and {Path(result['plot']).with_suffix('.json')}")


@analyze_app.command("experts")
def analyze_experts_cmd(checkpoint: CheckpointOpt, manifest: ManifestOpt, fold: FoldOpt = None,
                        out: AnalyzeOutOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = 1000, backend: BackendOpt = "auto",
                        device: DeviceOpt = "auto") -> None:
    """Mean gate weight of each expert per MoAE layer, video vs still-image inputs (Fig. 5)."""
    _analyze("experts", checkpoint, manifest, fold, out, data_root, limit, backend, device)


@analyze_app.command("relevance")
def analyze_relevance_cmd(checkpoint: CheckpointOpt, manifest: ManifestOpt, fold: FoldOpt = None,
                          out: AnalyzeOutOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = 1000, backend: BackendOpt = "auto",
                          device: DeviceOpt = "auto") -> None:
    """Cosine similarity of class centres, video classes x still-image classes (Fig. 4)."""
    _analyze("relevance", checkpoint, manifest, fold, out, data_root, limit, backend, device)


@analyze_app.command("order")
def analyze_order_cmd(checkpoint: CheckpointOpt, manifest: ManifestOpt, fold: FoldOpt = None,
                      out: AnalyzeOutOpt = None, data_root: DataRootOpt = None, backend: BackendOpt = "auto", device: DeviceOpt = "auto") -> None:
    """Does the model use time? Test-set recall with frames in order vs shuffled within each clip."""
    from .analysis.run import frame_order_test
    from .runtime import resolve_device

    with one_line_errors():
        resolve_device(device)
        result = frame_order_test(str(checkpoint), manifest, fold=fold, data_root=str(data_root) if data_root else None,
                                  backend=backend, device=device)
        target = out or Path("runs") / f"analyze-{Path(manifest).stem}"
        target.mkdir(parents=True, exist_ok=True)
        (target / "frame_order.json").write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(f"UAR {100 * result['uar']:.1f}% in order, {100 * result['uar_shuffled']:.1f}% with frames shuffled")
    for c in result["classes"]:
        typer.echo(f"  {c}: {100 * result['recall'][c]:.1f}% -> {100 * result['recall_shuffled'][c]:.1f}%")
    typer.echo(f"written: {target / 'frame_order.json'}")


@analyze_app.command("scores")
def analyze_scores_cmd(
    run: Annotated[Path, typer.Argument(help="Output folder of s4d eval, train or cv (with summary.json).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the figures (default: the run folder).")] = None,
) -> None:
    """Confusion matrix and per-class recall bars of an evaluation (Fig. 7)."""
    from .analysis.run import analyze_scores

    with one_line_errors():
        result = analyze_scores(run, out)
    typer.echo(f"UAR {100 * result['uar']:.2f}: " + " and ".join(result["plots"]))
    if result["most_confused"]:
        mc = result["most_confused"]
        typer.echo(f"most confused: {mc['true']} predicted as {mc['predicted']} ({mc['count']} samples)")
