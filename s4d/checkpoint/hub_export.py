"""``s4d export-hub RUN -o DIR``: a run folder as a folder ready for ``huggingface-cli upload``.

DIR holds ``model.safetensors`` and ``model.json`` (our checkpoint and its config sidecar, so
``hf://OWNER/REPO/model.safetensors`` loads it), ``training_config.json`` (the run's pinned
``config.json``), the run's ``summary.json`` and figures, and ``README.md``: a model card with
Hub metadata (``model-index`` scores) and, in words, the model, the training data, which
checkpoint this is and by which protocol it was chosen, and every score the run measured, each
under its own label (last epoch / val-selected / test-selected as the authors; pooled over the
folds of ``s4d cv`` when RUN is one of its folds).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from preprocess.errors import InputError
from preprocess.manifest import read_json_file
from preprocess.ownership import check, claim
from preprocess.safe_io import open_new, refuse_symlink, write_text

from .format import checkpoint_meta, read_checkpoint, sidecar
from .keymap import CheckpointError

WHICH = ("last", "best")


def export_hub(run: Path, out: Path, which: str = "last", *, force: bool = False) -> Path:
    """Write the upload folder ``out`` for ``run``'s ``which`` checkpoint; returns the card.
    ``out`` holds only what this export writes (``preprocess.ownership``, kind export-hub): a new
    or empty folder, or with ``force`` one of an earlier export, whose files are removed first
    (no stale figure stays); never a training run's folder."""
    run, out = Path(run), Path(out)
    if which not in WHICH:
        raise InputError(f"--checkpoint must be last or best, got {which!r}")
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder")
    check(out, "export-hub", force=force)  # refused before the work
    folds = sorted(p.name for p in run.glob("fold_*") if (p / "checkpoints").is_dir())
    if not (run / "checkpoints").is_dir() and folds:
        raise InputError(
            f"{run}: an s4d cv folder holds one model per fold; export one of them, e.g. {run / folds[0]} (its card includes the pooled scores)"
        )
    refuse_symlink(run / "checkpoints")
    ckpt = refuse_symlink(run / "checkpoints" / f"{which}.safetensors")
    if not ckpt.is_file():
        hint = " (best exists only for runs with --select val or test)" if which == "best" else ""
        raise InputError(f"{ckpt}: no such checkpoint{hint}")
    config = _read_json(run / "config.json")
    pretrain = "mixture" in config
    summary = None if pretrain else _read_json(run / "summary.json", "the run has not finished: run the same command to finish it")
    meta = checkpoint_meta(ckpt)
    if not meta:
        raise CheckpointError(f"{sidecar(ckpt)}: missing; a run folder's checkpoints always have their config sidecar")
    if which == "best" and summary is not None and summary.get("selected", {}).get("epoch") != meta.get("epoch"):
        raise InputError(f"{ckpt}: epoch {meta.get('epoch')} is not the selected epoch of {run / 'summary.json'}")
    read_checkpoint(ckpt)  # finite weights, unchanged since saved (its sha256): never publish a damaged file
    pooled = _pooled(run)
    claim(out, "export-hub", force=force)  # created and marked; an earlier export's files removed (force)
    _copy_regular(ckpt, out / "model.safetensors")
    write_text(out / "model.json", json.dumps(meta, indent=2) + "\n")
    write_text(out / "training_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    selected = run / "selected"
    source = selected if which == "best" and selected.is_dir() and not selected.is_symlink() else run
    for name in ("summary.json", "confusion.png", "recall.png"):
        if (source / name).is_symlink():  # e.g. a "figure" pointing at a private key: never uploaded
            print(f"export-hub: skipped {source / name}: a symbolic link, not a file the run wrote", file=sys.stderr)
        elif (source / name).is_file():
            _copy_regular(source / name, out / name)
    card = out / "README.md"
    name = f"{run.resolve().parent.name}-{run.name}" if run.name.startswith("fold_") else run.resolve().name
    write_text(card, model_card(meta, config, summary, which, pooled, name))
    return card


def _copy_regular(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` only if it is a regular file, following a symlink at neither end."""
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        refuse_symlink(src)  # ELOOP: say which link
        raise
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise InputError(f"{src}: not a regular file; refusing to copy it")
        with open_new(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _read_json(path: Path, missing: str = "missing") -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    value = read_json_file(path)
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _pooled(run: Path) -> dict[str, Any] | None:
    """The pooled cv summary when ``run`` is a fold of ``s4d cv`` (``<cv>/fold_<f>``)."""
    parent = run.parent / "summary.json"
    if not run.name.startswith("fold_") or not parent.is_file():
        return None
    summary = _read_json(parent)
    return summary if run.name[len("fold_") :] in summary.get("folds", {}) else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def model_card(
    meta: dict[str, Any], config: dict[str, Any], summary: dict[str, Any] | None, which: str, pooled: dict[str, Any] | None, name: str
) -> str:
    """README.md for the Hub: YAML front matter (tags, ``model-index``) and the card's text."""
    model = meta.get("config", {})
    classes = model.get("class_names", {})
    dataset = meta.get("manifest") or meta.get("mixture") or config.get("manifest") or config.get("mixture")
    fold = meta.get("fold")
    rows = _score_rows(summary, pooled, which)
    lines = [
        "---",
        "library_name: s4d",
        "license: other",
        "tags: [facial-expression-recognition, dynamic-facial-expression-recognition, video-classification, mixture-of-experts, s4d]",
        "pipeline_tag: video-classification",
    ]
    if rows:
        lines += [
            "model-index:",
            f"- name: {json.dumps(name)}",
            "  results:",
            "  - task:",
            "      type: video-classification",
            "      name: Dynamic facial expression recognition",
            "    dataset:",
            f"      name: {json.dumps(f'{dataset} fold {fold}' if fold else str(dataset))}",
            f"      type: {json.dumps(str(dataset))}",
            "    metrics:",
        ]
        for label, s, _ in rows:
            for metric in ("uar", "war"):
                lines += [
                    f"    - type: {metric}",
                    f"      value: {round(100 * s[metric], 2)}",
                    f"      name: {json.dumps(f'{metric.upper()} ({label})')}",
                ]
    lines += ["---", "", f"# S4D: {name}", ""]
    if summary is None:
        lines += [
            f"A ViT encoder pre-trained as a masked autoencoder on the mixture `{dataset}` (S4D's dual-modal "
            f"pre-training, {config.get('epochs')} epochs). Fine-tune it with "
            "`s4d train --manifest NAME --init hf://OWNER/REPO/model.safetensors`.",
            "",
        ]
    else:
        video = classes.get("video") or [f"class {i}" for i in range(model.get("heads", {}).get("video", 0))]
        lines += [
            f"An S4D model, variant `{config.get('variant', 's4d')}` (ViT {config.get('size', '?')}"
            f"{', Mixture of Adapter Experts in blocks ' + ', '.join(map(str, model['moae']['blocks'])) if model.get('moae') else ''})"
            f" that recognises {len(video)} expressions in face video clips: {', '.join(video)}.",
            "",
        ]
        if "image" in classes:
            lines += [f"It also has a still-image head ({', '.join(classes['image'])}).", ""]
        lines += [
            "## Training data",
            "",
            f"- Video dataset: `{dataset}`" + (f", fold `{fold}`" if fold else ""),
            f"- Still images trained jointly: {'yes, the manifest' + chr(39) + 's still-image source' if config.get('sfer') else 'no'}"
            + (f" (proportion {config['proportion']})" if config.get("proportion") is not None else ""),
            f"- Initialisation: `{config.get('init') or 'random'}`",
            f"- {config.get('epochs')} epochs, seed {config.get('seed')}; the whole configuration is in `training_config.json`",
            "",
        ]
        lines += [
            "## Which checkpoint, and its scores",
            "",
            f"This is the **{'last epoch' if which == 'last' else 'selected epoch'}** of the run "
            f"(epoch {meta.get('epoch', '?') + 1 if isinstance(meta.get('epoch'), int) else '?'}). Scores on the test split, "
            "each labelled with how its checkpoint was chosen (UAR: mean recall over classes; WAR: accuracy):",
            "",
            "| checkpoint | chosen by | UAR % | WAR % | videos |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, s, how in rows:
            lines.append(f"| {label} | {how} | {_pct(s['uar'])} | {_pct(s['war'])} | {s.get('count', '?')} |")
        lines += [
            "",
            "Only a last-epoch or val-selected score is an unbiased estimate; test-selected scores (the "
            "authors' protocol, best epoch on the test split) are optimistic.",
            "",
        ]
    inp = meta.get("input") or {}
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install .   # in the S4D repository",
        "s4d predict video.mp4 -c hf://OWNER/REPO/model.safetensors",
        "```",
        "",
        "```python",
        "from s4d import load_model",
        'model = load_model("hf://OWNER/REPO/model.safetensors")',
        "```",
        "",
    ]
    if inp:
        lines += [
            f"Input, as in training: {model.get('encoder', {}).get('num_frames', '?')} frames at "
            f"{model.get('encoder', {}).get('img_size', '?')} px, every {inp.get('stride')} frames at {inp.get('fps')} fps, "
            f"faces {'MTCNN-aligned' if inp.get('align') else 'as given'} ({inp.get('geometry')} framing); "
            "`s4d predict` prepares a raw video the same way from `model.json`.",
            "",
        ]
    lines += [
        "## Licence",
        "",
        "The code is MIT. These weights derive from the training datasets above, whose licences "
        "(DFEW, FERV39K, MAFW, AffectNet: research, non-commercial) bind their use; check them before you use the model.",
        "",
    ]
    return "\n".join(lines)


def _score_rows(summary: dict[str, Any] | None, pooled: dict[str, Any] | None, which: str) -> list[tuple[str, dict, str]]:
    """(label, scores, how it was chosen) for every score the run measured."""
    if summary is None or "uar" not in summary:
        return []
    rows = [("last epoch" + (" (this file)" if which == "last" else ""), summary.get("last", summary), "nothing: the last epoch")]
    sel = summary.get("selected", {})
    if summary.get("select", "last") != "last" and "uar" in sel:
        label = "test-selected" if summary["select"] == "test" else "val-selected"
        rows.append((label + (" (this file)" if which == "best" else ""), sel, sel.get("selected_on", "")))
    if pooled is not None:
        rows.append(("all folds pooled, last epochs", pooled, "s4d cv: the predictions of every fold pooled"))
        psel = pooled.get("selected", {})
        if pooled.get("select", "last") != "last" and "uar" in psel:
            rows.append(("all folds pooled, selected", psel, psel.get("selected_on", "")))
    return rows
