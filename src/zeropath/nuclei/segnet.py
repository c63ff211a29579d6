"""Segmentation network trained on pixel pseudo-labels (ZA-Net stage 4).

:func:`fit_segnet` trains a small U-Net (:mod:`zeropath.models.unet`) on images and their
pseudo-labels (:mod:`zeropath.nuclei.pseudolabels`: 0 background, 1 nucleus, 255 ignore) with a
*partial* cross-entropy that skips the ignore pixels, HED colour jitter, flips and 90° turns;
optionally followed by self-training rounds (predict, keep the confident pixels as extra labels,
retrain briefly). A three-class network (``UNetConfig(n_classes=3)``: background, nucleus
interior, nucleus boundary) learns where touching nuclei part; ``normalise`` scales each image's
stains to a reference first (:func:`zeropath.stain.stain_normalise`), in training and
prediction. :class:`SegNet` predicts a nucleus probability map, tiled with overlap so
memory stays bounded, and saves as plain tensors plus a JSON config (loadable with
``torch.load(weights_only=True)``).

torch is imported inside functions only. Images are expected at the model's µm/px
(:attr:`SegNet.mpp`, 0.5 by default) unless ``mpp`` is given to :meth:`SegNet.predict_proba`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError
from zeropath.models.unet import UNetConfig, build_unet, count_parameters
from zeropath.nuclei.augment import hed_jitter
from zeropath.nuclei.pseudolabels import BACKGROUND, IGNORE, NUCLEUS, combine_labels
from zeropath.stain import as_rgb, stain_normalise

FORMAT = "zeropath.segnet/1"
#: the network :func:`fit_segnet` builds by default: half the widths of :class:`UNetConfig`'s
#: default, so three times the iterations fit in a CPU budget (better on kumar_val at 5 min)
DEFAULT_UNET = UNetConfig(widths=(8, 16, 32, 64))
ProgressFn = Callable[[int, int | None, str], None]


@dataclass(frozen=True)
class FitParams:
    """Training settings of :func:`fit_segnet` (lengths in pixels of the work resolution)."""

    iterations: int = 800
    crop: int = 128
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    time_budget_s: float | None = None
    hed_sigma: float = 0.05  # multiplicative stain jitter (fraction)
    hed_bias: float = 0.02  # additive stain jitter (OD units)
    flips: bool = True
    balance: bool = False  # weight the classes by the inverse of their labelled share
    self_train_rounds: int = 0
    self_train_iterations: int = 150
    confident: float = 0.9  # self-training: p >= this is nucleus, p <= 1 - this background
    normalise: bool = False  # per-image H&E scaling (zeropath.stain.stain_normalise) in and out


# ----------------------------------------------------------------------------- augmentation


def _dihedral(arrs: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def _to_input(rgb: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 → float32 3×H×W in about [-1, 1]."""
    return (rgb.astype(np.float32).transpose(2, 0, 1) - 127.5) / 127.5


# ----------------------------------------------------------------------------- the model


