"""One reader API for plain images and whole-slide images.

:func:`open_image` picks a backend and returns an :class:`ImageSource` with OpenSlide-like
geometry (``level_dimensions`` as ``(width, height)``, region coordinates in level-0 pixels)
whatever the file is:

* ``"openslide"`` — anything OpenSlide opens (SVS, NDPI, MRXS, SCN, pyramidal TIFF, DICOM …);
* ``"tiffslide"`` — TIFF-family files OpenSlide refuses but that are pyramidal or too large to
  hold in memory (read lazily through tifffile/zarr);
* ``"image"`` — PNG/JPEG and single-level TIFFs small enough to decode into memory
  (MoNuSeg tiles, GlaS images, …).

Every read returns ``H×W×3`` uint8 RGB: alpha is composited on white, grayscale, palette and
16-bit data are converted, and pixels outside the image are white. Every failure is raised as
:class:`~zeropath.errors.InputError` naming the file; backend exceptions never leak. Nothing
here prints: the µm/px origin is reported in :attr:`ImageSource.mpp_origin` for the CLI to warn.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from functools import cached_property
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError

__all__ = [
    "DEFAULT_MPP",
    "IMAGE_SUFFIXES",
    "MAX_READ_PIXELS",
    "MPP_RANGE",
    "OUTPUT_SUFFIXES",
    "SLIDE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "bundled_sample",
    "image_stem",
    "list_inputs",
    "open_image",
    "sha256",
]

#: µm/px assumed when neither the file nor the user gives it (40x).
DEFAULT_MPP = 0.25
#: Plausible µm/px of a microscopy image; values outside (e.g. 72 dpi → 352.8) are ignored.
MPP_RANGE = (0.05, 20.0)
#: Plain raster image suffixes (a .tif may also turn out to be a pyramidal slide).
IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg"})
#: Whole-slide formats (OpenSlide's, plus TIFF-based ones tiffslide reads).
SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".ndpi",
        ".mrxs",
        ".scn",
        ".tif",
        ".tiff",
        ".vms",
        ".vmu",
        ".bif",
        ".svslide",
        ".dcm",
        ".qptiff",
        ".btf",
        ".tf2",
        ".tf8",
    }
)
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | SLIDE_SUFFIXES
#: Files zeropath itself writes; directory listings skip them so reruns don't eat outputs.
OUTPUT_SUFFIXES = (".labels.tif", ".tissue.tif", ".overlay.png")
#: Default cap on the pixels :meth:`ImageSource.read_level` returns at once (≈ 800 MB RGB).
MAX_READ_PIXELS = 2**28
#: Single-level images up to this size are decoded into memory; larger TIFFs are read lazily.
IN_MEMORY_PIXELS = 2**26

_PLAIN_RASTER = frozenset({".png", ".jpg", ".jpeg"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DECODE_FAILURES = ("cannot decode", "not a readable", "cannot parse")
_STRIP_PIXELS = 2**24  # pixels per chunk when a level is read piecewise


# --------------------------------------------------------------------------- helpers


def _reason(exc: BaseException) -> str:
    """A backend exception as one short human line."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    return text[:300]


