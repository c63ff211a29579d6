"""Pseudo-labels from points: Voronoi, k-means clusters, masks and their consensus."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from zeropath.nuclei.centres import Points
from zeropath.nuclei.pseudolabels import (
    BACKGROUND,
    IGNORE,
    NUCLEUS,
    cluster_label,
    combine_labels,
    make_pseudolabels,
    mask_label,
    nearest_seed,
    voronoi_label,
)
from zeropath.testing import render_nuclei

MPP = 0.5


def _xy(centres_rc: np.ndarray) -> np.ndarray:
    return centres_rc[:, ::-1].copy()


def test_nearest_seed_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 40, (7, 2))
    cells, dist = nearest_seed((40, 40), xy)
    rc = np.rint(xy[:, ::-1])
    yy, xx = np.mgrid[0:40, 0:40]
    d2 = (yy[..., None] - rc[:, 0]) ** 2 + (xx[..., None] - rc[:, 1]) ** 2
    np.testing.assert_allclose(dist, np.sqrt(d2.min(-1)), atol=1e-5)
    # where the nearest seed is unique, the cell is that seed's (1-based, point order)
    s = np.sort(d2, axis=-1)
    unique = s[..., 0] < s[..., 1]
    assert np.array_equal(cells[unique], d2.argmin(-1)[unique] + 1)


def test_voronoi_edge_separates_two_close_points() -> None:
    xy = np.array([[30.0, 40.0], [38.0, 40.0]])  # 8 px = 4 µm apart at 0.5 µm/px
    lab = voronoi_label((80, 80), xy, MPP, point_radius_um=1.0, edge_width_um=1.0)
    assert lab.dtype == np.uint8
    assert set(np.unique(lab)) <= {BACKGROUND, NUCLEUS, IGNORE}
    assert lab[40, 30] == NUCLEUS and lab[40, 38] == NUCLEUS
    assert lab[40, 34] == BACKGROUND or lab[40, 33] == BACKGROUND  # the bisector x = 34
    # the edge is a thin line (1-2 px) ...
    assert 1 <= int((lab[40] == BACKGROUND).sum()) <= 2
    # ... that cuts the plane: each point lies in its own non-background region
    regions, n = ndi.label(lab != BACKGROUND)
    assert n == 2 and regions[40, 30] != regions[40, 38]


def test_voronoi_degenerate_inputs() -> None:
    assert (voronoi_label((10, 10), np.zeros((0, 2)), MPP) == IGNORE).all()
    one = voronoi_label((20, 20), np.array([[10.0, 10.0]]), MPP)
    assert one[10, 10] == NUCLEUS and not (one == BACKGROUND).any()
    # points outside the image are ignored, not an error
    out = voronoi_label((20, 20), np.array([[-5.0, 3.0], [100.0, 100.0]]), MPP)
    assert (out == IGNORE).all()
    with pytest.raises(ValueError):
        voronoi_label((10, 10), np.zeros((1, 2)), 0.0)


@pytest.mark.parametrize("per_cell", [False, True])
def test_cluster_label_nucleus_at_points_on_rendered_nuclei(per_cell: bool) -> None:
    rgb, gt, centres = render_nuclei((160, 160), n=18, radius=(5.0, 8.0), seed=3)
    before = rgb.copy()
    lab = cluster_label(rgb, _xy(centres), MPP, per_cell=per_cell)
    assert np.array_equal(rgb, before)  # input untouched
    fg = gt > 0
    nuc, bg = lab == NUCLEUS, lab == BACKGROUND
    assert nuc.sum() > 0.3 * fg.sum() and bg.sum() > 0.3 * (~fg).sum()
    assert fg[nuc].mean() > 0.9  # precision of the sure nucleus pixels
    assert (~fg)[bg].mean() > 0.9  # precision of the sure background pixels
    rc = np.rint(centres).astype(int)
    assert (lab[rc[:, 0], rc[:, 1]] == NUCLEUS).mean() > 0.9


def test_cluster_label_is_deterministic_and_accepts_points() -> None:
    rgb, _, centres = render_nuclei((96, 96), n=8, seed=5)
    pts = Points(_xy(centres), np.ones(len(centres), np.float32))
    a = cluster_label(rgb, pts, MPP, colour_space="rgb")
    b = cluster_label(rgb, _xy(centres), MPP, colour_space="rgb")
    assert np.array_equal(a, b)
    assert (cluster_label(rgb, np.zeros((0, 2)), MPP) == IGNORE).all()


def test_combine_truth_table() -> None:
    n, b, i = NUCLEUS, BACKGROUND, IGNORE
    a = np.array([n, n, n, b, b, b, i, i, i], np.uint8)
    c = np.array([n, b, i, n, b, i, n, b, i], np.uint8)
    want = np.array([n, i, n, i, b, b, n, b, i], np.uint8)
    assert np.array_equal(combine_labels(a, c), want)
    # a third source that is sure can veto, one that abstains changes nothing
    assert np.array_equal(combine_labels(a, c, np.full(9, i, np.uint8)), want)
    veto = combine_labels(a, c, np.full(9, b, np.uint8))
    assert np.array_equal(veto, np.array([i, i, i, i, b, b, i, b, b], np.uint8))
    assert np.array_equal(combine_labels(a), a)
    with pytest.raises(ValueError):
        combine_labels()
    with pytest.raises(ValueError):
        combine_labels(a, a[:4])


def test_mask_label_from_instances() -> None:
    masks = np.zeros((40, 40), np.int32)
    masks[10:20, 5:15] = 1
    masks[10:20, 15:25] = 2  # touching instance
    lab = mask_label(masks, MPP, ring_um=1.0)
    assert lab[15, 8] == NUCLEUS and lab[15, 20] == NUCLEUS
    assert lab[15, 14] == BACKGROUND and lab[15, 15] == BACKGROUND  # between the two
    assert lab[8, 10] == BACKGROUND  # the ring outside
    assert lab[35, 35] == IGNORE
    binary = mask_label(masks > 0, MPP)
    assert binary[15, 14] == NUCLEUS


def test_make_pseudolabels_sources_and_sam() -> None:
    rgb, gt, centres = render_nuclei((128, 128), n=12, seed=2)
    xy = _xy(centres)
    both = make_pseudolabels(rgb, xy, MPP)
    vor = make_pseudolabels(rgb, xy, MPP, use=("voronoi",), colour_check=False)
    assert np.array_equal(vor, voronoi_label(rgb.shape[:2], xy, MPP))
    assert (both != IGNORE).mean() > (vor != IGNORE).mean()
    fg = gt > 0
    assert fg[both == NUCLEUS].mean() > 0.9 and (~fg)[both == BACKGROUND].mean() > 0.9
    # ground-truth masks as the third source only add agreeing pixels here
    with_sam = make_pseudolabels(rgb, xy, MPP, sam_mask=gt)
    assert (with_sam != IGNORE).sum() >= (both != IGNORE).sum() * 0.95
    assert fg[with_sam == NUCLEUS].mean() > 0.9
    assert (make_pseudolabels(rgb, xy, MPP, use=()) == IGNORE).all()
    with pytest.raises(ValueError):
        make_pseudolabels(rgb, xy, MPP, use=("sam",))
    with pytest.raises(ValueError):
        make_pseudolabels(rgb, xy, MPP, sam_mask=gt[:10])


def test_false_point_on_stroma_gets_no_nucleus_label() -> None:
    rgb, gt, centres = render_nuclei((128, 128), n=10, seed=4)
    dist = ndi.distance_transform_edt(gt == 0)
    r, c = np.unravel_index(np.argmax(dist), dist.shape)  # the stroma pixel farthest away
    xy = np.vstack([_xy(centres), [[c, r]]])
    lab = make_pseudolabels(rgb, xy, MPP)
    assert lab[r, c] != NUCLEUS
