"""Fine nucleus detection (ZA-Net stage 2): Gaussian confidence maps learned by precision
learning, without labels.

A small CNN (:class:`~zeropath.models.confnet.ConfNet`) regresses a map that is a Gaussian
(σ tied to nucleus size, in µm) around every nucleus centre; peaks of the map are the
detections. Its targets come from a coarse :class:`~zeropath.nuclei.detect.Detector` and are
refined over rounds of self-training (:func:`fit_refiner`):

* round 0 trains on the most confident coarse points only (a top fraction by score); the
  neighbourhoods of the other coarse points are *ignored* by the loss, since they may or may
  not be nuclei;
* after each round the net predicts every image under test-time augmentation (the 8
  symmetries of the square, or a subset) and a peak becomes a target of the next round only if
  it is (a) confident, (b) consistent across the augmented views (present in most of them,
  with a small spread of confidence) and (c) consistent with the previous round (near a
  previous target or a coarse point) — or, for a newly discovered nucleus, very confident.
  Peaks that fail are ignored by the next round's loss rather than taught as background.

So the targets' precision rises round by round while the recall grows from the newly found
confident peaks. Fitting never reads labels: evaluation points, when given, only fill the
history for benchmarks. This module imports torch lazily; the functions on numpy maps
(:func:`gaussian_confidence_map`, :func:`find_peaks`) need only numpy/scipy/scikit-image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from zeropath.errors import ModelError
from zeropath.nuclei.augment import d4, d4_inverse, hed_jitter
from zeropath.nuclei.centres import Points, match_counts, nms_points
from zeropath.nuclei.detect import WORK_MPP, Detector, from_work, to_work

__all__ = [
    "FitSettings",
    "Refiner",
    "RefinerConfig",
    "find_peaks",
    "fit_refiner",
    "gaussian_confidence_map",
]

STATE_FORMAT = "zeropath.confnet-refiner/1"
ProgressFn = Callable[[int, int | None, str], None]


# --------------------------------------------------------------------------------------------
# Maps and peaks (numpy only)


def gaussian_confidence_map(
    shape: tuple[int, int],
    xy: np.ndarray,
    sigma_px: float,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Max over points of ``w_i · exp(-d² / 2σ²)``, float32 of ``shape``.

    ``xy`` is ``(N, 2)`` as (x=col, y=row), sub-pixel allowed; each Gaussian peaks at its
    weight (1 when ``weights`` is None) at its point. Points outside the image still
    contribute their tails.
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), np.float32)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) == 0 or sigma_px <= 0:
        return out
    wts = np.ones(len(xy)) if weights is None else np.asarray(weights, np.float64).ravel()
    if len(wts) != len(xy):
        raise ValueError(f"{len(wts)} weights for {len(xy)} points")
    rad = int(math.ceil(3.0 * sigma_px))
    inv = -0.5 / (sigma_px * sigma_px)
    for (x, y), wt in zip(xy, wts, strict=True):
        c0, c1 = max(0, int(math.floor(x)) - rad), min(w, int(math.floor(x)) + rad + 2)
        r0, r1 = max(0, int(math.floor(y)) - rad), min(h, int(math.floor(y)) + rad + 2)
        if c0 >= c1 or r0 >= r1:
            continue
        gx = np.exp(inv * (np.arange(c0, c1) - x) ** 2)
        gy = np.exp(inv * (np.arange(r0, r1) - y) ** 2)
        patch = (wt * gy[:, None] * gx[None, :]).astype(np.float32)
        np.maximum(out[r0:r1, c0:c1], patch, out=out[r0:r1, c0:c1])
    return out


def find_peaks(
    conf: np.ndarray, min_distance_px: float, threshold: float, subpixel: bool = True
) -> Points:
    """Local maxima of a confidence map above ``threshold``, at least ``min_distance_px`` apart.

    Scores are the map values at the peaks (clipped to [0, 1]); with ``subpixel`` the position
    is refined by a parabola through the 3×3 neighbourhood (at most half a pixel). A final
    Euclidean non-maximum suppression makes the spacing exact; points come sorted by score.
    """
    from skimage.feature import peak_local_max

    conf = np.asarray(conf, np.float32)
    if conf.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {conf.shape}")
    md = max(1, int(round(min_distance_px)))
    peaks = peak_local_max(conf, min_distance=md, threshold_abs=threshold, exclude_border=False)
    if len(peaks) == 0:
        return Points.empty()
    rows, cols = peaks[:, 0], peaks[:, 1]
    xy = np.stack([cols, rows], axis=1).astype(np.float64)
    if subpixel:
        h, w = conf.shape
        padded = np.pad(conf, 1, mode="edge")
        c = padded[rows + 1, cols + 1]
        for axis, (dr, dc) in enumerate(((0, 1), (1, 0))):  # x then y
            lo = padded[rows + 1 - dr, cols + 1 - dc]
            hi = padded[rows + 1 + dr, cols + 1 + dc]
            denom = lo - 2.0 * c + hi
            with np.errstate(divide="ignore", invalid="ignore"):
                off = np.where(denom < 0, 0.5 * (lo - hi) / denom, 0.0)
            xy[:, axis] += np.clip(off, -0.5, 0.5)
        xy[:, 0] = np.clip(xy[:, 0], 0, w - 1)
        xy[:, 1] = np.clip(xy[:, 1], 0, h - 1)
    score = np.clip(conf[rows, cols], 0.0, 1.0).astype(np.float32)
    return nms_points(Points(xy, score), float(min_distance_px))


# --------------------------------------------------------------------------------------------
# The refiner (a Detector)


@dataclass(frozen=True)
class RefinerConfig:
    """How a trained refiner turns an image into points (saved with its weights)."""

    work_mpp: float = WORK_MPP
    sigma_um: float = 1.0  # σ of the target Gaussians
    min_distance_um: float = 2.0  # peak spacing (touching nuclei can be ~2.5 µm apart)
    threshold: float = 0.5  # peak confidence needed to report a nucleus
    channels: tuple[int, int, int] = (16, 32, 64)
    tta_views: int = 1  # 1, 2, 4 or 8 symmetries averaged at detection time
    tile_px: int = 1024  # larger work images are predicted in overlapping tiles

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown refiner config keys: {sorted(unknown)}")
        kw = dict(d)
        if "channels" in kw:
            kw["channels"] = tuple(int(c) for c in kw["channels"])
        return cls(**kw)


def _views(n: int) -> tuple[int, ...]:
    """Which D4 symmetries to average for ``n`` views (identity first, then flips/rotations)."""
    order = (0, 4, 2, 6, 1, 5, 3, 7)  # id, flip, rot180, flip∘rot180, rot90, …
    return order[: max(1, min(8, int(n)))]


class Refiner:
    """A trained confidence-map network plus its peak-finding settings; a :class:`Detector`."""

    name = "confnet-refiner"

    def __init__(self, net: Any, config: RefinerConfig, history: list[dict] | None = None):
        self.net = net.eval()
        self.config = config
        self.history: list[dict] = list(history or [])

    def to(self, device: str) -> Refiner:
        """Run the network on ``device`` (see :mod:`zeropath.models.device`)."""
        self.net.to(device)
        return self

    @property
    def halo_um(self) -> float:
        """Context (µm) a tile needs around its core for maps identical to a whole-image run."""
        return 24.0

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "config": self.config.to_dict()}

    # -- prediction ----------------------------------------------------------------------------

    def predict_views(self, rgb: np.ndarray, views: Sequence[int] = (0,)) -> np.ndarray:
        """Confidence maps ``(V, H, W)`` float32 of a work-resolution RGB image, one per
        symmetry in ``views``, each mapped back onto the image grid."""
        return np.stack([self._predict_one(rgb, k) for k in views])

    def predict_map(self, rgb: np.ndarray, views: int | None = None) -> np.ndarray:
        """Mean confidence map over ``views`` symmetries (config default) of a work image."""
        n = self.config.tta_views if views is None else views
        return self.predict_views(rgb, _views(n)).mean(axis=0)

    def _predict_one(self, rgb: np.ndarray, k: int, overlap: int = 32) -> np.ndarray:
        from zeropath.io.dense import predict_tiled

        # Tile origins on multiples of 4 px keep the net's stride-2 and pooling grids aligned,
        # so tiled and whole-image maps agree (``overlap`` px of context per side).
        tile = max(128, int(self.config.tile_px))
        out = predict_tiled(self._forward, d4(rgb, k), tile, overlap, align=4)
        return d4_inverse(out, k)

    def _forward(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        from zeropath.models.confnet import rgb_to_tensor

        # Pad bottom/right to a multiple of 4 so that the stride-2 / pooling / upsampling grids
        # are the same for a tile and for the whole image (tiled maps then agree).
        h, w = rgb.shape[:2]
        ph, pw = -h % 4, -w % 4
        if ph or pw:
            mode = "reflect" if min(h, w) > 4 else "edge"
            rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode=mode)
        from zeropath.models.device import module_device

        with torch.inference_mode():
            logits = self.net(rgb_to_tensor(rgb).to(module_device(self.net)))
            conf = torch.sigmoid(logits)[0, 0, :h, :w]
            return conf.cpu().numpy().astype(np.float32, copy=True)

    def detect_work(self, rgb: np.ndarray, views: int | None = None) -> Points:
        """Points of a work-resolution image, in its pixel coordinates."""
        conf = self.predict_map(rgb, views)
        c = self.config
        return find_peaks(conf, c.min_distance_um / c.work_mpp, c.threshold)

    def detect(self, rgb: np.ndarray, mpp: float) -> Points:
        """Nucleus centres of ``rgb`` at ``mpp`` µm/px, in its own pixel coordinates."""
        work, ratios = to_work(rgb, mpp, self.config.work_mpp)
        return from_work(self.detect_work(work), ratios)

    # -- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and JSON-able values only, so ``torch.load(weights_only=True)`` works."""
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "weights": weights,
            "history": self.history,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Refiner:
        from zeropath.models.confnet import ConfNet

        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ModelError(f"not a refiner state (expected format {STATE_FORMAT!r})")
        config = RefinerConfig.from_dict(state["config"])
        net = ConfNet(config.channels)
        try:
            net.load_state_dict(state["weights"])
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"refiner weights do not match its config: {exc}") from exc
        net = net.to(memory_format=_channels_last())
        return cls(net, config, state.get("history"))


