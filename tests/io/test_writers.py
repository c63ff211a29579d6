"""Output writers (zeropath.io.writers): labels TIFF, GeoJSON/CSV, overlay, run.json."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
from PIL import Image

from zeropath.io import writers
from zeropath.io.measure import COLUMNS, MEASUREMENT_NAMES, label_polygons, measure_objects
from zeropath.io.writers import (
    ObjectWriter,
    atomic_write,
    write_labels_tif,
    write_objects,
    write_overlay,
    write_run_json,
)
from zeropath.testing import render_nuclei


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- atomic_write


def test_atomic_write_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".out.txt.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "new"  # the previous file is untouched
    with pytest.raises(KeyError), atomic_write(tmp_path / "never.txt") as tmp:
        tmp.write_text("x")
        raise KeyError("boom")
    assert not (tmp_path / "never.txt").exists()
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- labels TIFF


def test_labels_tif_round_trip_small(tmp_path):
    labels = np.arange(70 * 90, dtype=np.int64).reshape(70, 90) % 1000
    before = labels.copy()
    path = write_labels_tif(tmp_path / "a.labels.tif", labels, mpp=0.5, tile=32)
    np.testing.assert_array_equal(labels, before)
    back = tifffile.imread(path)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (32, 32)
        assert len(tif.series[0].levels) == 1
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.5)
    assert _leftovers(tmp_path) == []


def test_labels_tif_pyramid(tmp_path):
    _, labels, _ = render_nuclei((200, 300), n=30)
    path = write_labels_tif(
        tmp_path / "p.labels.tif", labels, mpp=0.25, pyramid=True, tile=64, description="{}"
    )
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1  # reduced levels live in SubIFDs, not top-level pages
        assert tif.pages[0].description == "{}"
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(200, 300), (100, 150), (50, 75), (25, 38)]
        for k, level in enumerate(levels):
            assert level.dtype == np.uint32
            np.testing.assert_array_equal(level.asarray(), labels[:: 2**k, :: 2**k])
            num, den = level.keyframe.tags["XResolution"].value
            assert num / den == pytest.approx(1e4 / (0.25 * 2**k))
        assert levels[1].keyframe.subfiletype == 1


def test_labels_tif_auto_pyramid_threshold(tmp_path, monkeypatch):
    labels = np.ones((40, 100), np.uint8)
    monkeypatch.setattr(writers, "AUTO_PYRAMID_SIZE", 64)
    with tifffile.TiffFile(write_labels_tif(tmp_path / "x.tif", labels, tile=16)) as tif:
        assert len(tif.series[0].levels) > 1
    with tifffile.TiffFile(write_labels_tif(tmp_path / "y.tif", labels[:, :60], tile=16)) as tif:
        assert len(tif.series[0].levels) == 1


def test_labels_tif_from_memmap(tmp_path):
    npy = tmp_path / "l.npy"
    mm = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint16, shape=(300, 520))
    mm[:] = 0
    mm[10:50, 400:515] = 65535
    mm[250:, :7] = 3
    mm.flush()
    ro = np.load(npy, mmap_mode="r")
    path = write_labels_tif(tmp_path / "m.labels.tif", ro, mpp=0.5, pyramid=True, tile=128)
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(300, 520), (150, 260), (75, 130), (38, 65)]
        np.testing.assert_array_equal(levels[0].asarray(), ro)
        np.testing.assert_array_equal(levels[2].asarray(), ro[::4, ::4])


def test_labels_tif_rejects_values_that_do_not_fit(tmp_path):
    bad = np.full((20, 20), -1, np.int32)
    with pytest.raises(ValueError):
        write_labels_tif(tmp_path / "bad.tif", bad)
    assert not (tmp_path / "bad.tif").exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- objects


def test_geojson_and_csv_structure(tmp_path):
    rgb, labels, _ = render_nuclei((128, 160), n=12, seed=3)
    rgb0, labels0 = rgb.copy(), labels.copy()
    offset = (1000, 500)
    n = write_objects(tmp_path, "tile", labels, rgb, mpp=0.25, offset=offset)
    np.testing.assert_array_equal(rgb, rgb0)
    np.testing.assert_array_equal(labels, labels0)
    ids = sorted(int(i) for i in np.unique(labels) if i)
    assert n == len(ids) == 12

    doc = json.loads((tmp_path / "tile.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == n
    seen = []
    for feature in doc["features"]:
        assert feature["type"] == "Feature"
        uuid.UUID(feature["id"])  # QuPath reads the Feature id as the object's UUID
        assert "objectType" not in feature and "object_type" not in feature["properties"]
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == "Nucleus"
        assert len(props["classification"]["color"]) == 3
        assert set(props["measurements"]) == set(MEASUREMENT_NAMES.values())
        for value in props["measurements"].values():
            assert isinstance(value, int | float) and not isinstance(value, bool)
            assert np.isfinite(value)
        oid = props["id"]
        seen.append(oid)
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        ring = geometry["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        poly = shapely.Polygon(ring)
        assert poly.is_valid
        yy, xx = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]]
        drawn = shapely.contains_xy(poly, xx + 0.5 + offset[0], yy + 0.5 + offset[1])
        mask = labels == oid
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.8
    assert sorted(seen) == ids

    rows = _read_csv(tmp_path / "tile.csv")
    assert list(rows[0]) == list(COLUMNS) and len(rows) == n
    m = measure_objects(labels, rgb, 0.25, offset=offset)
    assert [int(r["id"]) for r in rows] == m["id"].tolist()
    np.testing.assert_allclose([float(r["centroid_x"]) for r in rows], m["centroid_x"], atol=1e-3)
    np.testing.assert_allclose([float(r["centroid_y"]) for r in rows], m["centroid_y"], atol=1e-3)
    np.testing.assert_allclose([float(r["area_um2"]) for r in rows], m["area_um2"], atol=1e-4)
    assert all(float(r["centroid_x"]) >= offset[0] for r in rows)
    assert _leftovers(tmp_path) == []


def test_zero_objects_give_empty_outputs(tmp_path):
    assert write_objects(tmp_path, "blank", np.zeros((32, 32), np.uint32), None, 0.5) == 0
    doc = json.loads((tmp_path / "blank.geojson").read_text())
    assert doc == {"type": "FeatureCollection", "features": []}
    lines = (tmp_path / "blank.csv").read_text().splitlines()
    assert lines == [",".join(COLUMNS)]


def test_object_writer_streams_tiles(tmp_path):
    """Tiles with a halo, each writing the objects whose centroid it owns, give the same
    objects as the whole image at once (offsets applied correctly)."""
    rgb, labels, _ = render_nuclei((96, 192), n=10, seed=5)
    halo, width = 24, 64
    with ObjectWriter(tmp_path, "slide", 0.5, classification=("Tumor", (200, 0, 0))) as w:
        for x0 in range(0, labels.shape[1], width):
            lo, hi = max(0, x0 - halo), min(labels.shape[1], x0 + width + halo)
            tile, tile_rgb = labels[:, lo:hi], rgb[:, lo:hi]
            m = measure_objects(tile, tile_rgb, 0.5, offset=(lo, 0))
            own = m["id"][(m["centroid_x"] >= x0) & (m["centroid_x"] < x0 + width)]
            w.add(
                measure_objects(tile, tile_rgb, 0.5, offset=(lo, 0), ids=own),
                label_polygons(tile, offset=(lo, 0), ids=own),
            )
    assert w.count == len(np.unique(labels)) - 1
    write_objects(
        tmp_path / "whole", "slide", labels, rgb, 0.5, classification=("Tumor", (200, 0, 0))
    )
    rows = sorted(_read_csv(tmp_path / "slide.csv"), key=lambda r: int(r["id"]))
    assert rows == _read_csv(tmp_path / "whole" / "slide.csv")
    streamed = json.loads((tmp_path / "slide.geojson").read_text())["features"]
    whole = json.loads((tmp_path / "whole" / "slide.geojson").read_text())["features"]
    key = lambda f: f["properties"]["id"]  # noqa: E731
    assert sorted(streamed, key=key) == sorted(whole, key=key)
    assert streamed[0]["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}


def test_object_writer_without_stain(tmp_path):
    _, labels, _ = render_nuclei((64, 64), n=3, seed=6)
    with ObjectWriter(tmp_path, "nostain", 0.5) as w:
        w.add(measure_objects(labels, None, 0.5), label_polygons(labels))
    # Without rgb the stain measurements are NaN: omitted from GeoJSON, empty in the CSV.
    feature = json.loads((tmp_path / "nostain.geojson").read_text())["features"][0]
    assert "Hematoxylin OD mean" not in feature["properties"]["measurements"]
    assert "Area µm^2" in feature["properties"]["measurements"]
    assert _read_csv(tmp_path / "nostain.csv")[0]["mean_hematoxylin_od"] == ""


def test_object_writer_accepts_rows_and_vertex_lists(tmp_path):
    rows = [{"id": 3, "centroid_x": 1.5, "centroid_y": 2.5, "area_um2": float("nan")}]
    with ObjectWriter(tmp_path, "r", 1.0) as w:
        w.add(rows, {3: [(1, 2), (3, 2), (3, 4)]})
    feature = json.loads((tmp_path / "r.geojson").read_text())["features"][0]
    assert feature["geometry"]["coordinates"] == [[[1, 2], [3, 2], [3, 4], [1, 2]]]
    assert feature["properties"]["measurements"] == {}
    assert feature["properties"]["id"] == 3
    assert _read_csv(tmp_path / "r.csv")[0]["area_um2"] == ""


def test_object_writer_is_atomic(tmp_path):
    _, labels, _ = render_nuclei((64, 64), n=3, seed=2)
    m, polys = measure_objects(labels, None, 0.5), label_polygons(labels)
    with pytest.raises(RuntimeError), ObjectWriter(tmp_path, "fail", 0.5) as w:
        w.add(m, polys)
        raise RuntimeError("interrupted")
    with pytest.raises(ValueError), ObjectWriter(tmp_path, "nopoly", 0.5) as w:
        w.add(m, {})
    writer = ObjectWriter(tmp_path, "aborted", 0.5).open()
    writer.add(m, polys)
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- overlay, run.json


def test_overlay(tmp_path):
    rgb, labels, _ = render_nuclei((120, 200), n=8, seed=4)
    rgb0 = rgb.copy()
    path = write_overlay(tmp_path / "o.overlay.png", rgb, labels, max_size=100, color=(0, 255, 0))
    np.testing.assert_array_equal(rgb, rgb0)
    img = np.asarray(Image.open(path))
    assert img.shape == (60, 100, 3)
    assert np.all(img == (0, 255, 0), axis=-1).sum() > 8 * 4

    # A thumbnail with full-resolution labels, and a full-size overlay.
    small = np.asarray(Image.fromarray(rgb).resize((50, 30)))
    img = np.asarray(Image.open(write_overlay(tmp_path / "t.png", small, labels)))
    assert img.shape == (30, 50, 3)
    img = np.asarray(Image.open(write_overlay(tmp_path / "f.png", rgb, labels, color=(255, 0, 0))))
    red = np.all(img == (255, 0, 0), axis=-1)
    assert red.any() and not red[labels == 0].any()  # 'inner' outlines stay on the nuclei
    assert _leftovers(tmp_path) == []


def test_run_json(tmp_path):
    record = {
        "version": "0.1.0",
        "model": {"name": "classical", "sha256": None},
        "mpp": np.float32(0.25),
        "count": np.int64(12),
        "shape": (3, 4),
        "hist": np.arange(3),
        "bad": float("nan"),
        "path": tmp_path,
    }
    path = write_run_json(tmp_path / "run.json", record)
    text = path.read_text(encoding="utf-8")
    back = json.loads(text)
    assert back["mpp"] == 0.25 and back["count"] == 12
    assert back["shape"] == [3, 4] and back["hist"] == [0, 1, 2]
    assert back["bad"] is None and back["path"] == str(tmp_path)
    assert "\n  " in text  # pretty-printed
    assert _leftovers(tmp_path) == []
