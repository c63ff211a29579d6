"""Tile planning, stitching without duplicated or cut objects, and batch runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from zeropath.io.tiler import plan_tiles
from zeropath.metrics import aji, pq
from zeropath.run.batch import segment_many
from zeropath.run.segment import SegmentOptions, segment_input
from zeropath.testing import ThresholdSegmenter, render_nuclei


@pytest.mark.parametrize(("w", "h", "core", "halo"), [(1000, 700, 256, 32), (64, 64, 256, 8)])
def test_cores_partition_the_image(w, h, core, halo):
    plan = plan_tiles(w, h, core, halo)
    cover = np.zeros((h, w), np.int32)
    for t in plan:
        cover[t.core.slices()] += 1
        assert t.read.x0 <= t.core.x0 and t.read.x1 >= t.core.x1
        assert 0 <= t.read.x0 and t.read.x1 <= w and 0 <= t.read.y0 and t.read.y1 <= h
    assert (cover == 1).all()


def test_tissue_mask_skips_empty_cores():
    mask = np.zeros((10, 10), bool)
    mask[:3, :3] = True  # tissue only in the top-left corner (mask px = 100 level-0 px)
    plan = plan_tiles(1000, 1000, 250, 10, tissue=mask, tissue_downsample=100)
    assert [t.index for t in plan] == [0, 1, 4, 5]
    full = plan_tiles(1000, 1000, 250, 10)
    assert len(full) == 16


def _write_image(path, rgb):
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        resolution=(1e4 / 0.25, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )


def test_stitching_matches_whole_image(tmp_path):
    rgb, _, _ = render_nuclei((700, 900), n=260, radius=(5, 9), seed=7)
    img = tmp_path / "mosaic.tif"
    _write_image(img, rgb)
    seg = ThresholdSegmenter()
    whole = seg.segment(rgb, 0.25)
    # cores of 32 µm = 128 px force many tile borders through nuclei
    res = segment_input(img, tmp_path / "out", seg, options=SegmentOptions(tile_um=32))
    assert res.n_tiles > 20
    stitched = tifffile.imread(tmp_path / "out" / "mosaic.labels.tif")
    assert stitched.dtype == np.uint32 and stitched.shape == whole.shape
    assert res.n_objects == whole.max() == stitched.max()
    # identical partition up to relabelling: no duplicated, cut or lost nucleus
    assert aji(whole, stitched) == pytest.approx(1.0)
    assert pq(whole, stitched)[2] == pytest.approx(1.0)
    ids = np.unique(stitched)
    np.testing.assert_array_equal(ids, np.arange(0, res.n_objects + 1))
    feats = json.loads((tmp_path / "out" / "mosaic.geojson").read_text())["features"]
    assert sorted(f["properties"]["id"] for f in feats) == list(range(1, res.n_objects + 1))
    assert res.mpp == pytest.approx(0.25) and res.mpp_origin == "file"


def test_synthetic_slide_is_tiled_over_tissue_only(tmp_path):
    """A pyramidal TIFF with tissue in one corner: tiles elsewhere are skipped."""
    h, w = 2048, 2048
    slide = np.full((h, w, 3), 242, np.uint8)
    patch, gt, _ = render_nuclei((600, 600), n=120, radius=(5, 9), seed=2)
    slide[100:700, 200:800] = patch
    path = tmp_path / "slide.tiff"
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        opts = dict(
            photometric="rgb", tile=(256, 256), compression="zlib", resolutionunit="CENTIMETER"
        )
        tw.write(slide, subifds=2, resolution=(1e4 / 0.5, 1e4 / 0.5), **opts)
        tw.write(slide[::2, ::2], subfiletype=1, resolution=(1e4, 1e4), **opts)
        tw.write(slide[::4, ::4], subfiletype=1, resolution=(5e3, 5e3), **opts)
    seg = ThresholdSegmenter()
    res = segment_input(
        path, tmp_path / "out", seg, options=SegmentOptions(tile_um=128, tissue_only=True)
    )
    assert res.n_tiles < res.n_tiles_total
    labels = tifffile.imread(tmp_path / "out" / "slide.labels.tif")
    assert labels.shape == (h, w)
    assert aji(gt, labels[100:700, 200:800]) > 0.99
    assert labels[1000:, 1000:].max() == 0


def test_batch_carries_on_after_a_bad_input(tmp_path):
    rgb, _, _ = render_nuclei((200, 200), n=10, seed=4)
    src = tmp_path / "in"
    src.mkdir()
    _write_image(src / "good.tif", rgb)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    from zeropath.io.reader import list_inputs

    report = segment_many(list_inputs([src]), tmp_path / "out", ThresholdSegmenter())
    assert [r.stem for r in report.results] == ["good"]
    assert len(report.failures) == 1 and "bad.png" in report.failures[0].message
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "good.csv",
        "good.geojson",
        "good.labels.tif",
        "good.overlay.png",
        "good.run.json",
    ]


def test_workers_give_the_same_result(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        rgb, _, _ = render_nuclei((200, 240), n=12, seed=10 + i)
        _write_image(src / f"img{i}.tif", rgb)
    from zeropath.io.reader import list_inputs

    files = list_inputs([src])
    serial = segment_many(files, tmp_path / "serial", ThresholdSegmenter())
    parallel = segment_many(files, tmp_path / "parallel", ThresholdSegmenter(), workers=2)
    assert serial.ok and parallel.ok
    for i in range(3):
        a = tifffile.imread(tmp_path / "serial" / f"img{i}.labels.tif")
        b = tifffile.imread(tmp_path / "parallel" / f"img{i}.labels.tif")
        np.testing.assert_array_equal(a, b)


class HalfResolutionSegmenter(ThresholdSegmenter):
    """Runs at 0.5 µm/px whatever the input, as learned models do."""

    name = "threshold-cc-0.5"
    target_mpp = 0.5

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        assert mpp == 0.5
        return super().segment(rgb, mpp)


def test_tiles_are_resampled_to_the_model_resolution(tmp_path):
    rgb, gt, _ = render_nuclei((600, 640), n=80, radius=(8, 12), seed=11)
    img = tmp_path / "fine.tif"
    _write_image(img, rgb)  # 0.25 µm/px
    res = segment_input(
        img, tmp_path / "out", HalfResolutionSegmenter(), options=SegmentOptions(tile_um=64)
    )
    labels = tifffile.imread(tmp_path / "out" / "fine.labels.tif")
    assert labels.shape == gt.shape  # labels on the level-0 grid
    assert res.n_tiles > 4
    assert aji(gt, labels) > 0.85


def test_read_box_resamples_and_pads(tmp_path):
    from zeropath.io.reader import open_image
    from zeropath.io.tiler import Box, read_box

    rgb, _, _ = render_nuclei((200, 300), n=10, seed=12)
    img = tmp_path / "a.tif"
    _write_image(img, rgb)
    with open_image(img) as src:
        same = read_box(src, Box(10, 20, 110, 80))
        np.testing.assert_array_equal(same, rgb[20:80, 10:110])
        half = read_box(src, Box(0, 0, 300, 200), target_mpp=0.5)
        assert half.shape == (100, 150, 3) and half.dtype == np.uint8
        assert abs(float(half.mean()) - float(rgb.mean())) < 2.0
