"""A first cut of the self-refining training loop (sketch: correct on tiny models, untuned).

:func:`fit_points` adapts a MobileSAM to images with one click per nucleus:

1. with the **base** model, every image's embedding (through :class:`SamPredictor`, so the
   ``cache_dir`` keeps them across runs) and every point's frozen mask ``m_base`` (low-res
   256² probabilities, float16) are computed once;
2. adapters go into the encoder (base frozen); each step takes one image, runs the adapted
   encoder with gradients, decodes all points without gradients for the targets
   (``m_u = α_t·m_base + (1 − α_t)·m_adapt``) and a random subset of ``max_prompts`` points
   with gradients for ``L_P``; the prompt-free decoder gives ``B``, ``D``; consensus labels
   ``S_I``, offset targets and hard negatives follow; ``L_B``, ``L_D`` and the contrastive
   ``L_C`` complete the total loss. The SAM prompt encoder and mask decoder stay frozen.

Everything lives in SAM's low-resolution frame (``img_size / 4`` square, the image in the
top-left ``ceil(input / 4)`` part, padding ignored). Images should be tiles no larger than
``img_size`` at the working resolution: larger ones are shrunk by SAM's resize rule (the
caller crops or resamples; ``mpp`` is recorded, not used for resampling here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zeropath.models.mobilesam.sam import MobileSAM
from zeropath.models.nuclei_decoder import NucleiDecoder
from zeropath.points.losses import (
    LossWeights,
    ProjectionHead,
    bce_iou_loss,
    distance_l1_loss,
    instance_contrastive_loss,
    total_loss,
)
from zeropath.points.targets import (
    IGNORE,
    alpha_schedule,
    consensus_labels,
    distance_targets,
    ema_target,
    hard_negative_mask,
    instance_map,
    prompt_labels,
)

__all__ = ["FitOptions", "PointsModel", "fit_points", "predict_maps"]


@dataclass(frozen=True)
class FitOptions:
    """Training settings. ``ema_steps`` is the paper's ``T`` (``None``: half of ``steps``)."""

    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema_steps: int | None = None
    max_prompts: int = 32
    chunk: int = 64
    adapter_ratio: float = 0.25
    decoder_widths: tuple[int, int, int] = (96, 48, 24)
    weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0


