"""ZEUS tissue maps: grid geometry, exact class maps with the synthetic encoder, the embedding
cache, output formats, skipping complete slides, and batches identical to a serial run."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

from zeropath.errors import ConfigError
from zeropath.run.batch import run_many
from zeropath.testing import render_nuclei
from zeropath.testing.synthetic import SyntheticEncoder
from zeropath.tissue.grid import ScoreGrid, resolve_tiling
from zeropath.tissue.prompts import class_embeddings, parse_prompts
from zeropath.tissue.scoring import class_map, mean_scores, smooth_scores
from zeropath.tissue.zeus import EncoderRef, TissueOptions, TissueTask, segment_slide

#: Three equidistant colours: a 50/50 mix of two is never closer to the third, so straight
#: boundaries between regions are resolved exactly by the tile averaging.
COLOURS = {"tumor": (200, 60, 60), "stroma": (60, 200, 60), "fat": (60, 60, 200)}
LUT = np.array([(255, 255, 255), *COLOURS.values()], np.uint8)
CELL = 8  # stride 8 px at 1 µm/px on a 1 µm/px image: one cell = 8×8 pixels
OPTIONS = TissueOptions(tile=32, stride=CELL, sigma=1.0, out_mpp=2.0)


class CountingEncoder(SyntheticEncoder):
    """The synthetic encoder, counting the tiles it embeds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.tiles = 0

    def encode_images(self, images):
        self.calls += 1
        self.tiles += len(images)
        return super().encode_images(images)


def make_encoder() -> CountingEncoder:
    return CountingEncoder(COLOURS, input_size=32, mpp=1.0)


def prompts_for(templates=("{}.",), background=None):
    classes = {k: {"names": [k, f"{k} tissue"], "color": list(c)} for k, c in COLOURS.items()}
    data = {"templates": list(templates), "classes": classes}
    data["background"] = background
    return parse_prompts(data)


def task_for(encoder, prompts, options=OPTIONS, **kwargs) -> TissueTask:
    text = class_embeddings(encoder, prompts)
    return TissueTask(EncoderRef.of(encoder), text, prompts, options, **kwargs)


def write_cells(path, cells, mpp=1.0):
    """An RGB TIFF whose 8×8-pixel cells have the colour of their class in ``cells``."""
    rgb = np.repeat(np.repeat(LUT[cells], CELL, axis=0), CELL, axis=1)
    tifffile.imwrite(
        path, rgb, photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER"
    )
    return path


def stripes(rows=30, cols=40):
    cells = np.ones((rows, cols), np.uint8)
    cells[:, 13:27] = 2
    cells[:, 27:] = 3
    return cells


def blocks():
    cells = np.ones((33, 29), np.uint8)
    cells[8:20, 9:21] = 2
    cells[24:, :12] = 3
    cells[:6, 20:] = 3
    return cells


def read_scores(out, stem):
    return zarr.open_group(str(out / f"{stem}.scores.zarr"), mode="r")


# --------------------------------------------------------------------------- geometry


def test_grid_geometry_and_tiles_needed():
    g = ScoreGrid.build(1000, 500, slide_mpp=0.25, work_mpp=0.5, tile=448, stride=112)
    assert g.cell == 224.0 and (g.rows, g.cols, g.k) == (3, 5, 4)
    assert (g.tile_rows, g.tile_cols) == (1, 2)
    assert g.tile_origin(0, 1) == (224, 0)
    np.testing.assert_array_equal(g.cell_edges_x(), [0, 224, 448, 672, 896, 1000])
    tissue = np.zeros((3, 5), bool)
    tissue[1, 4] = True  # only the second tile covers column 4
    np.testing.assert_array_equal(g.tiles_needed(tissue), [[False, True]])
    np.testing.assert_array_equal(g.tiles_needed(None), [[True, True]])
    with pytest.raises(ConfigError, match="multiple of the stride"):
        ScoreGrid.build(100, 100, 1.0, 1.0, tile=448, stride=100)
    assert resolve_tiling(None, None, 448) == (448, 112)
    assert resolve_tiling(None, None, 50) == (50, 10)  # a quarter does not divide 50: a fifth
    assert resolve_tiling(64, 32, 448) == (64, 32)
    with pytest.raises(ConfigError, match="multiple of the stride"):
        resolve_tiling(48, 10, 224)


