"""The shared dense-prediction tiler, the one resampling rule and the one "read a box at µm/px"."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from zeropath.io.dense import predict_tiled, tile_spans
from zeropath.io.reader import ImageSource
from zeropath.io.tiler import (
    MPP_TOLERANCE,
    Box,
    core_spans,
    needs_resample,
    plan_tiles,
    read_box,
    read_rect,
    resize_rgb,
    spread_spans,
    spread_starts,
)


def _box_sum(radius: int):
    """A translation-equivariant map with a ``radius`` receptive field (zero outside the crop),
    exact in integers, with two outputs: ``(K=2, h, w)`` sums and an ``(h, w)`` centre map."""

    def fn(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = crop.shape[:2]
        x = np.pad(crop.astype(np.int64), ((radius, radius), (radius, radius), (0, 0)))
        acc = np.zeros((h, w, crop.shape[2]), np.int64)
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                acc += x[dy : dy + h, dx : dx + w]
        return np.moveaxis(acc[..., :2], -1, 0), crop[..., 2].astype(np.int64) * 3

    return fn


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["grid", "spread"])
@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(97, 131, 32, 5), (200, 64, 50, 7)])
def test_tiled_equals_untiled_for_an_equivariant_map(layout, h, w, tile, overlap):
    img = _image(h, w)
    fn = _box_sum(radius=overlap)  # overlap = receptive field: exact
    whole = fn(img)
    calls = []
    tiled = predict_tiled(lambda c: calls.append(c.shape) or fn(c), img, tile, overlap, layout)
    assert len(calls) > 4 and all(s[0] <= tile and s[1] <= tile for s in calls)
    for a, b in zip(whole, tiled, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if layout == "spread":  # full-size windows only
        assert all(s[0] == min(h, tile) and s[1] == min(w, tile) for s in calls)


def test_too_little_overlap_shows_at_tile_borders():
    img = _image(90, 90)
    fn = _box_sum(radius=4)
    whole = fn(img)[0]
    assert not np.array_equal(whole, predict_tiled(fn, img, 40, 1)[0])


def test_overlap_zero_and_single_tile():
    img = _image(70, 45)
    double = lambda c: c[..., 0].astype(np.float32) * 2  # noqa: E731 - pointwise
    np.testing.assert_array_equal(predict_tiled(double, img, 16, 0), double(img))
    calls = []
    out = predict_tiled(lambda c: calls.append(c.shape) or double(c), img, 70, 10)
    assert calls == [img.shape] and out.shape == (70, 45)


@pytest.mark.parametrize("layout", ["grid", "spread"])
@pytest.mark.parametrize("length", [1, 31, 32, 33, 100, 257])
def test_spans_partition_an_axis(layout, length):
    spans = tile_spans(length, 32, 6, layout, align=4)
    cover = np.zeros(length, np.int32)
    for r0, r1, c0, c1 in spans:
        assert 0 <= r0 <= c0 < c1 <= r1 <= length
        assert r1 - r0 <= 32
        cover[c0:c1] += 1
        if layout == "grid":
            assert c0 % 4 == 0  # aligned origins (a network's stride)
        # context: a core edge inside the image has at least ``overlap`` px read beyond it
        assert c0 == 0 or c0 - r0 >= 6
        assert c1 == length or r1 - c1 >= 6
    assert (cover == 1).all()


def test_span_helpers_match_the_tilers_they_replace():
    # segnet / refine: cores of tile - 2·overlap (aligned) read with overlap per side
    assert tile_spans(100, 40, 8, "grid", align=4) == core_spans(100, 24, 8)
    assert core_spans(50, 20, 3) == [(0, 23, 0, 20), (17, 43, 20, 40), (37, 50, 40, 50)]
    # points: evenly spread windows sharing >= 2·overlap, split at the middle
    assert spread_starts(100, 40, 8) == [0, 30, 60]
    assert spread_spans(100, 40, 4) == [(0, 40, 0, 35), (30, 70, 35, 65), (60, 100, 65, 100)]
    # the engine's plan: the same arithmetic in two dimensions
    plan = plan_tiles(100, 50, 20, 3)
    assert [(t.read.x0, t.read.x1, t.core.x0, t.core.x1) for t in plan][:5] == core_spans(
        100, 20, 3
    )
    assert plan.overlap == 3
    with pytest.raises(ValueError, match="layout"):
        tile_spans(10, 4, 1, "hex")


def test_one_resampling_rule():
    assert MPP_TOLERANCE == 0.05
    assert not needs_resample(0.5, 0.5)
    assert not needs_resample(0.5, 0.52) and not needs_resample(0.5, 0.48)
    assert needs_resample(0.5, 0.53) and needs_resample(0.5, 0.47)
    assert needs_resample(0.25, 0.5) and not needs_resample(0.25, None)
    assert needs_resample(0.5, 0.52, tol=0.01)


# ---------------------------------------------------------------------- read a box at µm/px


class _Pyramid:
    """A minimal ImageSource: levels by 2× decimation, white beyond the image."""

    def __init__(self, rgb: np.ndarray, mpp: float, levels: int = 4) -> None:
        self.levels = [rgb[:: 2**k, :: 2**k] for k in range(levels)]
        self.level_downsamples = tuple(float(2**k) for k in range(levels))
        self.mpp = mpp
        self.width, self.height = rgb.shape[1], rgb.shape[0]
        self.dimensions = (self.width, self.height)

    best_level_for_downsample = ImageSource.best_level_for_downsample

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        ds = int(self.level_downsamples[level])
        lx, ly = x // ds, y // ds
        out = np.full((height, width, 3), 255, np.uint8)
        src = self.levels[level][max(ly, 0) : ly + height, max(lx, 0) : lx + width]
        out[max(-ly, 0) : max(-ly, 0) + src.shape[0], max(-lx, 0) : max(-lx, 0) + src.shape[1]] = (
            src[: height - max(-ly, 0), : width - max(-lx, 0)]
        )
        return out


def _pil_resize(rgb: np.ndarray, out_w: int, out_h: int, src_w: int, src_h: int) -> np.ndarray:
    from PIL import Image

    shrink = src_w >= out_w and src_h >= out_h
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((out_w, out_h), method))


def _old_read_box(src, box: Box, target_mpp):
    """``io.tiler.read_box`` before issue 13."""
    mpp = float(src.mpp)
    if target_mpp is None or abs(target_mpp / mpp - 1.0) <= 0.05:
        return src.read_region(box.x0, box.y0, box.width, box.height)
    ds = target_mpp / mpp
    out_h = max(1, int(round(box.height / ds)))
    out_w = max(1, int(round(box.width / ds)))
    level = src.best_level_for_downsample(ds) if ds > 1 else 0
    lds = float(src.level_downsamples[level])
    lw = max(1, int(np.ceil(box.width / lds)))
    lh = max(1, int(np.ceil(box.height / lds)))
    return resize_rgb(src.read_region(box.x0, box.y0, lw, lh, level), (out_h, out_w))


def _old_read_cells(source, grid, row, c0, c1):
    """``tissue.scoring.read_cells`` before issue 13."""
    x0, x1 = int(round(c0 * grid.cell)), int(round(c1 * grid.cell))
    y0, y1 = int(round(row * grid.cell)), int(round((row + 1) * grid.cell))
    out_w, out_h = (c1 - c0) * grid.stride, grid.stride
    ds = grid.work_mpp / float(source.mpp)
    level = source.best_level_for_downsample(ds) if ds > 1 else 0
    lds = float(source.level_downsamples[level])
    lw = max(1, int(round((x1 - x0) / lds)))
    lh = max(1, int(round((y1 - y0) / lds)))
    rgb = source.read_region(x0, y0, lw, lh, level)
    if rgb.shape[:2] == (out_h, out_w):
        return rgb
    return _pil_resize(rgb, out_w, out_h, lw, lh)


def _old_dzi_render(source, x0, y0, w0, h0, w, h):
    """``viewer.dzi.slide_renderer``'s pyramid read before issue 13 (overview path aside)."""
    ds = max(w0 / max(w, 1), h0 / max(h, 1))
    level = source.best_level_for_downsample(ds)
    lds = source.level_downsamples[level]
    rw, rh = max(1, math.ceil(w0 / lds)), max(1, math.ceil(h0 / lds))
    region = source.read_region(round(x0), round(y0), rw, rh, level)
    if region.shape[:2] == (h, w):
        return region
    return _pil_resize(region, w, h, region.shape[1], region.shape[0])


