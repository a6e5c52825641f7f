"""Evaluation commands: ``s4d eval`` (the test protocol on a manifest's test set) and the
``s4d analyze`` group (the paper's analyses of a trained model, as PNG + JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .main import app, one_line_errors
from .options import (
    AnalyzeOutOpt,
    BackendOpt,
    CheckpointOpt,
    DataRootOpt,
    DeviceOpt,
    EvalOutOpt,
    FoldOpt,
    ForceOpt,
    ManifestOpt,
    default_out,
    without,
)


@app.command("eval")
def eval_cmd(
    manifest: ManifestOpt,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Our .safetensors or the authors' fine-tuned file.")],
    fold: Annotated[Optional[str], typer.Option(help="Fold whose test set to use (default: the first).")] = None,
    task: Annotated[Optional[str], typer.Option(help="Head to use: video | image (default: the manifest's modality).")] = None,
    out: EvalOutOpt = None,
    data_root: DataRootOpt = None,
    backend: BackendOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Test protocol on a manifest's test set: UAR, WAR, per-class recall, confusion matrix."""
    from preprocess.manifest import load_manifest

    from ..eval.evaluate import evaluate_checkpoint

    with one_line_errors():
        target = out or default_out("eval", manifest, load_manifest(manifest).fold_name(fold))
        evaluate_checkpoint(
            manifest,
            str(checkpoint),
            out=str(target),
            fold=fold,
            task=task,
            data_root=str(data_root) if data_root else None,
            backend=backend,
            force=force,
            log=typer.echo,
        )
    typer.echo(f"outputs in {target}")


analyze_app = typer.Typer(no_args_is_help=True, help="The paper's analyses of a trained model, as PNG + JSON.")
app.add_typer(analyze_app, name="analyze")
LimitOpt = Annotated[int, typer.Option(help="At most this many samples per task (a random, fixed subset).")]


def _analyze(kind: str, checkpoint: Path, manifest: str, fold, out, data_root, limit: int, backend: str, device: str, force: bool) -> None:
    from preprocess.errors import InputError

    from ..analysis.collect import collect_tasks
    from ..analysis.experts import analyze_experts
    from ..analysis.outputs import check_out
    from ..analysis.relevance import analyze_relevance
    from ..runtime import resolve_device

    with one_line_errors():
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        resolve_device(device)
        target = out or default_out("analyze", manifest)
        check_out(target, kind, force=force)  # refused before the work
        collected = collect_tasks(
            str(checkpoint), manifest, fold=fold, data_root=str(data_root) if data_root else None, limit=limit, backend=backend, device=device
        )
        ckpt = Path(checkpoint)
        title = f"{ckpt.parent.parent.name if ckpt.parent.name == 'checkpoints' else ckpt.stem} on {Path(manifest).stem}"
        result = (analyze_experts if kind == "experts" else analyze_relevance)(collected, target, title, force=force)
    if kind == "experts" and "task_difference" in result:
        diff = ", ".join(f"block {b}: {v:.2f}" for b, v in result["task_difference"].items())
        typer.echo(f"routing difference video vs image (0 = same experts, 1 = disjoint): {diff}")
    if kind == "relevance":
        typer.echo("closest still-image class: " + ", ".join(f"{v} -> {i}" for v, i in result["closest_image_class"].items()))
    typer.echo(f"{kind}: {result['plot']} and {Path(result['plot']).with_suffix('.json')}")