def _plausible_mpp(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or not (MPP_RANGE[0] <= v <= MPP_RANGE[1]):
        return None
    return v


def _mean_mpp(mx: Any, my: Any) -> float | None:
    """Average of the plausible values of ``mpp-x`` / ``mpp-y`` (either may be missing)."""
    vals = [v for v in (_plausible_mpp(mx), _plausible_mpp(my)) if v is not None]
    return float(np.mean(vals)) if vals else None


def image_stem(path: str | PathLike[str]) -> str:
    """File name without its suffix; ``x.ome.tif`` → ``x`` (outputs are named ``STEM.*``)."""
    name = Path(path).name
    lower = name.lower()
    for double in (".ome.tiff", ".ome.tif", ".ome.btf", ".ome.tf2", ".ome.tf8"):
        if lower.endswith(double) and len(name) > len(double):
            return name[: -len(double)]
    stem = Path(name).stem
    return stem or name


def sha256(
    path: str | PathLike[str],
    chunk_size: int = 1 << 20,
    progress: Callable[[int, int | None, str], None] | None = None,
) -> str:
    """Hex SHA-256 of a file, streamed (never whole in memory); the package's one file hash.

    ``progress(done_bytes, total_bytes, "verifying")`` is called after every chunk when given.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size if progress is not None else None
            done = 0
            while block := fh.read(chunk_size):
                digest.update(block)
                if progress is not None:
                    done += len(block)
                    progress(done, total, "verifying")
    except OSError as exc:
        raise InputError(path, f"cannot read file: {_reason(exc)}") from None
    return digest.hexdigest()


def bundled_sample() -> Path:
    """Path of the small Aperio sample slide shipped with the package (CMU-1-Small-Region)."""
    ref = resources.files("zeropath") / "data" / "CMU-1-Small-Region.svs"
    return Path(str(ref))


def _white(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb·α + 255·(1−α)`` for float ``rgb`` in 0..255 and ``alpha`` in 0..1, as uint8."""
    a = alpha[..., None]
    return np.clip(np.rint(rgb * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


def _to_uint8_levels(values: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Colour samples of any dtype as float32 0..255 (16-bit shifted by its bit depth)."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32) * 255.0
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32))
        hi = float(arr.max(initial=0.0))
        return np.clip(arr * (255.0 if hi <= 1.0 else 1.0), 0, 255)
    if np.issubdtype(arr.dtype, np.integer):
        if bits is None:
            hi = int(arr.max(initial=0))
            bits = max(8, hi.bit_length())
        arr = np.clip(arr.astype(np.float64), 0, None) * (255.0 / float(2**bits - 1))
        return np.clip(arr, 0, 255).astype(np.float32)
    raise ValueError(f"unsupported pixel type {arr.dtype}")


def _alpha_fraction(alpha: np.ndarray) -> np.ndarray:
    a = np.asarray(alpha)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    return np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)


def _to_rgb8(
    arr: np.ndarray,
    *,
    bits: int | None = None,
    alpha: bool = True,
    premultiplied: bool = False,
) -> np.ndarray:
    """``H×W``, ``H×W×{1,2,3,4+}`` samples of any dtype → ``H×W×3`` uint8 RGB on white."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")
    n = arr.shape[2]
    if arr.dtype == np.uint8 and n == 3:
        return np.ascontiguousarray(arr)
    colour = arr[..., :1] if n <= 2 else arr[..., :3]
    has_alpha = alpha and n in (2, 4)
    a = arr[..., -1] if has_alpha else None
    rgb = _to_uint8_levels(colour, bits)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if a is None:
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    frac = _alpha_fraction(a)
    if premultiplied:
        # colour already scaled by alpha: add the white that shows through
        return np.clip(np.rint(rgb + 255.0 * (1.0 - frac[..., None])), 0, 255).astype(np.uint8)
    return _composite_on_white(rgb, frac)


def _pad_into_white(
    region: np.ndarray, height: int, width: int, off_y: int, off_x: int
) -> np.ndarray:
    out = _white(height, width)
    rh, rw = region.shape[:2]
    out[off_y : off_y + rh, off_x : off_x + rw] = region
    return out


def _clip_box(start: int, size: int, extent: int) -> tuple[int, int, int]:
    """In-bound ``[lo, hi)`` of ``[start, start+size)`` within ``[0, extent)`` and its offset."""
    lo = min(max(start, 0), extent)
    hi = min(max(start + size, 0), extent)
    return lo, max(hi, lo), lo - start


# --------------------------------------------------------------------------- µm/px from files


def _tiff_page_mpp(tif: Any, page: Any) -> float | None:
    """µm/px from OME, ImageJ or TIFF resolution tags of a tifffile page, if plausible."""
    try:
        if getattr(tif, "is_ome", False) and tif.ome_metadata:
            xml = tif.ome_metadata
            mx = re.search(r'PhysicalSizeX="([^"]+)"', xml)
            my = re.search(r'PhysicalSizeY="([^"]+)"', xml)
            unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
            scale = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(
                unit.group(1) if unit else "µm"
            )
            if mx and scale is not None:
                mpp = _mean_mpp(
                    float(mx.group(1)) * scale, float(my.group(1)) * scale if my else None
                )
                if mpp is not None:
                    return mpp
    except (ValueError, TypeError, AttributeError):
        pass
    tags = page.tags
    xres = tags.get("XResolution")
    yres = tags.get("YResolution")
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch

    def per_unit(tag: Any) -> float | None:
        if tag is None:
            return None
        value = tag.value
        try:
            num, den = value if isinstance(value, tuple) else (value, 1)
            return float(num) / float(den) if float(den) and float(num) > 0 else None
        except (TypeError, ValueError, ZeroDivisionError):
            return None

    px, py = per_unit(xres), per_unit(yres)
    if px is None and py is None:
        return None
    if unit == 1:  # no absolute unit; ImageJ stores px per "unit" in its metadata
        ij = getattr(tif, "imagej_metadata", None) or {}
        if str(ij.get("unit", "")).lower() in {"micron", "µm", "um", "\\u00b5m", "microns"}:
            return _mean_mpp(1.0 / px if px else None, 1.0 / py if py else None)
        return None
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    if um_per_unit is None:
        return None
    return _mean_mpp(um_per_unit / px if px else None, um_per_unit / py if py else None)


def _pil_mpp(info: dict[str, Any]) -> float | None:
    """µm/px from PIL's ``dpi`` (PNG pHYs in metres, JPEG JFIF density), if plausible."""
    dpi = info.get("dpi")
    if not dpi:
        return None
    try:
        dx, dy = (float(dpi[0]), float(dpi[1])) if isinstance(dpi, tuple) else (dpi, dpi)
    except (TypeError, ValueError, IndexError):
        return None
    return _mean_mpp(25400.0 / dx if dx > 0 else None, 25400.0 / dy if dy > 0 else None)


# --------------------------------------------------------------------------- ImageSource


class ImageSource:
    """An opened image or slide; use :func:`open_image` to get one.

    Geometry follows OpenSlide: ``level_dimensions[i] = (width, height)``, region origins in
    level-0 pixels, sizes in pixels of the requested level. Reads return ``H×W×3`` uint8 RGB.
    """

    backend: str = ""

    def __init__(
        self,
        path: Path,
        level_dimensions: Iterable[tuple[int, int]],
        level_downsamples: Iterable[float],
        file_mpp: float | None,
        properties: dict[str, str],
        mpp: float | None,
        default_mpp: float,
    ) -> None:
        self.path = Path(path)
        self.stem = image_stem(self.path)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in level_downsamples)
        self.properties: dict[str, str] = dict(properties)
        self.file_mpp = file_mpp
        self._open_args = (mpp, default_mpp)
        if mpp is not None:
            self.mpp = float(mpp)
            self.mpp_origin = "override"
        elif file_mpp is not None:
            self.mpp = float(file_mpp)
            self.mpp_origin = "file"
        else:
            self.mpp = float(default_mpp)
            self.mpp_origin = "default"
        self._closed = False

    # ---- geometry

    @property
    def is_slide(self) -> bool:
        """True when read through a whole-slide backend (process it tile by tile)."""
        return self.backend != "image"

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.level_dimensions[0]

    @property
    def width(self) -> int:
        return self.level_dimensions[0][0]

    @property
    def height(self) -> int:
        return self.level_dimensions[0][1]

    def level_mpp(self, level: int) -> float:
        """µm/px of ``level`` (the one in force times the level's downsample)."""
        return self.mpp * self.level_downsamples[self._check_level(level)]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1% slack)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= float(downsample) * 1.01:
                best = i
        return best

    @cached_property
    def checksum(self) -> str:
        """SHA-256 of the file (computed once, on first use)."""
        return sha256(self.path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, "
            f"dimensions={self.dimensions}, levels={self.level_count}, "
            f"mpp={self.mpp:g} ({self.mpp_origin}))"
        )

    # ---- reads

    def _check_level(self, level: int) -> int:
        level = int(level)
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range 0..{self.level_count - 1}")
        return level

    def _fail(self, what: str, exc: BaseException) -> InputError:
        return InputError(self.path, f"{what}: {_reason(exc)}")

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """``height×width×3`` uint8 RGB at ``level``, top-left ``(x, y)`` in level-0 pixels.

        Pixels outside the image are white (255).
        """
        level = self._check_level(level)
        width, height = int(width), int(height)
        if width < 0 or height < 0:
            raise ValueError(f"negative region size {width}×{height}")
        if width == 0 or height == 0:
            return np.zeros((height, width, 3), np.uint8)
        if self._closed:
            raise InputError(self.path, "read after close()")
        try:
            out = self._read_region(int(x), int(y), width, height, level)
        except InputError:
            raise
        except Exception as exc:  # any backend failure is an input problem
            raise self._fail(f"cannot read pixels at ({x}, {y}) level {level}", exc) from None
        return out

    def _read_level_box(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Like :meth:`read_region` but with the origin in pixels of ``level``."""
        ds = self.level_downsamples[level]
        return self.read_region(round(lx * ds), round(ly * ds), width, height, level)

    def read_level(self, level: int = 0, max_pixels: int = MAX_READ_PIXELS) -> np.ndarray:
        """The whole of ``level`` as ``H×W×3`` uint8; refuses levels above ``max_pixels``."""
        level = self._check_level(level)
        w, h = self.level_dimensions[level]
        if w * h > max_pixels:
            raise InputError(
                self.path,
                f"level {level} is {w}×{h} px, more than the {max_pixels} px that can be read "
                "at once; read it region by region",
            )
        rows = max(1, _STRIP_PIXELS // max(w, 1))
        if rows >= h:
            return self._read_level_box(level, 0, 0, w, h)
        out = np.empty((h, w, 3), np.uint8)
        for y0 in range(0, h, rows):
            hh = min(rows, h - y0)
            out[y0 : y0 + hh] = self._read_level_box(level, 0, y0, w, hh)
        return out

    def thumbnail_size(self, max_size: int = 1024) -> tuple[int, int]:
        """``(width, height)`` of :meth:`thumbnail` for ``max_size`` (never upsampled)."""
        w0, h0 = self.dimensions
        scale = min(1.0, float(max_size) / max(w0, h0))
        return max(1, round(w0 * scale)), max(1, round(h0 * scale))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Area-averaged RGB overview whose longest side is at most ``max_size``.

        Read from the coarsest level still at least as large as the thumbnail, in strips, so
        memory stays bounded for big slides.
        """
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        tw, th = self.thumbnail_size(max_size)
        level = 0
        for i, (w, h) in enumerate(self.level_dimensions):
            if w >= tw and h >= th:
                level = i
        lw, lh = self.level_dimensions[level]
        if (lw, lh) == (tw, th):
            return self.read_level(level, max_pixels=max(MAX_READ_PIXELS, lw * lh))
        factor = max(1, min(lw // tw, lh // th))  # integer pre-reduction, streamed
        rows = max(factor, (_STRIP_PIXELS // max(lw, 1)) // factor * factor)
        parts = []
        for y0 in range(0, lh, rows):
            strip = self._read_level_box(level, 0, y0, lw, min(rows, lh - y0))
            parts.append(_block_mean(strip, factor))
        reduced = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return _resize_area(reduced, tw, th)

    # ---- backend hooks

    def _read_region(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def close(self) -> None:
        """Release the file handle (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., ImageSource], tuple[Any, ...]]:
        # pickles as "reopen this path" so sources can travel to worker processes
        return open_image, (self.path, *self._open_args)


def _block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor×factor`` blocks; partial edge blocks average their real pixels."""
    if factor == 1:
        return rgb
    from PIL import Image

    return np.array(Image.fromarray(np.ascontiguousarray(rgb)).reduce(factor))


def _resize_area(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging (box filter) resize to exactly ``width×height``."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    from PIL import Image

    return np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX))


# --------------------------------------------------------------------------- backends


class _OpenSlideSource(ImageSource):
    backend = "openslide"

    def __init__(self, path: Path, slide: Any, mpp: float | None, default_mpp: float) -> None:
        props = {str(k): str(v) for k, v in slide.properties.items()}
        file_mpp = _mean_mpp(props.get("openslide.mpp-x"), props.get("openslide.mpp-y"))
        super().__init__(
            path,
            slide.level_dimensions,
            slide.level_downsamples,
            file_mpp,
            props,
            mpp,
            default_mpp,
        )
        self._slide = slide

    def _read_region(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        rgba = np.asarray(self._slide.read_region((x, y), level, (width, height)))
        alpha = rgba[..., 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[..., :3])
        # openslide-python returns un-premultiplied RGBA; transparent = outside the slide
        return _composite_on_white(rgba[..., :3].astype(np.float32), alpha / np.float32(255))

    def _close(self) -> None:
        self._slide.close()


class _TiffSlideSource(ImageSource):
    backend = "tiffslide"

    def __init__(
        self, path: Path, slide: Any, tif: Any, mpp: float | None, default_mpp: float
    ) -> None:
        props = {str(k): str(v) for k, v in slide.properties.items() if v is not None}
        file_mpp = _mean_mpp(
            slide.properties.get("tiffslide.mpp-x"), slide.properties.get("tiffslide.mpp-y")
        )
        if file_mpp is None:
            file_mpp = _tiff_page_mpp(tif, tif.pages.first)
        super().__init__(
            path,
            slide.level_dimensions,
            slide.level_downsamples,
            file_mpp,
            props,
            mpp,
            default_mpp,
        )
        self._slide = slide
        page = tif.pages.first
        self._bits = int(page.bitspersample) if page.bitspersample > 8 else None
        self._premultiplied = 1 in tuple(page.extrasamples or ())

    def _read_region(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        rx0, ry0 = int(x / ds), int(y / ds)  # tiffslide's own level-0 → level mapping
        x0, x1, off_x = _clip_box(rx0, width, lw)
        y0, y1, off_y = _clip_box(ry0, height, lh)
        if x1 <= x0 or y1 <= y0:
            return _white(height, width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = self._slide.read_region(
                (x, y), level, (width, height), as_array=True, padding=False
            )
        rgb = _to_rgb8(raw, bits=self._bits, premultiplied=self._premultiplied)
        if rgb.shape[:2] == (height, width):
            return rgb
        return _pad_into_white(rgb, height, width, off_y, off_x)

    def _read_level_box(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        # pick level-0 coordinates that tiffslide maps back onto exactly (lx, ly)
        bx, by = math.ceil(lx * ds), math.ceil(ly * ds)
        while int(bx / ds) > lx:
            bx -= 1
        while int(bx / ds) < lx:
            bx += 1
        while int(by / ds) > ly:
            by -= 1
        while int(by / ds) < ly:
            by += 1
        return self.read_region(bx, by, width, height, level)

    def _close(self) -> None:
        self._slide.close()


class _ArraySource(ImageSource):
    """Single-level image held in memory (uint8 RGB) or read lazily from a zarr array."""

    backend = "image"

    def __init__(
        self,
        path: Path,
        pixels: Any,
        fetch: Callable[[int, int, int, int], np.ndarray],
        size: tuple[int, int],
        file_mpp: float | None,
        properties: dict[str, str],
        mpp: float | None,
        default_mpp: float,
        closer: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(path, [size], [1.0], file_mpp, properties, mpp, default_mpp)
        self._pixels = pixels
        self._fetch = fetch
        self._closer = closer

    def _read_region(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        w, h = self.dimensions
        x0, x1, off_x = _clip_box(x, width, w)
        y0, y1, off_y = _clip_box(y, height, h)
        if x1 <= x0 or y1 <= y0:
            return _white(height, width)
        region = self._fetch(y0, y1, x0, x1)
        if region.shape[:2] == (height, width):
            return region.copy() if isinstance(self._pixels, np.ndarray) else region
        return _pad_into_white(region, height, width, off_y, off_x)

    def _close(self) -> None:
        self._pixels = None
        if self._closer is not None:
            self._closer()


# --------------------------------------------------------------------------- opening


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image or slide file")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(path, f"cannot read file: {_reason(exc)}") from None
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(16)


def _validate(source: ImageSource) -> ImageSource:
    """Reject degenerate geometry and prove that pixels decode, at open time."""
    try:
        if source.level_count == 0:
            raise InputError(source.path, "contains no image levels")
        for i, (w, h) in enumerate(source.level_dimensions):
            if w <= 0 or h <= 0:
                raise InputError(source.path, f"level {i} has zero size ({w}×{h} px)")
        w, h = source.dimensions
        if w < 2 or h < 2:
            raise InputError(source.path, f"image is only {w}×{h} px; at least 2×2 is needed")
        # decode one small region at full and at lowest resolution, so that files whose
        # pixels are broken fail now rather than halfway through a run
        source.read_region(0, 0, min(w, 16), min(h, 16), 0)
        last = source.level_count - 1
        if last:
            lw, lh = source.level_dimensions[last]
            source.read_region(0, 0, min(lw, 16), min(lh, 16), last)
    except InputError as exc:
        source.close()
        if exc.message.startswith("cannot read pixels"):
            reason = exc.message.split(": ", 1)[-1]
            raise InputError(
                source.path, f"opens but its pixels cannot be decoded: {reason}"
            ) from None
        raise
    return source


def _open_openslide(path: Path, mpp: float | None, default_mpp: float) -> ImageSource | str:
    """OpenSlide source, or the reason OpenSlide did not take the file."""
    try:
        import openslide
    except Exception as exc:  # missing/broken native library
        return f"OpenSlide unavailable ({_reason(exc)})"
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception as exc:
        return _reason(exc)
    if vendor is None:
        return "not a format OpenSlide recognises"
    try:
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:
        return _reason(exc)
    if vendor == "generic-tiff" and slide.level_count == 1:
        w, h = slide.dimensions
        if w * h <= IN_MEMORY_PIXELS:
            slide.close()
            return "single-level TIFF"  # small plain TIFF: read as an image
    return _OpenSlideSource(path, slide, mpp, default_mpp)


def _axes_fetcher(
    array: Any, axes: str, convert: Callable[[np.ndarray], np.ndarray]
) -> Callable[[int, int, int, int], np.ndarray]:
    """A ``fetch(y0, y1, x0, x1) -> RGB`` over an array with tifffile ``axes`` (Y, X, S/C…)."""
    channel_axes = [i for i, a in enumerate(axes) if a in "SC"]
    chan = channel_axes[-1] if channel_axes else None

    def fetch(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        index: list[Any] = []
        kept: list[str] = []
        for i, a in enumerate(axes):
            if a == "Y":
                index.append(slice(y0, y1))
                kept.append("Y")
            elif a == "X":
                index.append(slice(x0, x1))
                kept.append("X")
            elif i == chan:
                index.append(slice(None))
                kept.append("S")
            else:
                index.append(0)  # first plane of stacks / pages / extra channel axes
        block = np.asarray(array[tuple(index)])
        order = [kept.index(a) for a in ("Y", "X", "S") if a in kept]
        block = np.transpose(block, order)
        return convert(block)

    return fetch


def _tiff_converter(page: Any, bits: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """Photometric-aware conversion of a tifffile sample block to RGB uint8."""
    from tifffile import PHOTOMETRIC

    photometric = page.photometric
    extras = tuple(page.extrasamples or ())
    has_alpha = bool(extras) and extras[-1] in (1, 2)
    premultiplied = bool(extras) and extras[-1] == 1

    if photometric == PHOTOMETRIC.PALETTE and page.colormap is not None:
        cmap = np.asarray(page.colormap)
        lut = _to_uint8_levels(cmap.T, 16 if cmap.max() > 255 else 8).astype(np.uint8)

        def palette(block: np.ndarray) -> np.ndarray:
            idx = block[..., 0] if block.ndim == 3 else block
            return lut[np.clip(idx.astype(np.int64), 0, len(lut) - 1)]

        return palette

    if photometric == PHOTOMETRIC.SEPARATED:  # CMYK

        def cmyk(block: np.ndarray) -> np.ndarray:
            f = _to_uint8_levels(block[..., :4], bits) / 255.0
            k = 1.0 - f[..., 3:4]
            rgb = 255.0 * (1.0 - f[..., :3]) * k
            return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

        return cmyk

    def generic(block: np.ndarray) -> np.ndarray:
        if photometric == PHOTOMETRIC.MINISWHITE:
            if np.issubdtype(block.dtype, np.integer):
                block = np.iinfo(block.dtype).max - block
            else:
                block = block.max(initial=1.0) - block
        if block.ndim == 3 and block.shape[2] > 4:
            block = block[..., :3]
        if block.ndim == 3 and block.shape[2] in (2, 4) and not has_alpha:
            block = block[..., : block.shape[2] - 1]
        return _to_rgb8(block, bits=bits, premultiplied=premultiplied)

    return generic


def _tiff_properties(page: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for name in (
        "ImageDescription",
        "Software",
        "DateTime",
        "Make",
        "Model",
        "XResolution",
        "YResolution",
        "ResolutionUnit",
        "Compression",
        "Photometric",
        "BitsPerSample",
    ):
        tag = page.tags.get(name)
        if tag is not None:
            value = tag.value
            if isinstance(value, bytes):
                value = value.decode("latin-1", "replace")
            text = getattr(value, "name", None) or str(value)
            props[f"tiff.{name}"] = text[:10000]
    return props


#: Most samples per pixel read as an image (RGBA); more is a multi-channel array.
_MAX_SAMPLES = 4


def _check_tiff_layout(path: Path, series: Any, page: Any, axes: str, w: int, h: int) -> None:
    """Refuse TIFF layouts that are not one brightfield image: several planes (a stack, or
    an ``H×W×C`` array that tifffile stored as ``H`` pages of ``W×C``) or more than four
    channels per pixel. Read silently, they became an image of width ``C`` or of the first
    three channels of a multiplex image."""
    page_px = math.prod(int(n) for n in page.shape)
    series_px = math.prod(int(n) for n in getattr(series, "shape", page.shape))
    planes = series_px // page_px if page_px else 1
    if planes > 1:
        hint = (
            f" (an array of shape ({planes}, {h}, {w}) saved without photometric='rgb'?)"
            if min(w, h) <= 2 * _MAX_SAMPLES
            else ""
        )
        raise InputError(
            path,
            f"TIFF holds {planes} planes of {w}×{h} px{hint}; zeropath reads one RGB, RGBA "
            "or greyscale image per file",
        )
    channels = [int(n) for a, n in zip(axes, page.shape, strict=False) if a in "SC"]
    if channels and max(channels) > _MAX_SAMPLES:
        raise InputError(
            path,
            f"{max(channels)} channels per pixel; zeropath reads RGB, RGBA or greyscale "
            "brightfield images (save the three RGB channels)",
        )


def _open_tiff(path: Path, mpp: float | None, default_mpp: float) -> ImageSource:
    """TIFF that OpenSlide did not take: tiffslide when pyramidal/large, else in memory."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(path, f"not a readable TIFF: {_reason(exc)}") from None
    try:
        if not tif.series:
            raise InputError(path, "TIFF contains no images")
        series = tif.series[0]
        levels = list(getattr(series, "levels", None) or [series])
        page = levels[0].keyframe
        axes = str(page.axes).upper()
        shape = dict(zip(axes, page.shape, strict=False))
        w, h = int(shape.get("X", 0)), int(shape.get("Y", 0))
        _check_tiff_layout(path, levels[0], page, axes, w, h)
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(path, f"cannot parse TIFF structure: {_reason(exc)}") from None

    if len(levels) > 1 or w * h > IN_MEMORY_PIXELS:
        source = _try_tiffslide(path, tif, mpp, default_mpp)
        if source is not None:
            tif.close()
            return source

    try:
        file_mpp = _tiff_page_mpp(tif, page)
        props = _tiff_properties(page)
        bits = int(page.bitspersample) if page.bitspersample > 8 else None
        if w * h <= IN_MEMORY_PIXELS:
            raw = page.asarray()
            if bits is not None and np.issubdtype(raw.dtype, np.integer):
                # scale by the bit depth actually used (12-bit data in 16-bit words)
                colour_max = int(raw.max(initial=0))
                bits = max(8, colour_max.bit_length())
            convert = _tiff_converter(page, bits)
            rgb = _axes_fetcher(raw, axes, convert)(0, h, 0, w)
            tif.close()
            pixels: Any = np.ascontiguousarray(rgb)
            return _ArraySource(
                path,
                pixels,
                lambda y0, y1, x0, x1: pixels[y0:y1, x0:x1],
                (w, h),
                file_mpp,
                props,
                mpp,
                default_mpp,
            )
        import zarr

        store = page.aszarr()
        lazy = zarr.open(store, mode="r")
        convert = _tiff_converter(page, bits)
        fetch = _axes_fetcher(lazy, axes, convert)

        def closer() -> None:
            store.close()
            tif.close()

        return _ArraySource(path, lazy, fetch, (w, h), file_mpp, props, mpp, default_mpp, closer)
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(path, f"cannot decode TIFF pixels: {_reason(exc)}") from None


def _try_tiffslide(
    path: Path, tif: Any, mpp: float | None, default_mpp: float
) -> ImageSource | None:
    try:
        import tiffslide

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slide = tiffslide.TiffSlide(path)
    except Exception:  # fall back to tifffile
        return None
    try:
        return _TiffSlideSource(path, slide, tif, mpp, default_mpp)
    except Exception:
        slide.close()
        return None


def _open_pil(path: Path, mpp: float | None, default_mpp: float) -> ImageSource:
    """PNG/JPEG (and anything else Pillow knows) decoded into memory."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                info = dict(im.info)
                fmt = im.format or ""
                pixels = _pil_to_rgb8(im)
    except UnidentifiedImageError:
        raise InputError(path, "not a supported image or slide format") from None
    except Image.DecompressionBombError:
        raise InputError(
            path, "image too large to decode in memory; convert it to a tiled pyramidal TIFF"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(
            path, f"cannot decode image (truncated or corrupt?): {_reason(exc)}"
        ) from None
    h, w = pixels.shape[:2]
    props = {f"image.{k}": str(v) for k, v in info.items() if isinstance(v, str | int | float)}
    props["image.format"] = fmt
    return _ArraySource(
        path,
        pixels,
        lambda y0, y1, x0, x1: pixels[y0:y1, x0:x1],
        (w, h),
        _pil_mpp(info),
        props,
        mpp,
        default_mpp,
    )


def _pil_to_rgb8(im: Any) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L") or mode.startswith("I") or mode == "F":
        arr = np.asarray(im)
        return _to_rgb8(arr, alpha=False)
    if mode == "1":
        return _to_rgb8(np.asarray(im.convert("L")), alpha=False)
    if mode in ("RGBA", "LA", "PA", "P", "RGBa", "La") or "transparency" in im.info:
        return _to_rgb8(np.asarray(im.convert("RGBA")))
    return _to_rgb8(np.asarray(im.convert("RGB")), alpha=False)


def open_image(
    path: str | PathLike[str],
    mpp: float | None = None,
    default_mpp: float = DEFAULT_MPP,
) -> ImageSource:
    """Open an image or whole slide through the best backend.

    ``mpp`` overrides the file's µm/px (``mpp_origin == "override"``); otherwise the file's
    value is used when plausible (``"file"``), else ``default_mpp`` (``"default"``).
    Raises :class:`InputError` for anything that cannot be read, with the reason.
    """
    path = Path(path)
    if mpp is not None and not (math.isfinite(float(mpp)) and float(mpp) > 0):
        raise InputError(path, f"invalid µm/px override {mpp!r}: must be a positive number")
    _check_file(path)
    suffix = path.suffix.lower()

    if suffix in _PLAIN_RASTER:
        return _validate(_open_pil(path, mpp, default_mpp))

    result = _open_openslide(path, mpp, default_mpp)
    if isinstance(result, ImageSource):
        return _validate(result)
    openslide_reason = result

    try:
        magic = _magic(path)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {_reason(exc)}") from None
    if magic[:4] in _TIFF_MAGIC:
        try:
            return _validate(_open_tiff(path, mpp, default_mpp))
        except InputError as exc:
            decode_failure = exc.message.startswith(
                ("cannot decode", "not a readable", "cannot parse")
            )
            if not decode_failure or openslide_reason.startswith(
                ("not a format", "single-level", "OpenSlide")
            ):
                raise
            # OpenSlide recognised the file but failed; its reason is usually the clearer one
            raise InputError(path, f"cannot decode pixels: {openslide_reason}") from None
    if openslide_reason.startswith("not a format"):
        if suffix in SLIDE_SUFFIXES:
            raise InputError(path, "not a supported slide or image format (unrecognised contents)")
    elif not openslide_reason.startswith("OpenSlide unavailable"):
        raise InputError(path, f"cannot open slide: {openslide_reason}")
    try:
        return _validate(_open_pil(path, mpp, default_mpp))
    except InputError as exc:
        if exc.message == "not a supported image or slide format":
            raise InputError(
                path, f"not a supported image or slide format ({suffix or 'no suffix'})"
            ) from None
        raise


# --------------------------------------------------------------------------- listing


def _is_output(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(OUTPUT_SUFFIXES)


def list_inputs(paths: Iterable[str | PathLike[str]], recursive: bool = False) -> list[Path]:
    """Expand files and directories into the list of inputs to process.

    Directories contribute their supported image/slide files (sorted; hidden files and
    zeropath's own outputs skipped; subdirectories only with ``recursive``). Files named
    explicitly are kept whatever their suffix, so the reader can report on them.
    Raises :class:`InputError` for a missing path or a directory without inputs.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(p, "no such file or directory")
        if not p.is_dir():
            add(p)
            continue
        candidates = p.rglob("*") if recursive else p.iterdir()
        found = []
        for f in candidates:
            rel = f.relative_to(p)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not f.is_file() or _is_output(f.name):
                continue
            if f.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(f)
        if not found:
            raise InputError(p, "directory contains no supported image or slide files")
        for f in sorted(found):
            add(f)
    return out