def _channels_last() -> Any:
    import torch

    return torch.channels_last


# --------------------------------------------------------------------------------------------
# Precision learning


@dataclass(frozen=True)
class FitSettings:
    """Knobs of :func:`fit_refiner` beyond its main arguments (chosen on Kumar train/val)."""

    crop_px: int = 128
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    first_round_factor: float = 2.0  # round 0 trains this many times longer
    top_fraction: float = 0.6  # coarse points (by score, pooled) kept as round-0 targets
    min_coarse_score: float = 0.0
    soft_targets: bool = False  # Gaussian heights = point scores instead of 1
    ignore_um: float = 3.0  # loss ignores this radius around uncertain points
    fg_weight: float = 1.0  # loss weight of non-target hematoxylin-positive (tissue) pixels
    pos_weight: float = 4.0  # extra loss weight on the Gaussian bumps
    hed_sigma: float = 0.05
    hed_bias: float = 0.05
    select_views: int = 4  # TTA views used for selection
    candidate_threshold: float = 0.2
    keep_threshold: float = 0.5  # (a) confident
    agree_min: float = 0.75  # (b) fraction of views with a peak there
    spread_max: float = 0.2  # (b) std of the views' confidence at the peak
    match_um: float = 3.0  # (c) "same nucleus" radius across rounds
    new_threshold: float = 0.7  # (c) confidence for a peak that no earlier round had
    coarse_is_known: bool = True  # (c) a coarse point also vouches for a peak
    eval_radius_um: float = 3.0


