"""Prompt-free nuclei decoder (shapes, gradients) and instances from its B and D maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zeropath.models.nuclei_decoder import NucleiDecoder
from zeropath.nuclei.instances import boundary_energy, instances_from_offsets
from zeropath.points.targets import distance_targets


def test_decoder_shapes_and_gradients() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dec = NucleiDecoder(in_chans=16, widths=(8, 8, 4))
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    b, d, feats = dec(x, return_features=True)
    assert b.shape == (2, 1, 32, 32) and d.shape == (2, 2, 32, 32) and feats.shape == (2, 8, 8, 8)
    assert d.abs().max() <= 1.0
    (b.mean() + d.mean()).backward()
    assert x.grad is not None and all(p.grad is not None for p in dec.parameters())
    assert len(dec(x)) == 2
    assert sum(p.numel() for p in NucleiDecoder().parameters()) < 500_000


def _two_touching_discs(shape=(48, 64), r=10, gap=18) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.uint32)
    c0, c1 = (24, 20), (24, 20 + gap)
    lab[(yy - c0[0]) ** 2 + (xx - c0[1]) ** 2 <= r * r] = 1
    second = (yy - c1[0]) ** 2 + (xx - c1[1]) ** 2 <= r * r
    lab[second & (lab == 0)] = 2
    return lab


def test_two_touching_discs_give_two_instances() -> None:
    lab = _two_touching_discs()
    prob = (lab > 0).astype(np.float32)
    from scipy import ndimage as ndi

    assert ndi.label(prob > 0.5)[1] == 1  # one blob in B alone
    out = instances_from_offsets(prob, distance_targets(lab))
    assert out.dtype == np.uint32 and out.max() == 2
    for k in (1, 2):  # each instance is essentially one disc
        overlap = np.bincount(out[lab == k], minlength=3)[1:]
        assert overlap.max() / (lab == k).sum() > 0.95
    # soft, slightly noisy maps work too
    rng = np.random.default_rng(0)
    soft = ndi.gaussian_filter(prob, 1.0) + rng.normal(0, 0.02, prob.shape)
    d = distance_targets(lab) + rng.normal(0, 0.02, (2, *lab.shape))
    assert instances_from_offsets(soft.astype(np.float32), d).max() == 2


def test_instances_edge_cases() -> None:
    lab = np.zeros((20, 20), np.uint32)
    lab[5:12, 5:12] = 1
    prob = (lab > 0).astype(np.float32)
    assert instances_from_offsets(prob, distance_targets(lab)).max() == 1
    assert not instances_from_offsets(np.zeros((20, 20)), np.zeros((2, 20, 20))).any()
    # no core anywhere (|D| = 1): the component stays one nucleus
    assert instances_from_offsets(prob, np.ones((2, 20, 20))).max() == 1
    # specks below min_area_px vanish
    speck = np.zeros((20, 20), np.float32)
    speck[1:3, 1:3] = 1
    assert not instances_from_offsets(speck, np.zeros((2, 20, 20)), min_area_px=10).any()
    with pytest.raises(ValueError):
        instances_from_offsets(prob, np.zeros((20, 20)))
    assert boundary_energy(np.zeros((2, 4, 4))).shape == (4, 4)
