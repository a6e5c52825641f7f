"""Checkpoints on the Hugging Face Hub: ``hf://OWNER/REPO/PATH[@REVISION]`` wherever a checkpoint
is accepted. The file (and, for our ``.safetensors``, its ``.json`` sidecar) is downloaded once
into the Hub's cache (``HF_HOME``; ``HF_HUB_OFFLINE=1`` reads only the cache), then read with
the same safety rules as a local file (``format.read_checkpoint``)."""

from __future__ import annotations

import os
from pathlib import Path

from .keymap import CheckpointError

PREFIX = "hf://"


def is_hub(spec: str | os.PathLike) -> bool:
    text = str(spec)
    return text.startswith(PREFIX) or text.startswith("hf:/")  # pathlib folds "hf://x" into "hf:/x"


def parse(spec: str | os.PathLike) -> tuple[str, str, str | None]:
    """(repo id, path in the repo, revision or None)."""
    text = str(spec)
    rest = text[len(PREFIX) :] if text.startswith(PREFIX) else text[len("hf:/") :]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 3 or not revision and revision is not None:
        raise CheckpointError(f"{text}: expected hf://OWNER/REPO/PATH[@REVISION]")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def resolve(spec: str | os.PathLike) -> Path:
    """A local path for ``spec``: itself, or the cached download of an ``hf://`` file."""
    if not is_hub(spec):
        return Path(spec)
    repo, path, revision = parse(spec)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        local = Path(hf_hub_download(repo, path, revision=revision))
    except Exception as err:  # offline without a cached copy, no such repo or file, no network
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CheckpointError(f"{spec}: cannot fetch from the Hugging Face Hub ({type(err).__name__}: {detail})") from None
    if local.suffix == ".safetensors":
        try:  # our sidecar: the config that rebuilds the model
            hf_hub_download(repo, path[: -len(".safetensors")] + ".json", revision=revision)
        except EntryNotFoundError:
            pass  # a bare safetensors file: its config is inferred from the tensors
        except Exception:
            pass  # offline and not cached: the same
    return local
