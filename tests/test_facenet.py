"""facenet-pytorch is installed without its declared (outdated) dependency pins; prove its
MTCNN runs with the torch, numpy and Pillow we actually install."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def test_mtcnn_runs_on_an_image_without_a_face(mtcnn):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    boxes, probs = mtcnn.detect(noise)
    assert boxes is None or len(boxes) == len(probs)


def test_mtcnn_finds_the_real_face(mtcnn, fixtures_dir):
    boxes, probs, landmarks = mtcnn.detect(Image.open(fixtures_dir / "single_face.jpg").convert("RGB"), landmarks=True)
    assert boxes is not None and len(boxes) == 1 and probs[0] > 0.99
    x0, y0, x1, y1 = boxes[0]
    assert 100 < x1 - x0 < 400 and 100 < y1 - y0 < 400
    assert landmarks.shape == (1, 5, 2)  # eyes, nose, mouth corners: what alignment uses


def test_mtcnn_counts_several_faces(mtcnn, fixtures_dir):
    boxes, _ = mtcnn.detect(Image.open(fixtures_dir / "multi_face.jpg").convert("RGB"))
    assert boxes is not None and len(boxes) >= 4