@analyze_app.command("experts")
def analyze_experts_cmd(
    checkpoint: CheckpointOpt,
    manifest: ManifestOpt,
    fold: FoldOpt = None,
    out: AnalyzeOutOpt = None,
    data_root: DataRootOpt = None,
    limit: LimitOpt = 1000,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Mean gate weight of each expert per MoAE layer, video vs still-image inputs (Fig. 5)."""
    _analyze("experts", checkpoint, manifest, fold, out, data_root, limit, backend, device, force)


@analyze_app.command("relevance")
@without(analyze_experts_cmd)
def analyze_relevance_cmd(**options) -> None:
    """Cosine similarity of class centres, video classes x still-image classes (Fig. 4)."""
    _analyze("relevance", **options)


@analyze_app.command("order")
def analyze_order_cmd(
    checkpoint: CheckpointOpt,
    manifest: ManifestOpt,
    fold: FoldOpt = None,
    out: AnalyzeOutOpt = None,
    data_root: DataRootOpt = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Does the model use time? Test-set recall with frames in order vs shuffled within each clip."""
    from ..analysis.order import frame_order_test, write_frame_order
    from ..analysis.outputs import check_out
    from ..runtime import resolve_device

    with one_line_errors():
        resolve_device(device)
        target = out or default_out("analyze", manifest)
        check_out(target, "order", force=force)  # refused before the work
        result = frame_order_test(
            str(checkpoint), manifest, fold=fold, data_root=str(data_root) if data_root else None, backend=backend, device=device
        )
        written = write_frame_order(result, target, force=force)
    typer.echo(f"UAR {100 * result['uar']:.1f}% in order, {100 * result['uar_shuffled']:.1f}% with frames shuffled")
    for c in result["classes"]:
        typer.echo(f"  {c}: {100 * result['recall'][c]:.1f}% -> {100 * result['recall_shuffled'][c]:.1f}%")
    typer.echo(f"written: {written}")


@analyze_app.command("scores")
def analyze_scores_cmd(
    run: Annotated[Path, typer.Argument(help="Output folder of s4d eval, train or cv (with summary.json).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Where to write the figures, not a training run's folder (default RUN/analysis).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Confusion matrix and per-class recall bars of an evaluation (Fig. 7)."""
    from ..analysis.scores import analyze_scores

    with one_line_errors():
        result = analyze_scores(run, out, force=force)
    typer.echo(f"UAR {100 * result['uar']:.2f}: " + " and ".join(result["plots"]))
    if result["most_confused"]:
        mc = result["most_confused"]
        typer.echo(f"most confused: {mc['true']} predicted as {mc['predicted']} ({mc['count']} samples)")


@analyze_app.command("attention")
def analyze_attention_cmd(
    checkpoint: Annotated[
        list[Path], typer.Option("--checkpoint", "-c", help="S4D's fine-tuned checkpoint; a second -c is the baseline, drawn in the row under it.")
    ],
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="Videos and/or images (or none, with --manifest).")] = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", "-m", help="Take the inputs from this manifest's test split instead.")] = None,
    fold: FoldOpt = None,
    limit: Annotated[int, typer.Option(help="--manifest: at most this many test samples (a random, fixed subset).")] = 8,
    align: Annotated[
        bool, typer.Option("--align/--no-align", help="Find and align the face as s4d predict does; --no-align: frames as they are.")
    ] = True,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Folder for the PNG + .npy, not a training run's (default runs/analyze-attention).")
    ] = None,
    data_root: DataRootOpt = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Where the model looks (Fig. 6): the last layer's mean-token attention over the frames.

    The classifier pools the mean of its tokens (no CLS token), so the map is the last block's
    attention averaged over heads and over query tokens: each token's weight in the pooled
    feature. Not attention rollout. Only the positive part above uniform is drawn. Writes per
    input attention_<name>.png and the raw map attention_<name>.npy ((T', H/16, W/16) for a video
    clip, (H/16, W/16) for an image; p = the patch side), plus attention.json."""
    from preprocess.errors import InputError

    from ..analysis.attention import analyze_attention
    from ..analysis.attention_inputs import face_path, prepare_files, prepare_manifest
    from ..analysis.outputs import check_out
    from ..checkpoint import load_classifier
    from ..runtime import resolve_device

    with one_line_errors():
        if not 1 <= len(checkpoint) <= 2:
            raise InputError(f"-c: give S4D's checkpoint and at most one baseline, got {len(checkpoint)}")
        if bool(inputs) == bool(manifest):
            raise InputError("give input videos/images or --manifest (one of the two)")
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        dev = resolve_device(device)
        target = out or Path("runs/analyze-attention")
        check_out(target, "attention", force=force)  # refused before the work
        for path in inputs or []:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
        fp = face_path(str(checkpoint[0]), align=align, device=device)
        models = [(str(checkpoint[0]), fp.model)] + [(str(c), load_classifier(str(c)).to(dev).eval()) for c in checkpoint[1:]]
        items = (
            prepare_files(fp, list(inputs))
            if inputs
            else prepare_manifest(
                fp.model, manifest, fold=fold, data_root=str(data_root) if data_root else None, limit=limit, backend=backend, device=dev
            )
        )
        index = analyze_attention(models, items, target, device=dev, force=force)
    for row in index["inputs"]:
        typer.echo(f"{row['input']}: map {tuple(row['shape'])} -> " + ", ".join(row["files"]))
    typer.echo(f"attention ({index['method']}): {target}")
