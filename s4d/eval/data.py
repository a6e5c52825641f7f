"""What an evaluation reads: the shard folder of a manifest argument, and the test-time loader
settings for a manifest's samples and a model's input geometry."""

from __future__ import annotations

from pathlib import Path

from pipelines import Augment, LoaderConfig
from preprocess.manifest import Manifest, ManifestError

from ..models.config import EncoderConfig


def shard_folder(m: Manifest, data_root: str | None, manifest_arg: str) -> Path:
    """Own-data manifests live beside their shards; named ones under the data root."""
    path = Path(manifest_arg)
    if path.name == "manifest.json" and (path.parent / "shards.json").is_file():
        return path.parent
    return m.shard_dir(data_root)


def eval_loader_config(m: Manifest, enc: EncoderConfig, batch_size: int = 8) -> LoaderConfig:
    """The test-time loader for a manifest's samples and a model's input geometry: videos as
    the test protocol's clips, images resized to 1.2x and centre-cropped."""
    if m.modality == "video":
        if m.clip.frames != enc.num_frames:
            raise ManifestError(f"{m.source}: clip.frames {m.clip.frames} but the checkpoint's model takes {enc.num_frames} frames")
        return LoaderConfig(
            batch_size=batch_size, train=False, size=enc.img_size, frames=m.clip.frames, stride=m.clip.stride, crop=m.clip.crop, augment=Augment.off()
        )
    return LoaderConfig(batch_size=batch_size, train=False, size=enc.img_size, image_resize=round(enc.img_size * 1.2), augment=Augment.off())
