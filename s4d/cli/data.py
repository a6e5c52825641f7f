"""Data commands: ``s4d shards`` (raw release or own CSV -> shards), ``s4d inspect`` and
``s4d import-checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .main import app, err_console, one_line_errors, print_error


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
    from ..checkpoint import load_model, save_checkpoint

    with one_line_errors():
        if out.suffix != ".safetensors":
            raise ValueError(f"--out must end in .safetensors, got {out}")
        model, report = load_model(src, with_report=True, num_heads=num_heads, img_size=img_size, num_frames=num_frames, top_k=top_k)
        path = save_checkpoint(model, out, extra={"imported_from": str(src)})
    typer.echo(report.summary())
    typer.echo(f"wrote {path} and {path.with_suffix('.json')}")


@app.command("shards")
def shards(
    manifest: Annotated[Optional[str], typer.Option("--manifest", "-m", help="Manifest name (resolved in manifests/) or path.")] = None,
    raw: Annotated[
        Optional[Path],
        typer.Option("--raw", help="Root of the raw release, laid out as its owners ship it (default: $S4D_RAW/<name>, else ./raw/<name>)."),
    ] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Own data: CSV of path,label[,split|fold]; a manifest is made from it.")] = None,
    align: Annotated[bool, typer.Option("--align/--no-align", help="With --csv: MTCNN-align faces (off for face crops).")] = True,
    size: Annotated[int, typer.Option(min=16, help="With --csv: stored frame side in pixels.")] = 160,
    frames: Annotated[int, typer.Option(min=1, help="With --csv: frames per training clip.")] = 16,
    stride: Annotated[int, typer.Option(min=1, help="With --csv: stride between sampled frames.")] = 4,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: DATA_ROOT/<manifest name>).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where generated data lives (default ./data).")] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", "-j", min=1, help="Worker processes (default: one per CPU core this process may use, at most 4 on CUDA)."),
    ] = None,
    part: Annotated[
        str,
        typer.Option("--part", help="Process only part i of n (e.g. 0/4) of the shards, for several hosts; auto: this task of a SLURM job array."),
    ] = "0/1",
    device: Annotated[Optional[str], typer.Option(help="MTCNN device (default: cuda if present, else cpu).")] = None,
    merge_only: Annotated[bool, typer.Option("--merge-only", help="Only merge finished shards into index.parquet and shards.json.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only list what would be written (counts per partition and class, problems, the release form found); "
            "decodes nothing, writes nothing.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print the report as one JSON object.")] = False,
    max_skipped: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Exit 2 when more than this share of the listed samples is skipped (the shards are still written)."),
    ] = 0.05,
    min_face_frames: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="With alignment: keep a clip with at least this many face "
            "frames, stored over the span where the face is "
            "(default: one training window, frames x stride).",
        ),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels",
            min=1,
            envvar="S4D_MAX_PIXELS",
            help="Refuse (as a skipped sample) a video or image whose header declares more pixels per frame (width x height), before decoding it.",
        ),
    ] = 4096 * 4096,
    max_frames: Annotated[
        int,
        typer.Option(
            "--max-frames",
            min=1,
            envvar="S4D_MAX_FRAMES",
            help="Refuse (as a skipped sample) a video or frame folder that declares or holds more frames.",
        ),
    ] = 100_000,
) -> None:
    """Preprocess a raw dataset into WebDataset shards (resumable: re-run to continue)."""
    import os

    from preprocess.media import FRAMES_ENV, PIXELS_ENV

    os.environ[PIXELS_ENV], os.environ[FRAMES_ENV] = str(max_pixels), str(max_frames)  # read by every worker process
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
            if raw is None and not merge_only:
                from preprocess.manifest import locate_raw

                raw = locate_raw(m.name)
                typer.echo(f"{m.name}: raw release {raw}")
        if as_json and not dry_run:
            raise ValueError("--json goes with --dry-run")
        if min_face_frames is not None:
            import dataclasses

            m = dataclasses.replace(m, preprocess=dataclasses.replace(m.preprocess, min_face_frames=min_face_frames))
        if dry_run:
            from preprocess.dryrun import dry_run as list_release
            from preprocess.dryrun import print_report

            report = list_release(m, raw)
            if as_json:
                typer.echo(json.dumps(report))
            else:
                print_report(report, Console())
            return
        target = out or m.shard_dir(data_root)
        if workers is None and not merge_only:
            from preprocess.run import default_workers

            workers, why = default_workers(device)
            typer.echo(f"{m.name}: {workers} worker process(es) ({why})")
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

    from preprocess.run import parse_part, run_shards
    from preprocess.shards.folder import finalize

    (target / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2) + "\n")  # the manifest the shards were made with
    if not merge_only:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            bar = progress.add_task(f"{m.name}: shards", total=None)
            summary = run_shards(
                m,
                raw,
                target,
                workers=workers,
                part=parse_part(part),
                device=device,
                on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
        typer.echo(
            f"{m.name}: {summary.done_now} shard(s) written now, {summary.done_before} already done, {summary.problems} sample problem(s) in this run"
        )
        if summary.pending:
            typer.echo(
                f"{len(summary.pending)} shard(s) belong to other --part jobs; when every part has finished, run the same command with --merge-only"
            )
            return None
    return finalize(m, target)


def _finish_shards(result, target, csv, max_skipped) -> None:
    from preprocess.shards.folder import shortfalls

    _print_counts(result)
    typer.echo(f"wrote {target / 'shards.json'} and {target / 'index.parquet'}")
    if csv is not None:
        typer.echo(f"manifest for training: {target / 'manifest.json'}")
    short = shortfalls(result, max_skipped)
    if short:
        print_error("; ".join(short))
        raise typer.Exit(2)


def _print_counts(summary: dict) -> None:
    from preprocess.shards.folder import kept_and_skipped

    total = sum(summary["counts"].values())
    typer.echo(
        f"{summary['manifest']}: {total} samples in {len(summary['shards'])} shard(s): "
        + ", ".join(f"{p} {k} kept / {s} skipped" for p, (k, s) in kept_and_skipped(summary).items())
    )
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
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check everything: every tar against its sha256, every .idx against its tar, every index row against its "
            "sample's own record, nothing unlisted.",
        ),
    ] = False,
) -> None:
    """Counts per partition and class, and face-detection statistics, of preprocessed shards."""
    from preprocess.inspect import describe, verify_folder

    with one_line_errors():
        checked = verify_folder(target, data_root) if verify else None  # first: describing broken data would fail vaguely
        typer.echo(describe(target, data_root))
        if checked:
            typer.echo(checked)