@dataclass
class _Image:
    rgb: np.ndarray  # work-resolution uint8
    ratios: tuple[float, float]
    coarse: Points  # work coordinates
    targets: Points = field(default_factory=Points.empty)
    uncertain: Points = field(default_factory=Points.empty)
    truth: Points | None = None  # evaluation only
    foreground: np.ndarray | None = None  # hematoxylin above its Otsu level
    target_map: np.ndarray | None = None
    weight_map: np.ndarray | None = None


def fit_refiner(
    images: Sequence[np.ndarray],
    mpps: Sequence[float],
    detector: Detector,
    rounds: int = 3,
    epochs_per_round: float = 4.0,
    sigma_um: float = 1.0,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: ProgressFn | None = None,
    *,
    eval_points: Sequence[Points] | None = None,
    settings: FitSettings | None = None,
    config: RefinerConfig | None = None,
    on_round: Callable[[int, Refiner], None] | None = None,
) -> Refiner:
    """Learn a confidence-map refiner from unlabelled ``images`` by precision learning.

    ``detector`` gives the coarse points; ``epochs_per_round`` counts passes over the images'
    area in random crops (round 0 trains ``first_round_factor`` times longer). With
    ``time_budget_s`` the training steps of every round shrink so that the whole fit ends
    about then (results then depend on the machine's speed; without it the fit is
    deterministic for a given ``seed``). ``eval_points`` (ground truth in each image's pixel
    coordinates) only adds precision/recall to the returned refiner's ``history``.
    ``on_round(r, refiner)`` is called after round ``r`` with the network of that round (for
    benchmarks; its time is not counted in the fit's time or budget).
    """
    import torch

    from zeropath.models.confnet import ConfNet

    if len(images) != len(mpps):
        raise ValueError(f"{len(images)} images but {len(mpps)} mpps")
    if not images:
        raise ValueError("fit_refiner needs at least one image")
    if eval_points is not None and len(eval_points) != len(images):
        raise ValueError("eval_points must hold one Points per image")
    s = settings or FitSettings()
    cfg = replace(config or RefinerConfig(), sigma_um=float(sigma_um))
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    wm = cfg.work_mpp

    data: list[_Image] = []
    for i, (img, mpp) in enumerate(zip(images, mpps, strict=True)):
        work, ratios = to_work(img, float(mpp), wm)
        coarse = detector.detect(work, wm)
        truth = None
        if eval_points is not None:
            gt = eval_points[i]
            xy = np.empty_like(gt.xy)
            xy[:, 0] = (gt.xy[:, 0] + 0.5) * ratios[0] - 0.5
            xy[:, 1] = (gt.xy[:, 1] + 0.5) * ratios[1] - 0.5
            truth = Points(xy, gt.score)
        data.append(_Image(work, ratios, coarse, truth=truth))
        if s.fg_weight != 1.0:
            data[-1].foreground = _foreground(work, wm)

    history: list[dict[str, Any]] = []
    sigma_px = cfg.sigma_um / wm
    ignore_px = s.ignore_um / wm
    eval_px = s.eval_radius_um / wm

    # Round-0 targets: the confident top of the coarse points, pooled over images.
    scores = np.concatenate([d.coarse.score for d in data]) if data else np.zeros(0)
    cut = float(np.quantile(scores, 1.0 - s.top_fraction)) if scores.size else 1.0
    cut = max(cut, s.min_coarse_score)
    for d in data:
        keep = d.coarse.score >= cut
        d.targets, d.uncertain = d.coarse.select(keep), d.coarse.select(~keep)
    entry: dict[str, Any] = {"round": "coarse", "seconds": time.perf_counter() - t_start}
    entry |= _eval([d.coarse for d in data], data, eval_px, "detect")
    entry |= _eval([d.targets for d in data], data, eval_px, "targets")
    entry["n_targets"] = int(sum(len(d.targets) for d in data))
    history.append(entry)

    from zeropath.nuclei.base import torch_seed

    with torch_seed(seed):
        net = ConfNet(cfg.channels).to(memory_format=torch.channels_last)
    refiner = Refiner(net, cfg)

    area = sum(d.rgb.shape[0] * d.rgb.shape[1] for d in data)
    steps_epoch = max(1, math.ceil(area / (s.crop_px**2 * s.batch_size)))
    plan = [
        max(1, round(epochs_per_round * steps_epoch * (s.first_round_factor if r == 0 else 1.0)))
        for r in range(rounds)
    ]
    total_steps = sum(plan)
    done_steps = 0
    predict_cost = None  # seconds of one view over all images, measured on the first pass
    for r in range(rounds):
        t0 = time.perf_counter()
        for d in data:
            heights = d.targets.score if s.soft_targets else None
            d.target_map = gaussian_confidence_map(d.rgb.shape[:2], d.targets.xy, sigma_px, heights)
            d.weight_map = _weight_map(d.rgb.shape[:2], d.uncertain, d.target_map, ignore_px)
            if d.foreground is not None:
                d.weight_map[d.foreground & (d.target_map < 0.05)] *= s.fg_weight
        deadline = None
        if time_budget_s is not None:
            remaining = time_budget_s - (time.perf_counter() - t_start)
            views_left = (rounds - 1 - r) * s.select_views + (1 if eval_points is not None else 0)
            if predict_cost is None:
                predict_cost = _time_one_view(refiner, data)
            remaining -= predict_cost * views_left
            share = plan[r] / sum(plan[r:])
            deadline = time.perf_counter() + max(0.0, remaining * share)
        loss, steps = _train_round(
            refiner.net, data, plan[r], s, rng, r, deadline, progress, done_steps, total_steps
        )
        done_steps += plan[r]
        refiner.net.eval()
        entry = {"round": r, "steps": steps, "loss": loss, "train_s": time.perf_counter() - t0}
        last = r == rounds - 1
        t1 = time.perf_counter()
        if not last:
            views = _views(s.select_views)
            dets = []
            for d in data:
                maps = refiner.predict_views(d.rgb, views)
                dets.append(find_peaks(maps[0], cfg.min_distance_um / wm, cfg.threshold))
                d.targets, d.uncertain = _select(maps, d.targets, d.coarse, cfg, s)
            predict_cost = (time.perf_counter() - t1) / len(views)
            entry |= _eval([d.targets for d in data], data, eval_px, "targets")
            entry["n_targets"] = int(sum(len(d.targets) for d in data))
        elif eval_points is not None:
            dets = [refiner.detect_work(d.rgb, views=1) for d in data]
        else:
            dets = []
        if dets:
            entry |= _eval(dets, data, eval_px, "detect")
        entry["select_s"] = time.perf_counter() - t1
        history.append(entry)
        if progress:
            progress(done_steps, total_steps, f"round {r + 1}/{rounds}")
        if on_round is not None:
            t_cb = time.perf_counter()
            refiner.history = history
            on_round(r, refiner)
            refiner.net.eval()
            t_start += time.perf_counter() - t_cb  # not part of the fit
    for d in data:  # free the maps before returning
        d.target_map = d.weight_map = None
    history.append({"round": "total", "seconds": time.perf_counter() - t_start})
    refiner.history = history
    return refiner


