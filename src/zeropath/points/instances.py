"""Nucleus instances from the prompt-free decoder's maps: foreground B and x/y offsets D.

The offsets follow :func:`zeropath.points.targets.distance_targets`: inside a nucleus the x map
rises from −1 to +1 left to right (the y map top to bottom), and where two nuclei touch it
drops from +1 back to −1. The post-processing (after HoVer-Net) therefore

1. thresholds ``B`` (small holes filled, specks dropped) into the foreground mask;
2. measures a boundary energy ``max(−∂x/∂col, −∂y/∂row, 0)`` of the Gaussian-smoothed offset
   maps — only *drops* count, so a nucleus' own slope is ignored;
3. takes as markers the connected parts of the mask with low energy and ``|D|`` below
   ``marker_radius`` (the nucleus cores), at least ``min_marker_px`` large;
4. floods ``|D| + energy`` from the markers within the mask (marker watershed); a mask component
   no marker reached stays one nucleus; fragments below ``min_area_px`` are dropped.

Sizes are in pixels of the maps (the caller converts µm with its mpp).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from zeropath.io.morphology import drop_small_labels

__all__ = ["boundary_energy", "instances_from_maps"]


def boundary_energy(offsets: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``max(−∂x/∂col, −∂y/∂row, 0)`` of ``(2, H, W)`` offsets, per pixel (units: offset per
    pixel, so about 1 across a +1 → −1 jump and ``2 / diameter`` nowhere inside a nucleus)."""
    d = np.asarray(offsets, np.float64)
    if d.ndim != 3 or d.shape[0] != 2:
        raise ValueError(f"expected (2, H, W) offsets, got shape {d.shape}")
    h, v = d
    if sigma > 0:
        h, v = ndi.gaussian_filter(h, sigma), ndi.gaussian_filter(v, sigma)
    dh = ndi.sobel(h, axis=1) / 8.0
    dv = ndi.sobel(v, axis=0) / 8.0
    return np.maximum(np.maximum(-dh, -dv), 0.0).astype(np.float32)


def instances_from_maps(
    prob: np.ndarray,
    offsets: np.ndarray,
    threshold: float = 0.5,
    edge_threshold: float = 0.4,
    marker_radius: float = 0.7,
    sigma: float = 1.0,
    min_marker_px: int = 4,
    min_area_px: int = 10,
    fill_holes_px: int = 16,
) -> np.ndarray:
    """uint32 instance labels (0 background, 1..N) from a foreground probability ``(H, W)``
    and ``(2, H, W)`` offsets; see the module docstring for the steps."""
    from skimage import segmentation

    prob = np.asarray(prob, np.float32)
    d = np.asarray(offsets, np.float32)
    if prob.ndim != 2 or d.shape != (2, *prob.shape):
        raise ValueError(f"expected (H, W) and (2, H, W) maps, got {prob.shape} and {d.shape}")
    mask = prob > threshold
    if fill_holes_px > 0:
        holes, _ = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
        small = np.bincount(holes.ravel()) <= fill_holes_px
        small[0] = False
        mask = mask | small[holes]
    mask = drop_small_labels(ndi.label(mask)[0], min_area_px) > 0
    if not mask.any():
        return np.zeros(prob.shape, np.uint32)
    energy = boundary_energy(d, sigma)
    radius = np.hypot(d[0], d[1])
    core = mask & (energy < edge_threshold) & (radius < marker_radius)
    markers = drop_small_labels(ndi.label(core)[0], min_marker_px).astype(np.int64)
    n = int(markers.max())
    comp, _ = ndi.label(mask)
    seeded = np.zeros(int(comp.max()) + 1, bool)
    seeded[np.unique(comp[markers > 0])] = True
    seeded[0] = True
    orphan = ~seeded[comp]
    if orphan.any():  # a component without a core stays one nucleus
        extra, _ = ndi.label(orphan)
        markers = np.where(orphan, extra + n, markers)
    labels = segmentation.watershed(radius + energy, markers, mask=mask)
    return drop_small_labels(labels, min_area_px)
