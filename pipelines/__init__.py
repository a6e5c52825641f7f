"""Loading pipelines: preprocessed shards -> normalised batches for the trainer.

``open_dataset`` picks one fold-role of a manifest's shards; ``Loader`` yields its batches
through DALI (``mixed`` decoding on a GPU, CPU otherwise) or, where DALI is absent, through the
PyTorch fallback with the same sampling; ``JointLoader`` interleaves video and image batches;
``FrameLoader`` gives single frames of video shards as image batches.
"""

from preprocess.shards.reader import ShardError

from .config import Augment, LoaderConfig
from .dataset import ShardDataset, open_dataset
from .frames import FrameLoader
from .joint import JointLoader
from .loader import GpuDecodeError, Loader, dali_available

__all__ = [
    "Augment",
    "FrameLoader",
    "GpuDecodeError",
    "JointLoader",
    "Loader",
    "LoaderConfig",
    "ShardDataset",
    "ShardError",
    "dali_available",
    "open_dataset",
]
