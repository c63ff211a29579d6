"""Coarse nucleus detection without labels (ZA-Net stage 1): the detector interface and the
stain-prior detector.

A :class:`Detector` maps an RGB image at ``mpp`` µm/px to :class:`~zeropath.nuclei.centres.Points`
in that image's pixel coordinates. :class:`StainPriorDetector` is the offline default:
hematoxylin optical density by colour deconvolution, multi-scale scale-normalised Laplacian of
Gaussian (LoG) blob detection with scales set by a nucleus radius range in µm, local maxima at
a minimum separation in µm, and an optional foreground gate (Otsu on smoothed hematoxylin, as
the classical baseline does). Each point's confidence is a logistic of its blob response
divided by the image's Otsu hematoxylin level, so a faint and a dark slide give comparable
scores. Defaults were chosen on the Kumar train split of MoNuSeg.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from zeropath.io.tiler import MPP_TOLERANCE, needs_resample, resize_rgb
from zeropath.nuclei.centres import Points
from zeropath.stain import as_rgb, hematoxylin_od

__all__ = [
    "WORK_MPP",
    "Detector",
    "StainPriorDetector",
    "from_work",
    "to_work",
]

#: µm/px at which every learned nucleus stage works.
WORK_MPP = 0.5


@runtime_checkable
class Detector(Protocol):
    """Anything that finds nucleus centres: ``detect(rgb, mpp) -> Points`` (input pixel coords)."""

    def detect(self, rgb: np.ndarray, mpp: float) -> Points: ...


def to_work(
    rgb: np.ndarray, mpp: float, work_mpp: float = WORK_MPP, tol: float = MPP_TOLERANCE
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample ``rgb`` to ``work_mpp``; return ``(work_rgb, (sx, sy))`` with the size ratios.

    Within ``tol`` relative difference the image is used as is (ratios 1). The input is never
    modified; ``sx = work_width / width``.
    """
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    rgb = as_rgb(rgb)
    scale = mpp / work_mpp
    if not needs_resample(mpp, work_mpp, tol):
        return rgb, (1.0, 1.0)

    h, w = rgb.shape[:2]
    shape = (max(2, int(round(h * scale))), max(2, int(round(w * scale))))
    work = resize_rgb(rgb, shape)
    return work, (shape[1] / w, shape[0] / h)


def from_work(points: Points, ratios: tuple[float, float]) -> Points:
    """Map points from the work grid back to the input grid (pixel centres aligned)."""
    sx, sy = ratios
    if (sx, sy) == (1.0, 1.0) or len(points) == 0:
        return points
    xy = np.empty_like(points.xy)
    xy[:, 0] = (points.xy[:, 0] + 0.5) / sx - 0.5
    xy[:, 1] = (points.xy[:, 1] + 0.5) / sy - 0.5
    return Points(xy, points.score)


def otsu_level(hema_smooth: np.ndarray, floor: float) -> float:
    """Otsu threshold of smoothed hematoxylin, never below ``floor`` (blank glass → floor)."""
    from skimage.filters import threshold_otsu

    values = hema_smooth[hema_smooth > floor * 0.5]
    if values.size < 64:
        return floor
    return max(float(threshold_otsu(values)), floor)


@dataclass(frozen=True)
class StainPriorParams:
    """Parameters of :class:`StainPriorDetector`; lengths in µm, responses in OD units."""

    radius_um: tuple[float, float] = (2.0, 6.0)
    n_scales: int = 4
    min_distance_um: float = 2.5
    smooth_um: float = 0.3  # pre-smoothing of hematoxylin before the LoG
    foreground: bool = True  # keep only peaks above the Otsu hematoxylin level
    gate_sigma_um: float = 0.5  # smoothing of hematoxylin for the gate and the Otsu level
    threshold_min: float = 0.03  # floor of the Otsu level (OD)
    min_response: float = 0.02  # absolute LoG response floor (OD)
    score_mid: float = 0.6  # response / Otsu level that scores 0.5
    score_width: float = 0.35  # logistic width on log(response / level)
    min_score: float = 0.0
    work_mpp: float = WORK_MPP

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["radius_um"] = list(self.radius_um)
        return d


