"""Pixel pseudo-labels from nucleus points (ZA-Net stage 3, after Qu et al., MIDL 2019).

Two label sources, each ``uint8`` with :data:`BACKGROUND` = 0, :data:`NUCLEUS` = 1 and
:data:`IGNORE` = 255:

* :func:`voronoi_label` — the Voronoi partition of the points: every cell holds one nucleus, so
  the cell edges are background and a small disk at each point is nucleus; the rest is unknown.
* :func:`cluster_label` — k-means (3 clusters) on colour + clipped distance to the nearest point:
  the cluster nearest the points is nucleus, the farthest background, the middle one unknown.
* :func:`stain_label` — the training-free stain segmentation
  (:mod:`zeropath.nuclei.classical`): its masks nucleus, a ring around them and the lines
  between touching masks background, the rest unknown.

:func:`boundary_targets` turns a label into a three-class target (nucleus pixels near the edge
of their nucleus become :data:`BOUNDARY`), the nuclei given by :func:`split_at_points`.

:func:`combine_labels` merges sources by consensus (optionally with instance masks, e.g. SAM
masks prompted at the points, through :func:`mask_label`) and :func:`make_pseudolabels` runs the
whole stage. Lengths are in µm and converted with the image's µm/px. numpy/scipy/skimage only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from zeropath.stain import as_rgb, hed_od

BACKGROUND = 0
NUCLEUS = 1
BOUNDARY = 2  # nucleus boundary, for three-class (instance-aware) targets
IGNORE = 255

#: label sources understood by :func:`make_pseudolabels`
SOURCES = ("voronoi", "cluster", "stain")
#: the sources :func:`make_pseudolabels` uses unless told (``nuclei fit`` adds ``stain``)
DEFAULT_USE = ("voronoi", "cluster")


@dataclass(frozen=True)
class PseudoLabelParams:
    """Settings of the pseudo-label sources (lengths in µm). Defaults: chosen on MoNuSeg
    kumar_train / kumar_val (never on a test image)."""

    # Voronoi source
    point_radius_um: float = 1.5  # the nucleus disk at each point
    edge_width_um: float = 1.0  # 2 px at 0.5 µm/px
    # cluster source
    dist_clip_um: float = 5.0
    dist_weight: float = 1.0  # distance feature spans [0, 2 * dist_weight]
    colour_space: str = "h"  # "h" hematoxylin OD, "hed" H + E OD, "rgb"
    smooth_um: float = 0.5  # Gaussian sigma on the colour features
    per_cell: bool = False  # z-score colour within each Voronoi cell instead of the image
    colour_check: bool = True
    grow: bool = True
    middle_bg: bool = False
    refine: bool = True
    close_um: float = 1.0
    erode_um: float = 0.5
    max_fit_pixels: int = 60_000
    seed: int = 0
    # consensus
    edge_check: bool = True  # a Voronoi edge over nucleus-coloured pixels is not background
    # stain source (the training-free classical segmentation as a label source)
    stain_ring_um: float = 1.0  # background ring just outside the stain masks
    stain_erode_um: float = 0.0  # > 0: the masks' outer rim of this width is left unsure

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _params(params: PseudoLabelParams | None, overrides: dict[str, object]) -> PseudoLabelParams:
    p = params or PseudoLabelParams()
    return replace(p, **overrides) if overrides else p  # type: ignore[arg-type]


def _as_xy(points: object) -> np.ndarray:
    """``(N, 2)`` float64 (x, y) from a :class:`~zeropath.nuclei.centres.Points` or an array."""
    xy = getattr(points, "xy", points)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return xy


def _seed_image(shape: tuple[int, int], xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer seed image (1..N at the points, in point order) and the in-bounds point mask."""
    h, w = shape
    rc = np.rint(xy[:, ::-1]).astype(np.int64)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    seeds = np.zeros(shape, np.int32)
    idx = np.flatnonzero(inside)
    seeds[rc[idx, 0], rc[idx, 1]] = idx + 1
    return seeds, inside


