"""Nucleus instances from network maps: the post-processing shared by every learned segmenter.

Three methods, one per kind of map, all ending in the same drop-small + relabel step
(:func:`zeropath.io.morphology.drop_small_labels`, labels ``1..N``):

* :func:`instances_from_probability` — a nucleus probability map seeded by detected points
  (two-class ZA-Net networks). The binary mask is ``prob > threshold`` with small holes filled
  and small objects removed (sizes in µm²). Markers are the detected points that fall inside
  the mask (points closer than ``merge_um`` count once), plus distance-transform maxima in the
  components that hold no point (all components when no points are given). A marker watershed
  on the inverted probability (blended, by default only when there are no points, with the
  inverted normalised distance to the background) then splits touching nuclei along the
  probability valleys and the mask's necks.
* :func:`instances_from_interior` — foreground + interior maps of a three-class network
  (background / interior / boundary; ZA-Net), markers at the interior peaks (sizes in µm²).
* :func:`instances_from_offsets` — foreground ``B`` + HoVer-style x/y offsets ``D`` of the
  prompt-free decoder (points models), markers at the low-energy cores (sizes in map pixels).

In all three a mask component that no marker reached stays one nucleus.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from zeropath.io.morphology import drop_small_labels

__all__ = [
    "binary_mask",
    "boundary_energy",
    "instances_from_interior",
    "instances_from_offsets",
    "instances_from_probability",
    "interior_peaks",
]


def _as_xy(points: object) -> np.ndarray:
    xy = getattr(points, "xy", points)
    return np.asarray(xy, np.float64).reshape(-1, 2)


def _merge_close(rc: np.ndarray, radius_px: float) -> np.ndarray:
    """Greedy merge of points closer than ``radius_px`` (keeps the first of each cluster)."""
    if len(rc) < 2 or radius_px <= 0:
        return rc
    from scipy.spatial import cKDTree

    tree = cKDTree(rc)
    keep = np.ones(len(rc), bool)
    for i, j in sorted(tree.query_pairs(radius_px)):
        if keep[i] and keep[j]:
            keep[j] = False
    return rc[keep]


def binary_mask(
    prob: np.ndarray,
    mpp: float,
    threshold: float = 0.5,
    min_area_um2: float = 4.0,
    fill_holes_um2: float = 20.0,
) -> np.ndarray:
    """``prob > threshold``, holes up to ``fill_holes_um2`` filled, objects below
    ``min_area_um2`` removed."""
    from skimage import morphology

    mask = np.asarray(prob) > threshold
    if fill_holes_um2 > 0:
        mask = morphology.remove_small_holes(mask, max_size=int(round(fill_holes_um2 / mpp**2)))
    if min_area_um2 > 0:
        mask = morphology.remove_small_objects(
            mask, max_size=max(0, int(round(min_area_um2 / mpp**2)) - 1)
        )
    return mask


def instances_from_probability(
    prob: np.ndarray,
    points: object | None = None,
    mpp: float = 0.5,
    threshold: float = 0.5,
    min_area_um2: float = 4.0,
    fill_holes_um2: float = 20.0,
    merge_um: float = 2.0,
    peak_min_distance_um: float = 2.5,
    peak_h_um: float = 0.5,
    distance_weight: float | None = None,
) -> np.ndarray:
    """Instance labels (``uint32``, 0 background) from a nucleus probability map.

    ``points`` (a ``Points`` or ``(N, 2)`` (x, y) pixel coordinates on the same grid) seed the
    watershed; components without a point are seeded by maxima of their distance transform
    (at least ``peak_min_distance_um`` apart and standing ``peak_h_um`` above their
    surroundings). The flooded surface is ``(1 - w) * (1 - prob) + w * (1 - d / d_max)`` with
    ``w = distance_weight`` and ``d`` the distance to the background (per component maximum
    ``d_max``); by default ``w`` is 0 when points seed the flooding (a geodesic Voronoi split
    between the points) and 0.5 without points. Fragments smaller than ``min_area_um2`` are
    dropped; labels are renumbered ``1..N``.
    """
    from skimage import feature, segmentation

    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    mask = binary_mask(prob, mpp, threshold, min_area_um2, fill_holes_um2)
    if not mask.any():
        return np.zeros(prob.shape, np.uint32)
    comp, n_comp = ndi.label(mask)
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    markers = np.zeros(prob.shape, np.int32)
    n = n_points = 0
    if points is not None:
        xy = _as_xy(points)
        rc = np.rint(xy[:, ::-1]).astype(np.int64)
        h, w = prob.shape
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
        rc = rc[ok]
        rc = rc[mask[rc[:, 0], rc[:, 1]]]
        rc = _merge_close(rc, merge_um / mpp)
        n = len(rc)
        markers[rc[:, 0], rc[:, 1]] = np.arange(1, n + 1)
        n_points = n
    seeded = np.zeros(n_comp + 1, bool)
    seeded[np.unique(comp[markers > 0])] = True
    seeded[0] = True
    orphan = ~seeded[comp]
    if orphan.any():
        # distance maxima in point-less components; an h-maxima style floor avoids one
        # marker per bump of a ragged outline
        smooth = ndi.gaussian_filter(dist, 1.0)
        peaks = feature.peak_local_max(
            smooth,
            min_distance=max(1, int(round(peak_min_distance_um / mpp))),
            labels=np.where(orphan, comp, 0),
            exclude_border=False,
        )
        if len(peaks) and peak_h_um > 0:
            peaks = _h_filter(smooth, peaks, comp, peak_h_um / mpp)
        markers[tuple(peaks.T)] = np.arange(n + 1, n + len(peaks) + 1)
        n += len(peaks)
        # a component too small to have a maximum still becomes one object
        left = orphan & ~np.isin(comp, np.unique(comp[markers > 0]))
        if left.any():
            extra, n_extra = ndi.label(left)
            seeds = ndi.maximum_position(dist, extra, np.arange(1, n_extra + 1))
            for k, (r, c) in enumerate(seeds, start=1):
                markers[int(r), int(c)] = n + k
            n += n_extra
    dmax = np.zeros(n_comp + 1, np.float32)
    dmax[1:] = ndi.maximum(dist, comp, np.arange(1, n_comp + 1))
    dnorm = dist / np.maximum(dmax[comp], 1.0)
    if distance_weight is None:
        # with points the flooding is a geodesic Voronoi split (best on kumar_train / val);
        # without, the distance term splits touching blobs at their necks
        distance_weight = 0.0 if n_points else 0.5
    surface = (1.0 - distance_weight) * (1.0 - prob) + distance_weight * (1.0 - dnorm)
    labels = segmentation.watershed(surface, markers, mask=mask)
    return drop_small_labels(labels, int(round(min_area_um2 / mpp**2)))


def _h_filter(surface: np.ndarray, peaks: np.ndarray, comp: np.ndarray, h: float) -> np.ndarray:
    """Keep the highest peak of each component, and others only if they rise ``h`` above the
    saddle toward a higher peak (approximated by the component's value on the line between)."""
    keep = np.ones(len(peaks), bool)
    vals = surface[tuple(peaks.T)]
    order = np.argsort(-vals)
    peaks, vals = peaks[order], vals[order]
    keep = np.ones(len(peaks), bool)
    for i in range(len(peaks)):
        for j in range(i):
            if not keep[j] or comp[tuple(peaks[i])] != comp[tuple(peaks[j])]:
                continue
            n = int(np.ceil(np.hypot(*(peaks[i] - peaks[j])))) + 1
            line = np.linspace(peaks[j], peaks[i], n).round().astype(np.intp)
            saddle = float(surface[line[:, 0], line[:, 1]].min())
            if vals[i] - saddle < h:
                keep[i] = False
                break
    return peaks[keep]


def interior_peaks(
    interior: np.ndarray, mask: np.ndarray, h: float, floor: float = 0.1, step: float = 0.05
) -> np.ndarray:
    """``(row, col)`` of the maxima of ``interior`` within ``mask`` that rise at least ``h``
    above the saddle joining them to a higher maximum (their dynamics: an h-maxima transform),
    plus the highest maximum of every part of ``interior > floor``.

    The saddles are found on a ladder of thresholds ``step`` apart, from the top down to
    ``floor``: where two parts of ``interior > t`` meet, the lower maximum is kept when it
    stands ``h`` above ``t``. Much faster than a grey reconstruction, and finer steps only
    move the saddles by less than ``step``.
    """
    sm = np.where(mask, interior, -1.0).astype(np.float32)
    cand = np.argwhere((sm == ndi.maximum_filter(sm, 3)) & (sm > floor))
    if len(cand) == 0:
        return cand
    val = sm[cand[:, 0], cand[:, 1]]
    order = np.argsort(-val, kind="stable")
    cand, val = cand[order], val[order]
    levels = np.arange(float(val[0]) - step, floor - 1e-6, -step)
    if len(levels) == 0:
        levels = np.array([floor])
    alive = np.zeros(len(cand), bool)  # the highest maximum of each part at the current level
    kept = np.zeros(len(cand), bool)
    for t in levels:
        lab, n = ndi.label(sm > t)
        above = val > t
        part = np.zeros(len(cand), np.intp)
        part[above] = lab[cand[above, 0], cand[above, 1]]
        # a part holding no maximum yet is born at this level: its highest candidate
        has = np.zeros(n + 1, bool)
        has[part[alive]] = True
        new = np.nonzero(above & ~alive)[0]
        new = new[~has[part[new]]]
        _, first = np.unique(part[new], return_index=True)
        alive[new[first]] = True
        # parts that merged at this level: the highest survives, the others end here
        idx = np.nonzero(alive)[0]
        _, first = np.unique(part[idx], return_index=True)
        lose = np.delete(idx, first)
        kept[lose[val[lose] - t >= h]] = True
        alive[lose] = False
    return cand[kept | alive]


def instances_from_interior(
    fg: np.ndarray,
    interior: np.ndarray,
    points: object | None = None,
    mpp: float = 0.5,
    threshold: float = 0.5,
    marker_threshold: float = 0.5,
    min_marker_um2: float = 2.0,
    min_area_um2: float = 4.0,
    fill_holes_um2: float = 20.0,
    merge_um: float = 2.0,
    marker_h: float = 0.3,
    marker_sigma_um: float = 0.25,
) -> np.ndarray:
    """Instance labels from a three-class network (background / interior / boundary).

    The mask is ``fg > threshold`` (``fg`` = 1 - background probability). With ``marker_h > 0``
    the markers are the maxima of the interior probability (smoothed by a Gaussian of
    ``marker_sigma_um``) that rise ``marker_h`` above the saddle to a higher one (see
    :func:`interior_peaks`): touching nuclei whose interiors are joined by a weak bridge still
    get one marker each. With ``marker_h == 0`` they are the connected parts of
    ``interior > marker_threshold`` of at least ``min_marker_um2``. Given ``points``, the
    points that fall in a mask component no marker reached seed it too. The watershed floods
    ``1 - interior`` within the mask; fragments below ``min_area_um2`` are dropped and labels
    renumbered ``1..N``.
    """
    from skimage import segmentation

    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    fg = np.asarray(fg, np.float32)
    interior = np.asarray(interior, np.float32)
    if fg.ndim != 2 or fg.shape != interior.shape:
        raise ValueError(f"expected two 2-D maps of one shape, got {fg.shape}, {interior.shape}")
    mask = binary_mask(fg, mpp, threshold, min_area_um2, fill_holes_um2)
    if not mask.any():
        return np.zeros(fg.shape, np.uint32)
    if marker_h > 0:
        if marker_sigma_um > 0:
            interior = ndi.gaussian_filter(interior, marker_sigma_um / mpp)
        peaks = interior_peaks(interior, mask, marker_h)
        n = len(peaks)
        markers = np.zeros(fg.shape, np.int32)
        markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, n + 1)
    else:
        core = ndi.label((interior > marker_threshold) & mask)[0]
        markers = drop_small_labels(core, int(round(min_marker_um2 / mpp**2))).astype(np.int32)
        n = int(markers.max())
    comp, n_comp = ndi.label(mask)
    seeded = np.zeros(n_comp + 1, bool)
    seeded[np.unique(comp[markers > 0])] = True
    seeded[0] = True
    if points is not None:
        rc = np.rint(_as_xy(points)[:, ::-1]).astype(np.int64)
        h, w = fg.shape
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
        rc = rc[ok]
        rc = rc[mask[rc[:, 0], rc[:, 1]] & ~seeded[comp[rc[:, 0], rc[:, 1]]]]
        rc = _merge_close(rc, merge_um / mpp)
        markers[rc[:, 0], rc[:, 1]] = np.arange(n + 1, n + len(rc) + 1)
        n += len(rc)
        seeded[np.unique(comp[markers > 0])] = True
    markers = _seed_orphans(markers, n, comp, seeded)
    labels = segmentation.watershed(1.0 - interior, markers, mask=mask)
    return drop_small_labels(labels, int(round(min_area_um2 / mpp**2)))