@pytest.fixture(scope="module")
def pyramid():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)
    rgb = np.kron(base, np.ones((9, 9, 1), np.uint8))  # 540 × 630, some structure
    rgb = (rgb.astype(np.int16) + rng.integers(-20, 20, rgb.shape)).clip(0, 255).astype(np.uint8)
    return _Pyramid(rgb, mpp=0.26)


@pytest.mark.parametrize("target", [None, 0.26, 0.27, 0.5, 0.53, 1.1, 2.3, 0.13])
def test_read_box_is_the_old_read_box(pyramid, target):
    box = Box(13, 27, 601, 519)
    np.testing.assert_array_equal(
        read_box(pyramid, box, target), _old_read_box(pyramid, box, target)
    )


@pytest.mark.parametrize(
    ("work_mpp", "tile", "stride"), [(0.26, 32, 8), (0.5, 64, 16), (2.2, 32, 8)]
)
def test_read_cells_is_the_old_read_cells(pyramid, work_mpp, tile, stride):
    from zeropath.tissue.grid import ScoreGrid
    from zeropath.tissue.scoring import read_cells

    grid = ScoreGrid.build(pyramid.width, pyramid.height, pyramid.mpp, work_mpp, tile, stride)
    for row in (0, grid.rows // 2, grid.rows - 1):
        for c0, c1 in ((0, grid.cols), (1, max(2, grid.cols // 2))):
            new = read_cells(pyramid, grid, row, c0, c1)
            np.testing.assert_array_equal(new, _old_read_cells(pyramid, grid, row, c0, c1))


def test_dzi_tiles_are_the_old_reads(pyramid):
    from zeropath.viewer.dzi import DeepZoom, DziGeometry, slide_renderer

    geo = DziGeometry(pyramid.width, pyramid.height, tile_size=100)
    dz = DeepZoom(geo, slide_renderer(pyramid))  # type: ignore[arg-type]
    for level in range(geo.level_count):
        cols, rows = geo.tile_grid(level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            b = geo.tile_box(level, col, row)
            old = _old_dzi_render(pyramid, b.x0, b.y0, b.width0, b.height0, b.width, b.height)
            np.testing.assert_array_equal(dz.tile_pixels(level, col, row), old)


def test_read_rect_reads_from_the_level_that_fits(pyramid):
    out = read_rect(pyramid, 0, 0, 400, 200, (50, 100))  # 4× down: level 2, no resize
    np.testing.assert_array_equal(out, pyramid.levels[2][:50, :100])


# ---------------------------------------------------------------------- --overlap in the engine


class _Recorder:
    name = "recorder"
    sha256 = None
    halo_um = 6.0

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        self.shapes.append(rgb.shape[:2])
        return np.zeros(rgb.shape[:2], np.uint32)

    def describe(self) -> dict:
        return {"name": self.name, "sha256": None, "params": {}}


def test_overlap_option_sets_the_engine_halo(tmp_path):
    from zeropath.run.segment import SegmentOptions, segment_input

    img = tmp_path / "a.tif"
    tifffile.imwrite(
        img, _image(400, 400), photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER"
    )
    sizes = {}
    for overlap in (None, 0.0, 10.0):
        rec = _Recorder()
        opts = SegmentOptions(tile_um=32.0, overlap_um=overlap)  # 0.25 µm/px: 128 px cores
        segment_input(img, tmp_path / f"out{overlap}", rec, options=opts)
        sizes[overlap] = max(rec.shapes)
    assert sizes[0.0] == (128, 128)  # cores only
    assert sizes[None] == (128 + 2 * 24, 128 + 2 * 24)  # the segmenter's halo_um (6 µm)
    assert sizes[10.0] == (128 + 2 * 40, 128 + 2 * 40)


def test_cli_overlap_reaches_the_run_record(tmp_path):
    from zeropath.cli.main import cli

    img = tmp_path / "a.tif"
    tifffile.imwrite(
        img, _image(200, 200), photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER"
    )
    args = ["nuclei", "segment", str(img), "--out", str(tmp_path / "o"), "--model", "classical"]
    r = CliRunner().invoke(cli, [*args, "--overlap", "7.5"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert record["parameters"]["overlap_um"] == 7.5
    assert "µm" in CliRunner().invoke(cli, ["nuclei", "segment", "--help"]).output
