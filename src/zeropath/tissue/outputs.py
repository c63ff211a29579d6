"""Files of a tissue run: class-map TIFF, GeoJSON annotations, overlay with legend, score store.

* ``STEM.tissue.tif`` — uint8 class index per pixel at the output resolution (an integer
  downsample ``ds`` of level 0: pixel ``(r, c)`` covers level-0 ``[c·ds, (c+1)·ds) ×
  [r·ds, (r+1)·ds)``), nearest-neighbour upsampled from the score grid on the fly, tiled,
  pyramidal for slides; ImageDescription is JSON ``{"classes": [...], "mpp": ...}``.
* ``STEM.tissue.geojson`` — one QuPath annotation per connected class region (4-connected
  cells), exact cell outlines with holes, in level-0 pixels; background (index 0) is not drawn.
* ``STEM.tissue.overlay.png`` — the thumbnail tinted with the class colours, region outlines,
  and a legend panel on the right.
* ``STEM.scores.zarr`` — per-class score maps on the score grid (see :func:`write_scores_zarr`).

Writers take numpy arrays and write atomically (through :func:`zeropath.io.writers.atomic_write`
or into a staging folder the caller moves into place).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.tissue.grid import ScoreGrid

__all__ = [
    "UpsampledClassMap",
    "class_regions",
    "output_downsample",
    "write_class_tif",
    "write_overlay",
    "write_regions_geojson",
    "write_scores_zarr",
]

_UUID_NAMESPACE = uuid.UUID("2f1e4a57-9c1b-4d7e-8a35-0b6f3c9d2e10")


def output_downsample(slide_mpp: float, out_mpp: float | None) -> int:
    """Integer level-0 downsample of the class-map TIFF for a requested µm/px (≥ 1)."""
    if out_mpp is None or out_mpp <= 0:
        return 1
    return max(1, int(round(float(out_mpp) / float(slide_mpp))))


class UpsampledClassMap:
    """The class grid seen at a level-0 downsample ``ds``, computed slice by slice.

    Behaves like a read-only 2-D uint8 array of shape ``(ceil(H/ds), ceil(W/ds))`` for
    :func:`zeropath.io.writers.write_labels_tif`, which reads one tile at a time, so the
    full-size map never exists in memory. Output pixel centres pick their cell.
    """

    dtype = np.dtype(np.uint8)
    ndim = 2

    def __init__(self, classes: np.ndarray, grid: ScoreGrid, ds: int) -> None:
        self._classes = np.asarray(classes, np.uint8)
        h = -(-grid.height // ds)
        w = -(-grid.width // ds)
        self.shape = (h, w)
        self._rows = grid.cells_of((np.arange(h) + 0.5) * ds, grid.rows)
        self._cols = grid.cells_of((np.arange(w) + 0.5) * ds, grid.cols)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key, slice(None))
        rows = self._rows[key[0]]
        cols = self._cols[key[1]]
        return self._classes[np.ix_(np.atleast_1d(rows), np.atleast_1d(cols))].reshape(
            np.shape(rows) + np.shape(cols)
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def write_class_tif(
    path: str | PathLike[str],
    classes: np.ndarray,
    grid: ScoreGrid,
    ds: int,
    table: Sequence[Mapping[str, Any]],
    pyramid: bool | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``STEM.tissue.tif`` (see the module docstring); ``extra`` joins the description."""
    from zeropath.io.writers import write_labels_tif

    mpp = float(grid.slide_mpp) * ds
    description = {"classes": [dict(row) for row in table], "mpp": mpp, "downsample": ds}
    description.update(extra or {})
    return write_labels_tif(
        path,
        UpsampledClassMap(classes, grid, ds),
        mpp=mpp,
        pyramid=pyramid,
        description=json.dumps(description, ensure_ascii=True),
        dtype=np.uint8,
    )


# --------------------------------------------------------------------------- regions


def class_regions(
    classes: np.ndarray, grid: ScoreGrid, skip: Sequence[int] = (0,)
) -> list[tuple[int, Any]]:
    """``[(class index, shapely Polygon in level-0 pixels), ...]``, one per connected region.

    Cells of a class are merged row-run by row-run into rectangles and unioned, so outlines
    follow cell edges exactly (with holes); cells touching only at a corner are separate
    regions. Ordered by class index, then by the region's top-left corner.
    """
    import shapely
    from shapely.geometry.polygon import orient

    classes = np.asarray(classes)
    ex = grid.cell_edges_x()
    ey = grid.cell_edges_y()
    out: list[tuple[int, Any]] = []
    for value in np.unique(classes):
        if int(value) in skip:
            continue
        boxes = []
        for r in range(classes.shape[0]):
            hit = np.concatenate([[False], classes[r] == value, [False]])
            edges = np.flatnonzero(hit[1:] != hit[:-1])
            for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
                boxes.append(shapely.box(int(c0), r, int(c1), r + 1))
        merged = shapely.union_all(boxes)
        parts = list(getattr(merged, "geoms", [merged]))
        polys = []
        for part in parts:
            if part.is_empty or part.geom_type != "Polygon":
                continue
            part = shapely.simplify(part, 0.0)  # drop collinear vertices of the merged runs
            scaled = shapely.transform(
                part,
                lambda xy: np.column_stack(
                    [
                        np.interp(xy[:, 0], np.arange(ex.size), ex),
                        np.interp(xy[:, 1], np.arange(ey.size), ey),
                    ]
                ),
            )
            polys.append(orient(scaled, 1.0))
        polys.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
        out.extend((int(value), p) for p in polys)
    return out


def _ring(coords: Any) -> list[list[float]]:
    xy = np.round(np.asarray(coords, np.float64), 3)
    return [[float(x), float(y)] for x, y in xy]


