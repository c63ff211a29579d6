"""Point annotations from CSV and QuPath GeoJSON, lookup by image stem, and jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zeropath.errors import InputError
from zeropath.points.io import (
    find_points_file,
    jitter_points,
    read_points,
    read_points_csv,
    read_points_for,
    read_points_geojson,
)


def test_csv(tmp_path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("\ufeffid, X ,Y,score\n1,10.5,20\n\n2,3,4.25\n", encoding="utf-8")
    xy = read_points_csv(p)
    assert xy.dtype == np.float64
    np.testing.assert_array_equal(xy, [[10.5, 20.0], [3.0, 4.25]])
    empty = tmp_path / "e.csv"
    empty.write_text("x,y\n")
    assert read_points(empty).shape == (0, 2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("a,b\n1,2\n", "no 'x' and 'y'"),
        ("x,y\n1,abc\n", "line 2"),
        ("x,y\n1\n", "line 2"),
        ("x,y\n1,nan\n", "finite"),
    ],
)
def test_bad_csv(tmp_path, text: str, match: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_points_csv(p)


def _feature(geom: dict) -> dict:
    return {"type": "Feature", "properties": {"objectType": "annotation"}, "geometry": geom}


def test_geojson_points_multipoints_and_lists(tmp_path) -> None:
    feats = [
        _feature({"type": "Point", "coordinates": [1.0, 2.0]}),
        _feature({"type": "MultiPoint", "coordinates": [[3, 4], [5, 6]]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
        _feature(
            {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [7, 8]}]}
        ),
    ]
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    np.testing.assert_array_equal(read_points(p), [[1, 2], [3, 4], [5, 6], [7, 8]])
    q = tmp_path / "b.json"  # QuPath may also write a bare list of features
    q.write_text(json.dumps(feats[:2]))
    assert read_points(q).shape == (3, 2)
    r = tmp_path / "c.geojson"
    r.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert read_points_geojson(r).shape == (0, 2)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid GeoJSON"),
        ('"text"', "expected a GeoJSON"),
        (json.dumps([_feature({"type": "Polygon", "coordinates": []})]), "found: Polygon"),
        (json.dumps([_feature({"type": "Point", "coordinates": [1]})]), "malformed Point"),
        (json.dumps([3]), "must be objects"),
    ],
)
def test_bad_geojson(tmp_path, content: str, match: str) -> None:
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(InputError, match=match):
        read_points_geojson(p)


def test_lookup_by_stem(tmp_path) -> None:
    (tmp_path / "img1.csv").write_text("x,y\n1,2\n")
    (tmp_path / "img2.geojson").write_text(
        json.dumps(_feature({"type": "Point", "coordinates": [5, 6]}))
    )
    np.testing.assert_array_equal(read_points_for(tmp_path, "img1"), [[1, 2]])
    np.testing.assert_array_equal(read_points_for(tmp_path, "img2"), [[5, 6]])
    with pytest.raises(InputError, match="no point file"):
        find_points_file(tmp_path, "img3")
    (tmp_path / "img1.geojson").write_text("[]")
    with pytest.raises(InputError, match="several"):
        find_points_file(tmp_path, "img1")
    with pytest.raises(InputError, match="does not exist"):
        find_points_file(tmp_path / "nope", "img1")
    with pytest.raises(InputError, match=r"\.csv or \.geojson"):
        read_points(tmp_path / "x.txt")
    with pytest.raises(InputError, match="cannot read"):
        read_points(tmp_path / "missing.csv")


def test_jitter_is_uniform_in_the_disc() -> None:
    xy = np.zeros((20000, 2))
    moved = jitter_points(xy, 8.0, np.random.default_rng(0))
    r = np.hypot(*moved.T)
    assert r.max() <= 8.0
    assert r.mean() == pytest.approx(2 * 8.0 / 3, rel=0.02)  # E[r] = 2R/3 when uniform in area
    assert (r < 4.0).mean() == pytest.approx(0.25, abs=0.02)
    same = jitter_points(np.array([[1.0, 2.0]]), 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, [[1.0, 2.0]])
    a = jitter_points(xy[:5], 3.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, jitter_points(xy[:5], 3.0, np.random.default_rng(1)))
