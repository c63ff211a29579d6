"""The score grid of a ZEUS run: cells, overlapping tiles, and which tiles hold tissue.

Tiles are ``tile`` pixels square at the working µm/px (the encoder's), placed every
``stride`` pixels. The plane is cut into *cells* of one stride; a tile then covers exactly
``k = tile / stride`` cells a side, and every cell's score is the mean over the tiles that
cover it. Tile origins run over cells ``0 .. n - k`` on each axis, so tiles stay inside the
image (only the last, partial cell may reach past its edge) and every cell is covered by at
least one tile. A cell is *tissue* when at least ``min_fraction`` of it is tissue in the
thumbnail mask; a tile is read only when it covers a tissue cell. Pure arithmetic on small
arrays: the grid of a 100k-pixel slide is a few hundred cells a side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zeropath.errors import ConfigError

__all__ = ["ScoreGrid", "default_stride", "resolve_tiling"]


def default_stride(tile: int) -> int:
    """ZEUS' quarter-tile stride, or the nearest finer one that divides ``tile``."""
    for k in range(4, tile + 1):
        if tile % k == 0:
            return tile // k
    return 1


def resolve_tiling(tile: int | None, stride: int | None, input_size: int) -> tuple[int, int]:
    """``(tile, stride)`` in pixels: defaults from the encoder, checked (:class:`ConfigError`)."""
    t = int(tile or input_size)
    s = int(stride or default_stride(t))
    _check_tiling(t, s)
    return t, s


def _check_tiling(tile: int, stride: int) -> None:
    if tile < 16 or stride < 1:
        raise ConfigError(f"tile must be at least 16 px and stride positive (got {tile}, {stride})")
    if tile % stride:
        raise ConfigError(f"tile ({tile} px) must be a multiple of the stride ({stride} px)")


