"""The self-refining training loop on SAM-sized crops, and prompt-free prediction.

:func:`fit_points` adapts a MobileSAM to images (already at the working µm/px) with one click
per nucleus:

1. every image is cut into ``img_size``-square crops (one crop = one SAM input, no resizing;
   the part outside the image is filled with SAM's mean colour and ignored by every loss);
2. with the **base** model, every crop's embedding goes through :class:`SamPredictor` (so a
   ``cache_dir`` keeps them across runs) and every point's frozen mask ``m_base`` is decoded
   once, in a local window (:func:`~zeropath.points.windows.decode_windows`, float16);
3. adapters go into the encoder (base frozen); each step takes one crop, runs the adapted
   encoder with gradients, decodes all its points without gradients for the targets
   (``m_u = α_t·m_base + (1 − α_t)·m_adapt``) and a random subset of ``max_prompts`` points
   with gradients for ``L_P``; the prompt-free decoder gives ``B``, ``D``; consensus labels
   ``S_I``, offset targets and hard negatives follow; ``L_B``, ``L_D`` and the contrastive
   ``L_C`` complete the total loss. The SAM prompt encoder and mask decoder stay frozen.

:func:`predict_maps` runs the adapted encoder and the decoder over an image of any size in
overlapping crops and stitches the foreground probability and offsets at the image size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zeropath.io.tiler import spread_starts as crop_starts
from zeropath.models.mobilesam.sam import PIXEL_MEAN, MobileSAM
from zeropath.models.nuclei_decoder import NucleiDecoder
from zeropath.points.losses import (
    LossWeights,
    ProjectionHead,
    bce_iou_loss,
    distance_l1_loss,
    instance_contrastive_loss,
)
from zeropath.points.targets import IGNORE, alpha_schedule, distance_targets
from zeropath.points.windows import decode_windows, smallest_mask, window_targets

__all__ = [
    "PointsFitOptions",
    "PointsModel",
    "crop_starts",
    "fit_points",
    "pad_crop",
    "predict_maps",
    "recentre_clicks",
]

ProgressFn = Callable[[int, int | None, str], None]
#: SAM's mean colour: padding with it is (almost) SAM's own zero padding after normalisation
PAD_RGB = tuple(int(round(v)) for v in PIXEL_MEAN)


@dataclass(frozen=True)
class PointsFitOptions:
    """Training settings (``adapter_lr`` for the encoder adapters, ``lr`` for the decoder and
    projection head). ``ema_steps`` is the paper's ``T`` (``None``: half of ``steps``);
    during the first ``warmup_steps`` (``None``: a fifth of ``steps``) the consensus labels
    come from the prompt branch alone, so the fresh decoder gets labels to learn from;
    ``window_cells`` the side of each prompt's decoding window in embedding cells;
    ``mask_choice`` which SAM output is each point's mask: ``"smallest"`` non-empty of the three
    multimask outputs (chosen once on the base model; on H&E it is the nucleus far more often)
    or ``"single"`` (SAM's single-mask output); ``consensus`` ``"veto"`` (the decoder only
    vetoes the prompt branch where it confidently disagrees) or ``"agree"`` (the paper's strict
    rule; see :func:`~zeropath.points.windows.window_targets`).

    ``decoder_warmup_steps`` train the decoder alone on the cached base embeddings before the
    joint loop and ``decoder_polish_steps`` on the final adapted embeddings after it (each
    about 30× cheaper than a joint step, which runs the encoder with gradients); with a
    warmed-up decoder the joint loop needs no prompt-only warm-up (``warmup_steps`` then
    defaults to 0).

    ``recentre_um``: clicks are rarely on a nucleus centre. Each click is first decoded with
    the frozen model, then moved to the centroid of its mask when that mask is a plausible
    nucleus (it does not touch its window's border) and the move is at most ``recentre_um``
    µm; the masks are decoded again from the moved clicks (0 disables this). A click near a
    nucleus edge otherwise gives SAM an ambiguous prompt and the contrastive anchor a pixel
    off the nucleus."""

    steps: int = 200
    decoder_warmup_steps: int = 400
    decoder_polish_steps: int = 400
    lr: float = 1e-3
    adapter_lr: float = 1e-4
    weight_decay: float = 1e-4
    ema_steps: int | None = None
    warmup_steps: int | None = None
    max_prompts: int = 32
    chunk: int = 128
    window_cells: int = 12
    mask_choice: str = "smallest"
    consensus: str = "veto"
    adapter_ratio: float = 0.25
    decoder_widths: tuple[int, int, int] = (96, 48, 24)
    weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    recentre_um: float = 2.0


@dataclass
class PointsModel:
    """The fitted parts: adapted SAM (adapters inside), prompt-free decoder, projection head."""

    sam: MobileSAM
    decoder: NucleiDecoder
    head: ProjectionHead
    mpp: float
    history: list[dict[str, float]] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


@dataclass
class _Crop:
    rgb: np.ndarray  # (S, S, 3) uint8, padded
    coords: torch.Tensor  # (N, 2) input-frame xy
    m_base: torch.Tensor  # (N, L, L) float16 probabilities (windows)
    origins: np.ndarray  # (N, 2) low-res row/col of each window
    index: torch.Tensor  # (N,) which SAM mask output each prompt uses
    valid: np.ndarray  # (4e, 4e) bool: inside the image
    emb: torch.Tensor  # (1, C, e, e) float16 base embedding (decoder warm-up input)


def pad_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` (at most ``size`` square) in the top-left of a ``size²`` mean-colour canvas."""
    h, w = rgb.shape[:2]
    out = np.empty((size, size, 3), np.uint8)
    out[:] = PAD_RGB
    out[:h, :w] = rgb[..., :3]
    return out


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    from zeropath.stain import as_rgb

    return as_rgb(rgb)


def _valid_mask(sam: MobileSAM, h: int, w: int) -> np.ndarray:
    low = sam.config.embedding_size * 4
    valid = np.zeros((low, low), bool)
    valid[: math.ceil(h * low / sam.img_size), : math.ceil(w * low / sam.img_size)] = True
    return valid


def recentre_clicks(
    coords: torch.Tensor, probs: torch.Tensor, origins: torch.Tensor, max_shift_px: float
) -> torch.Tensor:
    """Clicks moved to the centroids of their masks, where that is plausible.

    ``coords`` ``(N, 2)`` input-frame xy, ``probs`` ``(N, L, L)`` mask probabilities on
    windows whose low-resolution (¼ input) top-left corners are ``origins`` ``(N, 2)``
    row/col. A click moves only if its mask is non-empty, does not touch the window border (a
    mask that does is tissue, not a nucleus) and its centroid is at most ``max_shift_px``
    away. Returns new ``(N, 2)`` float32 coords; the inputs are not modified.
    """
    out = coords.detach().clone().float()
    if len(out) == 0 or max_shift_px <= 0:
        return out
    fg = probs.detach().float() > 0.5
    ll = fg.shape[-1]
    area = fg.sum((-1, -2)).float()
    border = fg[:, 0].any(-1) | fg[:, -1].any(-1) | fg[:, :, 0].any(-1) | fg[:, :, -1].any(-1)
    ar = torch.arange(ll, dtype=torch.float32)
    safe = area.clamp(min=1)
    cy = (fg.sum(-1).float() * ar).sum(-1) / safe
    cx = (fg.sum(-2).float() * ar).sum(-1) / safe
    # low-res pixel k covers input pixels 4k .. 4k+3: its centre is 4k + 1.5
    org = origins.float()
    new = torch.stack([(org[:, 1] + cx) * 4 + 1.5, (org[:, 0] + cy) * 4 + 1.5], dim=1)
    ok = (area > 0) & ~border & ((new - out).norm(dim=1) <= max_shift_px)
    out[ok] = new[ok]
    return out


def _decode_base(
    sam: MobileSAM, features: torch.Tensor, coords: torch.Tensor, opts: PointsFitOptions
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frozen-model window logits ``(N, L, L)`` of each click's chosen output, the choice
    ``(N,)`` and the low-res window origins ``(N, 2)``."""
    with torch.no_grad():
        low, _, org = decode_windows(sam, features, coords, opts.window_cells, opts.chunk)
    if opts.mask_choice == "smallest":
        index = smallest_mask(low)
    else:
        index = torch.zeros(len(low), dtype=torch.long)
    return low[torch.arange(len(low)), index], index, org


def _prepare_crops(
    sam: MobileSAM,
    predictor,
    rgb: np.ndarray,
    xy: np.ndarray,
    opts: PointsFitOptions,
    recentre_px: float = 0.0,
) -> list[_Crop]:
    s = sam.img_size
    rgb = _as_rgb(rgb)
    h, w = rgb.shape[:2]
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    crops = []
    for y0 in crop_starts(h, s):
        for x0 in crop_starts(w, s):
            part = rgb[y0 : y0 + s, x0 : x0 + s]
            ch, cw = part.shape[:2]
            local = xy - (x0, y0)
            inside = (local[:, 0] >= 0) & (local[:, 0] < cw) & (local[:, 1] >= 0)
            inside &= local[:, 1] < ch
            if not inside.any():
                continue
            padded = pad_crop(part, s)
            predictor.set_image(padded)
            coords = torch.as_tensor(local[inside], dtype=torch.float32)
            low, index, org = _decode_base(sam, predictor.features, coords, opts)
            if recentre_px > 0:
                coords = recentre_clicks(coords, torch.sigmoid(low), org, recentre_px)
                low, index, org = _decode_base(sam, predictor.features, coords, opts)
            crops.append(
                _Crop(
                    padded,
                    coords,
                    torch.sigmoid(low).half(),
                    org.numpy(),
                    index,
                    _valid_mask(sam, ch, cw),
                    predictor.features.detach().half().clone(),
                )
            )
    return crops


def _negatives_on_grid(neg: np.ndarray, e: int) -> torch.Tensor:
    """``(L, L)`` hard-negative pixels → ``(1, e, e)`` cells holding any."""
    t = torch.from_numpy(neg.astype(np.float32))[None, None]
    return F.adaptive_max_pool2d(t, e)[0] > 0


def _input(sam: MobileSAM, rgb: np.ndarray) -> torch.Tensor:
    return sam.preprocess(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])


def _decoder_losses(
    model: PointsModel,
    emb: torch.Tensor,
    m_u: np.ndarray,
    crop: _Crop,
    opts: PointsFitOptions,
    gen: torch.Generator,
    use_decoder: bool,
) -> tuple[torch.Tensor, dict[str, np.ndarray], dict[str, float]]:
    """Consensus targets of one crop and the decoder-side loss ``λ_B·L_B + λ_D·L_D + λ_C·L_C``
    on ``emb`` (with or without gradients into the encoder); returns (loss, targets, logs)."""
    dec, head, sam = model.decoder, model.head, model.sam
    b_logits, d = dec(emb)
    b = torch.sigmoid(b_logits.detach())[0, 0].numpy()
    tg = window_targets(
        m_u, crop.origins, b, crop.valid, use_decoder=use_decoder, veto=opts.consensus == "veto"
    )
    s_i = tg["s_i"]
    labelled = torch.from_numpy(s_i != IGNORE)
    l_b = bce_iou_loss(b_logits[0, 0], torch.from_numpy(s_i == 1), ~labelled)
    d_t = torch.from_numpy(distance_targets(tg["instances"]))[None]
    l_d = distance_l1_loss(d, d_t, labelled[None])
    e = emb.shape[-1]
    stride = sam.img_size / e
    anchors = (crop.coords + 0.5) / stride - 0.5  # input px → embedding cells
    neg = _negatives_on_grid(tg["negatives"], e)
    l_c = instance_contrastive_loss(head(emb), [anchors], head.prototype, neg, generator=gen)
    w = opts.weights
    loss = w.binary * l_b + w.distance * l_d + w.contrastive * l_c
    valid = crop.valid
    logs = {
        "binary": l_b.item(),
        "distance": l_d.item(),
        "contrastive": l_c.item(),
        "ignored": float((s_i == IGNORE)[valid].mean()),
        "b_fg": float((b > 0.5)[valid].mean()),
    }
    return loss, tg, logs


def _step(
    model: PointsModel,
    crop: _Crop,
    alpha: float,
    opts: PointsFitOptions,
    gen: torch.Generator,
    warm: bool = False,
):
    """One self-refining step on ``crop``: adapted encoder with gradients, EMA targets, all
    four losses."""
    sam = model.sam
    emb = sam.image_encoder(_input(sam, crop.rgb))
    m_u = _ema_target(model, crop, emb, alpha, opts)
    loss_dec, tg, logs = _decoder_losses(model, emb, m_u, crop, opts, gen, not warm)
    n = len(crop.coords)
    sub = torch.randperm(n, generator=gen)[: opts.max_prompts]
    low_g, _, _ = decode_windows(
        sam, emb, crop.coords[sub], opts.window_cells, opts.chunk, crop.index[sub]
    )
    l_p = bce_iou_loss(low_g, torch.from_numpy(tg["s_p"])[sub], torch.from_numpy(tg["m_p"])[sub])
    loss = opts.weights.prompt * l_p + loss_dec
    return loss, {
        "loss": loss.item(),
        "prompt": l_p.item(),
        **logs,
        "alpha": alpha,
        "empty_prompts": float(tg["empty"].mean()) if n else 0.0,
        "fg_px": float(tg["s_p"].sum() / max(1, n)),
    }


def _ema_target(
    model: PointsModel, crop: _Crop, emb: torch.Tensor, alpha: float, opts: PointsFitOptions
) -> np.ndarray:
    """``m_u = α·m_base + (1 − α)·m_adapt`` of every prompt of ``crop`` (no gradients)."""
    m_base = crop.m_base.float()
    if alpha >= 1.0:
        return m_base.numpy()
    with torch.no_grad():
        low, _, _ = decode_windows(
            model.sam, emb.detach(), crop.coords, opts.window_cells, opts.chunk, crop.index
        )
    return (alpha * m_base + (1.0 - alpha) * torch.sigmoid(low)).numpy()


def _train_decoder(
    model: PointsModel,
    crops: list[_Crop],
    embs: list[torch.Tensor],
    targets: list[np.ndarray],
    steps: int,
    use_decoder: bool,
    opts: PointsFitOptions,
    gen: torch.Generator,
    stage: str,
    progress: ProgressFn | None,
) -> None:
    """Train the prompt-free decoder and projection head alone on cached embeddings.

    The decoder sees each crop's embedding (no encoder pass: ~0.1 s a step instead of ~3 s)
    with fixed prompt targets ``targets`` (``m_u`` windows). Used before the self-refining
    loop (``use_decoder=False``: base embeddings, frozen-SAM targets, so the joint loop starts
    with a decoder whose ``B`` is confident enough for the consensus rule) and after it
    (adapted embeddings, final ``m_u``, full consensus)."""
    if steps <= 0:
        return
    params = list(model.decoder.parameters()) + list(model.head.parameters())
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps, eta_min=opts.lr * 0.05)
    order = torch.randperm(len(crops) * max(1, math.ceil(steps / len(crops))), generator=gen)
    for t in range(steps):
        if progress:
            progress(t, steps, stage)
        i = int(order[t % len(order)]) % len(crops)
        loss, _, logs = _decoder_losses(
            model, embs[i].float(), targets[i], crops[i], opts, gen, use_decoder
        )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        model.history.append({"step": float(t), "stage": stage, "loss": loss.item(), **logs})


def fit_points(
    images: list[np.ndarray],
    points: list[np.ndarray],
    mpp: float,
    options: PointsFitOptions | None = None,
    sam: MobileSAM | None = None,
    cache_dir: str | None = None,
    progress: ProgressFn | None = None,
) -> PointsModel:
    """Adapt ``sam`` (default: the official MobileSAM) to RGB ``images`` at ``mpp`` µm/px
    (the working resolution: nothing is resampled here) with one ``(N, 2)`` xy click per
    nucleus in ``points``; returns the fitted :class:`PointsModel`.

    Deterministic for ``options.seed``: torch's generator is seeded for the fit only
    (:func:`zeropath.nuclei.base.torch_seed`), the caller's random state is left as it was."""
    from zeropath.nuclei.base import torch_seed

    with torch_seed((options or PointsFitOptions()).seed):
        return _fit_points(images, points, mpp, options, sam, cache_dir, progress)


def _fit_points(
    images: list[np.ndarray],
    points: list[np.ndarray],
    mpp: float,
    options: PointsFitOptions | None,
    sam: MobileSAM | None,
    cache_dir: str | None,
    progress: ProgressFn | None,
) -> PointsModel:
    from zeropath.models.mobilesam.adapters import add_adapters, freeze_base
    from zeropath.models.mobilesam.predictor import SamPredictor
    from zeropath.models.mobilesam.sam import load_mobilesam

    opts = options or PointsFitOptions()
    if len(images) != len(points) or not images:
        raise ValueError(f"{len(images)} images for {len(points)} point sets")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(opts.seed)
    sam = (sam if sam is not None else load_mobilesam()).eval()
    predictor = SamPredictor(sam, cache_size=1, cache_dir=cache_dir, chunk_size=opts.chunk)
    crops: list[_Crop] = []
    for i, (im, xy) in enumerate(zip(images, points, strict=True)):
        if progress:
            progress(i, len(images), "base masks")
        crops += _prepare_crops(sam, predictor, im, xy, opts, opts.recentre_um / float(mpp))
    if not crops:
        raise ValueError("no image has a point inside it")
    t_prep = time.perf_counter() - t0
    add_adapters(sam, ratio=opts.adapter_ratio)
    freeze_base(sam)
    model = PointsModel(
        sam,
        NucleiDecoder(sam.config.prompt_dim, opts.decoder_widths),
        ProjectionHead(sam.config.prompt_dim),
        float(mpp),
    )
    adapters: list[nn.Parameter] = [p for p in sam.parameters() if p.requires_grad]
    heads = list(model.decoder.parameters()) + list(model.head.parameters())
    optim = torch.optim.AdamW(
        [{"params": adapters, "lr": opts.adapter_lr}, {"params": heads, "lr": opts.lr}],
        weight_decay=opts.weight_decay,
    )
    total = opts.ema_steps if opts.ema_steps is not None else max(1, opts.steps // 2)
    if opts.warmup_steps is not None:
        warmup = opts.warmup_steps
    else:
        warmup = 0 if opts.decoder_warmup_steps > 0 else max(1, opts.steps // 5)
    t1 = time.perf_counter()
    base_targets = [c.m_base.float().numpy() for c in crops]
    _train_decoder(
        model,
        crops,
        [c.emb for c in crops],
        base_targets,
        opts.decoder_warmup_steps,
        False,
        opts,
        gen,
        "decoder warm-up",
        progress,
    )
    for c in crops:  # the base embeddings are not needed any more
        c.emb = torch.empty(0)
    t_warm = time.perf_counter() - t1
    order = torch.randperm(len(crops) * max(1, math.ceil(opts.steps / len(crops))), generator=gen)
    t1 = time.perf_counter()
    for t in range(opts.steps):
        if progress:
            progress(t, opts.steps, "training")
        crop = crops[int(order[t % len(order)]) % len(crops)]
        loss, logs = _step(model, crop, alpha_schedule(t, total), opts, gen, t < warmup)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        model.history.append({"step": float(t), "stage": "joint", **logs})
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    if opts.decoder_polish_steps > 0:
        alpha = alpha_schedule(opts.steps, total)
        embs, targets = [], []
        with torch.no_grad():
            for i, c in enumerate(crops):
                if progress:
                    progress(i, len(crops), "adapted embeddings")
                emb = sam.image_encoder(_input(sam, c.rgb))
                embs.append(emb.half())
                targets.append(_ema_target(model, c, emb, alpha, opts))
        _train_decoder(
            model,
            crops,
            embs,
            targets,
            opts.decoder_polish_steps,
            True,
            opts,
            gen,
            "decoder polish",
            progress,
        )
    t_polish = time.perf_counter() - t2
    model.provenance = {
        "n_images": len(images),
        "n_crops": len(crops),
        "n_points": int(sum(len(c.coords) for c in crops)),
        "steps": opts.steps,
        "timings": {
            "prepare_s": round(t_prep, 2),
            "decoder_warmup_s": round(t_warm, 2),
            "train_s": round(t_train, 2),
            "decoder_polish_s": round(t_polish, 2),
            "s_per_step": round(t_train / max(1, opts.steps), 3),
        },
        "cache": dict(predictor.stats),
    }
    return model


@torch.no_grad()
def _maps_of_crop(model: PointsModel, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sam = model.sam
    h, w = rgb.shape[:2]
    b_logits, d = model.decoder(sam.image_encoder(_input(sam, pad_crop(rgb, sam.img_size))))
    maps = F.interpolate(
        torch.cat([b_logits, d], dim=1),
        (sam.img_size, sam.img_size),
        mode="bilinear",
        align_corners=False,
    )[0, :, :h, :w]
    return torch.sigmoid(maps[0]).numpy(), maps[1:].clamp(-1, 1).numpy()


@torch.no_grad()
def predict_maps(
    model: PointsModel, rgb: np.ndarray, overlap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt-free ``B`` probability ``(H, W)`` and offsets ``(2, H, W)`` of an image at the
    model's µm/px, computed in ``img_size`` crops spread evenly with at least ``overlap``
    pixels of context on each inner side (default a sixteenth of a crop, so neighbours share
    an eighth) and stitched at the middle of each overlap."""
    from zeropath.io.dense import predict_tiled

    s = model.sam.img_size
    ov = s // 16 if overlap is None else int(overlap)
    return predict_tiled(
        lambda crop: _maps_of_crop(model, crop), _as_rgb(rgb), s, ov, layout="spread"
    )
