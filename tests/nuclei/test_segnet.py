"""The U-Net, the partial loss, a tiny fit on rendered nuclei, and SegNet persistence."""

from __future__ import annotations

import io

import numpy as np
import pytest

from zeropath.testing import render_nuclei

torch = pytest.importorskip("torch")

from zeropath.models.unet import UNetConfig, build_unet, count_parameters  # noqa: E402
from zeropath.nuclei.pseudolabels import IGNORE, make_pseudolabels  # noqa: E402
from zeropath.nuclei.segnet import (  # noqa: E402
    FitParams,
    SegNet,
    confident_labels,
    fit_segnet,
    partial_cross_entropy,
)

MPP = 0.5
TINY = UNetConfig(widths=(8, 16, 32))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_unet_shapes_and_parameters() -> None:
    net = build_unet()
    assert 300_000 < count_parameters(net) < 700_000  # 16-32-64-128
    with torch.no_grad():
        y = net.eval()(torch.zeros(2, 3, 64, 48))
    assert tuple(y.shape) == (2, 2, 64, 48)
    aux = build_unet(widths=(8, 16), aux_channels=1, norm="group")
    with torch.no_grad():
        assert tuple(aux(torch.zeros(1, 3, 32, 32)).shape) == (1, 3, 32, 32)
    odd = build_unet(widths=(12, 24, 48), norm="group")  # groups adapt to the widths
    assert count_parameters(odd) > count_parameters(build_unet(widths=(8, 16, 32)))
    with pytest.raises(ValueError):
        build_unet(widths=(8,))
    with pytest.raises(ValueError):
        build_unet(norm="layer")
    cfg = UNetConfig(widths=(4, 8), aux_channels=1)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_partial_loss_ignores_255() -> None:
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    labels = torch.full((1, 8, 8), IGNORE, dtype=torch.int64)
    labels[0, :4] = 1
    labels[0, 4:6] = 0
    loss = partial_cross_entropy(logits, labels)
    loss.backward()
    g = logits.grad.abs().sum(1)[0]
    assert torch.all(g[6:] == 0)  # ignored rows get no gradient
    assert torch.all(g[:6] > 0)
    # the same as a cross-entropy over the labelled pixels only
    keep = labels[0] != IGNORE
    ref = torch.nn.functional.cross_entropy(logits[0].permute(1, 2, 0)[keep], labels[0][keep])
    assert torch.allclose(loss, ref)
    # nothing labelled: zero loss, zero gradient, no NaN
    logits.grad = None
    empty = partial_cross_entropy(logits, torch.full((1, 8, 8), IGNORE, dtype=torch.int64))
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.all(logits.grad == 0)


def _data(n: int = 2) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    imgs, labs, gts = [], [], []
    for s in range(n):
        rgb, gt, centres = render_nuclei((96, 96), n=9, radius=(5.0, 8.0), seed=10 + s)
        imgs.append(rgb)
        labs.append(make_pseudolabels(rgb, centres[:, ::-1], MPP))
        gts.append(gt)
    return imgs, labs, gts


@pytest.fixture(scope="module")
def fitted() -> tuple[SegNet, list[np.ndarray], list[np.ndarray]]:
    torch.set_num_threads(1)
    imgs, labs, gts = _data()
    net = fit_segnet(
        imgs, labs, mpp=MPP, unet=TINY, iterations=60, crop=64, batch=4, lr=1e-2, seed=0
    )
    return net, imgs, gts


def test_tiny_fit_learns_nuclei(fitted) -> None:
    net, imgs, gts = fitted
    hist = net.config["history"]["fit"]
    assert len(hist) == 6 and hist[-1] < hist[0]
    for rgb, gt in zip(imgs, gts, strict=True):
        prob = net.predict_proba(rgb)
        assert prob.shape == gt.shape and prob.dtype == np.float32
        assert 0.0 <= prob.min() and prob.max() <= 1.0
        assert prob[gt > 0].mean() > prob[gt == 0].mean() + 0.3


def test_predict_tiling_tta_and_resampling(fitted) -> None:
    net, imgs, _ = fitted
    big = np.tile(imgs[0], (2, 2, 1))[:150, :170]
    whole = net.predict_proba(big)
    tiled = net.predict_proba(big, tile=64, overlap=16)
    assert tiled.shape == whole.shape == (150, 170)
    assert np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.95
    tta = net.predict_proba(imgs[0], tta=True)
    assert tta.shape == imgs[0].shape[:2]
    # an input at 0.25 µm/px is resampled to the net's 0.5 and back
    fine = net.predict_proba(np.repeat(np.repeat(imgs[0], 2, 0), 2, 1), mpp=0.25)
    assert fine.shape == (192, 192)


def test_state_dict_round_trip(fitted, tmp_path) -> None:
    net, imgs, _ = fitted
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    again = SegNet.from_state_dict(state)
    assert again.config["unet"] == net.config["unet"] and again.mpp == MPP
    np.testing.assert_allclose(again.predict_proba(imgs[1]), net.predict_proba(imgs[1]), atol=1e-6)
    path = net.save(tmp_path / "segnet.pt")
    loaded = SegNet.load(path)
    np.testing.assert_allclose(loaded.predict_proba(imgs[1]), net.predict_proba(imgs[1]), atol=1e-6)
    assert loaded.n_parameters() == net.n_parameters()
    from zeropath.errors import ModelError

    with pytest.raises(ModelError):
        SegNet.from_state_dict({"format": "other"})


def test_torchscript_matches(fitted) -> None:
    net, _, _ = fitted
    ts = net.to_torchscript(size=64)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.allclose(ts(x), net.model(x), atol=1e-4)


def test_self_training_round_and_time_budget() -> None:
    imgs, labs, _ = _data(1)
    net = fit_segnet(
        imgs,
        labs,
        mpp=MPP,
        unet=TINY,
        params=FitParams(iterations=10, crop=64, batch=2, self_train_rounds=1),
        self_train_iterations=5,
        hed_sigma=0.0,
        hed_bias=0.0,
    )
    assert "self_train_1" in net.config["history"]
    quick = fit_segnet(
        imgs, labs, unet=TINY, iterations=10_000, crop=64, batch=2, time_budget_s=1.0
    )
    assert sum(len(v) for v in quick.config["history"].values()) < 1000
    lab = confident_labels(np.array([[0.05, 0.5, 0.95]], np.float32), 0.9)
    assert lab.tolist() == [[0, IGNORE, 1]]
    with pytest.raises(ValueError):
        fit_segnet([], [])