@dataclass(frozen=True)
class ScoreGrid:
    """Geometry of one slide's score grid (all sizes in level-0 pixels unless named otherwise).

    ``cell`` is the cell side in level-0 pixels (``stride × work_mpp / slide_mpp``, generally
    fractional); the grid is ``rows × cols`` cells; ``k`` cells make a tile side; tile ``(i, j)``
    covers cells ``[i, i + k) × [j, j + k)`` and the tile grid is ``tile_rows × tile_cols``.
    """

    width: int
    height: int
    slide_mpp: float
    work_mpp: float
    tile: int
    stride: int
    cell: float
    rows: int
    cols: int
    k: int

    @classmethod
    def build(
        cls, width: int, height: int, slide_mpp: float, work_mpp: float, tile: int, stride: int
    ) -> ScoreGrid:
        """The grid for a ``width × height`` level-0 plane; :class:`ConfigError` for bad sizes."""
        _check_tiling(tile, stride)
        if width < 1 or height < 1:
            raise ValueError(f"empty image {width}×{height}")
        cell = stride * float(work_mpp) / float(slide_mpp)
        cols = max(1, math.ceil(width / cell - 1e-9))
        rows = max(1, math.ceil(height / cell - 1e-9))
        return cls(
            width,
            height,
            float(slide_mpp),
            float(work_mpp),
            tile,
            stride,
            cell,
            rows,
            cols,
            tile // stride,
        )

    # ---- tiles

    @property
    def tile_rows(self) -> int:
        return max(1, self.rows - self.k + 1)

    @property
    def tile_cols(self) -> int:
        return max(1, self.cols - self.k + 1)

    @property
    def tile_level0(self) -> float:
        """Tile side in level-0 pixels."""
        return self.k * self.cell

    def tile_origin(self, i: int, j: int) -> tuple[int, int]:
        """Level-0 ``(x, y)`` of tile ``(i, j)``'s top-left corner."""
        return int(round(j * self.cell)), int(round(i * self.cell))

    def tiles_needed(self, tissue: np.ndarray | None) -> np.ndarray:
        """``tile_rows × tile_cols`` bool: the tiles covering at least one tissue cell."""
        shape = (self.tile_rows, self.tile_cols)
        if tissue is None:
            return np.ones(shape, bool)
        t = np.asarray(tissue, bool)
        if t.shape != (self.rows, self.cols):
            raise ValueError(f"tissue grid {t.shape} does not match {(self.rows, self.cols)}")
        # windowed count with an integral image; windows are clipped at the grid edge
        integral = np.pad(t.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        i0 = np.arange(self.tile_rows)
        j0 = np.arange(self.tile_cols)
        i1 = np.minimum(i0 + self.k, self.rows)
        j1 = np.minimum(j0 + self.k, self.cols)
        count = (
            integral[i1[:, None], j1[None, :]]
            - integral[i0[:, None], j1[None, :]]
            - integral[i1[:, None], j0[None, :]]
            + integral[i0[:, None], j0[None, :]]
        )
        return count > 0

    # ---- cells

    def cell_edges_x(self) -> np.ndarray:
        """Level-0 x of the ``cols + 1`` cell edges, the last clipped to the image width."""
        return np.minimum(np.arange(self.cols + 1) * self.cell, self.width)

    def cell_edges_y(self) -> np.ndarray:
        """Level-0 y of the ``rows + 1`` cell edges, the last clipped to the image height."""
        return np.minimum(np.arange(self.rows + 1) * self.cell, self.height)

    def cells_of(self, coords: np.ndarray, axis_len: int) -> np.ndarray:
        """Cell index of level-0 coordinates along one axis (clipped into the grid)."""
        idx = np.floor(np.asarray(coords, np.float64) / self.cell).astype(np.intp)
        return np.clip(idx, 0, axis_len - 1)

    def tissue_cells(
        self, mask: np.ndarray, downsample: tuple[float, float], min_fraction: float = 0.25
    ) -> np.ndarray:
        """``rows × cols`` bool: cells of which at least ``min_fraction`` is tissue.

        ``mask`` is a thumbnail tissue mask whose pixel ``(r, c)`` covers level-0
        ``(c·sx, r·sy)``; each thumbnail pixel votes for the cell holding its centre, and a cell
        no thumbnail pixel centre falls in (cells finer than the thumbnail) takes the pixel at
        its own centre.
        """
        m = np.asarray(mask, bool)
        sx, sy = (float(v) for v in downsample)
        th, tw = m.shape
        rows = self.cells_of((np.arange(th) + 0.5) * sy, self.rows)
        cols = self.cells_of((np.arange(tw) + 0.5) * sx, self.cols)
        flat = (rows[:, None] * self.cols + cols[None, :]).ravel()
        n = self.rows * self.cols
        total = np.bincount(flat, minlength=n).reshape(self.rows, self.cols)
        hits = np.bincount(flat, weights=m.ravel().astype(np.float64), minlength=n)
        hits = hits.reshape(self.rows, self.cols)
        out = np.zeros((self.rows, self.cols), bool)
        voted = total > 0
        out[voted] = hits[voted] / total[voted] >= min_fraction
        if not voted.all():
            cy = (np.arange(self.rows) + 0.5) * self.cell
            cx = (np.arange(self.cols) + 0.5) * self.cell
            r = np.clip((cy / sy).astype(np.intp), 0, th - 1)
            c = np.clip((cx / sx).astype(np.intp), 0, tw - 1)
            centre = m[r[:, None], c[None, :]]
            out[~voted] = centre[~voted]
        return out

    def describe(self) -> dict[str, float | int]:
        """The numbers ``run.json`` and the outputs record."""
        return {
            "tile_px": self.tile,
            "stride_px": self.stride,
            "work_mpp": self.work_mpp,
            "cell_px_level0": round(self.cell, 6),
            "cell_um": round(self.stride * self.work_mpp, 6),
            "grid_rows": self.rows,
            "grid_cols": self.cols,
            "cells_per_tile": self.k,
        }
