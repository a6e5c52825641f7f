"""Reading, writing and loading checkpoints.

Our format: ``NAME.safetensors`` (weights) + ``NAME.json`` (the config that rebuilds the model).
Foreign files (``.pt``/``.pth``/``.bin``) are read with ``torch.load(weights_only=True)`` and
mapped by ``keymap.to_native``; their config is inferred from tensor shapes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..models import Classifier, PretrainMAE
from ..models.config import EncoderConfig, MAEConfig, ModelConfig, MoEConfig
from ..models.pos_embed import sinusoid_table
from .keymap import CheckpointError, NativeState, to_native

FORMAT = "s4d-checkpoint/1"
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
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on garbage with any exception type (IndexError, ...)
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
    tensors: dict[str, torch.Tensor], prefix: str = "", *, num_heads: int | None = None, img_size: int = 160, num_frames: int = 16
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
    fc1 = next((tensors[k] for i in blocks if (k := f"{prefix}blocks.{i}.mlp.fc1.weight") in tensors), None)
    return EncoderConfig(
        img_size=img_size,
        num_frames=num_frames,
        tubelet=tubelet,
        patch=patch,
        in_chans=in_chans,
        dim=dim,
        depth=len(blocks),
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


def _check_pos_tables(dropped: dict[str, torch.Tensor], source: str) -> None:
    """A stored position table must be the fixed sinusoid one we recompute; anything else
    (a learned table) would load silently wrong."""
    for key, table in dropped.items():
        table = table.reshape(-1, table.shape[-1]).float()
        expected = sinusoid_table(table.shape[0], table.shape[1])
        if not torch.allclose(table, expected, atol=1e-4):
            raise CheckpointError(f"{source}: {key} is not the fixed sinusoid table this model uses (learned?)")


def _assign(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> tuple[list[str], list[str], list[str]]:
    """Copy matching tensors into ``model``; return (loaded, missing, unexpected)."""
    own = model.state_dict()
    for key, value in tensors.items():
        if key in own and own[key].shape != value.shape:
            what = f"{key} has shape {tuple(value.shape)} in {source} but {tuple(own[key].shape)} in the model"
            if key.startswith("head.") and key.endswith(".weight"):
                what = f"{key}: {value.shape[0]} classes in {source} but the model expects {own[key].shape[0]}"
            raise CheckpointError(what)
    result = model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    loaded = sorted(k for k in tensors if k in own)
    return loaded, sorted(result.missing_keys), sorted(k for k in tensors if k not in own)


def init_from_pretrained(model: Classifier, source: str | os.PathLike | NativeState) -> LoadReport:
    """Initialise a fine-tuning model's encoder from a pre-trained (MAE / encoder-only) or
    fine-tuned checkpoint. Heads, ``fc_norm`` and experts absent from the source start fresh
    and are listed as ``new``; any other missing encoder tensor is an error."""
    name = str(source) if not isinstance(source, NativeState) else "<state>"
    native = source if isinstance(source, NativeState) else to_native(read_checkpoint(source)[0])
    _check_pos_tables(native.dropped, name)
    tensors = native.tensors
    if native.kind == "mae":
        tensors = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
        unused_extra = sorted(k for k in native.tensors if not k.startswith("encoder."))
    else:
        unused_extra = []
    # Heads of another class count (a model fine-tuned on other data) are not reused.
    own = model.state_dict()
    other_heads = sorted(k for k, v in tensors.items() if k.startswith("head.") and k in own and own[k].shape != v.shape)
    loaded, missing, unexpected = _assign(model, {k: v for k, v in tensors.items() if k not in other_heads}, name)
    lacking = [k for k in missing if not _NEW_ON_INIT.match(k)]
    if lacking:
        raise CheckpointError(f"{name}: pre-trained source lacks encoder tensors {_short(lacking)}")
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
    **infer_opts: Any,
) -> Any:
    """Load our checkpoint or one of the authors' files into the right model, in eval mode.

    ``target="auto"`` gives a ``PretrainMAE`` for pre-training checkpoints and a ``Classifier``
    otherwise; ``target="classifier"`` on a pre-training or encoder-only file builds a
    classifier (``config`` or the default S4D heads) and initialises its encoder from it.
    ``strict`` refuses missing or unexpected tensors; shape mismatches are always refused.
    ``infer_opts`` (``num_heads``, ``img_size``, ``num_frames``, ``top_k``) fill what a
    foreign file does not store. Returns the model, or ``(model, LoadReport)``.
    """
    raw, stored_config = read_checkpoint(path)
    native = to_native(raw)
    name = str(path)
    _check_pos_tables(native.dropped, name)
    as_mae = native.kind == "mae" and target in ("auto", "mae")
    if target == "mae" and native.kind != "mae":
        raise CheckpointError(f"{name}: holds a {native.kind}, not a pre-training (MAE) checkpoint")

    if config is None and stored_config is not None:
        kind = stored_config.get("kind")
        if (kind == "mae") == as_mae:
            config = MAEConfig.from_dict(stored_config) if as_mae else ModelConfig.from_dict(stored_config)
    if as_mae:
        model: nn.Module = PretrainMAE(config or infer_mae_config(native.tensors, **infer_opts))
    elif native.kind == "classifier":
        cfg = config or infer_model_config(native.tensors, **infer_opts)
        model = Classifier(cfg)
    else:
        enc_opts = {k: v for k, v in infer_opts.items() if k != "top_k"}
        prefix = "encoder." if native.kind == "mae" else ""
        enc = infer_encoder_config(native.tensors, prefix, **enc_opts)
        model = Classifier(config or ModelConfig(encoder=enc))
        report = init_from_pretrained(model, native)
        report.source = name
        model.eval()
        return (model, report) if with_report else model

    loaded, missing, unexpected = _assign(model, native.tensors, name)
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append(f"missing {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected {_short(unexpected)}")
        raise CheckpointError(f"{name}: tensors do not match the model: {'; '.join(problems)}")
    model.eval()
    report = LoadReport(name, native.kind, loaded, missing, unexpected, sorted(native.dropped))
    return (model, report) if with_report else model
