"""The tissue class map (``STEM.tissue.tif``) as a coloured, semi-transparent overlay.

The map holds one uint8 class index per pixel at the tissue output resolution (pyramidal for
slides); its ImageDescription is the JSON class table ``{"classes": [{"index", "name",
"color"}], "mpp"}``. :class:`TissueMap` reads it lazily and renders any level-0 box of the
*slide* as RGBA (nearest neighbour, class colours, background transparent), so the overlay is
served with the slide's own Deep Zoom geometry and lines up with it exactly.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError
from zeropath.io.colors import palette_color, parse_color

__all__ = ["TissueClass", "TissueMap", "parse_classes"]

#: Levels up to this many pixels are decoded into memory; larger ones are read through zarr.
_IN_MEMORY_PIXELS = 1 << 26


@dataclass(frozen=True)
class TissueClass:
    """One entry of the class table; ``transparent`` classes are not painted."""

    index: int
    name: str
    color: tuple[int, int, int]
    transparent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "color": list(self.color),
            "transparent": self.transparent,
        }


def parse_classes(description: str | None) -> tuple[list[TissueClass], float | None]:
    """Class table and µm/px from an ImageDescription; ``([], None)`` when it has none.

    Class 0 and any class named ``background`` are transparent.
    """
    try:
        meta = json.loads(description or "")
    except ValueError:
        return [], None
    if not isinstance(meta, dict):
        return [], None
    classes = []
    for k, entry in enumerate(meta.get("classes") or []):
        if not isinstance(entry, dict):
            continue
        try:
            index = int(entry.get("index", k))
        except (TypeError, ValueError):
            continue
        if not 0 <= index <= 255:
            continue
        name = str(entry.get("name", f"class {index}"))
        classes.append(
            TissueClass(
                index,
                name,
                parse_color(entry.get("color"), palette_color(index)),
                transparent=name.lower() == "background" or (index == 0 and not name),
            )
        )
    mpp = meta.get("mpp")
    try:
        mpp = float(mpp) if mpp is not None and math.isfinite(float(mpp)) else None
    except (TypeError, ValueError):
        mpp = None
    return classes, mpp


def _downsample(description: str | None) -> float | None:
    """The ``downsample`` (level-0 slide pixels per map pixel) the description states."""
    try:
        value = float(json.loads(description or "").get("downsample"))
    except (ValueError, TypeError, AttributeError):
        return None
    return value if math.isfinite(value) and value > 0 else None


class TissueMap:
    """A lazily read ``STEM.tissue.tif`` that renders slide-aligned RGBA regions."""

    def __init__(self, path: str | Path, slide_size: tuple[int, int]) -> None:
        import tifffile

        self.path = Path(path)
        self.slide_width, self.slide_height = (int(v) for v in slide_size)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                levels = getattr(series, "levels", None) or [series]
                self._shapes = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
                dtype = np.dtype(series.dtype)
                description = tif.pages[0].description
        except Exception as exc:  # tifffile raises many types for broken files
            raise InputError(self.path, f"cannot read tissue map: {exc}") from None
        if len(series.shape) != 2 or not np.issubdtype(dtype, np.integer):
            raise InputError(self.path, f"tissue map is not a 2-D class index image: {series}")
        self.classes, self.mpp = parse_classes(description)
        # map pixels per slide pixel: exact from the stated downsample (a map of ceil(W/ds)
        # pixels covers a little more than the slide), else from the sizes
        ds = _downsample(description)
        h0, w0 = self._shapes[0]
        self._scale = (
            (1.0 / ds, 1.0 / ds) if ds else (w0 / self.slide_width, h0 / self.slide_height)
        )
        if not self.classes:
            self.classes = [TissueClass(0, "background", (0, 0, 0), transparent=True)]
            self.classes += [TissueClass(i, f"class {i}", palette_color(i)) for i in range(1, 10)]
        self._lut = np.zeros((256, 4), np.uint8)
        for c in self.classes:
            if not c.transparent:
                self._lut[c.index] = (*c.color, 255)
        self._levels: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the full-resolution map."""
        return self._shapes[0]

    def legend(self) -> list[dict[str, Any]]:
        """The painted classes, in index order."""
        return [c.to_dict() for c in sorted(self.classes, key=lambda c: c.index)]

    def _level(self, i: int) -> Any:
        """Level ``i`` as an array supporting 2-D slicing (in memory or zarr)."""
        with self._lock:
            if i not in self._levels:
                import tifffile

                h, w = self._shapes[i]
                try:
                    if h * w <= _IN_MEMORY_PIXELS:
                        arr = tifffile.imread(self.path, series=0, level=i)
                    else:
                        import zarr

                        store = tifffile.imread(self.path, series=0, level=i, aszarr=True)
                        arr = zarr.open(store, mode="r")
                except Exception as exc:
                    raise InputError(self.path, f"cannot read tissue map: {exc}") from None
                self._levels[i] = arr
            return self._levels[i]

    def render(self, x0: float, y0: float, w0: float, h0: float, w: int, h: int) -> np.ndarray:
        """RGBA of the slide's level-0 box ``(x0, y0, w0, h0)`` at ``w×h`` pixels."""
        # the coarsest level that still has at least one map pixel per output pixel;
        # level k of the pyramid samples every 2**k-th pixel of level 0
        out_per_slide = min(w / max(w0, 1e-9), h / max(h0, 1e-9))
        map_w = self._shapes[0][1]
        level, fx, fy = 0, self._scale[0], self._scale[1]
        for i, (_, lw) in enumerate(self._shapes):
            step = max(1, round(map_w / lw))
            if self._scale[0] / step >= out_per_slide * 0.99:
                level, fx, fy = i, self._scale[0] / step, self._scale[1] / step
        lh, lw = self._shapes[level]
        # nearest map pixel of each output pixel centre
        cols = np.floor((x0 + (np.arange(w) + 0.5) * (w0 / w)) * fx).astype(np.int64)
        rows = np.floor((y0 + (np.arange(h) + 0.5) * (h0 / h)) * fy).astype(np.int64)
        np.clip(cols, 0, lw - 1, out=cols)
        np.clip(rows, 0, lh - 1, out=rows)
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        window = np.asarray(self._level(level)[r0:r1, c0:c1])
        idx = window[np.ix_(rows - r0, cols - c0)]
        idx = np.clip(idx, 0, 255).astype(np.uint8)
        return self._lut[idx]