def _seed_orphans(markers: np.ndarray, n: int, comp: np.ndarray, seeded: np.ndarray) -> np.ndarray:
    """``markers`` (``1..n``) plus one marker per mask component (``comp``) not ``seeded``:
    a component that no marker reached stays one object."""
    orphan = ~seeded[comp]
    if not orphan.any():
        return markers
    extra, _ = ndi.label(orphan)
    return np.where(orphan, extra + n, markers)


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


def instances_from_offsets(
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
    """uint32 instance labels from a foreground probability ``B`` ``(H, W)`` and ``(2, H, W)``
    offsets ``D`` (sizes in pixels of the maps; the caller converts µm with its mpp).

    The offsets follow :func:`zeropath.points.targets.distance_targets`: inside a nucleus the
    x map rises from −1 to +1 left to right (the y map top to bottom), and where two nuclei
    touch it drops from +1 back to −1. The post-processing (after HoVer-Net) therefore

    1. thresholds ``B`` (small holes filled, specks dropped) into the foreground mask;
    2. measures a boundary energy (:func:`boundary_energy`) of the Gaussian-smoothed offset
       maps — only *drops* count, so a nucleus' own slope is ignored;
    3. takes as markers the connected parts of the mask with low energy and ``|D|`` below
       ``marker_radius`` (the nucleus cores), at least ``min_marker_px`` large;
    4. floods ``|D| + energy`` from the markers within the mask (marker watershed); a mask
       component no marker reached stays one nucleus; fragments below ``min_area_px`` are
       dropped.
    """
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
    markers = _seed_orphans(markers, n, comp, seeded)
    labels = segmentation.watershed(radius + energy, markers, mask=mask)
    return drop_small_labels(labels, min_area_px)
