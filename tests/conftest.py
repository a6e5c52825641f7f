import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Real face media (``../shared/fixtures``, via S4D_FIXTURES); skip cleanly without them."""
    root = os.environ.get("S4D_FIXTURES")
    if not root or not Path(root).is_dir():
        pytest.skip("real face media not available (set S4D_FIXTURES to ../shared/fixtures)")
    return Path(root)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
