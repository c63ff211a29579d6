"""Per-nucleus measurements and outline polygons (zeropath.io.measure)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely
from skimage.measure import find_contours, regionprops

from zeropath.io.measure import COLUMNS, label_polygons, measure_objects
from zeropath.stain import hed_od
from zeropath.testing import render_nuclei


def _square(size: int = 20, lo: int = 5, hi: int = 15, value: int = 7) -> np.ndarray:
    lab = np.zeros((size, size), np.uint32)
    lab[lo:hi, lo:hi] = value
    return lab


def _grid_of_discs(shape=(1000, 1000), cell=24, radius=9.0) -> np.ndarray:
    """Thousands of disc-shaped objects, built without a per-object loop."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    ids = (yy // cell) * (shape[1] // cell + 1) + xx // cell + 1
    cy, cx = (yy // cell) * cell + cell / 2, (xx // cell) * cell + cell / 2
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return np.where(inside, ids, 0).astype(np.uint32)


def _pixel_mask(poly: shapely.Polygon, shape: tuple[int, int], offset=(0, 0)) -> np.ndarray:
    """Rasterise a pixel-corner polygon: a pixel is in when its centre is."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return shapely.contains_xy(poly, xx + 0.5 + offset[0], yy + 0.5 + offset[1])


# ---------------------------------------------------------------------------- measurements


def test_square_hand_computed():
    m = measure_objects(_square(), None, mpp=0.5, offset=(100, 200))
    assert list(m) == list(COLUMNS)
    assert m["id"].tolist() == [7] and m["id"].dtype == np.uint32
    assert m["area_um2"][0] == pytest.approx(25.0)  # 100 px × 0.25 µm²
    assert m["centroid_x"][0] == pytest.approx(109.5)  # columns 5..14, offset 100
    assert m["centroid_y"][0] == pytest.approx(209.5)
    # Marching-squares contour: 4 straight runs of 9 px plus 4 corner cuts of √0.5 px.
    assert m["perimeter_um"][0] == pytest.approx((36 + 4 * np.sqrt(0.5)) * 0.5)
    assert m["solidity"][0] == pytest.approx(1.0)
    assert m["eccentricity"][0] == pytest.approx(0.0, abs=1e-12)
    assert m["major_axis_um"][0] == pytest.approx(m["minor_axis_um"][0])
    # Enclosed area 100 - 4/8 px²; circularity of a square is π/4 in the limit.
    assert m["circularity"][0] == pytest.approx(4 * np.pi * 99.5 / (36 + 4 * np.sqrt(0.5)) ** 2)
    assert np.isnan(m["mean_hematoxylin_od"][0])


def test_uniform_stain_colour():
    colour = np.array([70, 40, 150], np.uint8)
    lab = _square(value=3)
    rgb = np.full((*lab.shape, 3), 235, np.uint8)
    rgb[lab > 0] = colour
    m = measure_objects(lab, rgb, mpp=0.25)
    expected_h, expected_e = _qupath_he_default(colour)
    assert expected_h > 0.3
    assert m["mean_hematoxylin_od"][0] == pytest.approx(expected_h, rel=1e-5)
    assert m["max_hematoxylin_od"][0] == pytest.approx(expected_h, rel=1e-5)
    assert m["mean_eosin_od"][0] == pytest.approx(expected_e, rel=1e-5, abs=1e-6)


def _qupath_he_default(colour):
    """Hematoxylin and eosin OD of one RGB colour by QuPath's definition, written out:
    OD_c = max(0, -log10(max(I_c, 1) / 255)); stains H = (0.65111, 0.70119, 0.29049) and
    E = (0.2159, 0.8012, 0.5581) normalised, residual = normalised H × E; amounts solve
    amounts · [H; E; R] = OD."""
    od = [max(0.0, -np.log10(max(float(c), 1.0) / 255.0)) for c in colour]
    h = np.array([0.65111, 0.70119, 0.29049]) / np.linalg.norm([0.65111, 0.70119, 0.29049])
    e = np.array([0.2159, 0.8012, 0.5581]) / np.linalg.norm([0.2159, 0.8012, 0.5581])
    r = np.cross(h, e)
    r /= np.linalg.norm(r)
    amounts = np.linalg.solve(np.stack([h, e, r]).T, np.array(od))
    return float(amounts[0]), float(amounts[1])


def test_stain_columns_are_qupaths_he_default_not_ruifrok():
    # an eosin-rich colour: Ruifrok's eosin vector gave a value 2-3x below QuPath's
    colour = np.array([230, 120, 190], np.uint8)
    lab = _square(value=1)
    rgb = np.full((*lab.shape, 3), 255, np.uint8)
    rgb[lab > 0] = colour
    m = measure_objects(lab, rgb, mpp=0.5)
    h, e = _qupath_he_default(colour)
    assert m["mean_eosin_od"][0] == pytest.approx(e, rel=1e-5)
    assert m["mean_hematoxylin_od"][0] == pytest.approx(h, rel=1e-5, abs=1e-6)
    ruifrok_e = float(hed_od(colour[None, None])[0, 0, 1])
    assert abs(m["mean_eosin_od"][0] - ruifrok_e) > 0.05


def test_matches_regionprops_on_synthetic_nuclei(synthetic_tile):
    rgb, labels, _ = synthetic_tile
    m = measure_objects(labels, rgb, mpp=0.25)
    props = {p.label: p for p in regionprops(labels)}
    assert m["id"].tolist() == sorted(props)
    for k, oid in enumerate(m["id"]):
        p = props[int(oid)]
        assert m["area_um2"][k] == pytest.approx(p.area * 0.0625)
        assert m["centroid_y"][k] == pytest.approx(p.centroid[0])
        assert m["centroid_x"][k] == pytest.approx(p.centroid[1])
        assert m["eccentricity"][k] == pytest.approx(p.eccentricity, abs=1e-9)
        assert m["major_axis_um"][k] == pytest.approx(p.axis_major_length * 0.25)
        assert m["minor_axis_um"][k] == pytest.approx(p.axis_minor_length * 0.25)
        contour = find_contours(np.pad(labels == oid, 1).astype(float), 0.5)
        length = sum(np.hypot(*np.diff(c, axis=0).T).sum() for c in contour)
        assert m["perimeter_um"][k] == pytest.approx(length * 0.25)
        assert 0.5 < m["solidity"][k] <= 1.0
    assert np.all((m["circularity"] > 0.7) & (m["circularity"] <= 1.0))
    # Nuclei are dark purple: far more hematoxylin than the pink stroma.
    assert np.all(m["mean_hematoxylin_od"] > 0.3)
    assert np.all(m["max_hematoxylin_od"] >= m["mean_hematoxylin_od"])


def test_ids_subset_and_large_ids():
    lab = np.zeros((30, 30), np.uint32)
    lab[2:6, 2:6] = 4_000_000_001
    lab[10:14, 10:20] = 17
    lab[20:28, 20:22] = 5
    m = measure_objects(lab, None, mpp=1.0)
    assert m["id"].tolist() == [5, 17, 4_000_000_001]
    sub = measure_objects(lab, None, mpp=1.0, ids=[17, 4_000_000_001, 999])
    assert sub["id"].tolist() == [17, 4_000_000_001]
    full = {c: m[c][1:] for c in COLUMNS}
    for c in COLUMNS:
        np.testing.assert_allclose(sub[c], full[c])


def test_zero_objects_and_tiny_objects():
    empty = measure_objects(np.zeros((16, 16), np.int32), np.zeros((16, 16, 3), np.uint8), 0.5)
    assert list(empty) == list(COLUMNS)
    assert all(len(v) == 0 for v in empty.values())
    lab = np.zeros((8, 8), np.uint8)
    lab[1, 1] = 1
    lab[4, 4:6] = 2
    m = measure_objects(lab, None, mpp=1.0)
    assert m["area_um2"].tolist() == [1.0, 2.0]
    for c in COLUMNS[1:10]:
        assert np.all(np.isfinite(m[c])), c
    assert m["circularity"][0] == pytest.approx(np.pi / 4)  # a diamond inside one pixel


def test_inputs_not_mutated_and_errors():
    rgb, labels, _ = render_nuclei((64, 64), n=4, seed=1)
    rgb0, labels0 = rgb.copy(), labels.copy()
    measure_objects(labels, rgb, 0.5, ids=[1, 2])
    label_polygons(labels, offset=(3, 4), ids=[1, 2], simplify=1.0)
    np.testing.assert_array_equal(rgb, rgb0)
    np.testing.assert_array_equal(labels, labels0)
    with pytest.raises(ValueError):
        measure_objects(labels, rgb[:10], 0.5)
    with pytest.raises(ValueError):
        measure_objects(labels, rgb, 0.0)
    with pytest.raises(ValueError):
        measure_objects(labels[None], None, 0.5)
    with pytest.raises(ValueError):
        measure_objects(-labels.astype(np.int64), None, 0.5)


def test_fast_on_thousands_of_objects():
    lab = _grid_of_discs()
    n = len(np.unique(lab)) - 1
    assert n > 1500
    rgb = np.full((*lab.shape, 3), 200, np.uint8)
    measure_objects(lab[:100, :100], rgb[:100, :100], 0.5)  # warm-up (lazy imports)
    start = time.perf_counter()
    m = measure_objects(lab, rgb, 0.5)
    assert time.perf_counter() - start < 1.5
    assert m["id"].size == n
    start = time.perf_counter()
    polys = label_polygons(lab)
    assert time.perf_counter() - start < 3.0
    assert len(polys) == n


# ---------------------------------------------------------------------------- polygons


def test_polygons_cover_objects_exactly(synthetic_tile):
    _, labels, _ = synthetic_tile
    polys = label_polygons(labels, offset=(1000, 2000))
    assert sorted(polys) == sorted(int(i) for i in np.unique(labels) if i)
    for oid, poly in polys.items():
        assert isinstance(poly, shapely.Polygon)
        assert poly.is_valid and poly.exterior.is_ccw and not poly.interiors
        coords = np.asarray(poly.exterior.coords)
        assert np.array_equal(coords[0], coords[-1])
        mask = labels == oid
        drawn = _pixel_mask(poly, labels.shape, offset=(1000, 2000))
        np.testing.assert_array_equal(drawn, mask)
        assert poly.area == mask.sum()


def test_polygon_of_square_and_offset():
    poly = label_polygons(_square(lo=2, hi=5, value=1), offset=(10, 20))[1]
    assert shapely.equals(poly, shapely.box(12, 22, 15, 25))
    assert len(poly.exterior.coords) == 5  # no collinear vertices


def test_polygons_tiny_pieces_and_holes():
    lab = np.zeros((12, 12), np.int32)
    lab[1, 1] = 1  # single pixel
    lab[3, 3] = 2  # two pieces touching diagonally: the larger one (2 px) is kept
    lab[4, 4:6] = 2
    lab[6:11, 6:11] = 3  # ring: the hole is filled
    lab[8, 8] = 0
    lab[0, 11] = 4  # at the image border
    polys = label_polygons(lab)
    assert shapely.equals(polys[1], shapely.box(1, 1, 2, 2))
    assert shapely.equals(polys[2], shapely.box(4, 4, 6, 5))
    assert shapely.equals(polys[3], shapely.box(6, 6, 11, 11))
    assert shapely.equals(polys[4], shapely.box(11, 0, 12, 1))
    assert all(p.is_valid and p.area > 0 for p in polys.values())
    assert label_polygons(np.zeros((5, 5), np.uint32)) == {}
    assert sorted(label_polygons(lab, ids=[3, 4])) == [3, 4]


def test_simplified_polygons_stay_close(synthetic_tile):
    _, labels, _ = synthetic_tile
    exact = label_polygons(labels)
    simple = label_polygons(labels, simplify=1.0)
    for oid, poly in simple.items():
        assert poly.is_valid
        assert len(poly.exterior.coords) <= len(exact[oid].exterior.coords)
        mask = labels == oid
        drawn = _pixel_mask(poly, labels.shape)
        iou = (drawn & mask).sum() / (drawn | mask).sum()
        assert iou > 0.8
