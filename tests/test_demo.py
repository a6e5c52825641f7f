"""The procedural demo dataset (the generator; ``make demo`` itself is not finished)."""

import numpy as np
import pytest

from s4d.demo.faces import APEX, VIDEO_CLASSES, expression_track, make_clip, make_image, write_dataset


def test_order_only_classes_are_the_same_frames_reversed():
    onset, offset = expression_track("happy_onset", 32), expression_track("happy_offset", 32)
    assert offset == onset[::-1] and onset[0] != onset[-1]
    assert onset[-1]["smile"] == pytest.approx(APEX["happy"]["smile"])


def test_clips_and_images_vary_in_identity_and_expression():
    rng = np.random.default_rng(0)
    clips = {c: make_clip(c, rng) for c in VIDEO_CLASSES}
    assert all(c.shape == (32, 64, 64, 3) and c.dtype == np.uint8 for c in clips.values())
    surprise = clips["surprise"].astype(int)
    assert np.abs(surprise[-1] - surprise[0]).mean() > 2  # the face changes over the clip
    a, b = make_image("happy", rng), make_image("happy", rng)
    assert a.shape == (72, 72, 3) and np.abs(a.astype(int) - b).mean() > 10  # different identities


def test_dataset_is_a_users_csv_dataset(tmp_path):
    from preprocess.own_data import manifest_from_csv

    videos, images = write_dataset(tmp_path, clips_per_class=5, images_per_class=3)
    vm = manifest_from_csv(videos, align=False)
    im = manifest_from_csv(images, align=False)
    assert vm.modality == "video" and set(vm.classes) == set(VIDEO_CLASSES) and vm.partitions == ("test", "train")
    assert im.modality == "image" and len(im.classes) == 4
    rows = videos.read_text().splitlines()[1:]
    assert len(rows) == 20 and sum(r.endswith(",test") for r in rows) == 4  # every fifth clip of a class is held out


@pytest.mark.slow
def test_demo_learns_the_expressions_and_their_order(tmp_path):
    """``make demo``'s run (about 10 minutes on 2 cores): well above chance, and the two classes
    that differ only in frame order are told apart (a model blind to time gets at most 50% on
    them together)."""
    from s4d.demo.run import run_demo

    summary = run_demo(tmp_path, log=lambda *_: None)
    assert summary["uar"] > 0.5  # chance: 0.25
    assert summary["recall"]["happy_onset"] + summary["recall"]["happy_offset"] > 1.1
