"""Losses of the self-refining pipeline: BCE + soft IoU, offset L1, instance contrastive, total.

* ``L_P`` — :func:`bce_iou_loss` of the adapted prompt masks against ``S_P`` (ignoring
  ``M_P``), one term per instance;
* ``L_B`` — :func:`bce_iou_loss` of the prompt-free binary map against ``S_I``;
* ``L_D`` — :func:`distance_l1_loss` of the 2-channel offset map on labelled pixels;
* ``L_C`` — :func:`instance_contrastive_loss` on :class:`ProjectionHead` embeddings;
* :func:`total_loss` — ``λ_P·L_P + λ_B·L_B + λ_D·L_D + λ_C·L_C`` with (1, 1, 5, 1).

Every loss returns a scalar that stays in the autograd graph (0 when nothing is labelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LossWeights",
    "ProjectionHead",
    "bce_iou_loss",
    "distance_l1_loss",
    "instance_contrastive_loss",
    "sample_at",
    "total_loss",
]


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` → ``(instances, H*W)``."""
    if x.ndim < 2:
        raise ValueError(f"expected (..., H, W), got shape {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-2] * x.shape[-1])


def bce_iou_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_mask: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Mean over instances of ``BCE + (1 − soft IoU)`` on the non-ignored pixels.

    ``logits``, ``target`` (0/1 or soft) and ``ignore_mask`` (True = ignored) share a shape
    ``(..., H, W)``; every leading index is one instance. Per instance with valid pixels ``V``
    and ``p = σ(logits)``: BCE is the mean over ``V``, soft IoU is
    ``(Σ_V p·t + s) / (Σ_V (p + t − p·t) + s)`` with ``s = smooth``. Instances without a valid
    pixel are left out; with none at all the loss is 0.
    """
    lg = _flat(logits).float()
    t = _flat(target.to(lg.dtype))
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_mask is None else ~_flat(ignore_mask)
    v = valid.to(lg.dtype)
    n_valid = v.sum(dim=1)
    keep = n_valid > 0
    if not bool(keep.any()):
        return lg.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(lg, t, reduction="none")
    bce = (bce * v).sum(dim=1) / n_valid.clamp_min(1)
    p = torch.sigmoid(lg) * v
    tv = t * v
    inter = (p * tv).sum(dim=1)
    union = (p + tv - p * tv).sum(dim=1)
    iou = (inter + smooth) / (union + smooth)
    return (bce + 1.0 - iou)[keep].mean()


def distance_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error of ``(B, C, H, W)`` maps over the pixels where ``valid``
    (``(B, H, W)`` or ``(B, 1, H, W)``, True = counted) and all channels; 0 if none."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred - target.to(pred.dtype)).abs()
    if valid is None:
        return err.mean()
    w = valid.reshape(pred.shape[0], 1, *pred.shape[2:]).to(pred.dtype)
    denom = w.sum() * pred.shape[1]
    if float(denom) == 0:
        return pred.sum() * 0.0
    return (err * w).sum() / denom


class ProjectionHead(nn.Module):
    """Two-layer MLP (1×1 convolutions, ReLU between) mapping a feature map to unit-length
    embeddings, plus the single learnable nucleus ``prototype`` the anchors are pulled to."""

    def __init__(self, in_dim: int = 256, hidden: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(in_dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, out_dim, 1)
        self.prototype = nn.Parameter(torch.randn(out_dim) / out_dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim, H, W)`` → ``(B, out_dim, H, W)`` L2-normalised along channels."""
        return F.normalize(self.fc2(F.relu(self.fc1(x))), dim=1)


def sample_at(features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(N, C)`` of a ``(C, H, W)`` map at ``(N, 2)`` (x, y) pixel
    coordinates of that map (pixel ``i`` has its centre at ``i``; borders clamp)."""
    c, h, w = features.shape
    xy = xy.to(features.dtype).reshape(-1, 2)
    gx = 2.0 * xy[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * xy[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=1).view(1, -1, 1, 2)
    out = F.grid_sample(
        features[None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.view(c, -1).t()


def instance_contrastive_loss(
    features: torch.Tensor,
    anchor_xy: list[torch.Tensor] | torch.Tensor,
    prototype: torch.Tensor,
    negatives_mask: torch.Tensor,
    tau: float = 0.1,
    max_negatives: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE pulling the point-prompt embeddings to one prototype, away from hard negatives.

    ``features`` are projected embeddings ``(B, C, H, W)`` (or ``(C, H, W)``), L2-normalised
    here again; ``anchor_xy`` gives each batch item's prompts as ``(N_b, 2)`` xy in feature-map
    pixels; ``negatives_mask`` ``(B, H, W)`` marks hard-negative pixels, of which at most
    ``max_negatives`` over the whole batch are drawn (without replacement, with
    ``generator``). With the normalised prototype ``p`` and negatives ``n_k``, each anchor
    ``a`` contributes ``−log(exp(a·p/τ) / (exp(a·p/τ) + Σ_k exp(a·n_k/τ)))``; the loss is
    the mean over anchors. Without negatives it is the mean of ``1 − a·p`` (pure alignment,
    since InfoNCE with a lone positive is constant); without anchors it is 0.
    """
    if features.ndim == 3:
        features = features[None]
        negatives_mask = negatives_mask.reshape(1, *negatives_mask.shape[-2:])
        if isinstance(anchor_xy, torch.Tensor):
            anchor_xy = [anchor_xy]
    if isinstance(anchor_xy, torch.Tensor):
        anchor_xy = list(anchor_xy)
    if len(anchor_xy) != features.shape[0]:
        raise ValueError(f"{len(anchor_xy)} anchor sets for a batch of {features.shape[0]}")
    z = F.normalize(features, dim=1)
    anchors = [sample_at(z[i], xy) for i, xy in enumerate(anchor_xy) if len(xy)]
    if not anchors:
        return features.sum() * 0.0
    a = F.normalize(torch.cat(anchors), dim=1)
    p = F.normalize(prototype.reshape(-1), dim=0)
    pos = a @ p  # (A,)
    neg_mask = negatives_mask.reshape(z.shape[0], *z.shape[2:]).bool()
    idx = torch.nonzero(neg_mask)  # (M, 3): batch, row, col
    if len(idx) > max_negatives:
        pick = torch.randperm(len(idx), generator=generator, device=idx.device)[:max_negatives]
        idx = idx[pick]
    if not len(idx):
        return (1.0 - pos).mean()
    n = z[idx[:, 0], :, idx[:, 1], idx[:, 2]]  # (K, C)
    logits = torch.cat([pos[:, None], a @ n.t()], dim=1) / tau
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


@dataclass(frozen=True)
class LossWeights:
    """The λ of the total loss (the paper's values by default)."""

    prompt: float = 1.0
    binary: float = 1.0
    distance: float = 5.0
    contrastive: float = 1.0


def total_loss(
    prompt: torch.Tensor,
    binary: torch.Tensor,
    distance: torch.Tensor,
    contrastive: torch.Tensor,
    weights: LossWeights | None = None,
) -> torch.Tensor:
    """``λ_P·L_P + λ_B·L_B + λ_D·L_D + λ_C·L_C`` (defaults 1, 1, 5, 1)."""
    w = weights or LossWeights()
    return (
        w.prompt * prompt + w.binary * binary + w.distance * distance + w.contrastive * contrastive
    )
