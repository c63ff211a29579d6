"""Output files of a segmentation run: labels TIFF, GeoJSON + CSV objects, overlay, run.json.

Every writer goes through :func:`atomic_write`: the data are written to a hidden temporary
file next to the destination and renamed over it only once complete, so an interrupted or
failed run never leaves a half-written output (docs/reference.md: "writes nothing partial").
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import secrets
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.io.measure import COLUMNS, MEASUREMENT_NAMES, label_polygons, measure_objects
from zeropath.io.memory import release_rows

if TYPE_CHECKING:
    from os import PathLike

#: Pyramids are written automatically (``pyramid=None``) above this many pixels on a side.
AUTO_PYRAMID_SIZE = 4096

#: Default classification of nuclei in the GeoJSON.
NUCLEUS_CLASS: tuple[str, tuple[int, int, int]] = ("Nucleus", (30, 144, 255))

# Fixed namespace for the deterministic per-feature UUIDs (same input, same file).
_UUID_NAMESPACE = uuid.UUID("6d3c2b0e-5f4a-4f39-9a53-7a2e0c1d8b11")


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_write(path: str | PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    The temporary name is ``.{name}.{random}.tmp`` in the same directory (so the final
    ``os.replace`` is atomic on POSIX and Windows). On any exception the temporary file is
    removed and the exception propagates; an existing ``path`` is then left untouched. The
    parent directory is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------- labels TIFF


def _pyramid_shapes(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """Shapes of level 0 and each ×2 nearest-neighbour level until the longest side ≤ tile."""
    shapes = [shape]
    h, w = shape
    while max(h, w) > tile:
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    return shapes


def _iter_tiles(
    labels: Any, step: int, shape: tuple[int, int], tile: int, dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Tiles (row-major, zero-padded to ``tile×tile``) of ``labels[::step, ::step]``.

    Reads one tile-sized piece at a time, so a memmap (or zarr array) is never loaded whole.
    """
    info = np.iinfo(dtype)
    h, w = shape
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            ys = slice(y * step, min(y + tile, h) * step, step)
            xs = slice(x * step, min(x + tile, w) * step, step)
            piece = np.asarray(labels[ys, xs])
            if piece.size and piece.dtype != dtype:
                if np.issubdtype(piece.dtype, np.floating) and not np.all(piece == np.round(piece)):
                    raise ValueError("label image has non-integer values")
                lo, hi = piece.min(), piece.max()
                if lo < info.min or hi > info.max:
                    raise ValueError(f"label values [{lo}, {hi}] do not fit in {dtype.name}")
            out = np.zeros((tile, tile), dtype=dtype)
            out[: piece.shape[0], : piece.shape[1]] = piece
            del piece
            yield out
        release_rows(labels, y * step, min(y + tile, h) * step)


