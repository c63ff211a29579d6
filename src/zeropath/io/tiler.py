"""Tile planning over an image or slide: overlapping read boxes around disjoint cores.

A plan partitions the level-0 plane into *cores* (disjoint rectangles that cover the image)
and gives each core a *read box*: the core grown by a halo and clipped to the image. A
pipeline segments the read box and keeps only the objects whose centre lies in the core, so
no object is duplicated or cut at a tile border as long as the halo exceeds an object's
radius. Planning is pure arithmetic; nothing here reads pixels, so memory stays bounded
whatever the slide size.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    halo: int
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
    halo: int,
    tissue: np.ndarray | None = None,
    tissue_downsample: tuple[float, float] | float = 1.0,
    min_tissue_fraction: float = 0.0,
) -> TilePlan:
    """Plan a grid of ``core_size`` cores with a ``halo`` on each side over a level-0 plane.

    With a ``tissue`` mask (True = tissue) whose pixel ``(r, c)`` covers level-0
    ``(c·sx, r·sy)``, cores holding no more than ``min_tissue_fraction`` tissue are skipped
    (any tissue at all is enough with the default 0). Tile indices stay those of the full
    grid's row-major order, so plans with and without a mask share indices.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if core_size <= 0 or halo < 0:
        raise ValueError("core_size must be positive and halo non-negative")
    n_cols = -(-width // core_size)
    n_rows = -(-height // core_size)
    if isinstance(tissue_downsample, int | float):
        sx = sy = float(tissue_downsample)
    else:
        sx, sy = (float(v) for v in tissue_downsample)
    tiles = []
    for r in range(n_rows):
        for c in range(n_cols):
            core = Box(
                c * core_size,
                r * core_size,
                min((c + 1) * core_size, width),
                min((r + 1) * core_size, height),
            )
            if tissue is not None and not _has_tissue(tissue, core, sx, sy, min_tissue_fraction):
                continue
            read = Box(
                max(core.x0 - halo, 0),
                max(core.y0 - halo, 0),
                min(core.x1 + halo, width),
                min(core.y1 + halo, height),
            )
            tiles.append(Tile(r * n_cols + c, r, c, core, read))
    return TilePlan(width, height, core_size, halo, tuple(tiles), n_rows, n_cols)


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


def read_box(source: object, box: Box, target_mpp: float | None = None) -> np.ndarray:
    """Pixels of a level-0 ``box`` as RGB uint8, resampled to ``target_mpp`` µm/px.

    Reads from the coarsest pyramid level that is still at least as fine as the target,
    then resizes (area averaging when shrinking). Without ``target_mpp``, or within 5 % of the
    source's µm/px, the level-0 pixels are returned unchanged.
    """
    src = source  # an ImageSource: read_region, mpp, best_level_for_downsample, level_downsamples
    mpp = float(src.mpp)  # type: ignore[attr-defined]
    if target_mpp is None or abs(target_mpp / mpp - 1.0) <= 0.05:
        return src.read_region(box.x0, box.y0, box.width, box.height)  # type: ignore[attr-defined]
    ds = target_mpp / mpp
    out_h = max(1, int(round(box.height / ds)))
    out_w = max(1, int(round(box.width / ds)))
    level = src.best_level_for_downsample(ds) if ds > 1 else 0  # type: ignore[attr-defined]
    lds = float(src.level_downsamples[level])  # type: ignore[attr-defined]
    lw = max(1, int(np.ceil(box.width / lds)))
    lh = max(1, int(np.ceil(box.height / lds)))
    rgb = src.read_region(box.x0, box.y0, lw, lh, level)  # type: ignore[attr-defined]
    return resize_rgb(rgb, (out_h, out_w))


def iter_tile_images(
    source: object, plan: TilePlan, target_mpp: float | None = None
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield ``(tile, rgb of its read box at target_mpp)`` one at a time (bounded memory)."""
    for tile in plan:
        yield tile, read_box(source, tile.read, target_mpp)


def resize_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``shape`` (rows, cols); anti-aliased when shrinking."""
    if rgb.shape[:2] == tuple(shape):
        return rgb
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
