"""Stain-prior coarse detector, Points helpers and HED augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.nuclei.augment import d4, d4_inverse, hed_jitter, random_d4
from zeropath.nuclei.centres import (
    Points,
    match_counts,
    nms_points,
    points_from_csv,
    points_to_csv,
    points_to_labels,
)
from zeropath.nuclei.detect import Detector, StainPriorDetector, from_work, to_work
from zeropath.testing import render_nuclei


def _f1(points: Points, centres_rc: np.ndarray, radius_px: float) -> float:
    gt = Points(centres_rc[:, ::-1].copy(), np.ones(len(centres_rc), np.float32))
    tp, fp, fn = match_counts(points, gt, radius_px)
    return 2 * tp / max(1, 2 * tp + fp + fn)


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_stain_prior_finds_rendered_nuclei(mpp: float) -> None:
    det = StainPriorDetector()
    assert isinstance(det, Detector)
    for seed in range(3):
        rgb, _, centres = render_nuclei((256, 256), n=20, seed=seed)
        before = rgb.copy()
        pts = det.detect(rgb, mpp)
        assert np.array_equal(rgb, before)
        assert pts.xy.dtype == np.float64 and pts.xy.shape == (len(pts), 2)
        assert pts.score.dtype == np.float32
        assert np.all((pts.score >= 0) & (pts.score <= 1))
        # input-pixel coordinates: within the image whatever the working resolution
        assert np.all((pts.xy >= -0.5) & (pts.xy <= 255.5))
        assert _f1(pts, centres, 3.0 / mpp) > 0.9


def test_stain_prior_blank_and_deterministic() -> None:
    det = StainPriorDetector()
    assert len(det.detect(np.full((200, 300, 3), 255, np.uint8), 0.5)) == 0
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 4, (200, 200, 3)), 0, 255).astype(np.uint8)
    assert len(det.detect(glass, 0.25)) == 0
    assert len(StainPriorDetector(foreground=False).detect(glass, 0.25)) == 0
    rgb, _, _ = render_nuclei((192, 192), n=12, seed=4)
    a, b = det.detect(rgb, 0.5), det.detect(rgb, 0.5)
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.score, b.score)
    # a dark, sharp nucleus scores higher than a faint one
    assert a.score.max() > 0.5


def test_stain_prior_confidence_ranks_faint_lower() -> None:
    rgb, labels, _ = render_nuclei((160, 160), n=8, radius=(6, 7), seed=1)
    faint = rgb.copy()
    faint[labels == 1] = (faint[labels == 1].astype(np.int16) + 90).clip(0, 255).astype(np.uint8)
    pts = StainPriorDetector(foreground=False).detect(faint, 0.5)
    assert len(pts) == 8
    rows, cols = np.nonzero(labels == 1)
    d = np.linalg.norm(pts.xy - np.array([cols.mean(), rows.mean()]), axis=1)
    assert d.min() < 2
    assert pts.score[d.argmin()] < 0.6 < np.delete(pts.score, d.argmin()).min()


def test_work_grid_round_trip() -> None:
    rgb = np.zeros((100, 60, 3), np.uint8)
    work, ratios = to_work(rgb, 0.25)
    assert work.shape[:2] == (50, 30) and ratios == (0.5, 0.5)
    pts = Points(np.array([[0.0, 0.0], [29.0, 49.0]]), np.ones(2, np.float32))
    back = from_work(pts, ratios)
    assert np.allclose(back.xy, [[0.5, 0.5], [58.5, 98.5]])
    same, r1 = to_work(rgb, 0.5)
    assert same is rgb or np.array_equal(same, rgb)
    assert r1 == (1.0, 1.0)
    with pytest.raises(ValueError):
        to_work(rgb, 0.0)


def test_points_helpers(tmp_path) -> None:
    pts = Points(
        np.array([[10.0, 10.0], [11.0, 10.0], [30.0, 5.0], [10.0, 12.5]]),
        np.array([0.5, 0.9, 0.3, 0.9], np.float32),
    )
    kept = nms_points(pts, 3.0)
    assert np.allclose(kept.xy, [[11.0, 10.0], [30.0, 5.0]])
    assert np.allclose(kept.score, [0.9, 0.3])
    assert len(Points.empty()) == 0 and len(nms_points(Points.empty(), 2.0)) == 0
    assert np.allclose(pts.scaled(2.0).xy, pts.xy * 2)
    labels = points_to_labels(pts, (20, 20))
    assert labels.dtype == np.uint32 and labels[10, 10] == 1 and labels[10, 11] == 2
    assert (labels > 0).sum() == 3  # (30, 5) lies outside
    path = tmp_path / "p.csv"
    points_to_csv(pts, path)
    back = points_from_csv(path)
    assert np.allclose(back.xy, pts.xy) and np.allclose(back.score, pts.score, atol=1e-5)
    gt = Points(np.array([[10.0, 10.0], [50.0, 50.0]]), np.ones(2, np.float32))
    assert match_counts(pts, gt, 2.0) == (1, 3, 1)
    assert match_counts(Points.empty(), gt, 2.0) == (0, 0, 2)


def test_hed_jitter_and_d4_do_not_mutate() -> None:
    rng = np.random.default_rng(0)
    rgb, _, _ = render_nuclei((40, 56), n=3, seed=2)
    before = rgb.copy()
    out = hed_jitter(rgb, rng, sigma=0.1, bias=0.1)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(rgb, before)
    assert not np.array_equal(out, rgb)
    assert np.array_equal(hed_jitter(rgb, rng, sigma=0.0, bias=0.0), rgb)
    white = np.full((4, 4, 3), 255, np.uint8)
    assert np.array_equal(hed_jitter(white, rng, 0.1, 0.1), white)
    f = rgb.astype(np.float32) / 255
    fout = hed_jitter(f, np.random.default_rng(1))
    assert fout.dtype == np.float32 and fout.shape == f.shape and fout.max() <= 1.0
    for k in range(8):
        assert np.array_equal(d4_inverse(d4(rgb, k), k), rgb)
    img, lab = random_d4(rng, rgb, rgb[..., 0])
    assert np.array_equal(img[..., 0], lab)
    assert np.array_equal(rgb, before)
