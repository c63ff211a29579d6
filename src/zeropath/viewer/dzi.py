"""Deep Zoom (DZI) pyramids generated on the fly.

OpenSeadragon asks for ``NAME.dzi`` (an XML descriptor) and then for tiles
``NAME_files/LEVEL/COL_ROW.FORMAT``. Level ``maxLevel = ceil(log2(max(w, h)))`` is the full
image; each level below halves it (rounding up) down to 1×1. Tiles are ``tile_size`` pixels
plus ``overlap`` pixels on every side that has a neighbour — the layout of OpenSlide's
``DeepZoomGenerator``, so the maths can be checked against it.

:class:`DeepZoom` holds only that geometry and a *render* callback that returns the pixels
of any level-0 box at any output size; :func:`slide_renderer` builds the callback for an
:class:`~zeropath.io.reader.ImageSource` (reading from the pyramid level that fits), and the
tissue overlay supplies its own. Encoded tiles are kept in a small LRU cache.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zeropath.io.tiler import resize_rgb, source_level

if TYPE_CHECKING:
    from zeropath.io.reader import ImageSource

__all__ = [
    "DeepZoom",
    "DziGeometry",
    "LRUCache",
    "TileBox",
    "encode_image",
    "slide_renderer",
]

#: A render callback: level-0 box ``(x, y, w, h)`` (floats) and the output ``(width, height)``
#: → ``height×width×3`` (RGB) or ``×4`` (RGBA) uint8.
Renderer = Callable[[float, float, float, float, int, int], np.ndarray]

#: Above this many source pixels per tile a coarse tile is cut from a cached overview instead.
_MAX_SOURCE_PIXELS = 2048 * 2048
#: Longest side of the cached overview used for the coarsest levels.
_OVERVIEW_SIZE = 2048


@dataclass(frozen=True)
class TileBox:
    """Where a tile lies: pixel box in its level and the matching level-0 box."""

    x: int
    y: int
    width: int
    height: int
    x0: float
    y0: float
    width0: float
    height0: float


@dataclass(frozen=True)
class DziGeometry:
    """The Deep Zoom level and tile grid of a ``width×height`` image."""

    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}×{self.height}")
        if self.tile_size < 1 or self.overlap < 0:
            raise ValueError("tile_size must be >= 1 and overlap >= 0")

    @property
    def max_level(self) -> int:
        """Index of the full-resolution level."""
        return math.ceil(math.log2(max(self.width, self.height)))

    @property
    def level_count(self) -> int:
        return self.max_level + 1

    def downsample(self, level: int) -> float:
        """Level-0 pixels per pixel of ``level``."""
        return float(2 ** (self.max_level - self._check(level)))

    def level_dimensions(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of ``level`` (each level halves the next, rounding up)."""
        k = 2 ** (self.max_level - self._check(level))
        return -(-self.width // k), -(-self.height // k)

    def tile_grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at ``level``."""
        w, h = self.level_dimensions(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> TileBox:
        """Pixel box of tile ``(col, row)`` of ``level``, overlap included.

        Raises ``IndexError`` for a tile outside the grid.
        """
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise IndexError(f"tile {col}_{row} outside the {cols}×{rows} grid of level {level}")
        lw, lh = self.level_dimensions(level)
        x, w = self._axis(col, lw)
        y, h = self._axis(row, lh)
        ds = self.downsample(level)
        # the last tile of a level may reach past the image (levels round up): clip in level 0
        x0, y0 = x * ds, y * ds
        w0 = min(w * ds, self.width - x0)
        h0 = min(h * ds, self.height - y0)
        return TileBox(x, y, w, h, x0, y0, w0, h0)

    def descriptor(self, fmt: str) -> str:
        """The ``.dzi`` XML descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{fmt}" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def _axis(self, index: int, extent: int) -> tuple[int, int]:
        start = index * self.tile_size - (self.overlap if index > 0 else 0)
        end = min(extent, (index + 1) * self.tile_size + self.overlap)
        return start, end - start

    def _check(self, level: int) -> int:
        if not 0 <= level <= self.max_level:
            raise IndexError(f"level {level} outside 0..{self.max_level}")
        return level


class LRUCache:
    """A thread-safe least-recently-used cache of byte strings with a total size budget."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            if len(value) > self.max_bytes:
                return
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 85) -> bytes:
    """``H×W×3`` or ``×4`` uint8 as JPEG (alpha dropped) or PNG bytes."""
    from PIL import Image

    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    buf = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        Image.fromarray(arr[..., :3]).save(buf, "JPEG", quality=quality)
    elif fmt == "png":
        Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    else:
        raise ValueError(f"unsupported tile format {fmt!r}")
    return buf.getvalue()


class DeepZoom:
    """A DZI pyramid of one layer: geometry, a render callback and a tile cache."""

    def __init__(
        self,
        geometry: DziGeometry,
        render: Renderer,
        fmt: str = "jpeg",
        cache: LRUCache | None = None,
        key: Hashable = None,
    ) -> None:
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"unsupported tile format {fmt!r}")
        self.geometry = geometry
        self.format = fmt
        self._render = render
        self._cache = cache if cache is not None else LRUCache()
        self._key = key if key is not None else id(self)

    @property
    def media_type(self) -> str:
        return f"image/{self.format}"

    def descriptor(self) -> str:
        return self.geometry.descriptor(self.format)

    def tile_pixels(self, level: int, col: int, row: int) -> np.ndarray:
        """The tile's pixels (no cache, no encoding)."""
        box = self.geometry.tile_box(level, col, row)
        pixels = self._render(box.x0, box.y0, box.width0, box.height0, box.width, box.height)
        if pixels.shape[:2] != (box.height, box.width):
            raise RuntimeError(
                f"renderer returned {pixels.shape[:2]} for a {box.height}×{box.width} tile"
            )
        return pixels

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The encoded tile, from the cache when it was made before."""
        key = (self._key, level, col, row)
        data = self._cache.get(key)
        if data is None:
            data = encode_image(self.tile_pixels(level, col, row), self.format)
            self._cache.put(key, data)
        return data


def slide_renderer(source: ImageSource) -> Renderer:
    """A render callback reading RGB from ``source``'s best pyramid level.

    Tiles coarser than the slide's own pyramid would make each tile read many source
    pixels; those are cut from an overview (longest side 2048) computed once instead.
    Reads are serialised: not every backend is safe to call from several threads.
    """
    lock = threading.Lock()
    overview: dict[str, np.ndarray] = {}

    def from_overview(x0: float, y0: float, w0: float, h0: float, w: int, h: int) -> np.ndarray:
        if "img" not in overview:
            overview["img"] = source.thumbnail(_OVERVIEW_SIZE)
        img = overview["img"]
        sx, sy = img.shape[1] / source.width, img.shape[0] / source.height
        ax, ay = math.floor(x0 * sx), math.floor(y0 * sy)
        bx = max(ax + 1, math.ceil((x0 + w0) * sx))
        by = max(ay + 1, math.ceil((y0 + h0) * sy))
        return resize_rgb(img[ay:by, ax:bx], (h, w), box_filter=True)

    def render(x0: float, y0: float, w0: float, h0: float, w: int, h: int) -> np.ndarray:
        ds = max(w0 / max(w, 1), h0 / max(h, 1))
        level, rw, rh = source_level(source, w0, h0, ds)
        with lock:
            if rw * rh > max(_MAX_SOURCE_PIXELS, 4 * w * h) and max(source.dimensions) > (
                _OVERVIEW_SIZE
            ):
                return from_overview(x0, y0, w0, h0, w, h)
            region = source.read_region(round(x0), round(y0), rw, rh, level)
        return resize_rgb(region, (h, w), box_filter=True)

    return render
