"""Tile planning over an image or slide: overlapping read boxes around disjoint cores.

A plan partitions the level-0 plane into *cores* (disjoint rectangles that cover the image)
and gives each core a *read box*: the core grown by a halo and clipped to the image. A
pipeline segments the read box and keeps only the objects whose centre lies in the core, so
no object is duplicated or cut at a tile border as long as the halo exceeds an object's
radius. Planning is pure arithmetic and reads no pixels, so memory stays bounded whatever
the slide size.

*Overlap* is one quantity everywhere in zeropath: the context a tile reads on each side of its
core (the engine's halo, ``zeropath nuclei segment --overlap`` in µm; a network's tile overlap
in its own pixels, :func:`zeropath.io.dense.predict_tiled`). :func:`core_spans` and
:func:`spread_spans` are the two ways of cutting one axis into cores and read windows.

Pixels at a µm/px: :func:`needs_resample` is the one rule deciding whether an image is resampled
(more than 5 % away from the target), :func:`resize_rgb` / :func:`resize_labels` the resamplers,
and :func:`read_rect` reads any level-0 rectangle at any output size from the pyramid level
that fits (:func:`read_box`: a :class:`Box` at a µm/px).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A half-open rectangle ``[x0, x1) × [y0, y1)`` in level-0 pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, numpy order."""
        return self.height, self.width

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points ``(x, y)`` (level-0, may be fractional) lie in the box."""
        x = np.asarray(x)
        y = np.asarray(y)
        return (x >= self.x0) & (x < self.x1) & (y >= self.y0) & (y < self.y1)

    def slices(self, origin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
        """Numpy ``(rows, cols)`` slices of this box in an array whose corner is ``origin``."""
        ox, oy = origin
        return slice(self.y0 - oy, self.y1 - oy), slice(self.x0 - ox, self.x1 - ox)


@dataclass(frozen=True)
class Tile:
    """One unit of work: segment ``read``, keep objects centred in ``core``."""

    index: int
    row: int
    col: int
    core: Box
    read: Box


@dataclass(frozen=True)
class TilePlan:
    """All tiles of one image, in row-major order, with the grid they came from."""

    width: int
    height: int
    core_size: int
    overlap: int  # context read on each side of a core (the halo), level-0 pixels
    tiles: tuple[Tile, ...]
    n_rows: int
    n_cols: int

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)


def plan_tiles(
    width: int,
    height: int,
    core_size: int,
    overlap: int,
    tissue: np.ndarray | None = None,
    tissue_downsample: tuple[float, float] | float = 1.0,
    min_tissue_fraction: float = 0.0,
) -> TilePlan:
    """Plan a grid of ``core_size`` cores read with ``overlap`` pixels of context on each side
    (the halo, clipped to the image) over a level-0 plane.

    With a ``tissue`` mask (True = tissue) whose pixel ``(r, c)`` covers level-0
    ``(c·sx, r·sy)``, cores holding no more than ``min_tissue_fraction`` tissue are skipped
    (any tissue at all is enough with the default 0). Tile indices stay those of the full
    grid's row-major order, so plans with and without a mask share indices.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if core_size <= 0 or overlap < 0:
        raise ValueError("core_size must be positive and overlap non-negative")
    rows = core_spans(height, core_size, overlap)
    cols = core_spans(width, core_size, overlap)
    if isinstance(tissue_downsample, int | float):
        sx = sy = float(tissue_downsample)
    else:
        sx, sy = (float(v) for v in tissue_downsample)
    tiles = []
    for r, (ry0, ry1, cy0, cy1) in enumerate(rows):
        for c, (rx0, rx1, cx0, cx1) in enumerate(cols):
            core = Box(cx0, cy0, cx1, cy1)
            if tissue is not None and not _has_tissue(tissue, core, sx, sy, min_tissue_fraction):
                continue
            tiles.append(Tile(r * len(cols) + c, r, c, core, Box(rx0, ry0, rx1, ry1)))
    return TilePlan(width, height, core_size, overlap, tuple(tiles), len(rows), len(cols))


#: One axis of a tiling: ``(read_lo, read_hi, core_lo, core_hi)``, half-open, core ⊆ read.
Span = tuple[int, int, int, int]


def core_spans(length: int, core: int, overlap: int) -> list[Span]:
    """Cores of ``core`` pixels from 0 (the last one clipped), each read with ``overlap``
    pixels of context on both sides (clipped to ``[0, length)``)."""
    if core <= 0 or overlap < 0:
        raise ValueError("core must be positive and overlap non-negative")
    return [
        (max(lo - overlap, 0), min(lo + core + overlap, length), lo, min(lo + core, length))
        for lo in range(0, length, core)
    ]


def spread_starts(length: int, size: int, shared: int = 0) -> list[int]:
    """Start offsets of windows of ``size`` covering ``[0, length)`` with at least ``shared``
    pixels common to neighbours, evenly spread (one window when ``length <= size``)."""
    if length <= size:
        return [0]
    n = math.ceil((length - shared) / max(1, size - shared))
    return [int(round(i * (length - size) / (n - 1))) for i in range(n)]


