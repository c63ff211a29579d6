"""Tests of zeropath.metrics: hand-computed cases and a naive literal reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment

from zeropath import metrics
from zeropath.metrics import (
    aji,
    aji_plus,
    detection_f1,
    dice,
    evaluate_pair,
    object_dice,
    pq,
)

METRIC_KEYS = ("dice", "aji", "aji_plus", "pq", "dq", "sq", "object_dice", "det_f1")

# --------------------------------------------------------------------------------------------
# A deliberately naive reference: loops over ids and per-instance masks, literal definitions.


def _ids(a):
    return [int(i) for i in np.unique(a) if i != 0]


def _pairwise(gt, pred):
    """Dense inter / union tables with one row per gt id and one column per pred id."""
    gids, pids = _ids(gt), _ids(pred)
    inter = np.zeros((len(gids), len(pids)))
    union = np.zeros((len(gids), len(pids)))
    for i, g in enumerate(gids):
        gm = gt == g
        for j, p in enumerate(pids):
            pm = pred == p
            inter[i, j] = np.logical_and(gm, pm).sum()
            union[i, j] = np.logical_or(gm, pm).sum()
    return gids, pids, inter, union


def naive_dice(gt, pred):
    g, p = gt > 0, pred > 0
    if g.sum() + p.sum() == 0:
        return 1.0
    return 2 * (g & p).sum() / (g.sum() + p.sum())


def _naive_aji_common(gt, pred, unique):
    gids, pids, inter, union = _pairwise(gt, pred)
    if not gids and not pids:
        return 1.0
    if not gids or not pids:
        return 0.0
    iou = inter / (union + 1e-6)
    if unique:
        rows, cols = linear_sum_assignment(-iou)
        pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0]
    else:
        pairs = [(r, int(np.argmax(iou[r]))) for r in range(len(gids)) if iou[r].max() > 0]
    total_inter = sum(inter[r, c] for r, c in pairs)
    total_union = sum(union[r, c] for r, c in pairs)
    paired_g = {r for r, _ in pairs}
    paired_p = {c for _, c in pairs}
    for i, g in enumerate(gids):
        if i not in paired_g:
            total_union += (gt == g).sum()
    for j, p in enumerate(pids):
        if j not in paired_p:
            total_union += (pred == p).sum()
    return total_inter / total_union


def naive_aji(gt, pred):
    return _naive_aji_common(gt, pred, unique=False)


def naive_aji_plus(gt, pred):
    return _naive_aji_common(gt, pred, unique=True)


def naive_pq(gt, pred, match_iou=0.5):
    gids, pids, inter, union = _pairwise(gt, pred)
    if not gids and not pids:
        return 1.0, 1.0, 1.0
    matched = []
    for i in range(len(gids)):
        for j in range(len(pids)):
            if union[i, j] and inter[i, j] / union[i, j] > match_iou:
                matched.append(inter[i, j] / union[i, j])
    tp = len(matched)
    fp, fn = len(pids) - tp, len(gids) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = sum(matched) / tp if tp else 0.0
    return dq, sq, dq * sq


def naive_object_dice(gt, pred):
    gids, pids = _ids(gt), _ids(pred)
    if not gids and not pids:
        return 1.0
    if not gids or not pids:
        return 0.0

    def half(a, b):
        total = (a > 0).sum()
        acc = 0.0
        for i in _ids(a):
            am = a == i
            hits = b[am]
            hits = hits[hits != 0]
            if hits.size:
                vals, counts = np.unique(hits, return_counts=True)
                partner = b == vals[np.argmax(counts)]  # max overlap, lowest id on ties
                d = 2 * (am & partner).sum() / (am.sum() + partner.sum())
            else:
                d = 0.0
            acc += am.sum() / total * d
        return acc

    return 0.5 * (half(gt, pred) + half(pred, gt))


def _naive_centroids(a):
    out = []
    for i in _ids(a):
        rr, cc = np.nonzero(a == i)
        out.append((rr.mean(), cc.mean()))
    return out


def naive_detection(gt, pred, radius=12.0):
    ca, cb = _naive_centroids(gt), _naive_centroids(pred)
    if not ca and not cb:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 0, "fp": 0, "fn": 0}
    adj = [[j for j, b in enumerate(cb) if np.hypot(a[0] - b[0], a[1] - b[1]) < radius] for a in ca]
    owner: dict[int, int] = {}

    def augment(i, seen):  # Kuhn's augmenting paths: a maximum matching
        for j in adj[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    tp = sum(augment(i, set()) for i in range(len(ca)))
    n_gt, n_pred = len(ca), len(cb)
    return {
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_gt if n_gt else 0.0,
        "f1": 2 * tp / (n_gt + n_pred),
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_gt - tp,
    }


# --------------------------------------------------------------------------------------------
# Hand-computed cases.


def test_dice_hand():
    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
    pred = np.array([[0, 5, 5, 0], [0, 5, 5, 0]])
    # |G| = 4, |P| = 4, |G∩P| = 2  ->  2 * 2 / (4 + 4) = 0.5
    assert dice(gt, pred) == pytest.approx(0.5)


def test_one_pred_covering_two_gt():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[7, 7, 7, 7]])
    # IoU(1,7) = 2/4, IoU(2,7) = 2/4.
    # AJI: both gt pair with 7 -> inter 2 + 2 = 4, union 4 + 4 = 8 -> 0.5
    assert aji(gt, pred) == pytest.approx(0.5)
    # AJI+: one pair (inter 2, union 4); the other gt (area 2) joins the union -> 2 / 6
    assert aji_plus(gt, pred) == pytest.approx(1 / 3)
    # PQ: IoU 0.5 is not > 0.5 -> tp 0, fp 1, fn 2 -> all 0
    assert pq(gt, pred) == pytest.approx((0.0, 0.0, 0.0))
    # Object Dice: gt side 0.5 * 2*2/(2+4) + 0.5 * 2*2/(2+4) = 2/3;
    # pred side: 7's partner is gt 1 (tie -> lowest id), Dice 2/3, weight 1 -> 2/3
    assert object_dice(gt, pred) == pytest.approx(2 / 3)
    # Foreground Dice: identical foregrounds -> 1
    assert dice(gt, pred) == pytest.approx(1.0)


def test_pq_and_aji_hand():
    gt = np.array([[1, 1, 1, 1, 2, 2]])
    pred = np.array([[3, 3, 3, 0, 4, 0]])
    # IoU(1,3) = 3/4 (match), IoU(2,4) = 1/2 (not > 0.5): tp 1, fp 1, fn 1
    # DQ = 1 / (1 + 0.5 + 0.5) = 0.5, SQ = 0.75, PQ = 0.375
    assert pq(gt, pred) == pytest.approx((0.5, 0.75, 0.375))
    # With match_iou 0.4 the Hungarian pairing keeps both: DQ 1, SQ (0.75 + 0.5) / 2
    assert pq(gt, pred, match_iou=0.4) == pytest.approx((1.0, 0.625, 0.625))
    # AJI: (3 + 1) / (4 + 2) = 2/3; AJI+ pairs the same
    assert aji(gt, pred) == pytest.approx(2 / 3)
    assert aji_plus(gt, pred) == pytest.approx(2 / 3)


def test_object_dice_hand():
    gt = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[2, 2, 0, 0, 3, 3]])
    # gt side: G1's partner is S2 (overlap 2): Dice 2*2/(4+2) = 2/3, weight 1 -> 2/3
    # pred side: S2 -> G1, Dice 2/3, weight 2/4; S3 overlaps nothing, Dice 0 -> 1/3
    # object Dice = (2/3 + 1/3) / 2 = 0.5
    assert object_dice(gt, pred) == pytest.approx(0.5)


def test_detection_needs_maximum_matching():
    gt = np.zeros((1, 30), np.uint16)
    pred = np.zeros((1, 30), np.uint16)
    gt[0, 10] = 1  # A at x = 10
    gt[0, 22] = 2  # B at x = 22
    pred[0, 15:17] = 5  # P at x = 15.5: 5.5 from A, 6.5 from B
    pred[0, 3:5] = 9  # Q at x = 3.5: 6.5 from A, 18.5 from B
    pred[0, 29] = 11  # R far from everything
    # Greedy nearest-first would take A-P and leave B alone; the maximum matching is
    # A-Q, B-P: tp 2, fp 1 (R), fn 0 -> precision 2/3, recall 1, F1 = 2*2/(2+3) = 0.8
    det = detection_f1(gt, pred, radius=7.0)
    assert (det["tp"], det["fp"], det["fn"]) == (2, 1, 0)
    assert det["precision"] == pytest.approx(2 / 3)
    assert det["recall"] == pytest.approx(1.0)
    assert det["f1"] == pytest.approx(0.8)


def test_detection_radius_is_strict():
    gt = np.zeros((1, 20), np.uint8)
    pred = np.zeros((1, 20), np.uint8)
    gt[0, 0] = 1
    pred[0, 12] = 1
    # distance exactly 12 is not "closer than" 12
    assert detection_f1(gt, pred, radius=12.0)["tp"] == 0
    assert detection_f1(gt, pred, radius=12.5)["tp"] == 1


def test_edge_cases_empty():
    empty = np.zeros((5, 5), np.uint8)
    some = empty.copy()
    some[1:3, 1:3] = 4
    both = evaluate_pair(empty, empty)
    for key in (*METRIC_KEYS, "det_precision", "det_recall"):
        assert both[key] == 1.0, key
    assert both["n_gt"] == both["n_pred"] == 0
    for gt, pred in ((empty, some), (some, empty)):
        res = evaluate_pair(gt, pred)
        for key in (*METRIC_KEYS, "det_precision", "det_recall"):
            assert res[key] == 0.0, key


def test_identical_inputs_score_one():
    gt = np.zeros((20, 20), np.int32)
    gt[2:6, 2:6] = 3
    gt[10:15, 4:9] = 17
    gt[12:18, 12:19] = 200
    res = evaluate_pair(gt, gt.copy())
    for key in (*METRIC_KEYS, "det_precision", "det_recall"):
        assert res[key] == pytest.approx(1.0), key
    assert res["n_gt"] == res["n_pred"] == 3


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_pair(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="2-D"):
        dice(np.zeros((3, 3, 3), int), np.zeros((3, 3, 3), int))
    with pytest.raises(TypeError):
        aji(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="negative"):
        aji(-np.ones((3, 3), int), np.zeros((3, 3), int))


# --------------------------------------------------------------------------------------------
# Property tests against the naive reference.

IDS = [0, 0, 0, 1, 2, 5, 9, 40, 255]


@st.composite
def label_pairs(draw):
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.uint32]))
    elements = st.sampled_from(IDS)
    gt = draw(hnp.arrays(dtype, (h, w), elements=elements))
    mode = draw(st.sampled_from(["random", "empty", "perturbed"]))
    if mode == "empty":
        pred = np.zeros((h, w), dtype)
    elif mode == "perturbed":
        # a lightly edited copy of gt: realistic partial overlaps
        pred = gt.copy()
        mask = draw(hnp.arrays(np.bool_, (h, w)))
        pred[mask] = draw(hnp.arrays(dtype, (h, w), elements=elements))[mask]
    else:
        pred = draw(hnp.arrays(dtype, (h, w), elements=elements))
    if draw(st.booleans()):
        gt, pred = pred, gt
    return gt, pred


def _block_labels(rng, shape=(24, 24), n=6, offset=0):
    out = np.zeros(shape, np.int64)
    for k in range(n):
        y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        hh, ww = rng.integers(2, 8, size=2)
        out[y : y + hh, x : x + ww] = offset + 3 * k + 2
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_pairs())
def test_fast_matches_naive_pixel_noise(pair):
    _check_against_naive(*pair)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 8), st.integers(0, 8))
def test_fast_matches_naive_blocks(seed, n_gt, n_pred):
    rng = np.random.default_rng(seed)
    gt = _block_labels(rng, n=n_gt)
    pred = _block_labels(rng, n=n_pred, offset=100)
    _check_against_naive(gt, pred)


def _check_against_naive(gt, pred):
    gt0, pred0 = gt.copy(), pred.copy()
    gt.flags.writeable = False
    pred.flags.writeable = False
    res = evaluate_pair(gt, pred, radius=3.0)
    dq, sq, pq_ = naive_pq(gt, pred)
    det = naive_detection(gt, pred, radius=3.0)
    expected = {
        "dice": naive_dice(gt, pred),
        "aji": naive_aji(gt, pred),
        "aji_plus": naive_aji_plus(gt, pred),
        "pq": pq_,
        "dq": dq,
        "sq": sq,
        "object_dice": naive_object_dice(gt, pred),
        "det_f1": det["f1"],
        "det_precision": det["precision"],
        "det_recall": det["recall"],
    }
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, abs=1e-4), key
    assert (res["det_tp"], res["det_fp"], res["det_fn"]) == (det["tp"], det["fp"], det["fn"])
    assert res["n_gt"] == len(_ids(gt)) and res["n_pred"] == len(_ids(pred))
    # the public single-metric functions agree with evaluate_pair
    assert dice(gt, pred) == pytest.approx(res["dice"])
    assert aji(gt, pred) == pytest.approx(res["aji"])
    assert aji_plus(gt, pred) == pytest.approx(res["aji_plus"])
    assert pq(gt, pred) == pytest.approx((res["dq"], res["sq"], res["pq"]))
    assert object_dice(gt, pred) == pytest.approx(res["object_dice"])
    assert detection_f1(gt, pred, radius=3.0)["f1"] == pytest.approx(res["det_f1"])
    # never mutated
    np.testing.assert_array_equal(gt, gt0)
    np.testing.assert_array_equal(pred, pred0)
    assert gt.dtype == gt0.dtype and pred.dtype == pred0.dtype


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 25), st.integers(0, 25))
def test_detection_matches_naive_on_point_clouds(seed, n_gt, n_pred):
    # single-pixel nuclei in crowded clouds: many competing candidate pairs
    rng = np.random.default_rng(seed)
    gt = np.zeros((20, 20), np.uint16)
    pred = np.zeros((20, 20), np.uint16)
    for img, n in ((gt, n_gt), (pred, n_pred)):
        flat = rng.choice(img.size, size=n, replace=False)
        img.flat[flat] = rng.choice(np.arange(1, 1000), size=n, replace=False)
    got = detection_f1(gt, pred, radius=4.0)
    want = naive_detection(gt, pred, radius=4.0)
    assert got == pytest.approx(want)


@settings(max_examples=60, deadline=None)
@given(label_pairs(), st.integers(0, 2**32 - 1))
def test_invariant_to_relabelling(pair, seed):
    gt, pred = pair
    base = evaluate_pair(gt, pred)
    # An order-preserving relabelling (offset, gaps, wider dtype) changes nothing at all.
    mono = evaluate_pair(gt.astype(np.int64) * 7 + (gt > 0) * 1000, pred.astype(np.uint32) * 3)
    assert mono == pytest.approx(base)
    # Any permutation of ids leaves the tie-free metrics unchanged (AJI/object Dice break
    # exact ties between partners by id, as the reference implementations do).
    rng = np.random.default_rng(seed)
    perm = np.concatenate([[0], rng.permutation(np.arange(1, 256)) + 1000])
    permuted = evaluate_pair(perm[gt], perm[pred])
    for key in ("dice", "pq", "dq", "sq", "det_f1", "det_precision", "det_recall", "n_gt"):
        assert permuted[key] == pytest.approx(base[key]), key
    # Swapping gt and pred leaves the symmetric metrics unchanged.
    swapped = evaluate_pair(pred, gt)
    for key in ("dice", "pq", "dq", "sq", "object_dice", "det_f1"):
        assert swapped[key] == pytest.approx(base[key]), key


def _disks(rng, shape=(160, 160), n=40, jitter=0.0, base=None):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint32)
    centres = base if base is not None else rng.uniform(8, shape[0] - 8, size=(n, 2))
    for k, (cy, cx) in enumerate(centres, start=1):
        cy, cx = cy + rng.normal(0, jitter), cx + rng.normal(0, jitter)
        r = rng.uniform(3.5, 7.5)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return out, centres


def test_large_paths_agree(monkeypatch):
    """Per-component Hungarian, sorted relabelling and np.unique overlap give the same result."""
    rng = np.random.default_rng(3)
    gt, centres = _disks(rng)
    pred, _ = _disks(rng, jitter=2.0, base=centres[rng.permutation(len(centres))[:35]])
    base = evaluate_pair(gt, pred)
    assert 0.3 < base["aji_plus"] < 1.0
    monkeypatch.setattr(metrics, "_DENSE_LSA_CELLS", 0)
    monkeypatch.setattr(metrics, "_LUT_MAX_ID", 0)
    monkeypatch.setattr(metrics, "_BINCOUNT_MAX_CELLS", 0)
    assert evaluate_pair(gt, pred) == pytest.approx(base)
    assert pq(gt, pred, match_iou=0.3) == pytest.approx(naive_pq_lsa(gt, pred, 0.3), abs=1e-9)


def naive_pq_lsa(gt, pred, match_iou):
    """HoVer-Net's match_iou < 0.5 branch: Hungarian pairing on IoU, then thresholded."""
    gids, pids, inter, union = _pairwise(gt, pred)
    iou = inter / union
    rows, cols = linear_sum_assignment(-iou)
    matched = [iou[r, c] for r, c in zip(rows, cols, strict=True) if iou[r, c] > match_iou]
    tp = len(matched)
    dq = tp / (tp + 0.5 * (len(pids) - tp) + 0.5 * (len(gids) - tp))
    sq = sum(matched) / tp if tp else 0.0
    return dq, sq, dq * sq


