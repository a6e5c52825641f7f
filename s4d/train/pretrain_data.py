"""Pre-training's data: the mixture read in the run's setting (``--modality``, Table IV #2-#5),
one loader per stream, the batches each stream gives per epoch (``--image-share``, Fig. 3c) and
the batch the lr scales with.

Streams (``preprocess.mixture.select_streams``): video sources give clips (``video_batch``
clips per step, each seen as the source's ``repeat`` views), image sources stills
(``image_batch`` per step), and in ``--modality frames`` each video source is also a "frames"
stream: ``image_batch`` single frames per step, one random frame per clip (``FrameLoader``),
masked at the image ratio. Per epoch a stream gives ``share`` x the batches of one pass over it
(a frames pass: one frame of every clip); ``--image-share`` x replaces the image side's share.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import Augment, FrameLoader, Loader, LoaderConfig, open_dataset
from preprocess.errors import InputError
from preprocess.mixture import Mixture, Stream, select_streams

from .config import PretrainConfig


@dataclass
class PretrainData:
    streams: list[Stream]  # those with batches this epoch, in the mixture's order
    loaders: dict[str, Loader]  # by stream name
    counts: dict[str, int]  # batches per epoch and process, by stream name

    def describe(self) -> str:
        """One line: each stream's batches per epoch and the share of image steps."""
        total = sum(self.counts.values())
        images = sum(self.counts[s.name] for s in self.streams if s.image)
        return f"{', '.join(f'{n} {c} batches' for n, c in self.counts.items())} per epoch ({images}/{total} image steps)"


def lr_batch(cfg: PretrainConfig, streams: list[Stream]) -> int:
    """Samples per step and process that the lr scales with: a video step holds video_batch x
    views masked clips (48 x 4 = 192 in the reference, as many as an image step); a run without
    video steps (``--modality images``, ``--image-share 1``) counts images (or frames) per step."""
    views = [s.source.repeat for s in streams if s.kind == "video"]
    return cfg.video_batch * max(views) if views else cfg.image_batch


def _loader_config(cfg: PretrainConfig, stream: Stream, img_size: int, seed: int) -> LoaderConfig:
    """The reference's pre-training augmentation (DESIGN §4): clips random-resized crop (0.08, 1)
    without flip; images (and frames) random-resized crop (0.2, 1), bicubic, flip. Masking does
    the rest."""
    m = stream.manifest
    if stream.kind == "video":
        return LoaderConfig(
            batch_size=cfg.video_batch,
            train=True,
            size=img_size,
            frames=m.clip.frames,
            stride=m.clip.stride,
            crop=m.clip.crop,
            augment=Augment.mae_video(),
            views=stream.source.repeat,
            seed=seed,
            num_threads=cfg.loader_threads,
        )
    if stream.kind == "frames":  # the image recipe on one frame of each clip (pipelines/frames.py)
        return LoaderConfig(
            batch_size=cfg.image_batch,
            train=True,
            size=img_size,
            frames=1,
            stride=1,
            crop=m.clip.crop,
            augment=Augment.mae_image(),
            seed=seed,
            num_threads=cfg.loader_threads,
        )
    return LoaderConfig(
        batch_size=cfg.image_batch,
        train=True,
        size=img_size,
        image_resize=img_size,
        augment=Augment.mae_image(),
        seed=seed,
        num_threads=cfg.loader_threads,
    )


def check_clip_frames(streams: list[Stream], size: str, frames: int) -> None:
    """Every video stream's clips fit the encoder (``frames`` per clip at model size ``size``);
    a longer clip is one line naming the manifest, before any data or model work."""
    for s in streams:
        clip = s.manifest.clip.frames if s.kind == "video" and s.manifest.clip else 0
        if clip > frames:
            raise InputError(
                f"{s.manifest.source or s.manifest.name}: clips of {clip} frames, but --size {size} takes at most {frames}; "
                "use a larger --size (small or base take 16) or a manifest with shorter clips"
            )


def build_pretrain_data(cfg: PretrainConfig, mixture: Mixture, *, img_size: int, rank: int, world: int, device_id: int | None) -> PretrainData:
    """Every stream's loader and its batches per epoch (see the module docstring). Loader seeds:
    ``cfg.seed`` + the source's place in the mixture, + 1000 for a frames stream (its clips are
    drawn apart from the same source's video stream)."""
    streams = select_streams(mixture, getattr(cfg, "modality", "both"), getattr(cfg, "image_share", None))
    places = {s.manifest: i for i, s in enumerate(mixture.sources)}
    loaders, counts = {}, {}
    for stream in streams:
        m = stream.manifest
        ds = open_dataset(m, m.shard_dir(cfg.data_root), None, "train")
        if not len(ds):
            raise InputError(f"{m.source or m.name}: no training samples to pre-train on (mixture {mixture.name})")
        seed = cfg.seed + places[stream.source.manifest] + (1000 if stream.kind == "frames" else 0)
        lc = _loader_config(cfg, stream, img_size, seed)
        kind = FrameLoader if stream.kind == "frames" else Loader
        loader = kind(ds, lc, rank=rank, world=world, backend=cfg.backend, device_id=device_id)
        counts[stream.name] = max(1, round(stream.source.share * len(loader.batches(0))))
        loaders[stream.name] = loader
    kept = [s for s in streams if s.name in counts]
    for s in kept:  # each loader draws exactly the samples its batches need, on every rank
        loaders[s.name].num_samples = counts[s.name] * loaders[s.name].cfg.batch_size * world
    return PretrainData(kept, {s.name: loaders[s.name] for s in kept}, {s.name: counts[s.name] for s in kept})
