"""The classical baseline on rendered nuclei with known ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.metrics import evaluate_pair
from zeropath.nuclei.classical import ClassicalParams, ClassicalSegmenter, segment_classical
from zeropath.testing import render_nuclei


def test_finds_rendered_nuclei(synthetic_tile):
    rgb, gt, _ = synthetic_tile
    before = rgb.copy()
    pred = segment_classical(rgb, mpp=0.25)
    assert pred.dtype == np.uint32 and pred.shape == gt.shape
    np.testing.assert_array_equal(rgb, before)  # input untouched
    m = evaluate_pair(gt, pred)
    assert m["dice"] > 0.85
    assert m["det_f1"] > 0.9
    assert m["aji"] > 0.7


def test_blank_and_white_images_give_no_nuclei():
    white = np.full((300, 300, 3), 255, np.uint8)
    assert segment_classical(white, 0.25).max() == 0
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(245, 3, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert segment_classical(glass, 0.25).max() == 0


def test_parameters_are_in_microns():
    """The same tissue at 40x and 20x gives about the same nuclei count."""
    rgb, gt, _ = render_nuclei((512, 512), n=40, radius=(10, 16), seed=3)
    n40 = len(np.unique(segment_classical(rgb, 0.25))) - 1
    half = rgb[::2, ::2]
    n20 = len(np.unique(segment_classical(half, 0.5))) - 1
    assert abs(n40 - n20) <= 0.15 * max(n40, 1)
    assert abs(n40 - (len(np.unique(gt)) - 1)) <= 6


def test_touching_nuclei_are_split():
    yy, xx = np.mgrid[0:80, 0:120]
    mask_a = (yy - 40) ** 2 + (xx - 45) ** 2 <= 15**2
    mask_b = (yy - 40) ** 2 + (xx - 73) ** 2 <= 15**2
    rgb = np.full((80, 120, 3), (236, 170, 200), np.uint8)
    # darker centres, as real chromatin, lighter where the two nuclei touch
    for m, cx in ((mask_a, 45), (mask_b, 73)):
        d = np.sqrt((yy - 40) ** 2 + (xx - cx) ** 2) / 15
        shade = (60 + 50 * d)[..., None] * np.array([1.0, 0.7, 1.5])
        rgb[m] = np.clip(shade[m], 0, 255).astype(np.uint8)
    labels = segment_classical(rgb, 0.25)
    assert len(np.unique(labels[mask_a | mask_b])) - (0 in labels[mask_a | mask_b]) == 2


def test_fixed_threshold_and_bad_mpp(synthetic_tile):
    rgb, _, _ = synthetic_tile
    p = ClassicalParams(threshold=0.2, background_radius_um=8.0)
    assert segment_classical(rgb, 0.25, p).max() > 10
    with pytest.raises(ValueError):
        segment_classical(rgb, 0.0)


def test_segmenter_describes_itself():
    seg = ClassicalSegmenter()
    d = seg.describe()
    assert d["name"] == "classical" and d["params"]["work_mpp"] == 0.5
    assert seg.halo_um > 8


def test_contrast_filter_drops_flat_smears():
    """A uniform dark band has no contrast against its surroundings' ring once split."""
    rgb, _gt, _ = render_nuclei((200, 200), n=8, seed=9)
    keep_all = segment_classical(rgb, 0.25, ClassicalParams(min_contrast_od=0.0))
    strict = segment_classical(rgb, 0.25, ClassicalParams(min_contrast_od=5.0))
    assert keep_all.max() >= 6
    # rendered nuclei are isolated, so each has a ring; an impossible contrast removes all
    assert strict.max() == 0