@dataclass
class PointsModel:
    """The fitted parts: adapted SAM (adapters inside), prompt-free decoder, projection head."""

    sam: MobileSAM
    decoder: NucleiDecoder
    head: ProjectionHead
    mpp: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Item:
    x: torch.Tensor  # (1, 3, S, S) preprocessed input
    coords: torch.Tensor  # (N, 1, 2) input-frame xy
    m_base: torch.Tensor  # (N, L, L) float16 probabilities
    valid: np.ndarray  # (L, L) bool: inside the image
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def _decode_logits(sam: MobileSAM, emb: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Single-mask low-res logits ``(N, L, L)`` of point prompts (gradients flow to ``emb``)."""
    labels = torch.ones(coords.shape[:2], dtype=torch.long)
    sparse, dense = sam.prompt_encoder((coords, labels), None, None)
    low, _ = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    return low[:, 0]


def _decode_all(
    sam: MobileSAM, emb: torch.Tensor, coords: torch.Tensor, chunk: int
) -> torch.Tensor:
    with torch.no_grad():
        parts = [
            torch.sigmoid(_decode_logits(sam, emb, coords[i : i + chunk]))
            for i in range(0, len(coords), chunk)
        ]
    low = sam.config.embedding_size * 4
    return torch.cat(parts) if parts else torch.zeros(0, low, low)


def _prepare(sam: MobileSAM, predictor, rgb: np.ndarray, xy: np.ndarray, chunk: int) -> _Item:
    from zeropath.models.mobilesam.predictor import resize_longest_side

    predictor.set_image(rgb)
    coords = torch.as_tensor(
        predictor.transform_coords(np.asarray(xy)[:, None, :]), dtype=torch.float32
    )
    m_base = _decode_all(sam, predictor.features, coords, chunk).half()
    resized = resize_longest_side(_as_rgb(rgb), sam.img_size)
    x = sam.preprocess(torch.from_numpy(np.array(resized, np.uint8)).permute(2, 0, 1)[None])
    low = sam.config.embedding_size * 4
    h_in, w_in = predictor.input_size
    valid = np.zeros((low, low), bool)
    valid[: math.ceil(h_in * low / sam.img_size), : math.ceil(w_in * low / sam.img_size)] = True
    return _Item(x, coords, m_base, valid, predictor.input_size, predictor.original_size)


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    from zeropath.stain import as_rgb

    return as_rgb(rgb)


def _negatives_on_grid(neg: np.ndarray, e: int) -> torch.Tensor:
    """``(L, L)`` hard-negative pixels → ``(1, e, e)`` cells holding any."""
    t = torch.from_numpy(neg.astype(np.float32))[None, None]
    return F.adaptive_max_pool2d(t, e)[0] > 0


def _step(model: PointsModel, item: _Item, alpha: float, opts: FitOptions, gen: torch.Generator):
    sam, dec, head = model.sam, model.decoder, model.head
    emb = sam.image_encoder(item.x)
    m_adapt = _decode_all(sam, emb.detach(), item.coords, opts.chunk)
    m_u = ema_target(item.m_base.float(), m_adapt, alpha).numpy()
    s_p, m_p = prompt_labels(m_u)
    m_p |= ~item.valid[None]
    n = len(item.coords)
    sub = torch.randperm(n, generator=gen)[: opts.max_prompts]
    l_p = bce_iou_loss(
        _decode_logits(sam, emb, item.coords[sub]),
        torch.from_numpy(s_p)[sub],
        torch.from_numpy(m_p)[sub],
    )
    b_logits, d = dec(emb)
    b = torch.sigmoid(b_logits.detach())[0, 0].numpy()
    s_i = consensus_labels(m_u, b)
    s_i[~item.valid] = IGNORE
    labelled = torch.from_numpy(s_i != IGNORE)
    l_b = bce_iou_loss(b_logits[0, 0], torch.from_numpy(s_i == 1), ~labelled)
    d_t = torch.from_numpy(distance_targets(instance_map(m_u, s_i)))[None]
    l_d = distance_l1_loss(d, d_t, labelled[None])
    e = emb.shape[-1]
    stride = sam.img_size / e
    anchors = (item.coords[:, 0] + 0.5) / stride - 0.5  # input px → embedding cells
    neg = _negatives_on_grid(hard_negative_mask(m_u, b) & item.valid, e)
    l_c = instance_contrastive_loss(head(emb), [anchors], head.prototype, neg, generator=gen)
    loss = total_loss(l_p, l_b, l_d, l_c, opts.weights)
    return loss, {
        "loss": loss.item(),
        "prompt": l_p.item(),
        "binary": l_b.item(),
        "distance": l_d.item(),
        "contrastive": l_c.item(),
        "ignored": float((s_i == IGNORE)[item.valid].mean()),
    }


def fit_points(
    images: list[np.ndarray],
    points: list[np.ndarray],
    mpp: float,
    options: FitOptions | None = None,
    sam: MobileSAM | None = None,
    cache_dir: str | None = None,
) -> PointsModel:
    """Adapt ``sam`` (default: the official MobileSAM) to RGB ``images`` with one ``(N, 2)``
    xy click per nucleus in ``points``; returns the fitted :class:`PointsModel`."""
    from zeropath.models.mobilesam.adapters import add_adapters, freeze_base
    from zeropath.models.mobilesam.predictor import SamPredictor
    from zeropath.models.mobilesam.sam import load_mobilesam

    opts = options or FitOptions()
    if len(images) != len(points) or not images:
        raise ValueError(f"{len(images)} images for {len(points)} point sets")
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    sam = (sam if sam is not None else load_mobilesam()).eval()
    predictor = SamPredictor(sam, cache_size=1, cache_dir=cache_dir, chunk_size=opts.chunk)
    items = [
        _prepare(sam, predictor, im, xy, opts.chunk) for im, xy in zip(images, points, strict=True)
    ]
    add_adapters(sam, ratio=opts.adapter_ratio)
    freeze_base(sam)
    model = PointsModel(
        sam,
        NucleiDecoder(sam.config.prompt_dim, opts.decoder_widths),
        ProjectionHead(sam.config.prompt_dim),
        float(mpp),
    )
    params: list[nn.Parameter] = [p for p in sam.parameters() if p.requires_grad]
    params += list(model.decoder.parameters()) + list(model.head.parameters())
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    total = opts.ema_steps if opts.ema_steps is not None else max(1, opts.steps // 2)
    order = torch.randperm(len(items) * max(1, math.ceil(opts.steps / len(items))), generator=gen)
    for t in range(opts.steps):
        item = items[int(order[t % len(order)]) % len(items)]
        loss, logs = _step(model, item, alpha_schedule(t, total), opts, gen)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        model.history.append({"step": float(t), **logs})
    return model


@torch.no_grad()
def predict_maps(model: PointsModel, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prompt-free ``B`` probability ``(H, W)`` and offsets ``(2, H, W)`` at the image size."""
    from zeropath.models.mobilesam.predictor import get_preprocess_shape, resize_longest_side

    sam = model.sam
    rgb = _as_rgb(rgb)
    h, w = rgb.shape[:2]
    resized = resize_longest_side(rgb, sam.img_size)
    x = sam.preprocess(torch.from_numpy(np.array(resized, np.uint8)).permute(2, 0, 1)[None])
    b_logits, d = model.decoder(sam.image_encoder(x))
    maps = sam.postprocess_masks(
        torch.cat([b_logits, d], dim=1), get_preprocess_shape(h, w, sam.img_size), (h, w)
    )[0]
    return torch.sigmoid(maps[0]).numpy(), maps[1:].clamp(-1, 1).numpy()
