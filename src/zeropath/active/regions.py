"""Candidate regions: square tiles of the pool images, each a block of feature cells.

A region is ``region_px × region_px`` pixels (64 by default) at the image's resolution, on a
grid anchored at the top-left corner. An image side of ``L`` px gets
``max(1, round(L / region_px))`` regions along it: the leftover strip at the right/bottom edge
joins the last region when it is narrower than half a region (no slivers of a few pixels to
annotate), else it is a region of its own; so edge regions are between half and one and a half
regions wide (a 775×522 GlaS image has 12×8 regions, the last column 71 px wide, the last row
74 px high). ``region_px`` must be a multiple of the cell side, so a region is a block of whole
cells (``k × k``, ``k = region_px / cell``, inner regions). A region's key is
``(image stem, row, col)`` and its file-name-safe id is ``STEM__rROW_cCOL``.

:class:`RegionIndex` lays all pool cells end to end (image after image, row-major) and keeps a
permutation that makes every region's cells contiguous, so per-region means are one
``np.add.reduceat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zeropath.errors import ConfigError, InputError

__all__ = [
    "PoolImage",
    "RegionIndex",
    "RegionKey",
    "cell_fractions",
    "parse_region_id",
    "region_id",
]

RegionKey = tuple[str, int, int]


def region_id(key: RegionKey) -> str:
    """``STEM__rROW_cCOL``: a region's id in file names and JSON."""
    stem, row, col = key
    return f"{stem}__r{int(row)}_c{int(col)}"


def parse_region_id(rid: str) -> RegionKey:
    """Inverse of :func:`region_id`."""
    stem, _, rc = rid.rpartition("__r")
    row, _, col = rc.partition("_c")
    if not stem or not row.isdigit() or not col.isdigit():
        raise ValueError(f"not a region id: {rid!r}")
    return stem, int(row), int(col)


@dataclass(frozen=True)
class PoolImage:
    """One pool (or test) image: its file, stem and size."""

    path: Path
    stem: str
    height: int
    width: int


def cell_fractions(mask: np.ndarray, cell: int, n_classes: int) -> np.ndarray:
    """Per-cell class fractions ``(hc, wc, C)`` of a class-index mask (partial edge cells
    count only their pixels)."""
    mask = np.asarray(mask)
    if mask.size and (int(mask.max()) >= n_classes or int(mask.min()) < 0):
        raise InputError(
            None,
            f"label value {int(mask.max())} outside the {n_classes} classes 0..{n_classes - 1}",
        )
    hh, ww = mask.shape
    hc, wc = -(-hh // cell), -(-ww // cell)
    padded = np.full((hc * cell, wc * cell), n_classes, np.int64)
    padded[:hh, :ww] = mask
    blocks = padded.reshape(hc, cell, wc, cell).transpose(0, 2, 1, 3).reshape(hc * wc, -1)
    flat = np.arange(hc * wc)[:, None] * (n_classes + 1) + blocks
    counts = np.bincount(flat.ravel(), minlength=hc * wc * (n_classes + 1)).astype(np.float64)
    counts = counts.reshape(hc * wc, n_classes + 1)[:, :n_classes]
    return (counts / np.maximum(counts.sum(1, keepdims=True), 1.0)).reshape(hc, wc, n_classes)


class RegionIndex:
    """Every candidate region of a set of images and the cells it holds."""

    def __init__(self, images: Sequence[PoolImage], region_px: int, cell_px: int) -> None:
        if cell_px < 1 or region_px < cell_px or region_px % cell_px:
            raise ConfigError(
                f"region size {region_px} px must be a positive multiple of the cell size "
                f"{cell_px} px"
            )
        self.images = list(images)
        self.region_px = int(region_px)
        self.cell_px = int(cell_px)
        self.k = self.region_px // self.cell_px
        self.by_stem = {im.stem: im for im in self.images}
        if len(self.by_stem) != len(self.images):
            raise InputError(None, "two pool images share a stem")
        keys: list[RegionKey] = []
        pixels: list[int] = []
        order: list[np.ndarray] = []
        self.cell_offset: dict[str, int] = {}
        self.cell_shape: dict[str, tuple[int, int]] = {}
        offset = 0
        self.grid: dict[str, tuple[int, int]] = {}
        for im in self.images:
            h, w = -(-im.height // cell_px), -(-im.width // cell_px)
            self.cell_shape[im.stem] = (h, w)
            self.cell_offset[im.stem] = offset
            rows, cols = self._count(im.height), self._count(im.width)
            self.grid[im.stem] = (rows, cols)
            flat = np.arange(h * w).reshape(h, w) + offset
            for r in range(rows):
                r1 = h if r == rows - 1 else (r + 1) * self.k
                for c in range(cols):
                    c1 = w if c == cols - 1 else (c + 1) * self.k
                    keys.append((im.stem, r, c))
                    y0, x0, y1, x1 = self.box((im.stem, r, c))
                    pixels.append((y1 - y0) * (x1 - x0))
                    order.append(flat[r * self.k : r1, c * self.k : c1].ravel())
            offset += h * w
        self.n_cells = offset
        self.keys = keys
        self.position = {key: i for i, key in enumerate(keys)}
        self.pixels = np.asarray(pixels, np.int64)
        counts = np.array([len(o) for o in order], np.int64)
        self.order = np.concatenate(order) if order else np.zeros(0, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.counts = counts

    def _count(self, length: int) -> int:
        """Regions along an image side: ``max(1, round(length / region_px))`` (halves up)."""
        return max(1, (2 * int(length) + self.region_px) // (2 * self.region_px))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def total_pixels(self) -> int:
        return int(self.pixels.sum())

    def box(self, key: RegionKey) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` pixel box of a region (edge regions reach the image's edge)."""
        stem, r, c = key
        im = self.by_stem[stem]
        rows, cols = self.grid[stem]
        y0, x0 = r * self.region_px, c * self.region_px
        y1 = im.height if r == rows - 1 else min(y0 + self.region_px, im.height)
        x1 = im.width if c == cols - 1 else min(x0 + self.region_px, im.width)
        return y0, x0, y1, x1

    def cells(self, i: int) -> np.ndarray:
        """Flat cell indices of region ``i`` (row-major within the region)."""
        s = self.starts[i]
        return self.order[s : s + self.counts[i]]

    def region_means(self, cell_values: np.ndarray) -> np.ndarray:
        """Mean of ``(n_cells, D)`` cell values over each region: ``(R, D)``."""
        v = np.asarray(cell_values)[self.order]
        return np.add.reduceat(v, self.starts, axis=0) / self.counts[:, None]
