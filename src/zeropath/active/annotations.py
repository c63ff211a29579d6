"""Where region labels come from: oracle masks, annotators' mask PNGs, QuPath GeoJSON.

Label images hold class indices per pixel. A binary mask stored as 0/255 (GlaS) is read as
classes 0/1; any other image is taken as class indices as is.

GeoJSON (QuPath "export annotations", coordinates in level-0 image pixels) is rasterised into a
region's box: Polygon / MultiPolygon features (holes respected) in file order, later features
overwriting earlier ones, each filled with the class its ``properties.classification.name``
(or ``properties.name``) names — a class name (case-insensitive) or a class index. Pixels no
polygon covers take class ``fill`` (0). Rasterisation is ``skimage.draw.polygon`` on pixel
centres after clipping the geometry to the box with shapely.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError

__all__ = [
    "LABEL_SUFFIXES",
    "find_label",
    "rasterise_geojson",
    "read_class_mask",
    "read_geojson",
    "to_classes",
]

LABEL_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff")


def to_classes(arr: np.ndarray) -> np.ndarray:
    """A label array as class indices (uint8/int): 0/255 binary → 0/1, else unchanged."""
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    values = np.unique(a)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        return (a == 255).astype(np.uint8)
    return a


def find_label(label_dir: str | os.PathLike[str], stem: str) -> Path:
    """The label file of ``stem`` in ``label_dir`` (``STEM.png``/``.tif``/``.tiff``)."""
    root = Path(label_dir)
    for suffix in LABEL_SUFFIXES:
        p = root / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise InputError(root, f"no label image for {stem!r} (looked for {stem}.png/.tif)")


def read_class_mask(path: str | os.PathLike[str], n_classes: int | None = None) -> np.ndarray:
    """A label image as class indices; values ``>= n_classes`` are an :class:`InputError`."""
    from zeropath.io.datasets import read_label_image

    mask = to_classes(read_label_image(path))
    if n_classes is not None and mask.size and int(mask.max()) >= n_classes:
        raise InputError(
            path, f"label value {int(mask.max())} but only {n_classes} classes (0..{n_classes - 1})"
        )
    return mask.astype(np.int64 if mask.dtype.itemsize > 1 else np.uint8)


def read_geojson(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The features of a GeoJSON file (FeatureCollection, list of features, or one feature)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read GeoJSON: {exc}") from None
    if isinstance(data, list):
        feats = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features") or []
    elif isinstance(data, dict) and data.get("type") == "Feature":
        feats = [data]
    else:
        raise InputError(path, "not a GeoJSON Feature or FeatureCollection")
    return [f for f in feats if isinstance(f, dict)]


def _class_of(feature: Mapping[str, Any], names: Sequence[str], where: str) -> int:
    props = feature.get("properties") or {}
    cls = props.get("classification")
    name = cls.get("name") if isinstance(cls, dict) else cls
    if name is None:
        name = props.get("name")
    if name is None:
        raise InputError(where, "a GeoJSON annotation has no classification name")
    text = str(name).strip()
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise InputError(where, f"annotation class {text!r} is not one of {', '.join(names)}")


def rasterise_geojson(
    features: Sequence[Mapping[str, Any]],
    box: tuple[int, int, int, int],
    class_names: Sequence[str],
    fill: int = 0,
    where: str = "<geojson>",
) -> np.ndarray:
    """Class-index mask of the ``(y0, x0, y1, x1)`` box from GeoJSON polygons (module doc)."""
    from shapely.geometry import box as shapely_box
    from shapely.geometry import shape
    from skimage.draw import polygon as draw_polygon

    y0, x0, y1, x1 = box
    out = np.full((y1 - y0, x1 - x0), fill, np.int64)
    frame = shapely_box(x0, y0, x1, y1)
    for feat in features:
        geom = feat.get("geometry")
        if not geom or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        value = _class_of(feat, class_names, where)
        try:
            clipped = shape(geom).buffer(0).intersection(frame)
        except Exception as exc:  # shapely errors on malformed coordinates
            raise InputError(where, f"invalid GeoJSON geometry: {exc}") from None
        polys = getattr(clipped, "geoms", [clipped])
        for poly in polys:
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            region = np.zeros(out.shape, bool)
            for k, coords in enumerate([poly.exterior.coords, *(r.coords for r in poly.interiors)]):
                xy = np.asarray(coords, np.float64)
                if len(xy) < 3:
                    continue
                rr, cc = draw_polygon(xy[:, 1] - y0 - 0.5, xy[:, 0] - x0 - 0.5, shape=out.shape)
                region[rr, cc] = k == 0
            out[region] = value
    return out