def spread_spans(length: int, size: int, overlap: int) -> list[Span]:
    """Windows of ``size`` evenly spread over ``[0, length)`` (the last flush with the end),
    neighbours sharing at least ``2·overlap`` pixels; each window's core ends at the middle
    of its overlap with the next, so the cores partition the axis."""
    starts = spread_starts(length, size, 2 * overlap)
    spans = []
    for i, s in enumerate(starts):
        end = min(s + size, length)
        lo = 0 if i == 0 else (s + min(starts[i - 1] + size, length)) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + end) // 2
        spans.append((s, end, lo, hi))
    return spans


def _has_tissue(mask: np.ndarray, core: Box, sx: float, sy: float, min_fraction: float) -> bool:
    r0 = int(np.floor(core.y0 / sy))
    r1 = max(int(np.ceil(core.y1 / sy)), r0 + 1)
    c0 = int(np.floor(core.x0 / sx))
    c1 = max(int(np.ceil(core.x1 / sx)), c0 + 1)
    window = mask[r0:r1, c0:c1]
    if window.size == 0:
        return False
    frac = float(np.count_nonzero(window)) / window.size
    return frac > min_fraction if min_fraction > 0 else frac > 0


#: The relative µm/px difference within which an image is used at its own resolution.
MPP_TOLERANCE = 0.05


def needs_resample(mpp: float, target: float | None, tol: float = MPP_TOLERANCE) -> bool:
    """Whether pixels at ``mpp`` µm/px must be resampled to ``target`` (None: never), i.e. the
    target is more than ``tol`` (5 %) away: ``|target / mpp - 1| > tol``. The one rule."""
    return target is not None and abs(float(target) / float(mpp) - 1.0) > tol


def source_level(
    source: object, width: float, height: float, downsample: float, snap: Callable = math.ceil
) -> tuple[int, int, int]:
    """``(level, w, h)``: the coarsest pyramid level at least as fine as ``downsample`` and the
    size (``snap``-rounded, at least 1) a level-0 ``width × height`` rectangle has there."""
    src = source  # an ImageSource: best_level_for_downsample, level_downsamples
    level = src.best_level_for_downsample(downsample) if downsample > 1 else 0  # type: ignore[attr-defined]
    lds = float(src.level_downsamples[level])  # type: ignore[attr-defined]
    return level, max(1, int(snap(width / lds))), max(1, int(snap(height / lds)))


def read_rect(
    source: object,
    x: float,
    y: float,
    width: float,
    height: float,
    shape: tuple[int, int],
    downsample: float | None = None,
    snap: Callable = math.ceil,
    box_filter: bool = False,
) -> np.ndarray:
    """Pixels of the level-0 rectangle ``(x, y, width, height)`` (origin rounded) resampled
    to ``shape`` (rows, cols), RGB uint8, white beyond the image.

    Reads from the pyramid level :func:`source_level` picks for ``downsample`` (default: the
    larger of the two axes' level-0 pixels per output pixel), then :func:`resize_rgb`.
    """
    ds = downsample if downsample is not None else max(width / shape[1], height / shape[0])
    level, lw, lh = source_level(source, width, height, ds, snap)
    rgb = source.read_region(round(x), round(y), lw, lh, level)  # type: ignore[attr-defined]
    return resize_rgb(rgb, shape, box_filter)


def read_box(source: object, box: Box, target_mpp: float | None = None) -> np.ndarray:
    """Pixels of a level-0 ``box`` as RGB uint8, resampled to ``target_mpp`` µm/px.

    Reads from the coarsest pyramid level that is still at least as fine as the target,
    then resizes (area averaging when shrinking). Without ``target_mpp``, or when
    :func:`needs_resample` says no, the level-0 pixels are returned unchanged.
    """
    src = source  # an ImageSource: read_region, mpp, best_level_for_downsample, level_downsamples
    mpp = float(src.mpp)  # type: ignore[attr-defined]
    if target_mpp is None or not needs_resample(mpp, target_mpp):
        return src.read_region(box.x0, box.y0, box.width, box.height)  # type: ignore[attr-defined]
    ds = target_mpp / mpp
    shape = (max(1, int(round(box.height / ds))), max(1, int(round(box.width / ds))))
    return read_rect(src, box.x0, box.y0, box.width, box.height, shape, ds)


def iter_tile_images(
    source: object, plan: TilePlan, target_mpp: float | None = None
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield ``(tile, rgb of its read box at target_mpp)`` one at a time (bounded memory)."""
    for tile in plan:
        yield tile, read_box(source, tile.read, target_mpp)


def resize_rgb(rgb: np.ndarray, shape: tuple[int, int], box_filter: bool = False) -> np.ndarray:
    """Resize an RGB(A) uint8 image to ``shape`` (rows, cols): bilinear, anti-aliased when
    shrinking; with ``box_filter``, PIL's box filter when no side grows (bilinear otherwise),
    which makes a pixel's value independent of the read it came from (score cells, viewer)."""
    if rgb.shape[:2] == tuple(shape):
        return rgb
    if box_filter:
        from PIL import Image

        shrink = rgb.shape[1] >= shape[1] and rgb.shape[0] >= shape[0]
        method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        image = Image.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(image.resize((shape[1], shape[0]), method))
    from skimage.transform import resize

    shrinking = shape[0] < rgb.shape[0] or shape[1] < rgb.shape[1]
    out = resize(rgb, shape, order=1, anti_aliasing=shrinking, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a label image to ``shape`` (pixel centres aligned)."""
    h, w = labels.shape
    if (h, w) == tuple(shape):
        return labels
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    return labels[rows[:, None], cols[None, :]]
