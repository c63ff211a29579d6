"""One dense-prediction tiler: a per-tile function over overlapping tiles, stitched by cores.

Every network that maps an image to per-pixel outputs (the ZA-Net segmentation net, the
confidence-map refiner, the points decoder) runs through :func:`predict_tiled`, so memory is
bounded by the tile whatever the image size. Each tile is read with ``overlap`` pixels of
context on each inner side of its *core*; only the core of each tile's output is kept and the
cores partition the image, so with enough overlap (the network's receptive field) a tiled map
equals the whole-image one. Two layouts cut the axes (:mod:`zeropath.io.tiler`):

* ``"grid"`` — cores of ``tile - 2·overlap`` pixels (rounded down to a multiple of ``align``)
  from the origin, read boxes clipped at the image edge (:func:`~zeropath.io.tiler.core_spans`);
* ``"spread"`` — windows of exactly ``tile`` pixels spread evenly, the last flush with the edge,
  cores split at the middle of each overlap (:func:`~zeropath.io.tiler.spread_spans`).

An image no larger than ``tile`` on both sides is one call of ``fn`` on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from zeropath.io.tiler import core_spans, spread_spans

__all__ = ["predict_tiled", "tile_spans"]

LAYOUTS = ("grid", "spread")


def tile_spans(
    length: int, tile: int, overlap: int, layout: str = "grid", align: int = 1
) -> list[tuple[int, int, int, int]]:
    """One axis of :func:`predict_tiled`'s tiling: ``(read_lo, read_hi, core_lo, core_hi)``."""
    if tile < 1 or overlap < 0 or align < 1:
        raise ValueError("tile and align must be positive and overlap non-negative")
    if layout == "grid":
        step = max(align, (tile - 2 * overlap) // align * align)
        return core_spans(length, step, overlap)
    if layout == "spread":
        return spread_spans(length, tile, overlap)
    raise ValueError(f"unknown tile layout {layout!r} (one of {', '.join(LAYOUTS)})")


def predict_tiled(
    fn: Callable[[np.ndarray], Any],
    image: np.ndarray,
    tile: int,
    overlap: int,
    layout: str = "grid",
    align: int = 1,
) -> Any:
    """``fn`` over an ``H×W[×C]`` ``image`` in tiles of at most ``tile`` pixels, stitched.

    ``fn`` maps an ``h×w[×C]`` crop to an array ``(..., h, w)`` or a tuple of them; the
    result has the same structure at ``(..., H, W)`` (dtype of ``fn``'s output). ``overlap``
    is the context in pixels each tile reads on every inner side of its core; ``align``
    (grid layout) keeps tile origins on multiples of it (a network's stride).
    """
    h, w = image.shape[:2]
    if h <= tile and w <= tile:
        return fn(image)
    rows = tile_spans(h, tile, overlap, layout, align)
    cols = tile_spans(w, tile, overlap, layout, align)
    outs: list[np.ndarray] = []
    single = False
    for ry0, ry1, cy0, cy1 in rows:
        for rx0, rx1, cx0, cx1 in cols:
            pred = fn(image[ry0:ry1, rx0:rx1])
            single = not isinstance(pred, tuple)
            parts = (pred,) if single else pred
            if not outs:  # allocated from the first tile's outputs
                outs = [np.zeros((*p.shape[:-2], h, w), p.dtype) for p in parts]
            for out, p in zip(outs, parts, strict=True):
                out[..., cy0:cy1, cx0:cx1] = p[..., cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0]
    return outs[0] if single else tuple(outs)
