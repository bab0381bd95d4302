"""benchmarks/unannotated_nuclei.py: the blob finder behind the model card's count of
nuclei the HeLa annotations leave out. It must find a nucleus nobody annotated, and
nothing else: not an annotated one, not a bright one's halo past its box, not one cut
by the frame's edge, not noise."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.unannotated_nuclei import find_blobs, score, shuffled_background

SHAPE = (256, 256)


def _frame(discs, rng, background=100.0, noise=5.0):
    """A noisy frame with bright discs (cx, cy, r, brightness above the background)."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    img = np.full(SHAPE, background, np.float32)
    for cx, cy, r, b in discs:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] += b
    return img + rng.normal(0, noise, SHAPE).astype(np.float32)


def _box(cx, cy, r):
    return [cx - r, cy - r, cx + r, cy + r]


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_a_faint_nucleus_nobody_annotated_is_found_and_only_it(rng):
    annotated = [(60, 60, 12, 400.0), (180, 70, 12, 400.0), (70, 180, 11, 300.0)]
    faint = (180, 180, 11, 15.0)  # 3 noise sigma per pixel: faint, but a whole disc
    img = _frame([*annotated, faint], rng)
    boxes = np.array([_box(*d[:3]) for d in annotated], np.float32)
    found = find_blobs(img, boxes)
    assert len(found) == 1
    cx, cy = (found[0, 0] + found[0, 2]) / 2, (found[0, 1] + found[0, 3]) / 2
    assert abs(cx - 180) < 3 and abs(cy - 180) < 3
    # annotate it as well: nothing is left
    assert len(find_blobs(img, np.vstack([boxes, [_box(*faint[:3])]]))) == 0


def test_a_bright_nucleus_halo_past_a_tight_box_is_not_a_nucleus(rng):
    bright = (128, 128, 16, 5000.0)
    img = _frame([bright, (40, 40, 12, 400.0)], rng)
    # its box cut 12 px short at the bottom: a crescent of it and its blur is left over
    tight = np.array([[111, 111, 145, 132], _box(40, 40, 12)], np.float32)
    assert len(find_blobs(img, tight)) == 0


def test_a_blob_cut_by_the_frame_edge_or_too_small_is_left_out(rng):
    annotated = [(60, 60, 12, 400.0), (180, 180, 12, 400.0)]
    img = _frame([*annotated, (3, 128, 12, 400.0), (128, 200, 3, 400.0)], rng)
    boxes = np.array([_box(*d[:3]) for d in annotated], np.float32)
    assert len(find_blobs(img, boxes)) == 0


def test_shuffled_background_holds_no_blob_and_keeps_the_annotated_pixels(rng):
    annotated = [(60, 60, 12, 400.0), (180, 70, 12, 400.0)]
    img = _frame([*annotated, (180, 180, 11, 60.0)], rng)
    boxes = np.array([_box(*d[:3]) for d in annotated], np.float32)
    assert len(find_blobs(img, boxes)) == 1
    mixed = shuffled_background(img, boxes, 3, rng)
    assert np.array_equal(mixed[50:70, 50:70], img[50:70, 50:70])
    assert sorted(mixed.ravel()) == sorted(img.ravel())
    assert len(find_blobs(mixed, boxes)) == 0


class _Sample:
    def __init__(self, image, boxes):
        self.image, self.boxes, self.difficult = image, boxes, None


class _Det:
    """Returns fixed boxes: the scoring is under test, not a detector."""

    def __init__(self, boxes, scores):
        self.boxes, self.scores = boxes, scores

    def detect(self, _image):
        return self


def test_excusing_a_blob_drops_only_the_box_on_it(rng):
    annotated = [(60, 60, 12, 400.0), (180, 70, 12, 400.0)]
    img = _frame([*annotated, (180, 180, 11, 60.0)], rng)
    gt = np.array([_box(*d[:3]) for d in annotated], np.float32)
    blobs = [find_blobs(img, gt)]
    pred = np.vstack([gt, [_box(180, 180, 11)], [_box(100, 220, 10)]]).astype(np.float32)
    det = _Det(pred, np.array([0.9, 0.9, 0.95, 0.8], np.float32))
    r = score(det, [_Sample(img, gt)], blobs, 0.5, False)
    assert r["annotations"]["false_positives"] == 2
    assert r["unannotated_blobs_excused"]["false_positives"] == 1  # the box on nothing
    assert r["unannotated_blobs_excused"]["recall"] == r["annotations"]["recall"] == 1.0
    assert r["unannotated_blobs_excused"]["ap50"] > r["annotations"]["ap50"]
