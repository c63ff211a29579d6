"""A training-free nucleus segmenter in the spirit of QuPath's cell detection.

Hematoxylin by colour deconvolution → Gaussian smoothing → optional background subtraction
(morphological opening) → threshold (Otsu, bounded by a floor so blank glass yields nothing) →
hole filling → marker watershed from maxima of the smoothed hematoxylin → size and
stain-density filters. Defaults were chosen on the Kumar train + val images (never on a test
image); BENCHMARKS.md has the numbers.
Every length is in µm and converted with the image's µm/px, so one parameter set transfers
across magnifications; the work runs at ``work_mpp`` (0.5 µm/px by default) and the labels
are returned on the input's pixel grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from zeropath.io.tiler import resize_labels, resize_rgb
from zeropath.nuclei.base import Segmenter, TileSpec
from zeropath.stain import as_rgb, hematoxylin_od


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of :func:`segment_classical`; lengths in µm, areas in µm², OD in OD units."""

    work_mpp: float = 0.5
    background_radius_um: float = 0.0  # > 0: subtract a grey opening (QuPath-style)
    smooth_sigma_um: float = 0.5
    threshold: float | None = (
        None  # None: Otsu per image, clipped to [threshold_min, threshold_max]
    )
    threshold_min: float = 0.03
    threshold_max: float = 1.0
    marker_sigma_um: float = 1.5
    split_min_distance_um: float = 2.0
    min_area_um2: float = 4.0
    max_area_um2: float = 400.0
    min_mean_od: float = 0.05
    fill_holes_max_um2: float = 30.0
    min_contrast_od: float = 0.0  # > 0: drop objects hardly darker than their ring
    ring_um: float = 1.5

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def segment_classical(
    rgb: np.ndarray, mpp: float, params: ClassicalParams | None = None
) -> np.ndarray:
    """Segment nuclei in an RGB H&E image at ``mpp`` µm/px; returns uint32 instance labels.

    The input is not modified. An image with no hematoxylin-dense structures returns all zeros.
    """
    p = params or ClassicalParams()
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    rgb = as_rgb(rgb)
    h_in, w_in = rgb.shape[:2]
    scale = mpp / p.work_mpp  # < 1 when the input is finer than the working resolution
    work = resize_rgb_scaled(rgb, scale) if abs(scale - 1.0) > 0.1 else rgb
    wmpp = mpp / scale if abs(scale - 1.0) > 0.1 else mpp
    labels = _segment_at(work, wmpp, p)
    if labels.shape != (h_in, w_in):
        labels = resize_labels(labels, (h_in, w_in))
    return labels


