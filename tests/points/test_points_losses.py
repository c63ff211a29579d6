"""Losses of the self-refining pipeline on hand-made tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from zeropath.points.losses import (
    LossWeights,
    ProjectionHead,
    bce_iou_loss,
    distance_l1_loss,
    instance_contrastive_loss,
    sample_at,
    total_loss,
)

LN2 = math.log(2.0)


def test_bce_iou_by_hand() -> None:
    logits = torch.zeros(1, 2, requires_grad=True)  # p = 0.5 everywhere
    target = torch.tensor([[1.0, 0.0]])
    # BCE = ln 2 per pixel; soft IoU = (0.5 + 1) / ((0.5 + 1 − 0.5) + 0.5 + 1) = 0.6
    loss = bce_iou_loss(logits, target)
    assert loss.item() == pytest.approx(LN2 + 0.4)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # ignoring pixel 1: IoU = (0.5 + 1) / (1 + 1) = 0.75
    ignore = torch.tensor([[False, True]])
    assert bce_iou_loss(logits, target, ignore).item() == pytest.approx(LN2 + 0.25)
    # no smoothing: IoU = 0.5 / 1.5
    assert bce_iou_loss(logits, target, smooth=0.0).item() == pytest.approx(LN2 + 1 - 1 / 3)


def test_bce_iou_mean_over_instances_skips_fully_ignored() -> None:
    big = 30.0  # confident and right: BCE ≈ 0, IoU = 1
    logits = torch.tensor([[[big, -big]], [[0.0, 0.0]], [[5.0, 5.0]]])
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    ignore = torch.tensor([[[False, False]], [[False, False]], [[True, True]]])
    loss = bce_iou_loss(logits, target, ignore)
    assert loss.item() == pytest.approx((0.0 + LN2 + 0.4) / 2, abs=1e-6)
    all_ignored = bce_iou_loss(logits, target, torch.ones_like(ignore))
    assert all_ignored.item() == 0.0


def test_distance_l1_by_hand() -> None:
    pred = torch.zeros(1, 2, 1, 2, requires_grad=True)
    target = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert distance_l1_loss(pred, target).item() == pytest.approx(2.5)
    valid = torch.tensor([[[True, False]]])
    loss = distance_l1_loss(pred, target, valid)
    assert loss.item() == pytest.approx(2.0)  # (|1| + |3|) / 2
    loss.backward()
    assert pred.grad[0, :, 0, 1].abs().sum() == 0 and pred.grad[0, :, 0, 0].abs().sum() > 0
    none = distance_l1_loss(pred, target, torch.zeros(1, 1, 1, 2, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError):
        distance_l1_loss(pred, target[:, :1], valid)


def _features() -> torch.Tensor:
    """(2, 1, 3): pixel 0 = (1, 0), pixel 1 = (0, 1), pixel 2 = (1, 1)/√2."""
    s = 1 / math.sqrt(2)
    return torch.tensor([[[1.0, 0.0, s]], [[0.0, 1.0, s]]])


def test_sample_at_is_bilinear_in_pixel_centres() -> None:
    f = _features()
    out = sample_at(f, torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.5, 0.0], [-3.0, 0.0]]))
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[1.0, 0.0], [s, s], [0.5, 0.5], [1.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_contrastive_by_hand() -> None:
    f = _features()
    proto = torch.tensor([2.0, 0.0], requires_grad=True)  # normalised inside → (1, 0)
    neg = torch.tensor([[False, True, False]])
    anchors = [torch.tensor([[0.0, 0.0], [2.0, 0.0]])]
    # anchor 0: a·p = 1, a·n = 0 → log(1 + e^{−1/τ}); anchor 2: a·p = a·n = 1/√2 → log 2
    loss = instance_contrastive_loss(f[None], anchors, proto, neg[None], tau=1.0)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + LN2) / 2, rel=1e-6)
    loss = instance_contrastive_loss(f, anchors[0], proto, neg, tau=0.1)  # unbatched form
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-10)) + LN2) / 2, rel=1e-6)
    loss.backward()
    assert proto.grad is not None and proto.grad.abs().sum() > 0


def test_contrastive_without_negatives_or_anchors() -> None:
    f = _features()
    proto = torch.tensor([1.0, 0.0])
    no_neg = torch.zeros(1, 1, 3, dtype=torch.bool)
    anchors = [torch.tensor([[0.0, 0.0], [2.0, 0.0]])]
    loss = instance_contrastive_loss(f[None], anchors, proto, no_neg)
    assert loss.item() == pytest.approx((0.0 + 1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    empty = instance_contrastive_loss(f[None], [torch.zeros(0, 2)], proto, no_neg)
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="anchor sets"):
        instance_contrastive_loss(f[None], anchors * 2, proto, no_neg)


def test_contrastive_caps_the_negatives() -> None:
    # 2 batch items of 4×5, every pixel (0, 1) and a negative, except the anchor pixel (1, 0)
    f = torch.zeros(2, 2, 4, 5)
    f[:, 1] = 1.0
    f[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    neg = torch.ones(2, 4, 5, dtype=torch.bool)
    neg[0, 0, 0] = False
    anchors = [torch.tensor([[0.0, 0.0]]), torch.zeros(0, 2)]
    proto = torch.tensor([1.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    for k in (1, 7, 100):
        loss = instance_contrastive_loss(
            f, anchors, proto, neg, tau=0.5, max_negatives=k, generator=gen
        )
        n = min(k, 39)  # a·p = 1, a·n = 0 for each of the n negatives
        assert loss.item() == pytest.approx(math.log(math.exp(2) + n) - 2, rel=1e-6)


def test_projection_head_and_total_loss() -> None:
    head = ProjectionHead(in_dim=8, hidden=6, out_dim=4)
    z = head(torch.randn(2, 8, 5, 5))
    assert z.shape == (2, 4, 5, 5)
    assert torch.allclose(z.norm(dim=1), torch.ones(2, 5, 5), atol=1e-5)
    assert head.prototype.shape == (4,) and head.prototype.requires_grad
    terms = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert total_loss(*terms).item() == pytest.approx(1 + 2 + 5 * 3 + 4)
    w = LossWeights(prompt=0.0, binary=2.0, distance=1.0, contrastive=0.5)
    assert total_loss(*terms, weights=w).item() == pytest.approx(4 + 3 + 2)