class StainPriorDetector:
    """Hematoxylin blob detector with a confidence per point; deterministic, label-free."""

    name = "stain-prior"

    def __init__(
        self,
        radius_um: tuple[float, float] = (2.0, 6.0),
        min_distance_um: float = 2.5,
        foreground: bool = True,
        params: StainPriorParams | None = None,
        **overrides: object,
    ) -> None:
        from dataclasses import replace

        base = params or StainPriorParams()
        if params is None:
            base = replace(
                base,
                radius_um=(float(radius_um[0]), float(radius_um[1])),
                min_distance_um=float(min_distance_um),
                foreground=bool(foreground),
            )
        self.params = replace(base, **overrides) if overrides else base  # type: ignore[arg-type]
        lo, hi = self.params.radius_um
        if not 0 < lo <= hi:
            raise ValueError(f"radius_um must satisfy 0 < min <= max, got {self.params.radius_um}")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "params": self.params.to_dict()}

    def detect(self, rgb: np.ndarray, mpp: float) -> Points:
        """Nucleus centres of ``rgb`` (at ``mpp`` µm/px) in its own pixel coordinates."""
        work, ratios = to_work(rgb, mpp, self.params.work_mpp)
        wmpp = mpp / ratios[0] if ratios != (1.0, 1.0) else mpp
        return from_work(self._detect_work(work, wmpp), ratios)

    def response(self, rgb: np.ndarray, mpp: float) -> tuple[np.ndarray, float]:
        """Max over scales of the scale-normalised LoG of hematoxylin, and the Otsu level."""
        p = self.params
        hema = hematoxylin_od(rgb)
        gate = ndi.gaussian_filter(hema, p.gate_sigma_um / mpp)
        level = otsu_level(gate, p.threshold_min)
        signal = ndi.gaussian_filter(hema, p.smooth_um / mpp) if p.smooth_um > 0 else hema
        radii = np.geomspace(p.radius_um[0], p.radius_um[1], max(1, p.n_scales)) / mpp
        resp = np.full(hema.shape, -np.inf, np.float32)
        for s in radii / np.sqrt(2.0):
            # -σ² ∇²G * H is positive at the centre of a dark (hematoxylin-dense) blob of radius
            # about σ√2 and comparable across scales.
            np.maximum(resp, -(s * s) * ndi.gaussian_laplace(signal, s), out=resp)
        return resp, level

    def _detect_work(self, rgb: np.ndarray, mpp: float) -> Points:
        from skimage.feature import peak_local_max

        p = self.params
        resp, level = self.response(rgb, mpp)
        min_dist = max(1, int(round(p.min_distance_um / mpp)))
        peaks = peak_local_max(
            resp, min_distance=min_dist, threshold_abs=p.min_response, exclude_border=False
        )
        if len(peaks) == 0:
            return Points.empty()
        rows, cols = peaks[:, 0], peaks[:, 1]
        if p.foreground:
            gate = ndi.gaussian_filter(hematoxylin_od(rgb), p.gate_sigma_um / mpp)
            keep = gate[rows, cols] > level
            rows, cols = rows[keep], cols[keep]
        if len(rows) == 0:
            return Points.empty()
        ratio = np.maximum(resp[rows, cols], 1e-6) / level
        z = (np.log(ratio) - np.log(p.score_mid)) / p.score_width
        score = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        keep = score >= p.min_score
        xy = np.stack([cols, rows], axis=1).astype(np.float64)[keep]
        score = score[keep]
        order = np.lexsort((xy[:, 0], xy[:, 1], -score))  # deterministic: score, then row, col
        return Points(xy[order], score[order])