def _weight_map(
    shape: tuple[int, int], uncertain: Points, target_map: np.ndarray, ignore_px: float
) -> np.ndarray:
    """1 everywhere, 0 within ``ignore_px`` of an uncertain point (away from targets' bumps)."""
    weight = np.ones(shape, np.float32)
    if len(uncertain) == 0 or ignore_px <= 0:
        return weight
    seeds = np.ones(shape, bool)
    rows = np.clip(np.rint(uncertain.xy[:, 1]).astype(np.intp), 0, shape[0] - 1)
    cols = np.clip(np.rint(uncertain.xy[:, 0]).astype(np.intp), 0, shape[1] - 1)
    seeds[rows, cols] = False
    near = ndi.distance_transform_edt(seeds) <= ignore_px
    weight[near & (target_map < 0.05)] = 0.0
    return weight


def _foreground(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Pixels whose smoothed hematoxylin is above the image's Otsu level."""
    from zeropath.nuclei.detect import otsu_level
    from zeropath.stain import hematoxylin_od

    hema = ndi.gaussian_filter(hematoxylin_od(rgb), 0.5 / mpp)
    return hema > otsu_level(hema, 0.03)


def _select(
    maps: np.ndarray, prev: Points, coarse: Points, cfg: RefinerConfig, s: FitSettings
) -> tuple[Points, Points]:
    """Split the TTA-mean peaks into next-round targets and uncertain points."""
    from scipy.spatial import cKDTree

    mean = maps.mean(axis=0)
    wm = cfg.work_mpp
    cand = find_peaks(mean, cfg.min_distance_um / wm, s.candidate_threshold)
    if len(cand) == 0:
        return Points.empty(), Points.empty()
    rows = np.clip(np.rint(cand.xy[:, 1]).astype(np.intp), 0, mean.shape[0] - 1)
    cols = np.clip(np.rint(cand.xy[:, 0]).astype(np.intp), 0, mean.shape[1] - 1)
    win = 2 * max(1, int(round(1.0 / wm))) + 1  # ±1 µm: a view's peak may shift a little
    per_view = np.stack([ndi.maximum_filter(m, size=win)[rows, cols] for m in maps])
    conf = cand.score.astype(np.float64)
    agree = (per_view >= s.candidate_threshold).mean(axis=0)
    spread = per_view.std(axis=0)
    match_px = s.match_um / wm
    known = np.zeros(len(cand), bool)
    for ref in (prev, coarse) if s.coarse_is_known else (prev,):
        if len(ref):
            dist, _ = cKDTree(ref.xy).query(cand.xy, k=1)
            known |= dist <= match_px
    keep = (
        (conf >= s.keep_threshold)
        & (agree >= s.agree_min)
        & (spread <= s.spread_max)
        & (known | (conf >= s.new_threshold))
    )
    return cand.select(keep), cand.select(~keep)


def _train_round(
    net: Any,
    data: list[_Image],
    steps: int,
    s: FitSettings,
    rng: np.random.Generator,
    round_index: int,
    deadline: float | None,
    progress: ProgressFn | None,
    done_before: int,
    total_steps: int,
) -> tuple[float, int]:
    """Train ``steps`` mini-batches of random augmented crops; returns (mean loss, steps)."""
    import torch

    from zeropath.models.confnet import rgb_to_tensor

    net.train()
    lr = s.lr if round_index == 0 else s.lr * 0.5
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.05)
    losses = []
    done = 0
    for step in range(steps):
        if deadline is not None and step > 0 and time.perf_counter() > deadline:
            break
        x, t, w = _batch(data, s, rng)
        logits = net(rgb_to_tensor(x))
        target = torch.from_numpy(t)[:, None]
        weight = torch.from_numpy(w)[:, None] * (1.0 + s.pos_weight * target)
        err = (torch.sigmoid(logits) - target) ** 2
        loss = (weight * err).sum() / weight.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        done += 1
        if progress and step % 10 == 0:
            progress(done_before + step, total_steps, f"round {round_index + 1}")
    return (float(np.mean(losses)) if losses else float("nan")), done


