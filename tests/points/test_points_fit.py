"""The self-refining training loop sketch on a tiny random MobileSAM (mechanics only)."""

from __future__ import annotations

import math

import numpy as np
import torch

from zeropath.models.mobilesam.adapters import adapter_parameters
from zeropath.models.mobilesam.sam import MobileSAMConfig, build_mobilesam
from zeropath.nuclei.instances import instances_from_offsets
from zeropath.points.fit import PointsFitOptions, fit_points, predict_maps

TINY = MobileSAMConfig.tiny()


def test_fit_points_tiny(tmp_path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sam = build_mobilesam(TINY)
    with torch.no_grad():  # confident random masks, so that some pixels get labels
        sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(50.0)
    base = {k: v.clone() for k, v in sam.state_dict().items()}
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pts = np.array([[10.0, 12.0], [40.0, 30.0], [50.0, 10.0]])
    opts = PointsFitOptions(
        steps=4,
        max_prompts=2,
        decoder_widths=(8, 8, 4),
        lr=1e-2,
        mask_choice="single",
        decoder_warmup_steps=3,
        decoder_polish_steps=2,
    )
    model = fit_points([img, img[:40]], [pts, pts[:2]], 0.5, opts, sam=sam, cache_dir=tmp_path)
    stages = [h["stage"] for h in model.history]
    assert stages == ["decoder warm-up"] * 3 + ["joint"] * 4 + ["decoder polish"] * 2
    assert model.mpp == 0.5
    assert all(math.isfinite(h["loss"]) for h in model.history)
    assert min(h["ignored"] for h in model.history) < 1.0
    assert any(h["prompt"] > 0 for h in model.history if h["stage"] == "joint")
    state = model.sam.state_dict()
    assert all(torch.equal(base[k], state[k]) for k in base)  # the base stayed frozen
    assert any(p.abs().sum() > 0 for p in adapter_parameters(model.sam))
    assert list(tmp_path.glob("*.npy"))  # base embeddings went through the predictor cache
    b, d = predict_maps(model, img)
    assert b.shape == (48, 64) and d.shape == (2, 48, 64)
    assert 0 <= b.min() and b.max() <= 1 and np.abs(d).max() <= 1
    assert instances_from_offsets(b, d).dtype == np.uint32


def _disc_window(size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size]
    return torch.as_tensor(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32))


def test_recentre_clicks_moves_to_mask_centroid() -> None:
    from zeropath.points.fit import recentre_clicks

    ll = 16
    # window 0 at low-res origin (row 10, col 20): a disc centred on low-res (8, 6)
    #   → input-frame centre x = (20 + 6)·4 + 1.5, y = (10 + 8)·4 + 1.5
    probs = torch.stack(
        [
            _disc_window(ll, 8, 6, 3),
            _disc_window(ll, 8, 8, 12),  # touches the window border: tissue, not a nucleus
            torch.zeros(ll, ll),  # empty mask
            _disc_window(ll, 8, 6, 3),  # centroid too far from its click
        ]
    )
    origins = torch.tensor([[10, 20], [0, 0], [0, 0], [10, 20]])
    coords = torch.tensor([[100.0, 70.0], [30.0, 30.0], [5.0, 5.0], [60.0, 40.0]])
    before = coords.clone()
    out = recentre_clicks(coords, probs, origins, max_shift_px=12.0)
    assert torch.equal(coords, before)  # inputs untouched
    assert torch.allclose(out[0], torch.tensor([(20 + 6) * 4 + 1.5, (10 + 8) * 4 + 1.5]))
    assert torch.equal(out[1:], before[1:])
    # no limit → the far one moves too; max_shift_px=0 disables the move
    assert torch.allclose(recentre_clicks(coords, probs, origins, 1e9)[3], out[0])
    assert torch.equal(recentre_clicks(coords, probs, origins, 0.0), before)