def resize_rgb_scaled(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return resize_rgb(rgb, (max(2, int(round(h * scale))), max(2, int(round(w * scale)))))


def _um(px_um: float, mpp: float) -> float:
    return px_um / mpp


def _segment_at(rgb: np.ndarray, mpp: float, p: ClassicalParams) -> np.ndarray:
    from skimage import feature, filters, morphology, segmentation

    hema = hematoxylin_od(rgb)
    signal = _signal(hema, mpp, p)
    if p.threshold is not None:
        t = p.threshold
    else:
        t = _bounded_otsu(signal, p.threshold_min, p.threshold_max, filters)
    mask = signal > t
    if not mask.any():
        return np.zeros(hema.shape, np.uint32)
    hole_px = int(round(p.fill_holes_max_um2 / mpp**2))
    mask = morphology.remove_small_holes(mask, max_size=hole_px)
    mask = ndi.binary_opening(mask, structure=np.ones((3, 3), bool))
    # Markers: maxima of the hematoxylin signal smoothed at about a nucleus radius; a
    # nucleus is a dark blob, so touching nuclei give separate maxima.
    surface = ndi.gaussian_filter(hema, max(0.5, _um(p.marker_sigma_um, mpp)))
    components, n = ndi.label(mask)
    if n == 0:
        return np.zeros(hema.shape, np.uint32)
    peaks = feature.peak_local_max(
        surface,
        min_distance=max(1, int(round(_um(p.split_min_distance_um, mpp)))),
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    labels = segmentation.watershed(-surface, markers, mask=mask).astype(np.uint32)
    # Components that hold no marker become one object each.
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans.astype(np.uint32) + labels.max(), labels)
    return _filter_objects(labels, hema, mpp, p)


def _signal(hema: np.ndarray, mpp: float, p: ClassicalParams) -> np.ndarray:
    """The thresholded image: smoothed hematoxylin, optionally background-subtracted."""
    sigma = _um(p.smooth_sigma_um, mpp)
    signal = ndi.gaussian_filter(hema, sigma) if sigma > 0.3 else hema
    if p.background_radius_um > 0:
        # Grey opening with a square of ~2 background radii (separable, so cheap) removes
        # structures larger than a nucleus, as QuPath's background radius does.
        size = max(3, int(round(2 * _um(p.background_radius_um, mpp))) | 1)
        signal = signal - ndi.grey_opening(signal, size=(size, size))
    return signal


def slide_threshold(
    rgbs: list[np.ndarray], mpp: float, params: ClassicalParams | None = None
) -> float:
    """One Otsu threshold pooled over several tiles of a slide.

    Thresholding each tile on its own makes a tile of pure stroma split its own noise into
    "nuclei"; a threshold shared by the whole slide keeps tiles consistent.
    """
    from skimage import filters

    p = params or ClassicalParams()
    pooled = []
    for rgb in rgbs:
        rgb = as_rgb(rgb)
        scale = mpp / p.work_mpp
        work = resize_rgb_scaled(rgb, scale) if abs(scale - 1.0) > 0.1 else rgb
        wmpp = mpp / scale if abs(scale - 1.0) > 0.1 else mpp
        sig = _signal(hematoxylin_od(work), wmpp, p).ravel()
        step = max(1, sig.size // 200_000)
        pooled.append(sig[::step])
    if not pooled:
        return p.threshold_min
    return _bounded_otsu(np.concatenate(pooled), p.threshold_min, p.threshold_max, filters)


def _bounded_otsu(signal: np.ndarray, lo: float, hi: float, filters: object) -> float:
    values = signal[signal > lo * 0.5]
    if values.size < 64:
        return lo
    t = float(filters.threshold_otsu(values))  # type: ignore[attr-defined]
    return float(np.clip(t, lo, hi))


def _filter_objects(
    labels: np.ndarray, hema: np.ndarray, mpp: float, p: ClassicalParams
) -> np.ndarray:
    n = int(labels.max())
    if n == 0:
        return labels
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(labels, np.float64), labels, idx) * mpp**2
    mean_od = ndi.mean(hema, labels, idx)
    keep = (area >= p.min_area_um2) & (area <= p.max_area_um2) & (mean_od >= p.min_mean_od)
    if p.min_contrast_od > 0:
        # A nucleus is darker than the background right around it; pieces of a dark smear
        # (folds, dense epithelium bands) are not.
        size = 2 * max(1, int(round(_um(p.ring_um, mpp)))) + 1
        grown = ndi.grey_dilation(labels, size=(size, size))
        ring = np.where(labels == 0, grown, 0)
        ring_n = ndi.sum_labels(np.ones_like(ring, np.float64), ring, idx)
        ring_sum = ndi.sum_labels(hema, ring, idx)
        ring_mean = ring_sum / np.maximum(ring_n, 1)
        contrast = np.where(ring_n > 0, mean_od - ring_mean, np.inf)
        keep &= contrast >= p.min_contrast_od
    lut = np.zeros(n + 1, np.uint32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[labels]


class ClassicalSegmenter(Segmenter):
    """The classical baseline as a :class:`~zeropath.nuclei.base.Segmenter` of the tile engine.

    ``target_mpp`` is None: it takes tiles at the input's µm/px (every length is in µm) and
    works at ``params.work_mpp`` inside :func:`segment_classical`, so the engine does not
    resample for it.
    """

    name = "classical"
    #: 12 µm of context around each tile core (larger than a nucleus radius).
    tile = TileSpec(halo_um=12.0)

    def __init__(self, params: ClassicalParams | None = None) -> None:
        self.params = params or ClassicalParams()

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        return segment_classical(rgb, mpp, self.params)

    def adapt(self, source: object, tiles: list[object], max_tiles: int = 12) -> ClassicalSegmenter:
        """A copy with one threshold for the whole input, from up to ``max_tiles`` tiles.

        Used by the tile engine on multi-tile inputs; a fixed ``threshold`` is kept as is.
        """
        if self.params.threshold is not None or len(tiles) <= 1:
            return self
        from dataclasses import replace

        pick = np.linspace(0, len(tiles) - 1, min(max_tiles, len(tiles))).round().astype(int)
        rgbs = []
        for i in np.unique(pick):
            core = tiles[i].core  # type: ignore[attr-defined]
            rgbs.append(source.read_region(core.x0, core.y0, core.width, core.height))  # type: ignore[attr-defined]
        t = slide_threshold(rgbs, source.mpp, self.params)  # type: ignore[attr-defined]
        return ClassicalSegmenter(replace(self.params, threshold=round(t, 5)))

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "params": self.params.to_dict()}