def nearest_seed(shape: tuple[int, int], xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells by nearest-seed labelling: ``(cell id 1..N per pixel, distance in px)``.

    Cell ids follow the point order (point ``i`` owns cell ``i + 1``); with no point inside the
    image the cells are all 0 and the distance is ``inf``.
    """
    seeds, _ = _seed_image(shape, xy)
    if not seeds.any():
        return np.zeros(shape, np.int32), np.full(shape, np.inf, np.float32)
    dist, (ri, ci) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[ri, ci], dist.astype(np.float32)


def _edges(cells: np.ndarray, width_px: int) -> np.ndarray:
    """Pixels on the border between two cells, about ``width_px`` wide."""
    from skimage.segmentation import find_boundaries

    if width_px <= 1:
        return find_boundaries(cells, connectivity=1, mode="inner")
    edges = find_boundaries(cells, connectivity=1, mode="thick")
    extra = (width_px - 2) // 2
    if extra > 0:
        edges = ndi.binary_dilation(edges, iterations=extra)
    return edges


def _disk_mask(shape: tuple[int, int], xy: np.ndarray, radius_px: float) -> np.ndarray:
    """Union of disks of ``radius_px`` around the points (pixel centres within the radius)."""
    seeds, _ = _seed_image(shape, xy)
    if not seeds.any():
        return np.zeros(shape, bool)
    dist = ndi.distance_transform_edt(seeds == 0)
    return dist <= radius_px


def voronoi_label(
    shape: tuple[int, int],
    xy: object,
    mpp: float,
    point_radius_um: float = 1.5,
    edge_width_um: float = 1.0,
    disk_xy: object | None = None,
) -> np.ndarray:
    """Voronoi pseudo-label: cell edges background, a disk at each point nucleus, rest ignore.

    ``xy`` is ``(N, 2)`` (x, y) pixel coordinates (or a ``Points``). ``edge_width_um`` of 1 µm
    is 2 px at 0.5 µm/px. With fewer than two points there is no edge: only the disks are set.
    ``disk_xy`` (default: all of ``xy``) are the points that get a nucleus disk.
    """
    _check_mpp(mpp)
    shape = (int(shape[0]), int(shape[1]))
    pts = _as_xy(xy)
    label = np.full(shape, IGNORE, np.uint8)
    if len(pts) == 0:
        return label
    cells, _ = nearest_seed(shape, pts)
    if len(np.unique(cells)) > 1:
        width = max(1, int(round(edge_width_um / mpp)))
        label[_edges(cells, width)] = BACKGROUND
    disks = pts if disk_xy is None else _as_xy(disk_xy)
    if len(disks):
        label[_disk_mask(shape, disks, point_radius_um / mpp)] = NUCLEUS
    return label


def _kmeans(
    x: np.ndarray, init: np.ndarray, iterations: int = 30, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from given initial centres; returns ``(centres, assignment)``.

    Deterministic: the initial centres come from the caller; an emptied cluster keeps its centre.
    """
    centres = init.astype(np.float64).copy()
    assign = np.zeros(len(x), np.intp)
    for _ in range(iterations):
        d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        assign = d.argmin(1)
        new = centres.copy()
        for k in range(len(centres)):
            sel = assign == k
            if sel.any():
                new[k] = x[sel].mean(0)
        shift = float(np.abs(new - centres).max())
        centres = new
        if shift < tol:
            break
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return centres, d.argmin(1)


def _colour_features(rgb: np.ndarray, space: str, smooth_px: float = 0.0) -> np.ndarray:
    """``H×W×C`` colour features: RGB in [0, 1], HED hematoxylin + eosin OD, or H alone."""
    if space == "rgb":
        f = rgb.astype(np.float32) / 255.0
    elif space == "hed":
        f = hed_od(rgb)[..., :2]  # DAB is noise in H&E
    elif space == "h":
        f = hed_od(rgb)[..., :1]
    else:
        raise ValueError(f"unknown colour space {space!r}; use 'rgb', 'hed' or 'h'")
    if smooth_px > 0.3:
        f = ndi.gaussian_filter(f, (smooth_px, smooth_px, 0))
    return f


def _standardise(f: np.ndarray, cells: np.ndarray | None) -> np.ndarray:
    """Z-score each channel over the image, or within each Voronoi cell when ``cells`` is given.

    Per-cell statistics make the colour features relative to the nucleus' own neighbourhood,
    so a pale nucleus in a pale region still stands out (stain varies across an image).
    """
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    if cells is None:
        mu = flat.mean(0)
        sd = flat.std(0)
        return ((flat - mu) / np.maximum(sd, 1e-6)).astype(np.float32)
    lab = cells.ravel()
    n = int(lab.max()) + 1
    count = np.maximum(np.bincount(lab, minlength=n), 1).astype(np.float64)
    out = np.empty_like(flat)
    global_sd = np.maximum(flat.std(0), 1e-6)
    for c in range(flat.shape[1]):
        s1 = np.bincount(lab, flat[:, c], minlength=n) / count
        s2 = np.bincount(lab, flat[:, c] ** 2, minlength=n) / count
        sd = np.sqrt(np.maximum(s2 - s1**2, 0.0))
        # a flat cell (blank glass) must not blow its noise up to unit variance
        sd = np.maximum(sd, 0.25 * global_sd[c])
        out[:, c] = (flat[:, c] - s1[lab]) / sd[lab]
    return out.astype(np.float32)


def cluster_label(
    rgb: np.ndarray,
    xy: object,
    mpp: float,
    dist_clip_um: float | None = None,
    params: PseudoLabelParams | None = None,
    **overrides: object,
) -> np.ndarray:
    """k-means pseudo-label on colour + clipped distance to the nearest point (Qu et al.).

    Features per pixel: the colour (``h`` hematoxylin OD, ``hed`` hematoxylin + eosin OD, or
    ``rgb``), smoothed by ``smooth_um`` and z-scored over the image (or within each Voronoi cell
    with ``per_cell``), and the distance to the nearest point clipped at ``dist_clip_um``,
    scaled to ``[0, 2 * dist_weight]``. Three clusters: the smallest mean distance is nucleus,
    the largest background, the third ignore.

    ``colour_check`` demands that a nucleus pixel's colour alone be nearer the nucleus centre
    than the background centre, and the reverse for a background pixel: a missed nucleus far
    from every point is then not called background, and a false point on stroma does not paint
    it nucleus. ``grow`` adds the nucleus-coloured pixels within the clip distance (a sharply
    bimodal image makes the 3-means split nuclei into core and rim). ``refine`` keeps, in each
    Voronoi cell, only the nucleus pixels connected to that cell's point, closes them by
    ``close_um`` and fills holes (vesicular nuclei), leaves the outer ``erode_um`` rim unsure
    (colour bleeds over a blurred edge) and keeps background off the points' neighbourhood.
    The k-means (deterministic initial centres) is fitted on at most ``max_fit_pixels`` pixels
    drawn with ``seed``. Defaults were chosen on MoNuSeg kumar_train / kumar_val.
    """
    p = _params(params, overrides)
    if dist_clip_um is not None:
        p = replace(p, dist_clip_um=float(dist_clip_um))
    return _cluster(rgb, xy, mpp, p)[0]


def _cluster(
    rgb: np.ndarray, xy: object, mpp: float, p: PseudoLabelParams
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cluster_label` and the per-pixel "nuclear colour" map it used."""
    _check_mpp(mpp)
    rgb = as_rgb(rgb)
    shape = rgb.shape[:2]
    pts = _as_xy(xy)
    label = np.full(shape, IGNORE, np.uint8)
    cells, dist = nearest_seed(shape, pts)
    if not cells.any():
        return label, np.zeros(shape, bool)
    clip = max(p.dist_clip_um / mpp, 1.0)
    d = np.minimum(dist, clip) / clip  # 0 at a point, 1 from the clip on
    colour = _colour_features(rgb, p.colour_space, p.smooth_um / mpp)
    colour = _standardise(colour, cells if p.per_cell else None)
    feats = np.concatenate([colour, (2.0 * p.dist_weight * d).reshape(-1, 1)], axis=1)
    rng = np.random.default_rng(p.seed)
    n_px = feats.shape[0]
    fit = feats if n_px <= p.max_fit_pixels else feats[rng.choice(n_px, p.max_fit_pixels, False)]
    # Initial centres: near / middle / far in distance, their mean colour there.
    dfit = fit[:, -1] / max(2.0 * p.dist_weight, 1e-9)
    init = []
    for lo, hi in ((0.0, 0.25), (0.35, 0.65), (0.95, 1.01)):
        sel = (dfit >= lo) & (dfit < hi)
        init.append(fit[sel].mean(0) if sel.any() else fit.mean(0))
    centres, _ = _kmeans(fit, np.array(init))
    dd = ((feats[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    assign = dd.argmin(1).reshape(shape)
    mean_d = np.array([d[assign == k].mean() if (assign == k).any() else np.inf for k in range(3)])
    order = np.argsort(mean_d)
    nuc = assign == order[0]
    bg = assign == order[2]
    c_nuc, c_bg = centres[order[0], :-1], centres[order[2], :-1]
    col = colour.reshape(-1, colour.shape[-1])
    nuclear = (((col - c_nuc) ** 2).sum(1) < ((col - c_bg) ** 2).sum(1)).reshape(shape)
    if p.middle_bg:
        # the middle cluster's pixels that do not look nuclear: the stroma and cytoplasm just
        # around the nuclei, where the boundary must be learnt
        bg |= (assign == order[1]) & ~nuclear
    if p.colour_check:
        nuc &= nuclear
        bg &= ~nuclear
    if p.grow:
        # the 3-means may split a sharply bimodal nucleus by distance (core vs rim): take
        # every nucleus-coloured pixel within the clip distance as a nucleus candidate
        nuc |= nuclear & (d < 1.0)
    if p.refine:
        nuc, bg = _refine(nuc, bg, cells, pts, mpp, p.erode_um, p.close_um)
    label[bg] = BACKGROUND
    label[nuc] = NUCLEUS
    return label, nuclear


def _nuclear_points(
    nuclear: np.ndarray, xy: np.ndarray, mpp: float, radius_um: float
) -> np.ndarray:
    """Which points have mostly nucleus-coloured pixels within ``radius_um``."""
    cells, dist = nearest_seed(nuclear.shape, xy)
    near = (dist <= radius_um / mpp) & (cells > 0)
    n = len(xy) + 1
    tot = np.bincount(cells[near], minlength=n)
    hit = np.bincount(cells[near], weights=nuclear[near], minlength=n)
    return (hit[1:] >= 0.5 * np.maximum(tot[1:], 1)) & (tot[1:] > 0)


def _refine(
    nuc: np.ndarray,
    bg: np.ndarray,
    cells: np.ndarray,
    xy: np.ndarray,
    mpp: float,
    erode_um: float = 0.5,
    close_um: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per Voronoi cell: nucleus = filled component(s) of the nucleus cluster at the point.

    A nucleus-coloured blob in a cell that does not touch the cell's point is another nucleus
    (missed by the detector) or debris: neither is a sure nucleus nor a sure background.
    """
    from skimage.morphology import disk

    shape = nuc.shape
    seeds, _ = _seed_image(shape, xy)
    near = ndi.binary_dilation(seeds > 0, structure=disk(max(1, int(round(1.0 / mpp)))))
    # split the nucleus cluster along cell borders, so one component lies in one cell
    comp, n = ndi.label(nuc & (cells > 0), structure=np.ones((3, 3), bool))
    if n == 0:
        return nuc & False, bg & ~near
    comp = comp.astype(np.int64) * (int(cells.max()) + 1) + cells  # (component, cell) pairs
    comp[~nuc] = 0
    keep_ids = np.unique(comp[near & nuc])
    keep_ids = keep_ids[keep_ids > 0]
    kept = np.isin(comp, keep_ids)
    if close_um > 0:
        # close the partial rings of vesicular nuclei (dark membrane, pale inside) so that
        # hole filling can take their inside; the closing stays within each Voronoi cell
        r = max(1, int(round(close_um / mpp)))
        owner = np.where(kept, cells, 0)
        grown = ndi.grey_dilation(owner, footprint=disk(r))
        closed = ndi.binary_erosion(grown > 0, structure=disk(r), border_value=1)
        kept |= closed & (grown == cells) & ~bg
    kept = _fill_per_cell(kept, cells)
    # not sure background: a rim around the kept nuclei and around each point
    guard = ndi.binary_dilation(kept | near, iterations=max(1, int(round(0.5 / mpp))))
    stray = nuc & ~kept
    if erode_um > 0:
        # colour clusters bleed over the blurred rim of a nucleus: trust only its inside
        core = ndi.binary_erosion(kept, iterations=max(1, int(round(erode_um / mpp))))
        kept = core | (kept & near)
    return kept, bg & ~guard & ~stray


def _fill_per_cell(mask: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Fill holes of ``mask`` without merging across Voronoi cells."""
    filled = ndi.binary_fill_holes(mask)
    if not (filled & ~mask).any():
        return mask
    holes, n = ndi.label(filled & ~mask)
    # a hole is filled only when it lies in one cell
    idx = np.arange(1, n + 1)
    lo = ndi.minimum(cells, holes, idx)
    hi = ndi.maximum(cells, holes, idx)
    ok = np.zeros(n + 1, bool)
    ok[1:] = np.asarray(lo) == np.asarray(hi)
    return mask | ok[holes]


def mask_label(masks: np.ndarray, mpp: float, ring_um: float = 1.0) -> np.ndarray:
    """Pseudo-label from nucleus masks (binary or instance labels, e.g. SAM prompted at points).

    Inside a mask is nucleus, a ring of ``ring_um`` just outside the masks is background, the
    rest ignore; pixels between two different instances are background (they separate them).
    """
    _check_mpp(mpp)
    masks = np.asarray(masks)
    label = np.full(masks.shape, IGNORE, np.uint8)
    inside = masks > 0
    if not inside.any():
        return label
    ring = ndi.binary_dilation(inside, iterations=max(1, int(round(ring_um / mpp)))) & ~inside
    label[ring] = BACKGROUND
    label[inside] = NUCLEUS
    if masks.dtype != bool and int(masks.max()) > 1:
        inst = masks.astype(np.int64)
        higher = ndi.grey_dilation(inst, size=3) != inst
        lower = ndi.grey_erosion(np.where(inside, inst, inst.max() + 1), size=3) != inst
        label[inside & (higher | lower)] = BACKGROUND
    return label


def stain_label(
    rgb: np.ndarray,
    mpp: float,
    ring_um: float = 1.0,
    erode_um: float = 0.0,
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """Pseudo-label from the training-free stain segmentation
    (:func:`zeropath.nuclei.classical.segment_classical`): its masks are nucleus, a ring of
    ``ring_um`` around them and the lines between touching masks background, the rest ignore.
    ``erode_um`` > 0 leaves the masks' outer rim unsure. ``masks`` (instance labels on the
    same grid) skips the segmentation.
    """
    _check_mpp(mpp)
    if masks is None:
        from zeropath.nuclei.classical import segment_classical

        masks = segment_classical(as_rgb(rgb), mpp)
    label = mask_label(masks, mpp, ring_um)
    if erode_um > 0:
        inside = np.asarray(masks) > 0
        core = ndi.binary_erosion(inside, iterations=max(1, int(round(erode_um / mpp))))
        label[inside & ~core & (label == NUCLEUS)] = IGNORE
    return label


def boundary_targets(
    label: np.ndarray, instances: np.ndarray | None, mpp: float, width_um: float = 1.0
) -> np.ndarray:
    """Three-class target from a pseudo-label: nucleus pixels within ``width_um`` of the edge
    of their nucleus become :data:`BOUNDARY` (2); background, interior and ignore stay.

    The nuclei are ``instances`` (instance labels on the same grid, e.g. the stain
    segmentation split at the points) where given, else the connected components of the
    label's nucleus pixels. A boundary class teaches the network where touching nuclei part.
    """
    _check_mpp(mpp)
    label = np.asarray(label, np.uint8)
    nuc = label == NUCLEUS
    if instances is None:
        inst, _ = ndi.label(nuc)
    else:
        inst = np.asarray(instances).astype(np.int64)
    r = max(1, int(round(width_um / mpp)))
    size = 2 * r + 1
    hi = ndi.grey_dilation(inst, size=(size, size))
    lo = ndi.grey_erosion(inst, size=(size, size))
    edge = (inst > 0) & ((hi != inst) | (lo != inst))
    out = label.copy()
    out[nuc & edge] = BOUNDARY
    return out


def split_at_points(masks: np.ndarray, xy: object) -> np.ndarray:
    """Instance labels: each mask split by the Voronoi cells of the points inside it (a mask
    with no point keeps one label). Touching nuclei merged by the masks part at the points."""
    masks = np.asarray(masks).astype(np.int64)
    pts = _as_xy(xy)
    if not (masks > 0).any():
        return np.zeros(masks.shape, np.int32)
    if len(pts):
        cells, _ = nearest_seed(masks.shape, pts)
        seeds, _ = _seed_image(masks.shape, pts)
    else:
        cells = seeds = np.zeros(masks.shape, np.int32)
    has_pt = np.zeros(int(masks.max()) + 1, bool)
    has_pt[np.unique(masks[(seeds > 0) & (masks > 0)])] = True
    has_pt[0] = False
    key = masks * (int(cells.max()) + 1) + np.where(has_pt[masks], cells, 0)
    _, inv = np.unique(key, return_inverse=True)  # background (key 0) stays 0
    return inv.reshape(masks.shape).astype(np.int32)


def combine_labels(*labels: np.ndarray) -> np.ndarray:
    """Consensus of label sources: a pixel is set where every sure source agrees, else ignore.

    A source that says :data:`IGNORE` abstains; a pixel that all sources ignore stays ignore;
    any disagreement among the sure sources makes it ignore.
    """
    if not labels:
        raise ValueError("combine_labels needs at least one label image")
    shape = np.asarray(labels[0]).shape
    any_nuc = np.zeros(shape, bool)
    any_bg = np.zeros(shape, bool)
    for lab in labels:
        lab = np.asarray(lab)
        if lab.shape != shape:
            raise ValueError(f"label shapes differ: {lab.shape} vs {shape}")
        any_nuc |= lab == NUCLEUS
        any_bg |= lab == BACKGROUND
    out = np.full(shape, IGNORE, np.uint8)
    out[any_nuc & ~any_bg] = NUCLEUS
    out[any_bg & ~any_nuc] = BACKGROUND
    return out


def make_pseudolabels(
    rgb: np.ndarray,
    points: object,
    mpp: float,
    use: Sequence[str] = DEFAULT_USE,
    sam_mask: np.ndarray | None = None,
    params: PseudoLabelParams | None = None,
    stain_masks: np.ndarray | None = None,
    **overrides: object,
) -> np.ndarray:
    """Pseudo-label (``uint8``: 0 background, 1 nucleus, 255 ignore) for one image.

    ``points`` is a :class:`~zeropath.nuclei.centres.Points` or ``(N, 2)`` (x, y) pixel
    coordinates on ``rgb``; ``use`` picks the sources among :data:`SOURCES`; ``sam_mask`` (an
    instance or binary mask array on the same grid) joins the consensus via :func:`mask_label`.
    Settings: ``params`` updated by keyword ``overrides`` (fields of
    :class:`PseudoLabelParams`). With the cluster source and ``colour_check``, points whose
    neighbourhood does not look nuclear get no Voronoi nucleus disk; with ``edge_check``,
    Voronoi edges over nucleus-coloured pixels (a doubled or a missed point) are not background.
    The ``stain`` source (:func:`stain_label`) adds the classical stain segmentation
    (``stain_masks`` when already computed) to the consensus.
    """
    p = _params(params, overrides)
    unknown = set(use) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown pseudo-label source(s) {sorted(unknown)}; use {SOURCES}")
    rgb = as_rgb(rgb)
    shape = rgb.shape[:2]
    xy = _as_xy(points)
    parts = []
    nuclear = None
    if "cluster" in use:
        lab, nuclear = _cluster(rgb, xy, mpp, p)
        parts.append(lab)
    if "voronoi" in use:
        disks = xy
        if p.colour_check and nuclear is not None and len(xy):
            disks = xy[_nuclear_points(nuclear, xy, mpp, p.point_radius_um)]
        vor = voronoi_label(shape, xy, mpp, p.point_radius_um, p.edge_width_um, disks)
        if p.edge_check and nuclear is not None:
            vor[(vor == BACKGROUND) & nuclear] = IGNORE
        parts.insert(0, vor)
    if "stain" in use:
        parts.append(stain_label(rgb, mpp, p.stain_ring_um, p.stain_erode_um, stain_masks))
    if sam_mask is not None:
        if np.asarray(sam_mask).shape != shape:
            raise ValueError(f"sam_mask shape {np.asarray(sam_mask).shape} differs from {shape}")
        parts.append(mask_label(sam_mask, mpp))
    if not parts:
        return np.full(shape, IGNORE, np.uint8)
    return combine_labels(*parts)


def _check_mpp(mpp: float) -> None:
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