def write_regions_geojson(
    path: str | PathLike[str],
    regions: Sequence[tuple[int, Any]],
    table: Sequence[Mapping[str, Any]],
    stem: str,
    mpp: float | None,
) -> Path:
    """Write the class regions as a QuPath-importable FeatureCollection of annotations.

    Each Feature: a Polygon (exterior + holes) in level-0 pixels, ``properties.objectType =
    "annotation"``, ``classification = {"name", "color"}``, ``name`` = the class name,
    ``measurements`` = area in µm² (and pixels), ``class_index``; a deterministic UUID ``id``.
    """
    from zeropath.io.writers import atomic_write

    by_index = {int(row["index"]): row for row in table}
    features = []
    for n, (index, poly) in enumerate(regions):
        row = by_index[index]
        area = float(poly.area)
        measurements = {"Area px^2": round(area, 3)}
        if mpp:
            measurements["Area µm^2"] = round(area * float(mpp) ** 2, 3)
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(_UUID_NAMESPACE, f"{stem}/{index}/{n}")),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_ring(poly.exterior.coords)]
                    + [_ring(hole.coords) for hole in poly.interiors],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": str(row["name"]),
                    "classification": {
                        "name": str(row["name"]),
                        "color": [int(v) for v in row["color"]],
                    },
                    "class_index": int(index),
                    "isLocked": False,
                    "measurements": measurements,
                },
            }
        )
    text = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False)
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- overlay


def _legend(rows: Sequence[Mapping[str, Any]], height: int) -> np.ndarray:
    """A white RGB panel listing each class' colour swatch and name."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    line = 22
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((probe.textlength(str(r["name"]), font=font) for r in rows), default=0)
    width = int(12 + 18 + 8 + text_w + 12)
    panel = Image.new("RGB", (width, max(height, 12 + line * len(rows))), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for n, r in enumerate(rows):
        y = 10 + n * line
        draw.rectangle(
            [12, y, 30, y + 16], fill=tuple(int(v) for v in r["color"]), outline=(0, 0, 0)
        )
        draw.text((38, y), str(r["name"]), fill=(0, 0, 0), font=font)
    return np.asarray(panel)


def write_overlay(
    path: str | PathLike[str],
    thumbnail: np.ndarray,
    classes: np.ndarray,
    grid: ScoreGrid,
    table: Sequence[Mapping[str, Any]],
    alpha: float = 0.45,
) -> Path:
    """Write the thumbnail tinted by class (background untouched), outlines and a legend."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from zeropath.io.writers import atomic_write

    thumb = np.asarray(thumbnail, np.uint8)
    th, tw = thumb.shape[:2]
    rows = grid.cells_of((np.arange(th) + 0.5) * grid.height / th, grid.rows)
    cols = grid.cells_of((np.arange(tw) + 0.5) * grid.width / tw, grid.cols)
    small = np.asarray(classes, np.uint8)[rows[:, None], cols[None, :]]
    lut = np.zeros((256, 3), np.float32)
    for row in table:
        lut[int(row["index"])] = row["color"]
    tinted = small > 0
    out = thumb.astype(np.float32)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * lut[small[tinted]]
    edges = find_boundaries(small, mode="inner") & tinted
    out[edges] = lut[small[edges]]
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    present = set(np.unique(small).tolist())
    legend_rows = [r for r in table if int(r["index"]) in present or int(r["index"]) > 0]
    legend = _legend(legend_rows, th)
    canvas = np.full((max(th, legend.shape[0]), tw + legend.shape[1], 3), 255, np.uint8)
    canvas[:th, :tw] = image
    canvas[: legend.shape[0], tw:] = legend
    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path


# --------------------------------------------------------------------------- score store


def write_scores_zarr(
    path: str | PathLike[str],
    scores: np.ndarray,
    raw: np.ndarray,
    coverage: np.ndarray,
    tissue: np.ndarray,
    classes: np.ndarray,
    attrs: Mapping[str, Any],
) -> Path:
    """Write ``STEM.scores.zarr`` (a zarr v3 group) on the score grid.

    Arrays: ``scores`` (C × rows × cols float32: smoothed mean cosine similarity per scored
    class, what the argmax used; NaN where no tile was read), ``raw`` (the same before
    smoothing), ``coverage`` (uint16 tiles per cell), ``tissue`` (bool), ``classes`` (uint8
    class map). ``attrs`` (JSON) describe the axes: ``score_classes`` lists the classes of the
    first axis, ``cell_px_level0`` the cell size, and the run's parameters.
    """
    import zarr

    from zeropath.io.writers import _jsonable

    path = Path(path)
    group = zarr.open_group(store=str(path), mode="w")
    rows, cols = coverage.shape
    chunk = (min(rows, 1024), min(cols, 1024))
    n = int(scores.shape[0])
    for name, data in (("scores", scores), ("raw", raw)):
        arr = group.create_array(
            name, shape=data.shape, chunks=(1, *chunk), dtype="float32", fill_value=np.nan
        )
        if n:
            arr[...] = np.asarray(data, np.float32)
    cov = np.minimum(np.asarray(coverage), np.iinfo(np.uint16).max).astype(np.uint16)
    for name, data, dtype, fill in (
        ("coverage", cov, "uint16", 0),
        ("tissue", np.asarray(tissue, bool), "bool", False),
        ("classes", np.asarray(classes, np.uint8), "uint8", 0),
    ):
        arr = group.create_array(name, shape=data.shape, chunks=chunk, dtype=dtype, fill_value=fill)
        arr[...] = data
    group.attrs.update(_jsonable(dict(attrs)))
    return path
