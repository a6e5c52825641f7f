"""Loading any checkpoint into our models: ``load_model`` (the right model for the file),
``load_classifier`` (a model that classifies, or one clear error), ``init_from_pretrained``
(a fine-tuning model's encoder from a pre-trained or fine-tuned source). Shape mismatches are
always refused; fixed position tables are checked, not loaded."""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from ..models import Classifier, PretrainMAE
from ..models.config import EncoderConfig, MAEConfig, ModelConfig
from ..models.pos_embed import sinusoid_table
from .format import check_weights_finite, read_checkpoint, sidecar
from .infer import default_classifier_config, infer_encoder_config, infer_mae_config, infer_model_config
from .keymap import CheckpointError, NativeState, to_native

# Tensors a fine-tuning model may lack in a pre-trained source: they start fresh.
_NEW_ON_INIT = re.compile(r"^(fc_norm\.|head\.|blocks\.\d+\.moae\.|blocks\.\d+\.mlp\.(router|experts)\.)")


@dataclass
class LoadReport:
    """What a load did, by tensor name."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # in the model, absent from the source: fresh init
    unused: list[str] = field(default_factory=list)  # in the source, not used by the model
    dropped: list[str] = field(default_factory=list)  # fixed position tables, recomputed

    def summary(self) -> str:
        parts = [f"{self.source}: {self.kind} checkpoint, {len(self.loaded)} tensors loaded"]
        if self.new:
            parts.append(f"{len(self.new)} new ({_short(self.new)})")
        if self.unused:
            parts.append(f"{len(self.unused)} unused ({_short(self.unused)})")
        if self.dropped:
            parts.append(f"position tables recomputed ({', '.join(self.dropped)})")
        return "; ".join(parts)


# The most parameters a checkpoint's config may ask for before anything is allocated (the base
# model has ~0.1 billion; 2 billion float32 parameters are 8 GB).
MAX_PARAMS = 2_000_000_000


def _stored_config(stored: dict[str, Any]) -> ModelConfig | MAEConfig:
    return MAEConfig.from_dict(stored) if stored.get("kind") == "mae" else ModelConfig.from_dict(stored)


def check_stored_config(path: str, stored: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Before a model is built from a checkpoint's JSON config: the config's size is bounded
    (``MAX_PARAMS``, estimated from the encoder alone before the exact count) and every tensor
    the config implies has the shape the file holds. The model is built on the ``meta`` device
    (shapes, no memory). Errors name the file, the tensor, the JSON field and both shapes."""
    cfg = _stored_config(stored)
    enc = cfg.encoder
    meta_json = sidecar(Path(path)).name
    if 12 * enc.dim * enc.dim * enc.depth > MAX_PARAMS:  # a ViT block's weights, a lower bound
        raise CheckpointError(
            f"{meta_json}: encoder.dim {enc.dim} and encoder.depth {enc.depth} ask for more than "
            f"{MAX_PARAMS:,} parameters; refusing to allocate (is this the file's own config?)"
        )
    with torch.device("meta"):
        model = PretrainMAE(cfg) if isinstance(cfg, MAEConfig) else Classifier(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    count = sum(math.prod(shape) for shape in expected.values())
    if count > MAX_PARAMS:
        raise CheckpointError(f"{meta_json}: its config asks for {count:,} parameters, more than {MAX_PARAMS:,}; refusing to allocate")
    flat = _flatten(stored)
    for key, shape in expected.items():
        if key in tensors and tuple(tensors[key].shape) != shape:
            actual = tuple(tensors[key].shape)
            field_ = _field_for(flat, shape, actual)
            raise CheckpointError(
                f"tensor {key} has shape {actual} in the file but {meta_json} ({field_}) gives {shape}; "
                "the weights and their .json do not belong together: use the matching pair"
            )
    blocks = {int(m[1]) for k in tensors if (m := re.match(r"^(?:encoder\.)?blocks\.(\d+)\.", k))}
    lacking = [k for k in expected if (m := re.match(r"^(?:encoder\.)?blocks\.(\d+)\.", k)) and int(m[1]) not in blocks]
    if lacking:
        raise CheckpointError(
            f"tensor {lacking[0]} is not in the file (its blocks: {len(blocks)}) but {meta_json} "
            f"(encoder.depth {enc.depth}) implies it; the weights and their .json do not belong together"
        )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _field_for(flat: dict[str, Any], expected: tuple[int, ...], actual: tuple[int, ...]) -> str:
    """The JSON field most likely behind a shape mismatch: one whose value is a differing size."""
    sizes = [e for e, a in zip(expected, actual) if e != a] or list(expected)
    for size in sizes:
        for name, value in flat.items():
            if isinstance(value, int) and not isinstance(value, bool) and value == size and value > 1:
                return f"{name} {value}"
    return "config " + ", ".join(f"{n} {v}" for n, v in flat.items() if n.startswith("encoder.") and n.endswith(("dim", "depth")))


def _short(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def _check_pos_tables(dropped: dict[str, torch.Tensor], enc: EncoderConfig) -> None:
    """A stored position table must be the fixed sinusoid table of this geometry; anything else
    (a learned table, or one for another size or frame count) would load silently wrong."""
    for key, table in dropped.items():
        table = table.reshape(-1, table.shape[-1]).float()
        if table.shape[0] != enc.num_tokens:
            raise CheckpointError(
                f"{key} has {table.shape[0]} rows but {enc.img_size} px x {enc.num_frames} frames gives {enc.num_tokens} "
                "tokens; pass the size the model was trained at (--img-size / --num-frames)"
            )
        if not torch.allclose(table, sinusoid_table(table.shape[0], table.shape[1]), atol=1e-4):
            raise CheckpointError(f"{key} is not the fixed sinusoid table this model uses (learned?)")


def _assign(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Copy matching tensors into ``model``; return (loaded, missing, unexpected)."""
    own = model.state_dict()
    for key, value in tensors.items():
        if key in own and own[key].shape != value.shape:
            what = f"{key} has shape {tuple(value.shape)} in the checkpoint but {tuple(own[key].shape)} in the model"
            if key.startswith("head.") and key.endswith(".weight"):
                what = f"{key}: {value.shape[0]} classes in the checkpoint but the model expects {own[key].shape[0]}"
            raise CheckpointError(what)
    result = model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    loaded = sorted(k for k in tensors if k in own)
    return loaded, sorted(result.missing_keys), sorted(k for k in tensors if k not in own)


@contextmanager
def _naming(source: str) -> Iterator[None]:
    """Every checkpoint error says which file it is about."""
    try:
        yield
    except CheckpointError as err:
        if str(err).startswith(source):
            raise
        raise CheckpointError(f"{source}: {err}") from None


def _mapped(source: str | os.PathLike) -> NativeState:
    native = to_native(read_checkpoint(source)[0])
    if not str(source).endswith(".safetensors"):
        check_weights_finite(str(source), {**native.tensors, **native.dropped})
    return native


def init_from_pretrained(model: Classifier, source: str | os.PathLike | NativeState) -> LoadReport:
    """Initialise a fine-tuning model's encoder from a pre-trained (MAE / encoder-only) or
    fine-tuned checkpoint. Heads, ``fc_norm`` and experts absent from the source start fresh
    and are listed as ``new``; a missing encoder tensor, or an encoder tensor the model has no
    place for (a deeper source), is an error."""
    name = str(source) if not isinstance(source, NativeState) else "<state>"
    with _naming(name):
        native = source if isinstance(source, NativeState) else _mapped(source)
        _check_pos_tables(native.dropped, model.config.encoder)
        tensors = native.tensors
        unused_extra: list[str] = []
        if native.kind == "mae":
            tensors = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
            unused_extra = sorted(k for k in native.tensors if not k.startswith("encoder."))
        # Heads of another class count (a model fine-tuned on other data) are not reused.
        own = model.state_dict()
        other_heads = sorted(k for k, v in tensors.items() if k.startswith("head.") and k in own and own[k].shape != v.shape)
        loaded, missing, unexpected = _assign(model, {k: v for k, v in tensors.items() if k not in other_heads})
        lacking = [k for k in missing if not _NEW_ON_INIT.match(k)]
        if lacking:
            raise CheckpointError(f"pre-trained source lacks encoder tensors {_short(lacking)}")
        homeless = [k for k in unexpected if k.startswith(("blocks.", "patch_embed."))]
        if homeless:
            raise CheckpointError(f"source has encoder tensors the model has no place for: {_short(homeless)}")
    source_prefix = "encoder." if native.kind == "mae" else ""
    unused = sorted(source_prefix + k for k in unexpected + other_heads) + unused_extra
    return LoadReport(name, native.kind, loaded, missing, unused, sorted(native.dropped))


def load_model(
    path: str | os.PathLike,
    *,
    target: Literal["auto", "classifier", "mae"] = "auto",
    config: ModelConfig | MAEConfig | None = None,
    strict: bool = True,
    with_report: bool = False,
    num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    top_k: int = 2,
) -> Any:
    """Load our checkpoint or one of the authors' files into the right model, in eval mode.

    ``target="auto"`` gives a ``PretrainMAE`` for pre-training checkpoints and a ``Classifier``
    otherwise; ``target="classifier"`` on a pre-training or encoder-only file builds a
    classifier (``config``, else S4D with MoAE in the later half) and initialises its encoder
    from it. ``strict`` refuses missing or unexpected tensors; shape mismatches are always
    refused. ``num_heads``, ``img_size``, ``num_frames`` and ``top_k`` fill what a foreign file
    does not store (our files carry their config). Returns the model, or ``(model, LoadReport)``.
    """
    name = str(path)
    geometry = {"num_heads": num_heads, "img_size": img_size, "num_frames": num_frames}
    with _naming(name):
        raw, stored = read_checkpoint(path)
        native = to_native(raw)
        if not str(path).endswith(".safetensors"):  # a .safetensors was checked as it was read
            check_weights_finite(name, {**native.tensors, **native.dropped})
        if target == "mae" and native.kind != "mae":
            raise CheckpointError(f"holds a {native.kind}, not a pre-training (MAE) checkpoint")
        as_mae = native.kind == "mae" and target != "classifier"
        if config is not None and isinstance(config, MAEConfig) != as_mae:
            want = "MAEConfig" if as_mae else "ModelConfig"
            raise CheckpointError(
                f"config is a {type(config).__name__} but this load builds a {'PretrainMAE' if as_mae else 'Classifier'} (pass a {want})"
            )
        stored_kind = stored.get("kind") if stored else None
        if stored_kind in ("mae", "classifier") and config is None:
            check_stored_config(name, stored, native.tensors)

        if as_mae:
            cfg = config or (MAEConfig.from_dict(stored) if stored_kind == "mae" else infer_mae_config(native.tensors, **geometry))
            model: nn.Module = PretrainMAE(cfg)
        elif native.kind == "classifier":
            cfg = config or (
                ModelConfig.from_dict(stored) if stored_kind == "classifier" else infer_model_config(native.tensors, top_k=top_k, **geometry)
            )
            model = Classifier(cfg)
        else:  # a pre-training or encoder-only source initialises a classifier
            if config is None:
                enc = (
                    MAEConfig.from_dict(stored).encoder
                    if stored_kind == "mae"
                    else infer_encoder_config(native.tensors, "encoder." if native.kind == "mae" else "", **geometry)
                )
                config = default_classifier_config(enc, top_k)
            model = Classifier(config)
            report = init_from_pretrained(model, native)
            report.source = name
            model.eval()
            return (model, report) if with_report else model

        _check_pos_tables(native.dropped, cfg.encoder)
        loaded, missing, unexpected = _assign(model, native.tensors)
        if strict and (missing or unexpected):
            problems = []
            if missing:
                problems.append(f"missing {_short(missing)}")
            if unexpected:
                problems.append(f"unexpected {_short(unexpected)}")
            raise CheckpointError(f"tensors do not match the model: {'; '.join(problems)}")
    model.eval()
    report = LoadReport(name, native.kind, loaded, missing, unexpected, sorted(native.dropped))
    return (model, report) if with_report else model


def load_classifier(path: str | os.PathLike, **options: Any) -> Classifier:
    """``load_model`` for commands that classify (eval, predict, analyze): a pre-training (MAE)
    checkpoint is one clear error instead of a model without heads."""
    model = load_model(path, **options)
    if not isinstance(model, Classifier):
        raise CheckpointError(f"{path}: a pre-training (MAE) checkpoint has no classifier head; fine-tune it first (s4d train --init {path})")
    return model
