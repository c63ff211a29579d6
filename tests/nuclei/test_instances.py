"""Instances from a probability map: point-seeded watershed, distance maxima without points."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.nuclei.centres import Points
from zeropath.nuclei.instances import (
    binary_mask,
    instances_from_interior,
    instances_from_probability,
    interior_peaks,
)

MPP = 0.5


def _disks(shape: tuple[int, int], centres: list[tuple[float, float]], r: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    prob = np.zeros(shape, np.float32)
    for cy, cx in centres:
        prob = np.maximum(prob, ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32))
    return prob


def test_two_touching_disks_separate_with_two_points() -> None:
    prob = _disks((60, 80), [(30, 30), (30, 46)], 9.0)  # overlap: one connected blob
    assert binary_mask(prob, MPP).sum() > 0
    xy = np.array([[30.0, 30.0], [46.0, 30.0]])  # (x, y)
    before = prob.copy()
    lab = instances_from_probability(prob, xy, mpp=MPP)
    assert np.array_equal(prob, before)
    assert lab.dtype == np.uint32
    assert lab.max() == 2
    assert lab[30, 30] != lab[30, 46] and lab[30, 30] > 0 and lab[30, 46] > 0
    # the split runs near the middle, x = 38
    cols_a = np.nonzero(lab == lab[30, 30])[1]
    assert abs(int(cols_a.max()) - 38) <= 2
    # Points objects work too
    pts = Points(xy, np.ones(2, np.float32))
    assert np.array_equal(instances_from_probability(prob, pts, mpp=MPP), lab)


def test_touching_disks_separate_without_points() -> None:
    prob = _disks((60, 80), [(30, 28), (30, 48)], 10.0)
    lab = instances_from_probability(prob, None, mpp=MPP)
    assert lab.max() == 2 and lab[30, 28] != lab[30, 48]


def test_component_without_point_still_segmented() -> None:
    prob = _disks((60, 100), [(30, 20), (30, 75)], 8.0)
    lab = instances_from_probability(prob, np.array([[20.0, 30.0]]), mpp=MPP)
    assert lab.max() == 2 and lab[30, 75] > 0 and lab[30, 20] > 0


def test_points_outside_mask_and_duplicates_are_harmless() -> None:
    prob = _disks((50, 50), [(25, 25)], 8.0)
    xy = np.array([[25.0, 25.0], [25.6, 25.4], [2.0, 2.0], [-10.0, 70.0]])
    lab = instances_from_probability(prob, xy, mpp=MPP)
    assert lab.max() == 1
    assert (lab > 0).sum() == (prob > 0.5).sum()


def test_small_objects_and_holes() -> None:
    prob = _disks((60, 60), [(30, 30)], 10.0)
    prob[29:32, 29:32] = 0.0  # a small hole: filled
    prob[5:7, 5:7] = 1.0  # 4 px = 1 µm² at 0.5 µm/px: removed
    lab = instances_from_probability(prob, None, mpp=MPP, min_area_um2=4.0)
    assert lab.max() == 1 and lab[30, 30] == 1 and lab[5, 5] == 0


def test_empty_and_bad_inputs() -> None:
    lab = instances_from_probability(np.zeros((20, 30), np.float32), np.zeros((0, 2)), mpp=MPP)
    assert lab.shape == (20, 30) and lab.dtype == np.uint32 and lab.max() == 0
    with pytest.raises(ValueError):
        instances_from_probability(np.zeros((2, 3, 4)), mpp=MPP)
    with pytest.raises(ValueError):
        instances_from_probability(np.zeros((8, 8)), mpp=0)


def _interior_bumps(shape: tuple[int, int], centres: list[tuple[float, float]], r: float):
    """Interior probability of touching discs: 1 at each centre, falling to 0 at the rim."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    inter = np.zeros(shape, np.float32)
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx)
        inter = np.maximum(inter, np.clip(1.0 - d / r, 0.0, 1.0).astype(np.float32))
    return inter


def test_touching_discs_with_joined_interiors_split_at_interior_peaks() -> None:
    fg = _disks((60, 80), [(30, 30), (30, 44), (30, 68)], 9.0)  # the first two overlap
    # broad interior bumps: between the first two discs the interior stays above 0.5 (0.53)
    inter = _interior_bumps((60, 80), [(30, 30), (30, 44), (30, 68)], 15.0)
    assert inter[30, 37] > 0.5
    old = instances_from_interior(fg, inter, None, MPP, min_area_um2=1.0, marker_h=0.0)
    assert old.max() == 2  # threshold markers: the touching pair is one nucleus
    lab = instances_from_interior(fg, inter, None, MPP, min_area_um2=1.0)
    assert lab.dtype == np.uint32 and lab.max() == 3
    assert len({lab[30, 30], lab[30, 44], lab[30, 68]}) == 3
    # the cut runs at the interior valley between the overlapping discs
    assert lab[30, 35] == lab[30, 30] and lab[30, 39] == lab[30, 44]
    # a dip shallower than marker_h (0.47 < 0.6) keeps one object
    assert instances_from_interior(fg, inter, None, MPP, min_area_um2=1.0, marker_h=0.6).max() == 2


def test_interior_peaks_keeps_maxima_by_their_dynamics() -> None:
    inter = _interior_bumps((40, 60), [(20, 20), (20, 34)], 10.0)
    # the second bump capped at 0.6: it stands 0.3 above the saddle (0.3) at x = 27
    inter = np.minimum(inter, np.where(np.arange(60) >= 27, 0.6, 1.0)[None, :]).astype(np.float32)
    mask = inter > 0.05
    both = interior_peaks(inter, mask, h=0.2)
    assert len(both) == 2
    assert interior_peaks(inter, mask, h=0.45).tolist() == [[20, 20]]
    assert len(interior_peaks(np.zeros((8, 8), np.float32), np.ones((8, 8), bool), 0.3)) == 0
