"""Pre-training mixtures (``manifests/pretrain.json``): which datasets the MAE sees, how much of
each per epoch, and how many views of every decoded video; ``select_streams`` reads a mixture in
one of the paper's pre-training settings (Table IV #2-#5), with the share of one pass of the
still images used per epoch (``--image-share``, Fig. 3c)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InputError
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


# Pre-training settings (Table IV): #2 images only, #3 videos only, #4 both, #5 "VoxCeleb2 frames as
# the images + VoxCeleb2" (single frames of the video sources' clips in place of the image sources).
MODALITIES = ("both", "images", "videos", "frames")


@dataclass(frozen=True)
class Stream:
    """One stream of single-source pre-training batches: a mixture source read as ``kind``:
    "video" (clips, ``source.repeat`` views), "image" (stills) or "frames" (one random frame per
    clip of a video source, fed to the MAE's image path). ``image`` says which side of the image
    share it is on (stills and frames)."""

    name: str
    kind: str
    source: MixtureSource
    manifest: Manifest

    @property
    def image(self) -> bool:
        return self.kind != "video"


def check_image_share(share: float | None) -> None:
    if share is not None and not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
        raise InputError(f"--image-share must be a number in [0, 1] (the share of one pass of the still images per epoch), got {share!r}")


def select_streams(mixture: Mixture, modality: str = "both", image_share: float | None = None) -> list[Stream]:
    """The mixture's sources read in ``modality``: ``both`` every source as it is; ``images`` the
    image sources only; ``videos`` the video sources only; ``frames`` the video sources plus, in
    place of the image sources, each video source again as a "frames" stream (same ``share``:
    per epoch ``share`` x one frame of each clip). One line if nothing is left.

    ``image_share`` = x (``--image-share``, the paper's Fig. 3c "SFER share in pre-training",
    0-100%): every image-side stream (stills or frames) uses x of one pass of its data per epoch,
    in place of the mixture's ``share``, beside the video steps the mixture gives. x = 1 on the
    released mixture is the dual row (Table IV #4: all of AffectNet per epoch), x = 0 drops the
    image side (the videos-only row, #3); None keeps the mixture's shares."""
    if modality not in MODALITIES:
        raise InputError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    check_image_share(image_share)
    where = f"mixture {mixture.name}" + (f" ({mixture.source})" if mixture.source else "")
    pairs = list(zip(mixture.sources, mixture.manifests()))
    videos = [Stream(m.name, "video", s, m) for s, m in pairs if m.modality == "video"]
    images = [Stream(m.name, "image", s, m) for s, m in pairs if m.modality != "video"]
    frames = [Stream(f"{m.name}-frames", "frames", MixtureSource(s.manifest, s.share, 1), m) for s, m in pairs if m.modality == "video"]
    need = {"both": (videos, images), "images": ([], images), "videos": (videos, []), "frames": (videos, frames)}[modality]
    have = ", ".join(f"{m.name} ({m.modality})" for _, m in pairs)
    if modality == "images" and not images:
        raise InputError(f"{where}: --modality images needs an image source; it has {have}")
    if modality in ("videos", "frames") and not videos:
        raise InputError(f"{where}: --modality {modality} needs a video source; it has {have}")
    video_side, image_side = need
    if image_share is not None and image_share > 0 and not image_side:
        raise InputError(f"{where}: --image-share {image_share} asks for still-image steps, but --modality {modality} leaves none ({have})")
    if image_share is not None:
        image_side = [Stream(s.name, s.kind, replace(s.source, share=image_share), s.manifest) for s in image_side if image_share > 0]
    if not video_side and not image_side:
        raise InputError(f"{where}: --image-share 0 with --modality {modality} leaves no stream ({have})")
    return [*video_side, *image_side]