def test_huge_ids_and_bool():
    gt = np.zeros((6, 6), np.uint64)
    gt[:3, :3] = 2**40
    gt[3:, 3:] = 7
    pred = np.zeros((6, 6), np.uint32)
    pred[:3, :3] = 2**31 + 5
    res = evaluate_pair(gt, pred)
    # one of two gt nuclei found exactly: PQ tp 1, fn 1 -> DQ = 1 / 1.5
    assert res["dq"] == pytest.approx(2 / 3)
    assert res["sq"] == pytest.approx(1.0)
    assert dice(gt > 0, pred > 0) == pytest.approx(res["dice"])


def test_speed_1000_nuclei():
    """All metrics on a 1000x1000 pair with ~1000 nuclei well under a second."""
    import time

    rng = np.random.default_rng(0)
    size, side = 1000, 32
    step = size / side
    cy, cx = np.meshgrid((np.arange(side) + 0.5) * step, (np.arange(side) + 0.5) * step)
    cy = cy.ravel() + rng.uniform(-3, 3, cy.size)
    cx = cx.ravel() + rng.uniform(-3, 3, cx.size)
    r = rng.uniform(6, 12, cy.size)
    yy, xx = np.mgrid[:size, :size]
    # nearest-centre assignment within radius: a Voronoi-clipped disk image, built vectorised
    iy = np.clip((yy / step).astype(int), 0, side - 1)
    ix = np.clip((xx / step).astype(int), 0, side - 1)
    k = ix * side + iy
    inside = (yy - cy[k]) ** 2 + (xx - cx[k]) ** 2 <= r[k] ** 2
    gt = np.where(inside, k + 1, 0).astype(np.uint32)
    shifted = np.roll(gt, (2, -1), axis=(0, 1))
    evaluate_pair(gt, shifted)  # warm-up
    t0 = time.perf_counter()
    res = evaluate_pair(gt, shifted)
    elapsed = time.perf_counter() - t0
    assert res["n_gt"] > 900
    assert res["det_f1"] > 0.99  # np.roll wraps a few border nuclei around
    assert elapsed < 1.0