def _batch(
    data: list[_Image], s: FitSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of random crops with HED jitter and a random D4 symmetry each."""
    c = s.crop_px
    xs = np.empty((s.batch_size, c, c, 3), np.uint8)
    ts = np.empty((s.batch_size, c, c), np.float32)
    ws = np.empty((s.batch_size, c, c), np.float32)
    for b in range(s.batch_size):
        d = data[int(rng.integers(len(data)))]
        assert d.target_map is not None and d.weight_map is not None
        rgb, tm, wmap = d.rgb, d.target_map, d.weight_map
        h, w = rgb.shape[:2]
        if h < c or w < c:  # pad small images with white glass that the loss ignores
            ph, pw = max(0, c - h), max(0, c - w)
            rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), constant_values=255)
            tm = np.pad(tm, ((0, ph), (0, pw)))
            wmap = np.pad(wmap, ((0, ph), (0, pw)))
            h, w = rgb.shape[:2]
        r0 = int(rng.integers(h - c + 1))
        c0 = int(rng.integers(w - c + 1))
        k = int(rng.integers(8))
        crop = hed_jitter(rgb[r0 : r0 + c, c0 : c0 + c], rng, s.hed_sigma, s.hed_bias)
        xs[b] = d4(crop, k)
        ts[b] = d4(tm[r0 : r0 + c, c0 : c0 + c], k)
        ws[b] = d4(wmap[r0 : r0 + c, c0 : c0 + c], k)
    return xs, ts, ws


def _time_one_view(refiner: Refiner, data: list[_Image]) -> float:
    """Seconds one prediction view over all images takes (timed on the first image)."""
    t0 = time.perf_counter()
    refiner.net.eval()
    refiner._predict_one(data[0].rgb, 0)
    per_px = (time.perf_counter() - t0) / max(1, data[0].rgb.shape[0] * data[0].rgb.shape[1])
    return per_px * sum(d.rgb.shape[0] * d.rgb.shape[1] for d in data)


def _eval(preds: Sequence[Points], data: list[_Image], radius: float, key: str) -> dict:
    """Pooled precision/recall/F1 against evaluation points; {} when there are none."""
    if any(d.truth is None for d in data):
        return {}
    tp = fp = fn = 0
    for p, d in zip(preds, data, strict=True):
        a, b, c = match_counts(p, d.truth, radius)  # type: ignore[arg-type]
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return {f"{key}_precision": precision, f"{key}_recall": recall, f"{key}_f1": f1}
