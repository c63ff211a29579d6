"""``zeropath view``: Deep Zoom maths, output discovery, tissue/nuclei layers, the HTTP API."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from helpers.viewer_data import (
    BACKGROUND_ROWS,
    HEIGHT,
    LYMPHOCYTE,
    NUCLEUS,
    STROMA,
    TISSUE_SCALE,
    TUMOR,
    WIDTH,
    make_viewer_data,
    viewer_process,
)
from zeropath.cli.main import cli
from zeropath.errors import InputError
from zeropath.viewer.app import create_viewer
from zeropath.viewer.catalog import discover, output_stem
from zeropath.viewer.dzi import DeepZoom, DziGeometry, LRUCache, slide_renderer
from zeropath.viewer.nuclei import NucleusIndex
from zeropath.viewer.server import Router, ServerError, ViewerServer
from zeropath.viewer.tissuemap import TissueMap, parse_classes


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_viewer_data(tmp_path_factory.mktemp("viewer"))


def decode(png_or_jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png_or_jpeg)))


# --------------------------------------------------------------------------- Deep Zoom maths


def test_dzi_levels_grid_and_edge_tiles():
    g = DziGeometry(1500, 1200)
    assert g.max_level == 11 and g.level_count == 12
    assert g.level_dimensions(11) == (1500, 1200)
    assert g.level_dimensions(10) == (750, 600)
    assert g.level_dimensions(1) == (2, 2) and g.level_dimensions(0) == (1, 1)
    assert g.tile_grid(11) == (6, 5)
    first = g.tile_box(11, 0, 0)
    assert (first.x, first.y, first.width, first.height) == (0, 0, 255, 255)  # overlap: one side
    inner = g.tile_box(11, 1, 1)
    assert (inner.x, inner.y, inner.width, inner.height) == (253, 253, 256, 256)
    edge = g.tile_box(11, 5, 4)
    assert (edge.x, edge.width, edge.y, edge.height) == (1269, 231, 1015, 185)
    coarse = g.tile_box(9, 1, 1)  # level 9 is 375×300, downsample 4
    assert (coarse.x0, coarse.y0, coarse.width0, coarse.height0) == (1012, 1012, 488, 188)
    with pytest.raises(IndexError):
        g.tile_box(11, 6, 0)
    with pytest.raises(IndexError):
        g.level_dimensions(12)
    assert DziGeometry(1, 1).level_count == 1
    assert DziGeometry(257, 3).level_count == 10


@pytest.mark.parametrize("size", [(1500, 1200), (257, 3), (1024, 1024), (1, 1), (5000, 17)])
def test_dzi_geometry_matches_openslide_deepzoom(size):
    from openslide import ImageSlide
    from openslide.deepzoom import DeepZoomGenerator
    from PIL import Image

    slide = ImageSlide(Image.new("RGB", size))
    ref = DeepZoomGenerator(slide, tile_size=254, overlap=1, limit_bounds=False)
    g = DziGeometry(*size)
    assert g.level_count == ref.level_count
    for level in range(g.level_count):
        assert g.level_dimensions(level) == ref.level_dimensions[level]
        assert g.tile_grid(level) == ref.level_tiles[level]
        cols, rows = g.tile_grid(level)
        for col in {0, cols // 2, cols - 1}:
            for row in {0, rows // 2, rows - 1}:
                box = g.tile_box(level, col, row)
                assert (box.width, box.height) == ref.get_tile_dimensions(level, (col, row))
                (x0, y0), _, _ = ref.get_tile_coordinates(level, (col, row))
                assert (box.x0, box.y0) == (x0, y0)
    xml = ET.fromstring(g.descriptor("jpeg"))
    assert xml.get("TileSize") == "254" and xml.get("Overlap") == "1"
    assert xml[0].get("Width") == str(size[0]) and xml[0].get("Height") == str(size[1])


def test_deepzoom_tiles_from_slide(data):
    from zeropath.io.reader import open_image

    with open_image(data.slide) as source:
        full = source.read_region(0, 0, WIDTH, HEIGHT)
        g = DziGeometry(WIDTH, HEIGHT)
        dz = DeepZoom(g, slide_renderer(source), "jpeg", LRUCache(1 << 20))
        box = g.tile_box(11, 1, 1)
        pixels = dz.tile_pixels(11, 1, 1)
        assert np.array_equal(pixels, full[box.y : box.y + 256, box.x : box.x + 256])
        assert dz.tile_pixels(11, 5, 4).shape == (185, 231, 3)
        overview = dz.tile_pixels(9, 0, 0)  # 375×300 level: one tile, downsampled 4×
        assert overview.shape == (255, 255, 3)
        jpeg = decode(dz.tile(0, 0, 0))
        assert jpeg.shape[:2] == (1, 1)
        assert dz.tile(11, 0, 0) is dz.tile(11, 0, 0)  # served from the cache


def test_lru_cache_evicts_oldest_within_budget():
    cache = LRUCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"90ab")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"90ab"
    assert cache.size == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None


# --------------------------------------------------------------------------- layers


def test_tissue_map_renders_slide_aligned_colours(data):
    tissue = TissueMap(data.tissue, (WIDTH, HEIGHT))
    assert tissue.shape == (HEIGHT // TISSUE_SCALE, WIDTH // TISSUE_SCALE)
    assert [c["name"] for c in tissue.legend()] == ["background", "tumor", "stroma"]
    rgba = tissue.render(0, 0, WIDTH, HEIGHT, 300, 240)  # 5× downsampled whole slide
    assert rgba.shape == (240, 300, 4)
    bg_rows = BACKGROUND_ROWS * TISSUE_SCALE // 5
    assert (rgba[: bg_rows - 1, :, 3] == 0).all()  # background is transparent
    assert tuple(rgba[100, 10]) == (*TUMOR["color"], 255)
    assert tuple(rgba[100, 290]) == (*STROMA["color"], 255)
    # full resolution: the class boundary falls at the slide's x = WIDTH / 2
    edge = tissue.render(740, 600, 20, 1, 20, 1)
    boundary = (WIDTH // TISSUE_SCALE // 2) * TISSUE_SCALE - 740
    assert tuple(edge[0, boundary - 1, :3]) == tuple(TUMOR["color"])
    assert tuple(edge[0, boundary, :3]) == tuple(STROMA["color"])


def test_tissue_map_uses_stated_downsample_and_pyramid_levels(tmp_path):
    from zeropath.io.writers import write_labels_tif

    # slide 1501×1201 at downsample 4: the map is ceil(…/4) = 376×301 pixels
    classes = np.full((301, 376), 2, np.uint8)
    classes[:, :188] = 1
    table = {"classes": [TUMOR, STROMA], "mpp": 2.0, "downsample": 4}
    path = tmp_path / "s.tissue.tif"
    write_labels_tif(
        path, classes, pyramid=True, tile=64, description=json.dumps(table), dtype=np.uint8
    )
    tissue = TissueMap(path, (1501, 1201))
    assert len(tissue._shapes) > 2  # pyramidal
    edge = tissue.render(740, 600, 20, 1, 20, 1)
    assert tuple(edge[0, 11, :3]) == tuple(TUMOR["color"])  # slide x = 751
    assert tuple(edge[0, 12, :3]) == tuple(STROMA["color"])  # slide x = 752 = 188 · 4
    coarse = tissue.render(0, 0, 1501, 1201, 47, 38)  # served from a reduced level
    assert 2 in tissue._levels or 3 in tissue._levels
    assert tuple(coarse[20, 5, :3]) == tuple(TUMOR["color"])
    assert tuple(coarse[20, 40, :3]) == tuple(STROMA["color"])


def test_parse_classes_tolerates_missing_or_odd_descriptions():
    assert parse_classes(None) == ([], None)
    assert parse_classes("not json") == ([], None)
    assert parse_classes('{"shape": [3, 4]}') == ([], None)
    classes, mpp = parse_classes(
        json.dumps(
            {
                "classes": [
                    {"index": 0, "name": "background", "color": [0, 0, 0]},
                    {"index": 3, "name": "tumor", "color": [300, -5, 7]},
                    {"name": "no index"},
                    {"index": 999, "name": "out of range"},
                ],
                "mpp": "2.5",
            }
        )
    )
    assert [(c.index, c.name, c.transparent) for c in classes] == [
        (0, "background", True),
        (3, "tumor", False),
        (2, "no index", False),
    ]
    assert classes[1].color == (255, 0, 7) and mpp == 2.5


def test_tissue_map_rejects_non_index_images(tmp_path):
    import tifffile

    bad = tmp_path / "x.tissue.tif"
    tifffile.imwrite(bad, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="class index"):
        TissueMap(bad, (32, 32))
    junk = tmp_path / "y.tissue.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="cannot read tissue map"):
        TissueMap(junk, (32, 32))


def test_nucleus_index_queries_hits_and_details(data):
    index = NucleusIndex(data.geojson, cell=128)
    assert len(index) == len(data.nuclei)
    assert [c.name for c in index.classes] == [NUCLEUS["name"], LYMPHOCYTE["name"]]
    assert index.class_counts() == [6, 2]
    for n in data.nuclei:
        row = index.row_of(n["id"])
        assert index.hit(n["cx"], n["cy"]) == row
        assert index.hit(n["cx"] + n["r"] + 3, n["cy"]) is None  # just outside
        assert index.hit(n["cx"] + n["r"] + 3, n["cy"], radius=n["r"] + 5) == row
        details = index.details(row)
        assert details["measurements"] == n["m"]
        assert details["classification"] == n["class"]
        assert details["centroid"] == pytest.approx([n["cx"], n["cy"]], abs=0.01)
    rows = index.query(250, 350, 560, 420)  # nuclei 1 and 2 only
    assert sorted(int(index.ids[r]) for r in rows) == [1, 2]
    assert index.row_of(12345) is None


def test_nucleus_index_query_matches_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    features = []
    for i in range(400):
        cx, cy = rng.uniform(0, 5000, 2)
        r = rng.uniform(2, 40) if i % 50 else 900.0  # a few polygons larger than a cell
        ang = np.linspace(0, 2 * np.pi, 9)[:-1]
        ring = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).tolist()
        geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
        if i % 7 == 0:  # MultiPolygon, QuPath-style list measurements, packed colour
            geometry = {"type": "MultiPolygon", "coordinates": [[ring], [[[0, 0], [1, 0], [0, 1]]]]}
        props = {
            "id": i + 1,
            "classification": {"name": "A", "color": -16711936},
            "measurements": [{"name": "Area", "value": float(i)}],
        }
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    features.append({"type": "Feature", "geometry": None, "properties": {}})  # skipped
    path = tmp_path / "many.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    index = NucleusIndex(path, cell=256)
    assert len(index) == 400
    assert index.classes[0].color == (0, 255, 0)
    assert index.details(index.row_of(8))["measurements"] == {"Area": 7.0}
    for _ in range(50):
        x0, y0 = rng.uniform(-500, 5000, 2)
        x1, y1 = x0 + rng.uniform(0, 2000), y0 + rng.uniform(0, 2000)
        bb = index.bbox
        expect = np.flatnonzero(
            (bb[:, 0] <= x1) & (bb[:, 2] >= x0) & (bb[:, 1] <= y1) & (bb[:, 3] >= y0)
        )
        assert index.query(x0, y0, x1, y1).tolist() == expect.tolist()


def test_nucleus_index_rejects_non_geojson(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read nuclei GeoJSON"):
        NucleusIndex(bad)
    odd = tmp_path / "odd.geojson"
    odd.write_text('{"type": "FeatureCollection", "features": 3}')
    with pytest.raises(InputError, match="FeatureCollection"):
        NucleusIndex(odd)


# --------------------------------------------------------------------------- discovery


def test_output_stem_kinds():
    assert output_stem("a.b.geojson") == ("a.b", "nuclei")
    assert output_stem("s.tissue.geojson") == ("s", "tissue_geojson")
    assert output_stem("s.tissue.tif") == ("s", "tissue")
    assert output_stem("s.labels.tif") == ("s", "labels")
    assert output_stem("s.tif") is None and output_stem(".geojson") is None


def test_discover_output_folder_finds_slide_through_run_json(data):
    cat = discover(data.out)
    assert cat.stems == ["sample"] and cat.warnings == []
    e = cat.entries[0]
    assert e.slide == data.slide
    assert (e.nuclei, e.tissue, e.labels) == (
        data.geojson,
        data.tissue,
        data.out / "sample.labels.tif",
    )
    # one output file: its folder, restricted to its stem
    assert discover(data.geojson).entries[0].slide == data.slide
    assert discover(data.out / "run.json").stems == ["sample"]


def test_discover_slide_with_outputs(data):
    e = discover(data.slide, outputs=data.out).entries[0]
    assert (e.stem, e.nuclei, e.tissue) == ("sample", data.geojson, data.tissue)
    bare = discover(data.slide).entries[0]  # no outputs beside the slide: slide only
    assert (bare.nuclei, bare.tissue) == (None, None)
    # a folder of slides plus an outputs folder
    assert discover(data.slide.parent, outputs=data.out).entries[0].nuclei == data.geojson
    # a folder of slides only
    assert discover(data.slide.parent).entries[0].slide == data.slide


def test_discover_sibling_slide_without_run_json(tmp_path, data):
    import shutil

    root = tmp_path / "proj"
    (root / "out").mkdir(parents=True)
    shutil.copy(data.slide, root / "sample.tif")
    shutil.copy(data.geojson, root / "out" / "sample.geojson")
    (root / "out" / "orphan.geojson").write_text('{"features": []}')
    cat = discover(root / "out")
    assert cat.stems == ["sample"]
    assert cat.entries[0].slide == root / "sample.tif"
    assert "orphan" in cat.warnings[0]


def test_discover_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover(tmp_path / "missing")
    with pytest.raises(InputError, match="no slides"):
        discover(tmp_path)
    (tmp_path / "lost.geojson").write_text('{"features": []}')
    with pytest.raises(InputError, match="cannot find the slide of 'lost'"):
        discover(tmp_path)
    with pytest.raises(InputError, match="outputs folder"):
        discover(tmp_path, outputs=tmp_path / "nope")


# --------------------------------------------------------------------------- HTTP API


@pytest.fixture(scope="module")
def api(data):
    server, session = create_viewer(data.out, port=0)
    server.start()
    yield server.url
    server.shutdown()
    session.close()


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def fetch_json(url: str) -> tuple[int, dict]:
    status, ctype, body = fetch(url)
    assert ctype == "application/json"
    return status, json.loads(body)


def test_api_pages_and_static_assets(api):
    status, ctype, body = fetch(api)
    assert status == 200 and ctype.startswith("text/html") and b"viewer.js" in body
    for asset in (
        "static/viewer.js",
        "static/viewer.css",
        "static/vendor/openseadragon/openseadragon.min.js",
    ):
        assert fetch(api + asset)[0] == 200
    assert fetch(api + "static/vendor/openseadragon/images/home_rest.png")[1] == "image/png"
    assert fetch(api + "static/../app.py")[0] == 404
    assert fetch(api + "static/%2e%2e/app.py")[0] == 404
    assert fetch(api + "static/nothing.js")[0] == 404
    assert fetch(api + "favicon.ico")[0] == 204


def test_api_info_and_slides(api):
    status, body = fetch_json(api + "api/slides")
    assert status == 200 and body["slides"] == [{"stem": "sample", "name": "sample.tif"}]
    status, info = fetch_json(api + "api/info?stem=sample")
    assert status == 200
    assert info["slide"]["width"] == WIDTH and info["slide"]["mpp"] == 0.5
    assert [c["name"] for c in info["tissue"]["classes"] if not c["transparent"]] == [
        "tumor",
        "stroma",
    ]
    assert info["nuclei"]["count"] == 8
    assert {c["name"]: c["count"] for c in info["nuclei"]["classes"]} == {
        "Nucleus": 6,
        "Lymphocyte": 2,
    }
    assert fetch_json(api + "api/info?stem=other")[0] == 404


def test_api_nuclei_box_limit_and_lookups(api, data):
    status, body = fetch_json(api + "api/nuclei?x0=250&y0=350&x1=560&y1=420")
    assert status == 200 and body["count"] == 2 and not body["truncated"]
    ids = sorted(n["id"] for n in body["nuclei"])
    assert ids == [1, 2]
    ring = body["nuclei"][0]["rings"][0]
    assert len(ring) % 2 == 0 and len(ring) >= 6
    status, body = fetch_json(api + "api/nuclei?x0=0&y0=0&x1=1500&y1=1200&limit=3")
    assert body["count"] == 8 and body["truncated"] and body["nuclei"] == []
    assert fetch_json(api + "api/nuclei?x0=0&y0=0&x1=abc&y1=1")[0] == 400
    assert fetch_json(api + "api/nuclei?x0=0&y0=0")[0] == 400

    n = data.nuclei[4]
    status, body = fetch_json(api + f"api/nucleus/{n['id']}")
    assert status == 200 and body["measurements"] == n["m"]
    assert fetch_json(api + "api/nucleus/999")[0] == 404
    status, body = fetch_json(api + f"api/hit?x={n['cx']}&y={n['cy']}")
    assert body["nucleus"]["id"] == n["id"]
    status, body = fetch_json(api + "api/hit?x=5&y=5&r=2")
    assert status == 200 and body["nucleus"] is None


def test_api_tiles(api):
    status, ctype, xml = fetch(api + "dzi/sample/slide.dzi")
    assert status == 200 and b'Format="jpeg"' in xml
    status, ctype, jpeg = fetch(api + "dzi/sample/slide_files/11/5_4.jpeg")
    assert status == 200 and ctype == "image/jpeg" and decode(jpeg).shape == (185, 231, 3)
    status, ctype, png = fetch(api + "dzi/sample/tissue_files/11/0_2.png")
    assert status == 200 and ctype == "image/png"
    rgba = decode(png)
    assert rgba.shape == (256, 255, 4) and tuple(rgba[10, 10]) == (*TUMOR["color"], 255)
    assert fetch(api + "dzi/sample/slide_files/11/9_9.jpeg")[0] == 404
    assert fetch(api + "dzi/sample/slide_files/11/0_0.png")[0] == 404
    assert fetch(api + "dzi/nope/slide.dzi")[0] == 404


def test_api_without_outputs_serves_the_slide_only(data):
    server, session = create_viewer(data.slide, port=0)
    with server.start():
        status, info = fetch_json(server.url + "api/info")
        assert status == 200 and info["tissue"] is None and info["nuclei"] is None
        assert fetch_json(server.url + "api/nuclei?x0=0&y0=0&x1=9&y1=9")[0] == 404
        assert fetch(server.url + "dzi/sample/tissue.dzi")[0] == 404
        assert fetch(server.url + "dzi/sample/slide_files/10/0_0.jpeg")[0] == 200
    session.close()


def test_broken_layers_are_reported_not_fatal(tmp_path, data):
    import shutil

    shutil.copy(data.slide, tmp_path / "sample.tif")
    (tmp_path / "sample.geojson").write_text("{broken")
    (tmp_path / "sample.tissue.tif").write_bytes(b"II*\x00junk")
    server, session = create_viewer(tmp_path / "sample.tif", port=0)
    with server.start():
        status, info = fetch_json(server.url + "api/info")
        assert status == 200 and set(info["errors"]) == {"nuclei", "tissue"}
        status, body = fetch_json(server.url + "api/nuclei?x0=0&y0=0&x1=9&y1=9")
        assert status == 404 and "GeoJSON" in body["error"]
    session.close()


def test_info_does_not_wait_for_the_nucleus_index(data, monkeypatch):
    import threading

    from zeropath.viewer.session import ViewerSession

    release = threading.Event()

    class Slow(NucleusIndex):
        def __init__(self, *args, **kwargs) -> None:
            release.wait(10)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("zeropath.viewer.session.NucleusIndex", Slow)
    session = ViewerSession(discover(data.out))
    layers = session.layers()
    assert layers.info()["nuclei"] == {"loading": True}
    assert layers.info()["nuclei"] == {"loading": True}  # one loader, not two
    release.set()
    layers._loader.join(10)
    assert layers.info()["nuclei"]["count"] == len(data.nuclei)
    session.close()


def test_server_reports_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            ViewerServer(Router(), port=port)


# --------------------------------------------------------------------------- CLI


def test_cli_view_bad_paths_exit_2_with_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["view", str(tmp_path / "missing"), "--no-browser"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: no such file or directory"
    ]
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"this is not a slide")
    result = runner.invoke(cli, ["view", str(broken), "--no-browser"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "broken.svs" in result.output and "Traceback" not in result.output


def test_cli_view_busy_port_exits_2(data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["view", str(data.out), "--port", str(port), "--no-browser"]
        )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "pass another --port (0 picks a free one)"
    ]


def test_cli_view_serves_until_interrupted(data):
    with viewer_process(str(data.out)) as (_, url, _):
        status, info = fetch_json(url + "api/info")
        assert status == 200 and info["stem"] == "sample"


def test_view_help_is_registered():
    result = CliRunner().invoke(cli, ["view", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--no-browser" in result.output