def test_tissue_cells_pool_a_thumbnail_mask():
    g = ScoreGrid.build(80, 40, 1.0, 1.0, tile=32, stride=8)  # 5×10 cells
    mask = np.zeros((20, 40), bool)  # thumbnail at downsample 2
    mask[:, :20] = True  # left half
    mask[0, 20] = True  # a speck: 1 of 16 thumbnail pixels of cell (0, 5)
    cells = g.tissue_cells(mask, (2.0, 2.0), min_fraction=0.25)
    expected = np.zeros((5, 10), bool)
    expected[:, :5] = True
    np.testing.assert_array_equal(cells, expected)
    fine = ScoreGrid.build(80, 40, 1.0, 1.0, tile=16, stride=1)  # cells finer than the mask
    assert fine.tissue_cells(mask, (2.0, 2.0))[:, :40].all()


def test_scoring_helpers_on_hand_made_maps():
    sums = np.array([[[2.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [3.0, 0.0]]])
    coverage = np.array([[2, 0], [1, 0]])
    mean = mean_scores(sums, coverage)
    np.testing.assert_allclose(mean[:, :, 0], [[1.0, 1.0], [0.5, 3.0]])
    assert np.isnan(mean[:, :, 1]).all()
    smoothed = smooth_scores(mean, 1.0)
    assert np.isnan(smoothed[:, :, 1]).all() and np.isfinite(smoothed[:, :, 0]).all()
    np.testing.assert_array_equal(smooth_scores(mean, 0), mean)
    tissue = np.array([[True, True], [True, False]])
    cls = class_map(mean, tissue, np.array([3, 5], np.uint8), background_index=0)
    np.testing.assert_array_equal(cls, [[3, 0], [5, 0]])  # tie → first class; uncovered → 0


# --------------------------------------------------------------------------- exact maps


def test_straight_boundaries_give_exactly_the_region_map(tmp_path):
    cells = stripes()
    src = write_cells(tmp_path / "stripes.tif", cells)
    enc = make_encoder()
    result = task_for(enc, prompts_for())(str(src), str(tmp_path / "out"))
    assert (result.grid["grid_rows"], result.grid["grid_cols"]) == cells.shape
    got = read_scores(tmp_path / "out", "stripes")["classes"][:]
    np.testing.assert_array_equal(got, cells)
    # the TIFF at 2 µm/px (downsample 2): each cell is 4×4 output pixels
    tif = tifffile.imread(tmp_path / "out" / "stripes.tissue.tif")
    np.testing.assert_array_equal(tif, np.repeat(np.repeat(cells, 4, 0), 4, 1))
    assert result.n_tiles == result.n_tiles_total == (30 - 3) * (40 - 3)
    assert enc.tiles == result.n_tiles and result.n_encoded == result.n_tiles


def test_regions_match_outside_the_tile_footprint_band(tmp_path):
    cells = blocks()
    src = write_cells(tmp_path / "blocks.tif", cells)
    task_for(make_encoder(), prompts_for())(str(src), str(tmp_path / "out"))
    got = read_scores(tmp_path / "out", "blocks")["classes"][:]
    band = np.zeros(cells.shape, bool)  # cells within k - 1 = 3 cells of another class
    for v in (1, 2, 3):
        region = cells == v
        band |= ndi.binary_dilation(region, iterations=3) & ~region
    np.testing.assert_array_equal(got[~band], cells[~band])
    assert (got[band] != cells[band]).mean() < 0.1  # only corners are rounded off


def test_outside_the_tissue_mask_is_background_or_the_named_class(tmp_path):
    tissue_rgb, _, _ = render_nuclei((320, 192), n=60, radius=(3, 5), seed=1)
    img = np.full((320, 384, 3), 250, np.uint8)
    img[:, :192] = tissue_rgb
    path = tmp_path / "half.tif"
    tifffile.imwrite(
        path, img, photometric="rgb", resolution=(1e4, 1e4), resolutionunit="CENTIMETER"
    )
    options = TissueOptions(tile=32, stride=8, tissue_only=True)
    enc = make_encoder()
    result = task_for(enc, prompts_for(), options)(str(path), str(tmp_path / "a"))
    got = read_scores(tmp_path / "a", "half")
    classes, tissue = got["classes"][:], got["tissue"][:]
    assert tissue[:, :24].all() and not tissue[:, 24:].any()
    assert (classes[:, 24:] == 0).all() and (classes[:, :24] > 0).all()
    assert result.n_tiles < result.n_tiles_total  # glass-only tiles are never read
    assert 0.45 < result.tissue_fraction < 0.55
    named = task_for(enc, prompts_for(background="fat"), options)(str(path), str(tmp_path / "b"))
    assert named.n_tiles == result.n_tiles
    assert (read_scores(tmp_path / "b", "half")["classes"][:, 24:] == 3).all()
    # tissue.tif agrees: outside the tissue the named class
    assert (tifffile.imread(tmp_path / "b" / "half.tissue.tif")[:, 100:] == 3).all()


def test_a_blank_image_succeeds_with_no_regions(tmp_path):
    rng = np.random.default_rng(0)
    img = (248 + rng.integers(0, 4, (200, 240, 3))).astype(np.uint8)
    path = tmp_path / "blank.tif"
    tifffile.imwrite(
        path, img, photometric="rgb", resolution=(1e4, 1e4), resolutionunit="CENTIMETER"
    )
    enc = make_encoder()
    options = TissueOptions(tile=32, stride=8, tissue_only=True)
    result = task_for(enc, prompts_for(), options)(str(path), str(tmp_path / "out"))
    assert result.n_tiles == 0 and result.n_regions == 0 and enc.calls == 0
    assert (tifffile.imread(tmp_path / "out" / "blank.tissue.tif") == 0).all()
    gj = json.loads((tmp_path / "out" / "blank.tissue.geojson").read_text())
    assert gj == {"type": "FeatureCollection", "features": []}
    assert np.isnan(read_scores(tmp_path / "out", "blank")["scores"][:]).all()


def test_a_blank_plain_image_is_not_reported_as_all_tissue(tmp_path):
    # plain images are classified whole (no tissue mask); an all-white one used to come
    # out as "tissue 100 %", every pixel given a class
    path = tmp_path / "white.png"
    from PIL import Image

    Image.fromarray(np.full((64, 96, 3), 255, np.uint8)).save(path)
    enc = make_encoder()
    result = task_for(enc, prompts_for())(str(path), str(tmp_path / "out"))
    assert result.tissue_fraction == 0.0 and result.n_tiles == 0 and enc.calls == 0
    assert (tifffile.imread(tmp_path / "out" / "white.tissue.tif") == 0).all()
    # a stained plain image is still classified whole
    cells = np.full((2, 3), 2, np.uint8)
    src = write_cells(tmp_path / "stained.tif", cells)
    assert (
        task_for(make_encoder(), prompts_for())(str(src), str(tmp_path / "o2")).tissue_fraction
        == 1.0
    )


def test_an_image_smaller_than_a_tile(tmp_path):
    cells = np.full((2, 3), 2, np.uint8)
    src = write_cells(tmp_path / "tiny.tif", cells)
    result = task_for(make_encoder(), prompts_for())(str(src), str(tmp_path / "out"))
    assert result.n_tiles == 1
    got = read_scores(tmp_path / "out", "tiny")["classes"][:]
    assert got.shape == (2, 3) and (got > 0).all()


# --------------------------------------------------------------------------- cache


def test_a_second_prompt_set_costs_no_encoder_time(tmp_path):
    src = write_cells(tmp_path / "blocks.tif", blocks())
    options = TissueOptions(tile=32, stride=8, cache_dir=str(tmp_path / "cache"))
    enc = make_encoder()
    first = task_for(enc, prompts_for(), options)(str(src), str(tmp_path / "one"))
    assert first.n_encoded == first.n_tiles > 0 and first.n_cached == 0
    calls = enc.calls
    assert calls > 0
    other = prompts_for(templates=("an H&E image of {}.", "{} seen at 20x."))
    second = task_for(enc, other, options)(str(src), str(tmp_path / "two"))
    assert enc.calls == calls  # the encoder never saw a tile again
    assert second.n_cached == second.n_tiles and second.n_encoded == 0
    np.testing.assert_array_equal(
        read_scores(tmp_path / "one", "blocks")["scores"][:],
        read_scores(tmp_path / "two", "blocks")["scores"][:],
    )
    # a different tile geometry is a different cache entry
    third = task_for(enc, other, TissueOptions(tile=32, stride=16, cache_dir=options.cache_dir))(
        str(src), str(tmp_path / "three")
    )
    assert third.n_encoded == third.n_tiles and enc.calls > calls
    assert len(list((tmp_path / "cache").glob("blocks-*.zarr"))) == 2


def test_a_partly_filled_cache_is_completed(tmp_path):
    tissue_rgb, _, _ = render_nuclei((320, 192), n=60, radius=(3, 5), seed=1)
    img = np.full((320, 384, 3), 250, np.uint8)
    img[:, :192] = tissue_rgb
    path = tmp_path / "half.tif"
    tifffile.imwrite(
        path, img, photometric="rgb", resolution=(1e4, 1e4), resolutionunit="CENTIMETER"
    )
    cache = str(tmp_path / "cache")
    enc = make_encoder()
    part = task_for(
        enc, prompts_for(), TissueOptions(tile=32, stride=8, tissue_only=True, cache_dir=cache)
    )
    first = part(str(path), str(tmp_path / "one"))
    whole = task_for(
        enc, prompts_for(), TissueOptions(tile=32, stride=8, tissue_only=False, cache_dir=cache)
    )
    second = whole(str(path), str(tmp_path / "two"))
    assert second.n_cached == first.n_tiles  # rows were half done: only the rest was encoded
    assert second.n_encoded == second.n_tiles - first.n_tiles > 0
    fresh = task_for(
        make_encoder(), prompts_for(), TissueOptions(tile=32, stride=8, tissue_only=False)
    )
    fresh(str(path), str(tmp_path / "three"))
    np.testing.assert_array_equal(
        read_scores(tmp_path / "two", "half")["scores"][:],
        read_scores(tmp_path / "three", "half")["scores"][:],
    )


def test_the_encoder_is_not_loaded_when_everything_is_cached(tmp_path):
    src = write_cells(tmp_path / "s.tif", stripes(12, 12))
    options = TissueOptions(tile=32, stride=8, cache_dir=str(tmp_path / "cache"))
    enc = make_encoder()
    task = task_for(enc, prompts_for(), options)
    task(str(src), str(tmp_path / "one"))
    task.encoder.instance = None
    task.encoder.spec = "no-such-encoder-anywhere"  # loading it would fail
    result = task(str(src), str(tmp_path / "two"))
    assert result.n_cached == result.n_tiles


# --------------------------------------------------------------------------- outputs


def test_outputs_follow_the_interface(tmp_path):
    cells = blocks()
    src = write_cells(tmp_path / "blocks.tif", cells)
    prompts = prompts_for()
    result = task_for(make_encoder(), prompts)(str(src), str(tmp_path / "out"))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "blocks.scores.zarr",
        "blocks.tissue.geojson",
        "blocks.tissue.overlay.png",
        "blocks.tissue.tif",
    ]
    with tifffile.TiffFile(out / "blocks.tissue.tif") as tif:
        page = tif.pages.first
        assert page.dtype == np.uint8
        meta = json.loads(page.description)
        level0 = page.asarray()
    assert meta["mpp"] == pytest.approx(2.0) and meta["downsample"] == 2
    assert meta["classes"] == [
        {"index": 0, "name": "background", "color": [255, 255, 255]},
        {"index": 1, "name": "tumor", "color": [200, 60, 60]},
        {"index": 2, "name": "stroma", "color": [60, 200, 60]},
        {"index": 3, "name": "fat", "color": [60, 60, 200]},
    ]
    assert level0.shape == (cells.shape[0] * 4, cells.shape[1] * 4)

    gj = json.loads((out / "blocks.tissue.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["features"]
    names = {"tumor": [200, 60, 60], "stroma": [60, 200, 60], "fat": [60, 60, 200]}
    got = read_scores(out, "blocks")["classes"][:]
    for f in gj["features"]:
        props = f["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["color"] == names[props["classification"]["name"]]
        assert f["geometry"]["type"] == "Polygon"
    # one annotation per 4-connected class region, areas in level-0 pixels add up
    n_regions = sum(ndi.label(got == v)[1] for v in (1, 2, 3))
    assert len(gj["features"]) == n_regions == result.n_regions
    total = sum(f["properties"]["measurements"]["Area px^2"] for f in gj["features"])
    assert total == pytest.approx(cells.size * CELL * CELL)
    from shapely.geometry import shape

    tumor = [shape(f["geometry"]) for f in gj["features"] if f["properties"]["name"] == "tumor"]
    assert any(len(p.interiors) == 1 for p in tumor)  # the stroma block is a hole in tumour

    g = read_scores(out, "blocks")
    assert g["scores"].shape == (3, *cells.shape) and g["scores"].dtype == np.float32
    assert g["raw"].shape == (3, *cells.shape)
    assert g["coverage"][:].min() >= 1 and g["tissue"][:].all()
    assert [c["name"] for c in g.attrs["score_classes"]] == ["tumor", "stroma", "fat"]
    assert g.attrs["cell_px_level0"] == CELL
    np.testing.assert_array_equal(np.array([1, 2, 3])[np.argmax(g["scores"][:], axis=0)], got)

    from PIL import Image

    with Image.open(out / "blocks.tissue.overlay.png") as im:
        assert im.mode == "RGB" and im.width > cells.shape[1] * CELL  # image + legend panel


def test_complete_outputs_are_skipped_and_changed_prompts_recomputed(tmp_path):
    src = write_cells(tmp_path / "s.tif", stripes(12, 12))
    enc = make_encoder()
    out = tmp_path / "out"
    first = task_for(enc, prompts_for())(str(src), str(out))
    assert not first.skipped
    calls = enc.calls
    again = task_for(enc, prompts_for())(str(src), str(out))
    assert again.skipped and enc.calls == calls and again.n_tiles == first.n_tiles
    changed = task_for(enc, prompts_for(templates=("a {}",)))(str(src), str(out))
    assert not changed.skipped and enc.calls > calls
    forced = task_for(enc, prompts_for(templates=("a {}",)), skip_complete=False)(
        str(src), str(out)
    )
    assert not forced.skipped
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


# --------------------------------------------------------------------------- batches


@pytest.fixture
def batch_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    a = write_cells(folder / "a.tif", blocks())
    b = write_cells(folder / "b.tif", stripes(14, 20))
    bad = folder / "bad.tif"
    bad.write_bytes(b"II*\x00 not a tiff at all")
    return [a, bad, b]


def _same_outputs(one, two, stems):
    for stem in stems:
        np.testing.assert_array_equal(
            tifffile.imread(one / f"{stem}.tissue.tif"), tifffile.imread(two / f"{stem}.tissue.tif")
        )
        a = json.loads((one / f"{stem}.tissue.geojson").read_text())
        b = json.loads((two / f"{stem}.tissue.geojson").read_text())
        assert a == b
        for name in ("scores", "raw", "coverage", "classes", "tissue"):
            np.testing.assert_array_equal(
                read_scores(one, stem)[name][:], read_scores(two, stem)[name][:]
            )


def test_workers_give_the_serial_results_and_a_bad_slide_does_not_stop_the_batch(
    tmp_path, batch_inputs
):
    task = task_for(make_encoder(), prompts_for())
    serial = run_many(batch_inputs, tmp_path / "serial", task)
    parallel = run_many(batch_inputs, tmp_path / "parallel", task, workers=2)
    for report in (serial, parallel):
        assert [r.stem for r in report.results] == ["a", "b"]
        assert [f.input for f in report.failures] == [str(batch_inputs[1])]
        assert "bad.tif" in report.failures[0].message
    _same_outputs(tmp_path / "serial", tmp_path / "parallel", ["a", "b"])
    for folder in (tmp_path / "serial", tmp_path / "parallel"):
        assert not list(folder.glob("bad.*"))
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_dask_gives_the_serial_results(tmp_path, batch_inputs):
    distributed = pytest.importorskip("distributed")
    task = task_for(make_encoder(), prompts_for())
    serial = run_many(batch_inputs, tmp_path / "serial", task)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    ) as cluster:
        report = run_many(
            batch_inputs, tmp_path / "dask", task, scheduler=cluster.scheduler_address
        )
    assert [r.stem for r in report.results] == [r.stem for r in serial.results]
    assert len(report.failures) == 1
    _same_outputs(tmp_path / "serial", tmp_path / "dask", ["a", "b"])


def test_encoder_ref_travels_by_name():
    import pickle

    from zeropath.models.encoders import get_encoder

    ref = EncoderRef.of(get_encoder("synthetic"), spec="synthetic")
    clone = pickle.loads(pickle.dumps(ref))
    assert clone.instance is None and clone.name == "synthetic"
    assert clone.get().name == "synthetic"
    local = EncoderRef.of(make_encoder())  # no spec: the instance itself travels
    assert pickle.loads(pickle.dumps(local)).instance is not None


def test_segment_slide_rejects_mismatched_class_vectors(tmp_path):
    src = write_cells(tmp_path / "s.tif", stripes(8, 8))
    enc = make_encoder()
    with pytest.raises(ValueError, match="class vectors"):
        segment_slide(src, tmp_path, EncoderRef.of(enc), np.zeros((2, 16)), prompts_for(), OPTIONS)
