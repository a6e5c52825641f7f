"""The one place where foreign checkpoint layouts become ours (and back). Pure functions of
tensors: no files, no models.

Layouts understood by ``to_native``:
- ours (``patch_embed.proj``, ``blocks.{i}...``, ``blocks.{i}.moae.experts.w1`` ...);
- the authors' fine-tuned S4D state dict: same trunk names, per-expert Linears under
  ``blocks.{i}.moe_layer.{router.topkroute_linear|router.noise_linear|experts.{e}.fc1|fc2}``,
  heads ``head.image`` / ``head.video``;
- the authors' pre-training checkpoint (``encoder.*``, ``decoder.*``, ``encoder_to_decoder``,
  ``mask_token``);
- VideoMAE / MAE-DFER style encoders (``encoder.*`` only) and VideoMAE fine-tuned models
  (single ``head``, mapped to ``head.video``);
each possibly wrapped under ``model`` / ``module`` / ``state_dict`` and with ``module.``
(DDP) or ``_orig_mod.`` (torch.compile) prefixes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from preprocess.errors import InputError

Kind = Literal["classifier", "mae", "encoder"]

WRAPPER_KEYS = ("model", "module", "state_dict", "model_state")
STRIP_PREFIXES = ("module.", "_orig_mod.")
POS_TABLE_SUFFIX = "pos_embed"

_REF_EXPERT = re.compile(r"^(?P<block>(?:.+\.)?blocks\.\d+)\.moe_layer\.experts\.(?P<e>\d+)\.(?:D_)?fc(?P<l>[12])\.(?P<p>weight|bias)$")
_REF_ROUTER = re.compile(r"^(?P<block>(?:.+\.)?blocks\.\d+)\.moe_layer\.router\.(?P<lin>topkroute_linear|noise_linear)\.(?P<p>weight|bias)$")
_ROUTER_NAMES = {"topkroute_linear": "gate", "noise_linear": "noise"}


class CheckpointError(InputError):
    """A checkpoint cannot be read or does not fit; the message names the file or tensor."""


@dataclass
class NativeState:
    kind: Kind
    tensors: dict[str, torch.Tensor]
    dropped: dict[str, torch.Tensor] = field(default_factory=dict)  # fixed position tables


def unwrap(obj: Any) -> Mapping[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint object."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"no state dict of tensors found (top level: {keys})")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _detect_kind(keys: list[str]) -> Kind:
    if any(k.startswith(("decoder.", "encoder_to_decoder.")) or k == "mask_token" for k in keys):
        return "mae"
    if any(k.startswith("encoder.blocks.") for k in keys) and not any(k.startswith("blocks.") for k in keys):
        return "encoder"
    return "classifier"


def _stack_experts(block: str, target: str, parts: dict[tuple[int, str, str], torch.Tensor]) -> dict[str, torch.Tensor]:
    experts = sorted({e for e, _, _ in parts})
    if experts != list(range(len(experts))):
        raise CheckpointError(f"{block}.moe_layer.experts: expert indices {experts} are not 0..{len(experts) - 1}")
    out = {}
    for layer in ("1", "2"):
        try:
            weights = [parts[(e, layer, "weight")] for e in experts]
            biases = [parts[(e, layer, "bias")] for e in experts]
        except KeyError as err:
            raise CheckpointError(f"{block}.moe_layer.experts: missing fc{layer} tensor of expert {err.args[0][0]}") from None
        out[f"{block}.{target}.experts.w{layer}"] = torch.stack([w.t() for w in weights]).contiguous()
        out[f"{block}.{target}.experts.b{layer}"] = torch.stack(biases).contiguous()
    return out


def to_native(obj: Any) -> NativeState:
    """Map any supported checkpoint object (a state dict or a wrapper around one) to our names.

    ``kind`` says what it holds: a ``classifier`` (trunk + heads), an ``mae`` (our
    ``PretrainMAE`` names) or an ``encoder`` only (prefix ``encoder.`` stripped).
    """
    state = {_strip(k): v for k, v in unwrap(obj).items()}
    kind = _detect_kind(list(state))
    if kind == "encoder":
        state = {k[len("encoder.") :] if k.startswith("encoder.") else k: v for k, v in state.items()}

    tensors: dict[str, torch.Tensor] = {}
    dropped: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[tuple[int, str, str], torch.Tensor]] = defaultdict(dict)
    for key, value in state.items():
        if key.split(".")[-1] == POS_TABLE_SUFFIX:
            dropped[key] = value
        elif m := _REF_EXPERT.match(key):
            experts[m["block"]][(int(m["e"]), m["l"], m["p"])] = value
        elif m := _REF_ROUTER.match(key):
            tensors[f"{m['block']}.<moe>.router.{_ROUTER_NAMES[m['lin']]}.{m['p']}"] = value
        elif kind != "mae" and key in ("head.weight", "head.bias"):
            tensors[key.replace("head.", "head.video.")] = value
        else:
            tensors[key] = value

    # A reference ``moe_layer`` sits beside the FFN (MoAE) when the block keeps its ``mlp``;
    # otherwise it replaces the FFN (ViT-MoE baseline).
    def target(block: str) -> str:
        return "moae" if f"{block}.mlp.fc1.weight" in tensors else "mlp"

    for block, parts in experts.items():
        tensors.update(_stack_experts(block, target(block), parts))
    for key in [k for k in tensors if ".<moe>." in k]:
        block = key.split(".<moe>.")[0]
        tensors[key.replace("<moe>", target(block))] = tensors.pop(key)
    return NativeState(kind, tensors, dropped)


_NATIVE_EXPERT = re.compile(r"^(?P<block>(?:.+\.)?blocks\.\d+)\.(?P<t>moae|mlp)\.experts\.(?P<w>[wb])(?P<l>[12])$")
_NATIVE_ROUTER = re.compile(r"^(?P<block>(?:.+\.)?blocks\.\d+)\.(?P<t>moae|mlp)\.router\.(?P<lin>gate|noise)\.(?P<p>weight|bias)$")


def to_reference(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``to_native`` for our names: per-expert ``moe_layer`` Linears as the authors'
    code stores them. Used to export weights and to test the mapping both ways."""
    inv_router = {v: k for k, v in _ROUTER_NAMES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if m := _NATIVE_EXPERT.match(key):
            param = "weight" if m["w"] == "w" else "bias"
            for e in range(value.shape[0]):
                piece = value[e].t() if param == "weight" else value[e]
                out[f"{m['block']}.moe_layer.experts.{e}.fc{m['l']}.{param}"] = piece.contiguous()
        elif m := _NATIVE_ROUTER.match(key):
            out[f"{m['block']}.moe_layer.router.{inv_router[m['lin']]}.{m['p']}"] = value
        else:
            out[key] = value
    return out