class SegNet:
    """A trained nucleus segmentation network: ``predict_proba(rgb) -> H×W float32``."""

    def __init__(self, model: Any, config: dict[str, Any]) -> None:
        self.model = model.eval()
        self.config = dict(config)
        self._infer: Any = None  # BatchNorm folded into the convolutions, built on first use

    def to(self, device: str) -> SegNet:
        """Run predictions on ``device`` (see :mod:`zeropath.models.device`)."""
        self.model.to(device)
        self._infer = None
        return self

    def inference_model(self) -> Any:
        """The network for prediction: a copy with BatchNorm folded into the convolutions.

        Built once; rebuild after changing :attr:`model`'s weights by setting ``_infer = None``.
        """
        if self._infer is None:
            import torch

            self._infer = _fold_batchnorm(self.model).to(memory_format=torch.channels_last)
        return self._infer

    @property
    def mpp(self) -> float:
        """µm/px the network was trained at."""
        return float(self.config.get("mpp", 0.5))

    @property
    def unet_config(self) -> UNetConfig:
        return UNetConfig.from_dict(self.config["unet"])

    def n_parameters(self) -> int:
        return count_parameters(self.model)

    # -- inference

    def predict_proba(
        self,
        rgb: np.ndarray,
        mpp: float | None = None,
        tta: bool = False,
        tile: int = 512,
        overlap: int = 32,
    ) -> np.ndarray:
        """Nucleus probability per pixel (``float32``, same shape as ``rgb``'s grid).

        ``mpp`` (the input's µm/px) resamples to the network's resolution and back when it
        differs by more than 5 %. Large inputs run tile by tile (``tile`` px, ``overlap`` px of
        context dropped on each inner side), so memory is bounded by the tile size. ``tta``
        averages the four flips.
        """
        import torch

        from zeropath.io.tiler import needs_resample, resize_rgb

        rgb = as_rgb(rgb)
        h0, w0 = rgb.shape[:2]
        work = rgb
        if mpp is not None and needs_resample(mpp, self.mpp):
            s = mpp / self.mpp
            work = resize_rgb(rgb, (max(8, round(h0 * s)), max(8, round(w0 * s))))
        if self.normalise:
            work = stain_normalise(work)
        with torch.inference_mode():
            prob = self._tiled(work, tta, tile, overlap)
        if prob.shape != (h0, w0):
            from skimage.transform import resize

            prob = resize(prob, (h0, w0), order=1, preserve_range=True).astype(np.float32)
        return prob

    @property
    def normalise(self) -> bool:
        """Whether inputs are stain-normalised per image (as in training)."""
        return bool(self.config.get("fit", {}).get("normalise", False))

    @property
    def n_classes(self) -> int:
        """2 (background, nucleus) or 3 (background, nucleus interior, nucleus boundary)."""
        return int(self.unet_config.n_classes)

    def predict_maps(
        self, rgb: np.ndarray, tta: bool = False, tile: int = 512, overlap: int = 32
    ) -> np.ndarray:
        """Class probabilities ``K×H×W`` (float32) of an image at the network's µm/px."""
        import torch

        rgb = as_rgb(rgb)
        if self.normalise:
            rgb = stain_normalise(rgb)
        with torch.inference_mode():
            return self._tiled(rgb, tta, tile, overlap, full=True)

    def _forward(self, x: np.ndarray, tta: bool, full: bool = False) -> np.ndarray:
        """Nucleus probability (or, with ``full``, all class probabilities) of a C×H×W float
        array whose sides are multiples of the net's."""
        import torch

        from zeropath.models.device import module_device

        k = self.n_classes
        net = self.inference_model()
        t = torch.from_numpy(x[None]).to(module_device(net))
        t = t.contiguous(memory_format=torch.channels_last)
        flips: list[tuple[int, ...]] = [()] + ([(3,), (2,), (2, 3)] if tta else [])
        acc = None
        for dims in flips:
            xi = torch.flip(t, dims) if dims else t
            logits = net(xi)[:, :k]
            p = torch.softmax(logits, 1)
            p = p if full else 1.0 - p[:, :1]  # nucleus = interior (+ boundary)
            p = torch.flip(p, dims) if dims else p
            acc = p if acc is None else acc + p
        assert acc is not None
        out = (acc / len(flips))[0].cpu().numpy()
        return out if full else out[0]

    def _tiled(
        self, rgb: np.ndarray, tta: bool, tile: int, overlap: int, full: bool = False
    ) -> np.ndarray:
        from zeropath.io.dense import predict_tiled

        m = 2 ** (len(self.unet_config.widths) - 1)
        tile = max(m * 4, (tile // m) * m)
        overlap = max(0, min(overlap, tile // 4))
        return predict_tiled(lambda crop: self._padded(crop, tta, m, full), rgb, tile, overlap)

    def _padded(self, rgb: np.ndarray, tta: bool, m: int, full: bool = False) -> np.ndarray:
        h, w = rgb.shape[:2]
        ph, pw = (-h) % m, (-w) % m
        x = _to_input(rgb)
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode)
        return self._forward(x, tta, full)[..., :h, :w]

    # -- persistence

    def state_dict(self) -> dict[str, Any]:
        """``{"format", "config" (JSON text), "weights" (name -> tensor)}``: plain data only."""
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {"format": FORMAT, "config": json.dumps(self.config), "weights": weights}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SegNet:
        """Rebuild a :class:`SegNet` from :meth:`state_dict`'s output."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ModelError(f"not a {FORMAT} state dict")
        try:
            config = json.loads(state["config"])
            model = build_unet(UNetConfig.from_dict(config["unet"]))
            model.load_state_dict(state["weights"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"invalid {FORMAT} state dict: {exc}") from None
        model = model.to(memory_format=_channels_last())
        return cls(model, config)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` with ``torch.save``."""
        import torch

        path = Path(path)
        torch.save(self.state_dict(), str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SegNet:
        """Read a file written by :meth:`save` (``weights_only=True``: no code runs)."""
        from zeropath.models import load_state_dict

        return cls.from_state_dict(dict(load_state_dict(path)))

    def to_torchscript(self, size: int = 256) -> Any:
        """A traced TorchScript module of the network (logits, any multiple-of-8 size)."""
        import torch

        example = torch.zeros(1, self.unet_config.in_channels, size, size)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 flags jit.trace
            return torch.jit.trace(self.inference_model(), example, check_trace=False)


def _fold_batchnorm(model: Any) -> Any:
    """An eval-mode copy of ``model`` with each Conv2d → BatchNorm2d pair fused (exact)."""
    import copy

    import torch
    from torch import nn

    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for seq in fused.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for i in range(len(seq) - 1):
                conv, bn = seq[i], seq[i + 1]
                if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                    continue
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                new = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=True,
                )
                new.weight.copy_(conv.weight * scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                new.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
                seq[i], seq[i + 1] = new, nn.Identity()
    return fused


def _channels_last() -> Any:
    import torch

    return torch.channels_last


# ----------------------------------------------------------------------------- training


def partial_cross_entropy(logits: Any, labels: Any, weight: Any | None = None) -> Any:
    """Mean cross-entropy over pixels whose label is not :data:`IGNORE` (0 when none is).

    ``logits`` B×2×H×W, ``labels`` B×H×W int64 in {0, 1, 255}.
    """
    from torch.nn import functional as F

    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE)


class _Crops:
    """Random augmented crops of (image, label) pairs, padded with ignore where too small."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        crop: int,
        p: FitParams,
    ) -> None:
        self.images = []
        self.labels = []
        for img, lab in zip(images, labels, strict=True):
            img = as_rgb(img)
            lab = np.asarray(lab, np.uint8)
            if lab.shape != img.shape[:2]:
                raise ValueError(f"label shape {lab.shape} differs from image {img.shape[:2]}")
            h, w = lab.shape
            ph, pw = max(0, crop - h), max(0, crop - w)
            if ph or pw:
                img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
                lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=IGNORE)
            self.images.append(img)
            self.labels.append(lab)
        self.crop = crop
        self.p = p
        self.jitter = hed_jitter
        # sample images in proportion to their labelled pixels
        n = np.array([(lab != IGNORE).sum() for lab in self.labels], np.float64)
        self.weights = n / n.sum() if n.sum() > 0 else np.full(len(n), 1 / len(n))

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        c = self.crop
        for _ in range(size):
            i = int(rng.choice(len(self.images), p=self.weights))
            img, lab = self.images[i], self.labels[i]
            y0 = int(rng.integers(0, lab.shape[0] - c + 1))
            x0 = int(rng.integers(0, lab.shape[1] - c + 1))
            im, lb = img[y0 : y0 + c, x0 : x0 + c], lab[y0 : y0 + c, x0 : x0 + c]
            if self.p.flips:
                im, lb = _dihedral([im, lb], int(rng.integers(4)), bool(rng.integers(2)))
            if self.p.hed_sigma > 0 or self.p.hed_bias > 0:
                im = self.jitter(im, rng, self.p.hed_sigma, self.p.hed_bias)
            xs.append(_to_input(im))
            ys.append(lb.astype(np.int64))
        return np.stack(xs), np.stack(ys)


def _class_weight(labels: Sequence[np.ndarray], k: int = 2) -> np.ndarray:
    counts = [sum(int((lab == c).sum()) for lab in labels) for c in range(k)]
    tot = max(sum(counts), 1)
    w = np.array([tot / max(n, 1) for n in counts], np.float64)
    w = np.clip(w / w.mean(), 0.2, 5.0)
    return (w / w.mean()).astype(np.float32)


def _train(
    model: Any,
    crops: _Crops,
    p: FitParams,
    iterations: int,
    lr: float,
    budget_s: float | None,
    rng: np.random.Generator,
    weight: np.ndarray | None,
    progress: ProgressFn | None,
    stage: str,
) -> list[float]:
    """One training run, cosine learning rate over the iterations or the time, which ends first."""
    import math

    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=p.weight_decay)
    w = torch.from_numpy(weight) if weight is not None else None
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for it in range(iterations):
        frac_it = it / max(iterations, 1)
        frac_t = (time.perf_counter() - t0) / budget_s if budget_s else 0.0
        frac = max(frac_it, frac_t)
        if frac >= 1.0:
            break
        warm = min(1.0, (it + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        x, y = crops.batch(rng, p.batch)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(y)
        logits = model(xt)[:, : model.config.n_classes]
        loss = partial_cross_entropy(logits, yt, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (it % 10 == 0 or it == iterations - 1):
            progress(it + 1, iterations, f"{stage} loss {np.mean(losses[-10:]):.3f}")
    model.eval()
    return losses


def confident_labels(prob: np.ndarray, confident: float = 0.9) -> np.ndarray:
    """Pseudo-label from a probability map: nucleus where ``p >= confident``, background where
    ``p <= 1 - confident``, ignore elsewhere. A ``K×H×W`` stack of class probabilities gives
    the arg-max class where its probability reaches ``confident``."""
    prob = np.asarray(prob)
    if prob.ndim == 3:
        lab = np.full(prob.shape[1:], IGNORE, np.uint8)
        best = prob.argmax(0)
        sure = prob.max(0) >= confident
        lab[sure] = best[sure].astype(np.uint8)
        return lab
    lab = np.full(prob.shape, IGNORE, np.uint8)
    lab[prob <= 1.0 - confident] = BACKGROUND
    lab[prob >= confident] = NUCLEUS
    return lab


def fit_segnet(
    images: Sequence[np.ndarray],
    pseudolabels: Sequence[np.ndarray],
    mpp: float = 0.5,
    params: FitParams | None = None,
    unet: UNetConfig | None = None,
    progress: ProgressFn | None = None,
    on_round: Callable[[int, SegNet], None] | None = None,
    **overrides: Any,
) -> SegNet:
    """Train a :class:`SegNet` on RGB images and their pseudo-labels (same grids, at ``mpp``).

    Settings come from ``params`` (a :class:`FitParams`) updated by keyword ``overrides``
    (``iterations=``, ``crop=``, ``time_budget_s=``, ``self_train_rounds=`` …). Deterministic for
    a given seed and thread count. The returned model's ``config["history"]`` holds the loss per
    iteration, averaged over blocks of 10. Labels hold 0 background, 1 nucleus (interior with
    a three-class ``unet``), 2 nucleus boundary (three classes only) and 255 ignore.
    ``on_round(r, net)`` sees the network after the main training (``r = 0``) and after each
    self-training round (for benchmarks; its time counts).
    """
    from dataclasses import replace

    import torch

    from zeropath.nuclei.base import torch_seed

    p = replace(params or FitParams(), **overrides)
    if len(images) == 0:
        raise ValueError("fit_segnet needs at least one image")
    if len(images) != len(pseudolabels):
        raise ValueError("images and pseudolabels differ in number")
    cfg = unet or DEFAULT_UNET
    rng = np.random.default_rng(p.seed)
    with torch_seed(p.seed):  # seeded init, the caller's random state kept
        model = build_unet(cfg).to(memory_format=torch.channels_last)
    labels = [np.asarray(lab, np.uint8) for lab in pseudolabels]
    if p.normalise:  # the network sees normalised stains; _self_label's predictions do too
        train_images = [stain_normalise(img) for img in images]
    else:
        train_images = list(images)
    crops = _Crops(train_images, labels, p.crop, p)
    weight = _class_weight(labels, cfg.n_classes) if p.balance else None
    t0 = time.perf_counter()
    rounds = max(0, p.self_train_rounds)
    # the self-training rounds share the time budget: 1/4 of it for all of them
    main_budget = p.time_budget_s * (0.75 if rounds else 1.0) if p.time_budget_s else None
    losses = _train(model, crops, p, p.iterations, p.lr, main_budget, rng, weight, progress, "fit")
    history = {"fit": _blocks(losses)}
    net = SegNet(model, _config(cfg, mpp, p))
    if on_round:
        on_round(0, _snapshot(net))
    for r in range(rounds):
        spent = time.perf_counter() - t0
        left = (p.time_budget_s - spent) / (rounds - r) if p.time_budget_s else None
        if left is not None and left <= 0:
            break
        net = SegNet(model, net.config)  # the weights changed: a fresh inference copy
        new = [
            _self_label(net, img, lab, p.confident) for img, lab in zip(images, labels, strict=True)
        ]
        crops = _Crops(train_images, new, p.crop, p)
        weight = _class_weight(new, cfg.n_classes) if p.balance else None
        losses = _train(
            model,
            crops,
            p,
            p.self_train_iterations,
            p.lr * 0.3,
            left,
            rng,
            weight,
            progress,
            f"self-train {r + 1}",
        )
        history[f"self_train_{r + 1}"] = _blocks(losses)
        labels = new
        if on_round:
            on_round(r + 1, _snapshot(SegNet(model, net.config)))
    net = SegNet(model, net.config)
    net.config["history"] = history
    net.config["fit_seconds"] = round(time.perf_counter() - t0, 2)
    return net


def _snapshot(net: SegNet) -> SegNet:
    """A copy of ``net`` that later training does not change."""
    import copy

    return SegNet(copy.deepcopy(net.model), dict(net.config))


def _self_label(net: SegNet, img: np.ndarray, lab: np.ndarray, confident: float) -> np.ndarray:
    """Self-training label: the pseudo-label where it is sure, else the net's confident class.

    With two classes the pseudo-label and the confident prediction combine by consensus
    (:func:`combine_labels`); with three (boundary) the pseudo-label's sure pixels are kept and
    its unsure pixels take the confident prediction.
    """
    if net.n_classes == 2:
        return combine_labels(lab, confident_labels(net.predict_proba(img, tta=True), confident))
    conf = confident_labels(net.predict_maps(img, tta=True), confident)
    return np.where(lab == IGNORE, conf, lab).astype(np.uint8)


def _blocks(losses: list[float], n: int = 10) -> list[float]:
    return [round(float(np.mean(losses[i : i + n])), 5) for i in range(0, len(losses), n)]


def _config(cfg: UNetConfig, mpp: float, p: FitParams) -> dict[str, Any]:
    return {"unet": cfg.to_dict(), "mpp": float(mpp), "fit": asdict(p)}
