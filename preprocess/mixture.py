"""Pre-training mixtures (``manifests/pretrain.json``): which datasets the MAE sees, how much of
each per epoch, and how many views of every decoded video."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .manifest import MANIFESTS_DIR, Manifest, ManifestError, load_manifest, read_manifest_json
from .typed_json import json_fields


@dataclass(frozen=True)
class MixtureSource:
    manifest: str
    share: float = 1.0  # fraction of this source's batches used per epoch
    repeat: int = 1  # views per decoded sample (independent augmentation and masks)


@dataclass(frozen=True)
class Mixture:
    """A pre-training mixture of datasets (``manifests/pretrain.json``): single-source steps,
    per epoch ``share`` x one pass of each source's batches."""

    name: str
    sources: tuple[MixtureSource, ...]
    description: str = ""
    source: Path | None = None

    def manifests(self) -> list[Manifest]:
        base = self.source.parent if self.source else MANIFESTS_DIR
        out = []
        for s in self.sources:
            path = base / s.manifest
            out.append(load_manifest(path if path.is_file() else s.manifest))
        return out


def load_mixture(name: str | os.PathLike) -> Mixture:
    raw, path = read_manifest_json(name)
    src = str(path)
    d = json_fields(Mixture, raw, "the mixture", src, ManifestError)
    if not isinstance(d["sources"], list) or not d["sources"]:
        raise ManifestError(f"{src}: sources: must be a non-empty list")
    sources = []
    for i, item in enumerate(d["sources"]):
        s = MixtureSource(**json_fields(MixtureSource, item, f"sources[{i}]", src, ManifestError))
        if not 0 < s.share or s.repeat < 1:
            raise ManifestError(f"{src}: sources[{i}]: share must be > 0 and repeat >= 1")
        sources.append(s)
    mixture = Mixture(d["name"], tuple(sources), d.get("description", ""), path)
    mixture.manifests()  # every source must exist and validate
    return mixture
