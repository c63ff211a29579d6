"""Nucleus polygons from ``STEM.geojson``, indexed for viewport queries and clicks.

The GeoJSON is read once into flat numpy arrays (vertices, ring and feature offsets,
bounding boxes, class indices, a measurement matrix) — far lighter than keeping a million
feature dicts — and a grid bucket index: features sorted by the grid cell of their bounding
box's top-left corner, so a box query visits only the cells it overlaps (widened by one cell,
since no indexed feature is larger than a cell; larger ones are always checked).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError
from zeropath.io.colors import parse_color

__all__ = ["NucleusClass", "NucleusIndex"]

#: Classification of features that have none.
UNCLASSIFIED = ("Unclassified", (160, 160, 160))


@dataclass(frozen=True)
class NucleusClass:
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "color": list(self.color)}


def _measurements(value: Any) -> dict[str, float]:
    """``{name: number}`` (or QuPath's older ``[{"name", "value"}]``) with numbers only."""
    if isinstance(value, list):
        value = {m.get("name"): m.get("value") for m in value if isinstance(m, dict)}
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


def _exterior_rings(geometry: Any) -> list[list[Any]]:
    if not isinstance(geometry, dict):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon" and coords:
        return [coords[0]]
    if kind == "MultiPolygon" and coords:
        return [poly[0] for poly in coords if poly]
    return []


def _boxes_and_centroids(
    vertices: np.ndarray, ring_starts: np.ndarray, feature_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes ``(n, 4)`` and area-weighted centroids ``(n, 2)`` of all features,
    vectorised over the flat vertex array (shoelace formula per ring)."""
    n = len(feature_starts) - 1
    if n == 0:
        return np.zeros((0, 4)), np.zeros((0, 2))
    pts = vertices.astype(np.float64)
    x, y = pts[:, 0], pts[:, 1]
    starts, ends = ring_starts[:-1], ring_starts[1:]
    nxt = np.arange(1, len(pts) + 1)
    nxt[ends - 1] = starts  # each ring's last vertex wraps to its first
    xn, yn = x[nxt], y[nxt]
    cross = x * yn - xn * y
    area2 = np.add.reduceat(cross, starts)  # twice the signed area of each ring
    sx = np.add.reduceat((x + xn) * cross, starts)
    sy = np.add.reduceat((y + yn) * cross, starts)
    count = (ends - starts).astype(np.float64)
    mx, my = np.add.reduceat(x, starts) / count, np.add.reduceat(y, starts) / count
    degenerate = np.abs(area2) < 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        rcx = np.where(degenerate, mx, sx / (3.0 * area2))
        rcy = np.where(degenerate, my, sy / (3.0 * area2))
    weight = np.where(degenerate, 1e-12, np.abs(area2))
    fs = feature_starts[:-1]
    w = np.add.reduceat(weight, fs)
    centroid = np.stack(
        [np.add.reduceat(weight * rcx, fs) / w, np.add.reduceat(weight * rcy, fs) / w], axis=1
    )
    vstart = ring_starts[fs]
    bbox = np.stack(
        [
            np.minimum.reduceat(x, vstart),
            np.minimum.reduceat(y, vstart),
            np.maximum.reduceat(x, vstart),
            np.maximum.reduceat(y, vstart),
        ],
        axis=1,
    )
    return bbox, centroid


def _point_in_ring(px: float, py: float, ring: np.ndarray) -> bool:
    """Even-odd ray casting."""
    x, y = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    crosses = (y > py) != (yn > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x + (py - y) * (xn - x) / (yn - y)
    return bool(np.count_nonzero(crosses & (px < xi)) % 2)


class NucleusIndex:
    """All nuclei of one GeoJSON with box queries, hit tests and per-id lookups."""

    def __init__(self, path: str | Path, cell: int = 512) -> None:
        self.path = Path(path)
        self.cell = int(cell)
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(self.path, f"cannot read nuclei GeoJSON: {exc}") from None
        features = data.get("features") if isinstance(data, dict) else data
        if not isinstance(features, list):
            raise InputError(self.path, "not a GeoJSON FeatureCollection")
        self._load(features)
        self._build_grid()

    # ---- loading

    def _load(self, features: list[Any]) -> None:
        class_of: dict[tuple[str, tuple[int, int, int]], int] = {}
        seen: dict[tuple[Any, Any], int] = {}  # raw (name, colour) → class index
        names: dict[str, int] = {}
        ids, cls, vertices, ring_starts, feat_starts = [], [], [], [0], [0]
        rows: list[dict[str, float]] = []
        for k, feat in enumerate(features):
            if not isinstance(feat, dict):
                continue
            rings = []
            for ring in _exterior_rings(feat.get("geometry")):
                try:
                    arr = np.asarray(ring, dtype=np.float64)[:, :2]
                except (TypeError, ValueError, IndexError):
                    continue
                if arr.ndim == 2 and len(arr) >= 3 and np.isfinite(arr).all():
                    rings.append(arr)
            if not rings:
                continue
            props = feat.get("properties") or {}
            raw_id = props.get("id", k + 1)
            try:
                oid = int(raw_id)
            except (TypeError, ValueError):
                oid = k + 1
            c = props.get("classification") or {}
            if not isinstance(c, dict):
                c = {"name": str(c)}
            name, color = c.get("name"), c.get("color", UNCLASSIFIED[1])
            raw = (name, tuple(color) if isinstance(color, list) else color)
            try:
                ci = seen.get(raw)
            except TypeError:  # unhashable oddities: no shortcut
                raw, ci = None, None
            if ci is None:
                key = (str(name or UNCLASSIFIED[0]), parse_color(color, UNCLASSIFIED[1]))
                ci = class_of.setdefault(key, len(class_of))
                if raw is not None:
                    seen[raw] = ci
            cls.append(ci)
            m = _measurements(props.get("measurements"))
            for name in m:
                names.setdefault(name, len(names))
            rows.append(m)
            ids.append(oid)
            for r in rings:
                vertices.append(r)
                ring_starts.append(ring_starts[-1] + len(r))
            feat_starts.append(feat_starts[-1] + len(rings))
        n = len(ids)
        self.classes = [NucleusClass(name, color) for (name, color) in class_of]
        self.measurement_names = list(names)
        self.ids = np.asarray(ids, np.int64)
        self.class_index = np.asarray(cls, np.int32)
        self.vertices = (
            np.concatenate(vertices).astype(np.float32) if n else np.zeros((0, 2), np.float32)
        )
        self.ring_starts = np.asarray(ring_starts, np.int64)
        self.feature_starts = np.asarray(feat_starts, np.int64)
        self.values = np.full((n, len(names)), np.nan)
        for i, m in enumerate(rows):
            for name, v in m.items():
                self.values[i, names[name]] = v
        self.bbox, self.centroid = _boxes_and_centroids(
            self.vertices, self.ring_starts, self.feature_starts
        )
        self._row_of = {int(oid): i for i, oid in enumerate(self.ids)}

    def _build_grid(self) -> None:
        n = len(self.ids)
        size = self.bbox[:, 2:] - self.bbox[:, :2]
        big = (size > self.cell).any(axis=1) if n else np.zeros(0, bool)
        self._big = np.flatnonzero(big)
        small = np.flatnonzero(~big)
        cx = np.floor(self.bbox[small, 0] / self.cell).astype(np.int64)
        cy = np.floor(self.bbox[small, 1] / self.cell).astype(np.int64)
        self._gx0 = int(cx.min()) if len(small) else 0
        self._gy0 = int(cy.min()) if len(small) else 0
        self._gw = int(cx.max()) - self._gx0 + 1 if len(small) else 1
        self._gh = int(cy.max()) - self._gy0 + 1 if len(small) else 1
        keys = (cy - self._gy0) * self._gw + (cx - self._gx0)
        order = np.argsort(keys, kind="stable")
        self._members = small[order]
        self._cell_starts = np.searchsorted(keys[order], np.arange(self._gw * self._gh + 1))

    # ---- queries

    def __len__(self) -> int:
        return len(self.ids)

    def rings(self, row: int) -> list[np.ndarray]:
        """The exterior ring(s) of the feature at ``row``."""
        a, b = self.feature_starts[row], self.feature_starts[row + 1]
        return [self.vertices[self.ring_starts[r] : self.ring_starts[r + 1]] for r in range(a, b)]

    def class_counts(self) -> list[int]:
        return np.bincount(self.class_index, minlength=len(self.classes)).tolist()

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Rows whose bounding box overlaps the level-0 box ``[x0, x1] × [y0, y1]``, sorted."""
        if x1 < x0 or y1 < y0 or not len(self.ids):
            return np.zeros(0, np.int64)
        # a small feature starts at most one cell before the box (it is no larger than a cell)
        gx_lo = max(math.floor(x0 / self.cell) - 1 - self._gx0, 0)
        gx_hi = min(math.floor(x1 / self.cell) - self._gx0, self._gw - 1)
        gy_lo = max(math.floor(y0 / self.cell) - 1 - self._gy0, 0)
        gy_hi = min(math.floor(y1 / self.cell) - self._gy0, self._gh - 1)
        parts = [self._big]
        if gx_lo <= gx_hi and gy_lo <= gy_hi:
            for gy in range(gy_lo, gy_hi + 1):
                a = self._cell_starts[gy * self._gw + gx_lo]
                b = self._cell_starts[gy * self._gw + gx_hi + 1]
                parts.append(self._members[a:b])
        rows = np.concatenate(parts)
        bb = self.bbox[rows]
        keep = (bb[:, 0] <= x1) & (bb[:, 2] >= x0) & (bb[:, 1] <= y1) & (bb[:, 3] >= y0)
        return np.sort(rows[keep])

    def row_of(self, oid: int) -> int | None:
        """Row of the nucleus with ``properties.id == oid``, or None."""
        return self._row_of.get(int(oid))

    def hit(self, x: float, y: float, radius: float = 0.0) -> int | None:
        """Row of the nucleus under level-0 point ``(x, y)``; else the one whose outline's
        centroid is nearest within ``radius`` (for clicks on tiny nuclei); else None."""
        rows = self.query(x - radius, y - radius, x + radius, y + radius)
        inside = [r for r in rows if any(_point_in_ring(x, y, ring) for ring in self.rings(r))]
        if inside:
            # nested or overlapping outlines: the smallest one is the most specific
            return int(min(inside, key=lambda r: np.prod(self.bbox[r, 2:] - self.bbox[r, :2])))
        if radius <= 0 or not len(rows):
            return None
        d = np.hypot(self.centroid[rows, 0] - x, self.centroid[rows, 1] - y)
        best = int(np.argmin(d))
        return int(rows[best]) if d[best] <= radius else None

    # ---- JSON

    def outline(self, row: int, decimals: int = 1) -> dict[str, Any]:
        """Compact drawing record: id, class index, flat ``[x, y, x, y, …]`` rings."""
        return {
            "id": int(self.ids[row]),
            "c": int(self.class_index[row]),
            "rings": [
                np.round(r.astype(np.float64), decimals).ravel().tolist() for r in self.rings(row)
            ],
        }

    def details(self, row: int) -> dict[str, Any]:
        """Everything the measurement panel shows about one nucleus."""
        vals = self.values[row]
        return {
            "id": int(self.ids[row]),
            "classification": self.classes[self.class_index[row]].to_dict(),
            "measurements": {
                name: float(vals[j])
                for j, name in enumerate(self.measurement_names)
                if math.isfinite(vals[j])
            },
            "centroid": [round(float(v), 2) for v in self.centroid[row]],
            "bbox": [round(float(v), 2) for v in self.bbox[row]],
            "rings": self.outline(row, decimals=2)["rings"],
        }
