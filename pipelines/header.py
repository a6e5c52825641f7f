"""What a stored clip or image declares, read from its header before anything is decoded.

Shards store frames at the manifest's preprocess size (e.g. 160 px); a sample declaring far more
is a damaged or hostile shard, refused by ``Loader._bytes`` (both backends) before a decoder
allocates gigabytes for it.
"""

from __future__ import annotations

import io

import numpy as np

STORED_SIDE_FACTOR = 4  # a stored frame may be this many times the manifest's preprocess size per side


def max_stored_pixels(stored_size: int) -> int:
    """Pixels per frame a shard's clip or image may declare: our shards store frames at the
    preprocess size (e.g. 160 px); far beyond it is a damaged or hostile shard, refused before
    decoding (an 8192x8192 clip would take gigabytes)."""
    return (STORED_SIDE_FACTOR * stored_size) ** 2


def declared_size(data: np.ndarray, video: bool) -> tuple[int, int]:
    """(width, height) a stored clip's video stream header or an image's JPEG/PNG header
    declares, read without decoding any pixels; a header that does not parse is a ValueError."""
    if not video:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:
                return im.size
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"image header does not parse ({type(err).__name__}: {err})") from None
    import av

    try:
        with av.open(io.BytesIO(data.tobytes())) as container:
            ctx = container.streams.video[0].codec_context
            return int(ctx.width or 0), int(ctx.height or 0)
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"clip does not decode ({type(err).__name__}: {err})") from None


def check_declared_size(data: np.ndarray, video: bool, max_pixels: int) -> None:
    """A ValueError (the caller names the shard and key) when the header declares more than
    ``max_pixels`` per frame."""
    w, h = declared_size(data, video)
    if w * h > max_pixels:
        raise ValueError(
            f"declares {w}x{h} pixels per frame, over the limit of {max_pixels} for this manifest's "
            f"preprocess size ({STORED_SIDE_FACTOR}x its side, squared): a damaged or foreign shard; "
            "re-make it with `s4d shards`"
        )