def write_labels_tif(
    path: str | PathLike[str],
    labels: Any,
    mpp: float | None = None,
    pyramid: bool | None = None,
    tile: int = 256,
    compression: str | None = "zlib",
    description: str | None = None,
    dtype: Any = np.uint32,
) -> Path:
    """Write a label image as a tiled (optionally pyramidal) TIFF, atomically.

    ``labels`` is a 2-D integer array or any array-like with ``shape``, ``dtype`` and 2-D
    slicing (``np.memmap``, zarr): it is read and written one ``tile×tile`` piece at a time,
    so a whole-slide label image on disk is never loaded into memory. Values are stored as
    ``dtype`` (uint32 by default; a ValueError is raised if they do not fit).

    With ``pyramid=True`` — or ``None`` and a side longer than :data:`AUTO_PYRAMID_SIZE` —
    reduced levels (×2 nearest-neighbour, ``labels[::2**k, ::2**k]``, until the longest side
    is ≤ ``tile``) are stored as SubIFDs of level 0 (NewSubfileType 1), the pyramid layout
    of OME-TIFF that tifffile reads as ``series[0].levels``; readers unaware of SubIFDs see
    a plain tiled image. ``mpp`` sets XResolution/YResolution in pixels per centimetre
    (scaled per level). ``tifffile.imread(path)`` returns level 0 exactly. ``description``
    goes to the ImageDescription tag (e.g. the JSON class table of ``STEM.tissue.tif``,
    written with ``dtype=np.uint8``).
    """
    import tifffile

    path = Path(path)
    if not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    shape = tuple(int(s) for s in labels.shape)
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D label image, got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"empty label image of shape {shape}")
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    dtype = np.dtype(dtype)
    if pyramid is None:
        pyramid = max(shape) > AUTO_PYRAMID_SIZE
    shapes = _pyramid_shapes(shape, tile) if pyramid else [shape]

    # Classic TIFF offsets are 32-bit; switch to BigTIFF well before the raw data could
    # reach that (compressed label images are usually far smaller).
    nbytes = sum(h * w for h, w in shapes) * dtype.itemsize
    common: dict[str, Any] = {
        "dtype": dtype,
        "tile": (tile, tile),
        "compression": compression,
        "photometric": "minisblack",
        "metadata": None,
    }
    with atomic_write(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**31) as tif:
        for level, level_shape in enumerate(shapes):
            extra: dict[str, Any] = {}
            if mpp is not None:
                ppcm = 1e4 / (float(mpp) * 2**level)
                extra["resolution"] = (ppcm, ppcm)
                extra["resolutionunit"] = "CENTIMETER"
            if level == 0:
                if len(shapes) > 1:
                    extra["subifds"] = len(shapes) - 1
                if description is not None:
                    extra["description"] = description
            else:
                extra["subfiletype"] = 1  # reduced-resolution image
            tif.write(
                _iter_tiles(labels, 2**level, level_shape, tile, dtype),
                shape=level_shape,
                **common,
                **extra,
            )
    return path


# --------------------------------------------------------------------------- objects


#: Decimals kept in the CSV and GeoJSON: centroids to 1/1000 px, measurements to 1e-4.
_DECIMALS = {"centroid_x": 3, "centroid_y": 3}
_DEFAULT_DECIMALS = 4


