"""Reading, writing and loading checkpoints.

Our format: ``NAME.safetensors`` (weights) + ``NAME.json`` (the config that rebuilds the model).
Foreign files (``.pt``/``.pth``/``.bin``) are read with ``torch.load(weights_only=True)`` and
mapped by ``keymap.to_native``; their config is inferred from tensor shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..models import Classifier, PretrainMAE
from ..models.config import EncoderConfig, MAEConfig, ModelConfig, MoEConfig, moe_block_indices
from ..models.pos_embed import sinusoid_table
from .keymap import CheckpointError, NativeState, to_native

FORMAT = "s4d-checkpoint/1"
# Harmless non-tensor objects that training scripts (VideoMAE-style) save beside the weights.
_SAFE_GLOBALS = [argparse.Namespace, *(g for g in (getattr(np, "dtype", None),) if g is not None)]
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


def _short(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


# ----------------------------------------------------------------------------- files


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(model: Classifier | PretrainMAE, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.to_dict(), **(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata={"format": FORMAT})
    tmp_json = sidecar(path).with_name(sidecar(path).name + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    os.replace(tmp_json, sidecar(path))
    return path


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The whole JSON sidecar of our checkpoint (config plus what training recorded, such as
    ``input``: clip stride and preprocessing); ``{}`` for foreign files."""
    meta_path = sidecar(Path(path))
    if Path(path).suffix != ".safetensors" or not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar ({_first_line(err)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar (not an object)")
    return meta


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict[str, Any] | None]:
    """Return (raw checkpoint object, our config dict or None). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
        meta_path = sidecar(path)
        config = None
        if meta_path.is_file():
            try:
                config = json.loads(meta_path.read_text())["config"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar ({_first_line(err)})") from None
        return tensors, config
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on garbage with any exception type (IndexError, ...)
        text = str(err)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f" ({found[1]})" if found else ""
            raise CheckpointError(f"{path}: holds a Python object that safe loading refuses{what}; only tensors and plain data are read") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    return obj, None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


# ----------------------------------------------------------------------------- configs


def _block_ids(keys: list[str], prefix: str = "") -> list[int]:
    pat = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
    return sorted({int(m[1]) for k in keys if (m := pat.match(k))})


def infer_encoder_config(
    tensors: dict[str, torch.Tensor], prefix: str = "", *, num_heads: int | None = None, img_size: int | None = None,
    num_frames: int | None = None,
) -> EncoderConfig:
    """Rebuild the encoder shape from its tensors. Heads, image size and frame count are not
    stored in weights: ``num_heads`` defaults to dim // 64 (ViT convention), the rest to S4D's
    160 px, 16 frames."""
    try:
        proj = tensors[f"{prefix}patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError(f"no {prefix}patch_embed.proj.weight: not a ViT checkpoint this project knows") from None
    dim, in_chans, tubelet, patch, _ = proj.shape
    blocks = _block_ids(list(tensors), prefix)
    holes = sorted(set(range(max(blocks, default=-1) + 1)) - set(blocks))
    if holes:
        raise CheckpointError(f"no tensors for {prefix}blocks {holes} (blocks 0..{max(blocks)} expected)")
    fc1 = next((tensors[k] for i in blocks if (k := f"{prefix}blocks.{i}.mlp.fc1.weight") in tensors), None)
    return EncoderConfig(
        img_size=img_size or 160,
        num_frames=num_frames or 16,
        tubelet=tubelet,
        patch=patch,
        in_chans=in_chans,
        dim=dim,
        depth=max(blocks) + 1 if blocks else 0,
        num_heads=num_heads or max(dim // 64, 1),
        mlp_ratio=fc1.shape[0] / dim if fc1 is not None else 4.0,
        qkv_bias=f"{prefix}blocks.{blocks[0]}.attn.q_bias" in tensors if blocks else True,
    )


def _infer_moe(tensors: dict[str, torch.Tensor], where: str, dim: int, top_k: int) -> MoEConfig | None:
    blocks = sorted(int(m[1]) for k in tensors if (m := re.match(rf"^blocks\.(\d+)\.{where}\.experts\.w1$", k)))
    if not blocks:
        return None
    w1 = tensors[f"blocks.{blocks[0]}.{where}.experts.w1"]
    has_noise = f"blocks.{blocks[0]}.{where}.router.noise.weight" in tensors
    return MoEConfig(
        blocks=tuple(blocks),
        num_experts=w1.shape[0],
        top_k=min(top_k, w1.shape[0]),
        hidden_ratio=w1.shape[2] / dim,
        noise="learned" if has_noise else "none",
    )


def infer_model_config(tensors: dict[str, torch.Tensor], *, top_k: int = 2, **encoder_opts: Any) -> ModelConfig:
    enc = infer_encoder_config(tensors, **encoder_opts)
    heads = {m[1]: tensors[k].shape[0] for k in tensors if (m := re.match(r"^head\.(\w+)\.weight$", k))}
    return ModelConfig(
        encoder=enc,
        heads=heads or {"video": 7, "image": 7},
        moae=_infer_moe(tensors, "moae", enc.dim, top_k),
        moe_ffn=_infer_moe(tensors, "mlp", enc.dim, top_k),
    )


def infer_mae_config(tensors: dict[str, torch.Tensor], **encoder_opts: Any) -> MAEConfig:
    enc = infer_encoder_config(tensors, "encoder.", **encoder_opts)
    try:
        decoder_dim = tensors["encoder_to_decoder.weight"].shape[0]
    except KeyError:
        raise CheckpointError("pre-training checkpoint has no encoder_to_decoder.weight") from None
    return MAEConfig(
        encoder=enc,
        decoder_dim=decoder_dim,
        decoder_depth=len(_block_ids(list(tensors), "decoder.")),
        decoder_heads=max(decoder_dim // 64, 1),
    )


# ----------------------------------------------------------------------------- loading


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


def default_classifier_config(enc: EncoderConfig, top_k: int = 2) -> ModelConfig:
    """S4D on a given encoder: both heads, MoAE in the later half (for fine-tuning from a
    pre-trained encoder)."""
    return ModelConfig(encoder=enc, moae=MoEConfig(blocks=moe_block_indices(enc.depth, max(enc.depth // 2, 1)), top_k=top_k))


def init_from_pretrained(model: Classifier, source: str | os.PathLike | NativeState) -> LoadReport:
    """Initialise a fine-tuning model's encoder from a pre-trained (MAE / encoder-only) or
    fine-tuned checkpoint. Heads, ``fc_norm`` and experts absent from the source start fresh
    and are listed as ``new``; a missing encoder tensor, or an encoder tensor the model has no
    place for (a deeper source), is an error."""
    name = str(source) if not isinstance(source, NativeState) else "<state>"
    with _naming(name):
        native = source if isinstance(source, NativeState) else to_native(read_checkpoint(source)[0])
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
        if target == "mae" and native.kind != "mae":
            raise CheckpointError(f"holds a {native.kind}, not a pre-training (MAE) checkpoint")
        as_mae = native.kind == "mae" and target != "classifier"
        if config is not None and isinstance(config, MAEConfig) != as_mae:
            want = "MAEConfig" if as_mae else "ModelConfig"
            raise CheckpointError(f"config is a {type(config).__name__} but this load builds a {'PretrainMAE' if as_mae else 'Classifier'} (pass a {want})")
        stored_kind = stored.get("kind") if stored else None

        if as_mae:
            cfg = config or (MAEConfig.from_dict(stored) if stored_kind == "mae" else infer_mae_config(native.tensors, **geometry))
            model: nn.Module = PretrainMAE(cfg)
        elif native.kind == "classifier":
            cfg = config or (ModelConfig.from_dict(stored) if stored_kind == "classifier" else infer_model_config(native.tensors, top_k=top_k, **geometry))
            model = Classifier(cfg)
        else:  # a pre-training or encoder-only source initialises a classifier
            if config is None:
                enc = MAEConfig.from_dict(stored).encoder if stored_kind == "mae" else infer_encoder_config(
                    native.tensors, "encoder." if native.kind == "mae" else "", **geometry)
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
