"""Point annotations (one click per nucleus) from CSV and QuPath GeoJSON, and point jitter.

Coordinates are ``(x, y) = (col, row)`` in level-0 pixels of the image they annotate, returned
as float64 ``(N, 2)`` arrays. A directory of annotations holds one file per image stem:
``DIR/STEM.csv`` (columns ``x`` and ``y``, any others ignored) or ``DIR/STEM.geojson`` (QuPath
export: ``Point`` and ``MultiPoint`` geometries; other geometry types are skipped). Unusable
files raise :class:`~zeropath.errors.InputError`.
"""

from __future__ import annotations

import csv
import json
import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError

__all__ = [
    "POINT_SUFFIXES",
    "find_points_file",
    "jitter_points",
    "read_points",
    "read_points_csv",
    "read_points_for",
    "read_points_geojson",
]

#: suffixes of point files, in lookup order
POINT_SUFFIXES = (".csv", ".geojson", ".json")


def _finite(xy: list[list[float]], path: Path) -> np.ndarray:
    arr = np.asarray(xy, np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise InputError(path, "point coordinates must be finite numbers")
    return arr


def read_points_csv(path: str | PathLike[str]) -> np.ndarray:
    """``(N, 2)`` xy from a CSV with a header holding ``x`` and ``y`` (case-insensitive)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(path, "empty CSV; expected a header with x and y columns")
            names = [h.strip().lower() for h in header]
            if "x" not in names or "y" not in names:
                raise InputError(path, f"CSV header {header} has no 'x' and 'y' columns")
            ix, iy = names.index("x"), names.index("y")
            xy = []
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                try:
                    xy.append([float(row[ix]), float(row[iy])])
                except (IndexError, ValueError):
                    raise InputError(path, f"line {line}: x and y must be numbers") from None
    except OSError as exc:
        raise InputError(path, f"cannot read points: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text CSV file") from None
    return _finite(xy, path)


def _geometry_points(geom: Any, path: Path, out: list[list[float]], kinds: set[str]) -> None:
    if not isinstance(geom, dict):
        return
    kind = geom.get("type")
    kinds.add(str(kind))
    coords = geom.get("coordinates")
    try:
        if kind == "Point":
            out.append([float(coords[0]), float(coords[1])])
        elif kind == "MultiPoint":
            out.extend([float(c[0]), float(c[1])] for c in coords)
        elif kind == "GeometryCollection":
            for g in geom.get("geometries") or []:
                _geometry_points(g, path, out, kinds)
    except (TypeError, IndexError, ValueError):
        raise InputError(path, f"malformed {kind} coordinates") from None


def read_points_geojson(path: str | PathLike[str]) -> np.ndarray:
    """``(N, 2)`` xy from the ``Point``/``MultiPoint`` geometries of a GeoJSON file.

    Accepts a ``FeatureCollection``, a single ``Feature`` or geometry, or a JSON list of
    features (QuPath writes either). Files with features but no point geometry at all (e.g.
    polygons exported by mistake) are an error; an empty collection gives zero points.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot read points: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid GeoJSON ({exc})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features")
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items = [data]
    else:
        items = None
    if not isinstance(items, list):
        raise InputError(path, "expected a GeoJSON FeatureCollection, Feature or list of them")
    out: list[list[float]] = []
    kinds: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise InputError(path, "GeoJSON features must be objects")
        geom = item.get("geometry") if item.get("type") == "Feature" else item
        _geometry_points(geom, path, out, kinds)
    if items and not out and not kinds & {"Point", "MultiPoint"}:
        found = ", ".join(sorted(kinds)) or "none"
        raise InputError(path, f"no Point or MultiPoint geometry (found: {found})")
    return _finite(out, path)


def read_points(path: str | PathLike[str]) -> np.ndarray:
    """``(N, 2)`` xy from a ``.csv`` or ``.geojson``/``.json`` file (chosen by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_points_csv(path)
    if suffix in (".geojson", ".json"):
        return read_points_geojson(path)
    raise InputError(path, "point files must be .csv or .geojson")


def find_points_file(points_dir: str | PathLike[str], stem: str) -> Path:
    """``DIR/STEM.csv`` or ``DIR/STEM.geojson`` (or ``.json``); exactly one must exist."""
    d = Path(points_dir)
    if not d.is_dir():
        raise InputError(d, "points directory does not exist")
    found = [d / f"{stem}{s}" for s in POINT_SUFFIXES if (d / f"{stem}{s}").is_file()]
    if not found:
        raise InputError(d, f"no point file for image '{stem}' (expected {stem}.csv/.geojson)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(d, f"several point files for image '{stem}' ({names}); keep one")
    return found[0]


def read_points_for(points_dir: str | PathLike[str], stem: str) -> np.ndarray:
    """The points of image ``stem`` from ``points_dir`` (see :func:`find_points_file`)."""
    return read_points(find_points_file(points_dir, stem))


def jitter_points(xy: np.ndarray, max_shift_px: float, rng: np.random.Generator) -> np.ndarray:
    """Each point moved by a displacement drawn uniformly from the disc of radius
    ``max_shift_px`` (uniform in area: ``r = R·sqrt(u)``, uniform angle). A new array."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if not max_shift_px > 0 or not len(xy):
        return xy.copy()
    r = float(max_shift_px) * np.sqrt(rng.random(len(xy)))
    theta = rng.random(len(xy)) * (2 * math.pi)
    return xy + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
