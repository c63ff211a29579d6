"""Confidence maps, peak finding, ConfNet and precision learning on synthetic tiles."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from zeropath.nuclei.centres import Points, match_counts
from zeropath.nuclei.detect import Detector, StainPriorDetector
from zeropath.nuclei.refine import (
    FitSettings,
    Refiner,
    find_peaks,
    fit_refiner,
    gaussian_confidence_map,
)
from zeropath.testing import render_nuclei

torch = pytest.importorskip("torch")


def test_gaussian_map_peaks_and_values() -> None:
    xy = np.array([[10.0, 20.0], [40.0, 5.0]])
    m = gaussian_confidence_map((32, 64), xy, sigma_px=2.0)
    assert m.shape == (32, 64) and m.dtype == np.float32
    assert m[20, 10] == pytest.approx(1.0) and m[5, 40] == pytest.approx(1.0)
    assert m[20, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)
    assert m[0, 63] == 0.0 and m.max() <= 1.0
    w = gaussian_confidence_map((32, 64), xy, 2.0, weights=np.array([0.5, 0.8]))
    assert w[20, 10] == pytest.approx(0.5) and w[5, 40] == pytest.approx(0.8)
    # max, not sum, of overlapping Gaussians; sub-pixel centre
    close = gaussian_confidence_map((20, 20), np.array([[9.0, 9.0], [11.0, 9.0]]), 2.0)
    assert close.max() == pytest.approx(1.0)
    sub = gaussian_confidence_map((9, 9), np.array([[4.5, 4.0]]), 1.0)
    assert sub[4, 4] == pytest.approx(sub[4, 5]) and sub[4, 4] < 1.0
    assert not gaussian_confidence_map((5, 5), np.zeros((0, 2)), 2.0).any()
    with pytest.raises(ValueError):
        gaussian_confidence_map((5, 5), xy, 1.0, weights=np.ones(3))


def test_find_peaks_nms_and_subpixel() -> None:
    xy = np.array([[10.0, 10.0], [30.2, 12.0], [50.0, 40.0]])
    conf = gaussian_confidence_map((60, 64), xy, 2.0, weights=np.array([0.9, 0.7, 0.2]))
    pts = find_peaks(conf, min_distance_px=4, threshold=0.3)
    assert len(pts) == 2  # the 0.2 peak is below threshold
    assert np.allclose(pts.score, [0.9, 0.7], atol=0.01)
    assert np.allclose(pts.xy, xy[:2], atol=0.15)  # sub-pixel refinement recovers 30.2
    # two bumps 3 px apart: NMS at 4 px keeps the stronger one only
    pair = gaussian_confidence_map(
        (30, 30), np.array([[10.0, 10.0], [13.0, 10.0]]), 1.0, np.array([1.0, 0.8])
    )
    one = find_peaks(pair, min_distance_px=4, threshold=0.1)
    assert len(one) == 1 and np.allclose(one.xy[0], [10, 10], atol=0.2)
    assert len(find_peaks(pair, min_distance_px=2, threshold=0.1)) == 2
    assert len(find_peaks(np.zeros((10, 10), np.float32), 2, 0.1)) == 0
    assert len(find_peaks(np.full((10, 10), 0.5, np.float32), 2, 0.6)) == 0


def test_confnet_shapes_and_size() -> None:
    from zeropath.models.confnet import ConfNet, rgb_to_tensor

    net = ConfNet().eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert 50_000 < n_params < 300_000
    x = rgb_to_tensor(np.zeros((2, 37, 50, 3), np.uint8))
    with torch.inference_mode():
        y = net(x)
    assert tuple(y.shape) == (2, 1, 37, 50)


def test_tiled_prediction_matches_whole_image() -> None:
    from dataclasses import replace

    from zeropath.models.confnet import ConfNet
    from zeropath.nuclei.refine import RefinerConfig

    torch.manual_seed(0)
    net = ConfNet()
    for m in net.modules():  # non-trivial normalisation statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    low = RefinerConfig(threshold=0.1)  # an untrained net: low but structured confidence
    whole = Refiner(net, low)
    tiled = Refiner(net, replace(low, tile_px=130))
    rgb = render_nuclei((230, 210), n=30, seed=1)[0]
    assert np.abs(whole.predict_map(rgb) - tiled.predict_map(rgb)).max() < 1e-4
    a, b = whole.detect(rgb, 0.5), tiled.detect(rgb, 0.5)
    assert len(a) > 0 and len(a) == len(b)
    order_a, order_b = np.lexsort(a.xy.T), np.lexsort(b.xy.T)  # near-equal scores may swap
    assert np.allclose(a.xy[order_a], b.xy[order_b], atol=1e-2)


def _data(n: int, seed0: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    imgs, centres = [], []
    for s in range(n):
        rgb, _, c = render_nuclei((192, 192), n=14, radius=(5, 8), seed=seed0 + s)
        imgs.append(rgb)
        centres.append(c[:, ::-1].copy())
    return imgs, centres


def _f1(pred: Points, gt_xy: np.ndarray, radius: float) -> float:
    tp, fp, fn = match_counts(pred, Points(gt_xy, np.ones(len(gt_xy), np.float32)), radius)
    return 2 * tp / max(1, 2 * tp + fp + fn)


SMALL = FitSettings(crop_px=64, batch_size=6, lr=5e-3)


@pytest.fixture(scope="module")
def fitted() -> tuple[Refiner, float, list[np.ndarray], list[np.ndarray]]:
    torch.set_num_threads(2)
    imgs, centres = _data(3)
    before = [im.copy() for im in imgs]
    gts = [Points(c, np.ones(len(c), np.float32)) for c in centres]
    t0 = time.perf_counter()
    ref = fit_refiner(
        imgs,
        [0.25] * 3,
        StainPriorDetector(),
        rounds=2,
        epochs_per_round=12,
        seed=0,
        eval_points=gts,
        settings=SMALL,
    )
    seconds = time.perf_counter() - t0
    assert all(np.array_equal(a, b) for a, b in zip(imgs, before, strict=True))
    return ref, seconds, imgs, centres


def test_fit_refiner_keeps_or_improves_f1(fitted) -> None:
    ref, _, _, _ = fitted
    assert isinstance(ref, Detector)
    hist = ref.history
    assert [h["round"] for h in hist] == ["coarse", 0, 1, "total"]
    assert {"targets_precision", "targets_recall", "detect_f1", "n_targets"} <= hist[1].keys()
    # precision learning: the next round's targets stay precise while recall grows
    assert hist[1]["targets_precision"] >= 0.95
    assert hist[1]["targets_recall"] > hist[0]["targets_recall"]
    coarse_f1 = hist[0]["detect_f1"]
    assert hist[-2]["detect_f1"] >= min(coarse_f1, 0.95) - 0.05
    # and on images it never saw
    imgs, centres = _data(2, seed0=10)
    for rgb, c in zip(imgs, centres, strict=True):
        pts = ref.detect(rgb, 0.25)
        assert pts.xy.dtype == np.float64 and pts.score.dtype == np.float32
        assert _f1(pts, c, 12.0) > 0.85


def test_state_dict_round_trip(fitted) -> None:
    ref, _, imgs, _ = fitted
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    loaded = Refiner.from_state_dict(torch.load(buf, weights_only=True))
    assert loaded.config == ref.config
    for rgb in imgs[:2]:
        a, b = ref.detect(rgb, 0.25), loaded.detect(rgb, 0.25)
        assert np.array_equal(a.xy, b.xy) and np.array_equal(a.score, b.score)
    from zeropath.errors import ModelError

    with pytest.raises(ModelError):
        Refiner.from_state_dict({"format": "something else"})


def test_fit_is_deterministic_and_label_free() -> None:
    imgs, _ = _data(2, seed0=20)
    small = FitSettings(crop_px=48, batch_size=2)
    kw = dict(rounds=1, epochs_per_round=0.2, seed=3, settings=small)
    a = fit_refiner(imgs, [0.5, 0.5], StainPriorDetector(), **kw)
    b = fit_refiner(imgs, [0.5, 0.5], StainPriorDetector(), **kw)
    pa, pb = a.detect(imgs[0], 0.5), b.detect(imgs[0], 0.5)
    assert np.array_equal(pa.xy, pb.xy) and np.array_equal(pa.score, pb.score)
    # without evaluation points the history holds no precision/recall
    assert not any("precision" in k for h in a.history for k in h)
    with pytest.raises(ValueError):
        fit_refiner(imgs, [0.5], StainPriorDetector())


def test_time_budget_is_respected() -> None:
    imgs, _ = _data(2, seed0=30)
    t0 = time.perf_counter()
    ref = fit_refiner(
        imgs,
        [0.5, 0.5],
        StainPriorDetector(),
        rounds=2,
        epochs_per_round=1000,
        time_budget_s=3.0,
        settings=FitSettings(crop_px=64, batch_size=4),
    )
    # the budget, not the epoch count, ended training (well before 1000 epochs' steps)
    assert time.perf_counter() - t0 < 120.0
    assert ref.history[1]["steps"] < 1000