def _columns(
    measurements: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> tuple[list[int], dict[str, list[float | None]]]:
    """Ids and rounded values (``None`` where missing or non-finite) per column.

    Accepts the columnar dict of :func:`measure_objects` or a list of row dicts.
    """
    if isinstance(measurements, Mapping):
        cols = {k: np.asarray(v).ravel() for k, v in measurements.items()}
    else:
        rows = list(measurements)
        cols = {c: np.array([r.get(c, np.nan) for r in rows]) for c in COLUMNS if rows}
        cols.setdefault("id", np.zeros(0, np.int64))
    ids = np.asarray(cols["id"]).astype(np.int64).tolist()
    values: dict[str, list[float | None]] = {}
    for c in COLUMNS[1:]:
        if c not in cols:
            values[c] = [None] * len(ids)
            continue
        arr = np.asarray(cols[c], dtype=np.float64)
        if arr.shape != (len(ids),):
            raise ValueError(f"column {c!r} has {arr.size} values for {len(ids)} ids")
        rounded = np.round(arr, _DECIMALS.get(c, _DEFAULT_DECIMALS)).tolist()
        values[c] = [v if math.isfinite(v) else None for v in rounded]
    return ids, values


def _ring_coords(polygon: Any) -> list[list[int | float]]:
    """Closed exterior ring as JSON-ready ``[[x, y], ...]`` (integers kept as integers)."""
    if hasattr(polygon, "exterior"):
        coords = np.asarray(polygon.exterior.coords, dtype=np.float64)
    else:
        coords = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(coords) and not np.array_equal(coords[0], coords[-1]):
        coords = np.vstack([coords, coords[:1]])
    if len(coords) < 4 or not np.isfinite(coords).all():
        raise ValueError("a polygon needs at least 3 distinct, finite vertices")
    if np.array_equal(coords, np.round(coords)) and np.abs(coords).max() < 2**53:
        return coords.astype(np.int64).tolist()
    return np.round(coords, 3).tolist()


class ObjectWriter:
    """Stream nuclei into ``STEM.geojson`` and ``STEM.csv``, tile by tile, atomically.

    Use as a context manager::

        with ObjectWriter(out_dir, stem, mpp) as w:
            for tile in tiles:
                w.add(measure_objects(...), label_polygons(...))

    Both files are written to hidden temporaries and renamed into place on a clean
    :meth:`close` / ``__exit__``; on an exception (or :meth:`abort`) the temporaries are
    deleted and nothing appears. The GeoJSON is a QuPath-importable FeatureCollection: each
    nucleus is a Polygon Feature with a deterministic UUID ``id`` (what QuPath reads as the
    object ID), ``properties.objectType = "detection"``, ``properties.classification =
    {"name", "color"}``, ``properties.measurements = {readable name: number}`` (non-finite
    values omitted, since QuPath cannot read NaN) and ``properties.id`` = the label value.
    """

    def __init__(
        self,
        out_dir: str | PathLike[str],
        stem: str,
        mpp: float | None,
        classification: tuple[str, Sequence[int]] = NUCLEUS_CLASS,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.mpp = mpp
        name, color = classification
        self._classification = {"name": str(name), "color": [int(c) for c in color]}
        self.geojson_path = self.out_dir / f"{stem}.geojson"
        self.csv_path = self.out_dir / f"{stem}.csv"
        self.count = 0
        self._stack: contextlib.ExitStack | None = None
        self._geojson: Any = None
        self._csv: Any = None
        self._csv_writer: Any = None
        self._closed = False

    # -- lifecycle
    def open(self) -> ObjectWriter:
        """Create the temporary files (called by ``__enter__``)."""
        if self._stack is not None or self._closed:
            raise RuntimeError("ObjectWriter can be opened only once")
        stack = contextlib.ExitStack()
        try:
            gj_tmp = stack.enter_context(atomic_write(self.geojson_path))
            csv_tmp = stack.enter_context(atomic_write(self.csv_path))
            self._geojson = stack.enter_context(open(gj_tmp, "w", encoding="utf-8"))
            self._csv = stack.enter_context(open(csv_tmp, "w", encoding="utf-8", newline=""))
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        self._geojson.write('{"type": "FeatureCollection", "features": [')
        self._csv_writer = csv.writer(self._csv, lineterminator="\n")
        self._csv_writer.writerow(COLUMNS)
        return self

    def close(self) -> None:
        """Finish both files and move them into place."""
        if self._closed:
            return
        if self._stack is None:
            self.open()
        assert self._stack is not None
        self._closed = True
        stack, self._stack = self._stack, None
        try:
            self._geojson.write("\n]}\n")
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        stack.close()

    def abort(self) -> None:
        """Discard everything written so far; no output file appears."""
        self._closed = True
        if self._stack is not None:
            stack, self._stack = self._stack, None
            # Unwinding the stack "with an exception" makes each atomic_write delete its
            # temporary; the exception is not re-raised (ExitStack returns False).
            err = _Aborted("ObjectWriter aborted")
            stack.__exit__(_Aborted, err, None)

    def __enter__(self) -> ObjectWriter:
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- content
    def add(
        self,
        measurements: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        polygons: Mapping[int, Any],
    ) -> int:
        """Append nuclei: one CSV row and one Feature per measured id. Returns how many.

        ``measurements`` is the columnar dict of :func:`measure_objects` (or a list of row
        dicts with the same keys); ``polygons`` maps each id to a ``shapely.Polygon`` or a
        sequence of ``(x, y)`` vertices. An id without a polygon is a ValueError.
        """
        if self._stack is None:
            if self._closed:
                raise RuntimeError("ObjectWriter is closed")
            self.open()
        ids, values = _columns(measurements)
        named = [(name, values[column]) for column, name in MEASUREMENT_NAMES.items()]
        columns = [values[c] for c in COLUMNS[1:]]
        missing = [oid for oid in ids if oid not in polygons]
        if missing:
            raise ValueError(f"no polygon for object id(s) {missing[:5]}")
        for k, oid in enumerate(ids):
            measured = {name: vals[k] for name, vals in named if vals[k] is not None}
            feature = self._feature(oid, measured, polygons[oid])
            sep = "\n" if self.count == 0 else ",\n"
            self._geojson.write(sep + json.dumps(feature, ensure_ascii=False, allow_nan=False))
            self._csv_writer.writerow([oid, *(col[k] for col in columns)])
            self.count += 1
        return len(ids)

    def _feature(self, oid: int, measurements: dict[str, float], polygon: Any) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": str(uuid.uuid5(_UUID_NAMESPACE, f"{self.stem}/{oid}")),
            "geometry": {"type": "Polygon", "coordinates": [_ring_coords(polygon)]},
            "properties": {
                "objectType": "detection",
                "classification": self._classification,
                "measurements": measurements,
                "id": oid,
            },
        }


class _Aborted(Exception):
    """Thrown into the pending atomic writes of an aborted :class:`ObjectWriter`."""


def write_objects(
    out_dir: str | PathLike[str],
    stem: str,
    labels: np.ndarray,
    rgb: np.ndarray | None,
    mpp: float,
    offset: tuple[float, float] = (0, 0),
    classification: tuple[str, Sequence[int]] = NUCLEUS_CLASS,
    simplify: float = 0.0,
) -> int:
    """Measure and outline every object of one in-memory label image and write
    ``STEM.geojson`` + ``STEM.csv`` in ``out_dir``. Returns the number of objects."""
    measurements = measure_objects(labels, rgb, mpp, offset=offset)
    polygons = label_polygons(labels, offset=offset, simplify=simplify)
    with ObjectWriter(out_dir, stem, mpp, classification=classification) as writer:
        writer.add(measurements, polygons)
    return writer.count


# --------------------------------------------------------------------------- overlay


def write_overlay(
    path: str | PathLike[str],
    rgb: np.ndarray,
    labels: Any,
    max_size: int = 4096,
    color: Sequence[int] = (0, 255, 0),
) -> Path:
    """Write ``rgb`` with nucleus outlines drawn in ``color`` as a PNG, atomically.

    The output is ``rgb`` downscaled so its longest side is ≤ ``max_size``. ``labels`` may
    have a different (e.g. full-resolution, memmapped) shape than ``rgb`` — as when ``rgb``
    is a slide thumbnail: it is resampled by nearest neighbour onto the output grid, reading
    only the rows and columns it needs. Outlines are the inner object boundaries.
    """
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from zeropath.stain import as_rgb

    image = as_rgb(rgb)
    h, w = image.shape[:2]
    scale = min(1.0, max_size / max(h, w))
    oh, ow = max(1, round(h * scale)), max(1, round(w * scale))
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (oh, ow) != (h, w):
        pil = pil.resize((ow, oh), Image.Resampling.BOX)
    out = np.array(pil)

    lh, lw = labels.shape[:2]
    rows = np.minimum(((np.arange(oh) + 0.5) * lh / oh).astype(np.int64), lh - 1)
    cols = np.minimum(((np.arange(ow) + 0.5) * lw / ow).astype(np.int64), lw - 1)
    if (lh, lw) == (oh, ow):
        small = np.asarray(labels)
    else:
        small = np.stack([np.asarray(labels[int(r)])[cols] for r in rows])
    edges = find_boundaries(small, mode="inner")
    out[edges] = np.asarray(color, dtype=np.uint8)[:3]

    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG")
    return path


# --------------------------------------------------------------------------- run.json


def _jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, paths, sets, tuples; NaN/inf → None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_jsonable(v) for v in obj), key=str)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def write_run_json(path: str | PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` as pretty, strict JSON (UTF-8), atomically.

    numpy scalars and arrays, paths, sets and datetimes are converted; NaN and infinities
    become ``null`` so that the file is valid JSON for any reader.
    """
    path = Path(path)
    text = json.dumps(_jsonable(record), indent=2, ensure_ascii=False, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


__all__ = [
    "AUTO_PYRAMID_SIZE",
    "NUCLEUS_CLASS",
    "ObjectWriter",
    "atomic_write",
    "write_labels_tif",
    "write_objects",
    "write_overlay",
    "write_run_json",
]
