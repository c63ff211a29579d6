"""Reader API: every shared slide, broken inputs, synthetic edge cases, list_inputs."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from zeropath.errors import InputError
from zeropath.io import reader
from zeropath.io.reader import (
    DEFAULT_MPP,
    ImageSource,
    bundled_sample,
    image_stem,
    list_inputs,
    open_image,
    sha256,
)

# name: (backend, level_dimensions, mpp, mpp_origin)
SLIDES = {
    "CMU-1-Small-Region.svs": ("openslide", ((2220, 2967),), 0.499, "file"),
    "tcga-cr-7395-01a-01-ts1-reduced.svs": (
        "openslide",
        ((4443, 3567), (2221, 1783)),
        DEFAULT_MPP,
        "default",
    ),
    # both carry a meaningless 72-dpi resolution (352.8 µm/px), which must be ignored
    "small-pyramid-4levels.tiff": (
        "openslide",
        ((300, 250), (150, 125), (75, 62), (37, 31)),
        DEFAULT_MPP,
        "default",
    ),
    "boxes-4levels.tiff": (
        "openslide",
        ((300, 250), (150, 125), (75, 62), (37, 31)),
        DEFAULT_MPP,
        "default",
    ),
    "small-16px.svs": ("openslide", ((16, 16),), 0.499, "file"),
}
BROKEN = ["broken.svs", "unopenable.tiff", "unreadable.svs"]


def _rgb(h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- shared slides


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(SLIDES))
def test_shared_slide_geometry_and_mpp(shared_data: Path, name: str) -> None:
    backend, dims, mpp, origin = SLIDES[name]
    with open_image(shared_data / "slides" / name) as src:
        assert src.backend == backend
        assert src.is_slide
        assert src.level_dimensions == dims
        assert src.level_count == len(dims)
        assert src.dimensions == dims[0]
        assert src.level_downsamples[0] == pytest.approx(1.0)
        for (w, _h), ds in zip(dims, src.level_downsamples, strict=True):
            assert ds == pytest.approx(dims[0][0] / w, rel=0.02)
        assert src.mpp == pytest.approx(mpp)
        assert src.mpp_origin == origin
        assert (src.file_mpp is None) == (origin == "default")
        assert src.stem == Path(name).stem
        assert isinstance(src.properties, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in src.properties.items())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(SLIDES))
def test_shared_slide_reads(shared_data: Path, name: str) -> None:
    with open_image(shared_data / "slides" / name) as src:
        for level in range(src.level_count):
            lw, lh = src.level_dimensions[level]
            w, h = min(lw, 23), min(lh, 17)
            region = src.read_region(0, 0, w, h, level)
            assert region.shape == (h, w, 3) and region.dtype == np.uint8
            # half outside on the left/top: that half is white
            ds = src.level_downsamples[level]
            part = src.read_region(-round(10 * ds), -round(6 * ds), 20, 12, level)
            assert part.shape == (12, 20, 3)
            assert (part[:, :9] == 255).all() and (part[:5] == 255).all()
        # fully outside
        w0, h0 = src.dimensions
        assert (src.read_region(w0 + 5, h0 + 5, 7, 9) == 255).all()
        thumb = src.thumbnail(64)
        assert max(thumb.shape[:2]) == min(64, max(w0, h0))
        assert thumb.shape[2] == 3 and thumb.dtype == np.uint8
        expected_ratio = w0 / h0
        assert thumb.shape[1] / thumb.shape[0] == pytest.approx(expected_ratio, rel=0.1)


@pytest.mark.shared_data
def test_small_pyramid_levels_agree(shared_data: Path) -> None:
    with open_image(shared_data / "slides" / "small-pyramid-4levels.tiff") as src:
        full = src.read_level(0)
        assert full.shape == (250, 300, 3)
        np.testing.assert_array_equal(full, src.read_region(0, 0, 300, 250))
        lvl1 = src.read_level(1)
        assert lvl1.shape == (125, 150, 3)
        # level 1 is a 2× reduction of level 0: means agree closely
        assert abs(float(lvl1.mean()) - float(full.mean())) < 3.0
        thumb = src.thumbnail(100)
        assert thumb.shape == (83, 100, 3)


@pytest.mark.shared_data
def test_mpp_override_and_best_level(shared_data: Path) -> None:
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1-reduced.svs"
    with open_image(path, mpp=0.5) as src:
        assert (src.mpp, src.mpp_origin, src.file_mpp) == (0.5, "override", None)
        assert src.level_mpp(1) == pytest.approx(1.0, rel=0.01)
        assert src.best_level_for_downsample(1.0) == 0
        assert src.best_level_for_downsample(1.5) == 0
        assert src.best_level_for_downsample(2.0) == 1  # level downsample is 2.0005
        assert src.best_level_for_downsample(50) == 1
    with open_image(path, default_mpp=0.3) as src:
        assert (src.mpp, src.mpp_origin) == (0.3, "default")
    cmu = shared_data / "slides" / "CMU-1-Small-Region.svs"
    with open_image(cmu, mpp=0.25) as src:
        assert (src.mpp, src.mpp_origin, src.file_mpp) == (0.25, "override", 0.499)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", BROKEN)
def test_broken_slides_raise_input_error(shared_data: Path, name: str) -> None:
    path = shared_data / "slides" / "broken" / name
    with pytest.raises(InputError) as info:
        open_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.path == str(path)


@pytest.mark.shared_data
def test_monuseg_tile_is_plain_image(shared_data: Path) -> None:
    path = next(iter(sorted((shared_data / "monuseg" / "test" / "images").glob("*.tif"))))
    with open_image(path) as src:
        assert src.backend == "image" and not src.is_slide
        assert src.dimensions == (1000, 1000) and src.level_count == 1
        assert src.mpp_origin == "default"
        assert src.read_level(0).shape == (1000, 1000, 3)


def test_bundled_sample() -> None:
    path = bundled_sample()
    assert path.name == "CMU-1-Small-Region.svs" and path.is_file()
    with open_image(path) as src:
        assert src.backend == "openslide"
        assert src.dimensions == (2220, 2967)
        assert src.mpp == pytest.approx(0.499) and src.mpp_origin == "file"
        region = src.read_region(1000, 1000, 64, 48)
        assert region.shape == (48, 64, 3) and region.std() > 5  # real tissue, not blank


# --------------------------------------------------------------------------- bad inputs


def test_missing_empty_directory_and_unknown(tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path: "directory",
    }
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases[empty] = "empty"
    text = tmp_path / "notes.xyz"
    text.write_text("hello")
    cases[text] = "not a supported"
    fake_svs = tmp_path / "fake.svs"
    fake_svs.write_text("not a slide")
    cases[fake_svs] = "not a supported"
    fake_tif = tmp_path / "fake.tif"
    fake_tif.write_bytes(b"II*\x00garbage-garbage")
    cases[fake_tif] = ""
    for path, fragment in cases.items():
        with pytest.raises(InputError) as info:
            open_image(path)
        assert str(path) in str(info.value)
        assert fragment in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_raster(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    Image.fromarray(_rgb(200, 300)).save(full)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        open_image(cut)


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1)])
def test_too_small_images(tmp_path: Path, shape: tuple[int, int]) -> None:
    png = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(png)
    tif = tmp_path / "tiny.tif"
    tifffile.imwrite(tif, np.zeros((*shape, 3), np.uint8), photometric="rgb")
    for path in (png, tif):
        with pytest.raises(InputError, match="2×2"):
            open_image(path)


def test_two_by_two_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "two.png"
    Image.fromarray(_rgb(2, 2)).save(path)
    with open_image(path) as src:
        assert src.dimensions == (2, 2)


def test_invalid_mpp_override(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_rgb()).save(path)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="µm/px"):
            open_image(path, mpp=bad)


# --------------------------------------------------------------------------- conversions


def test_rgba_png_composited_on_white(tmp_path: Path) -> None:
    rgb = _rgb()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:10, :10] = 0
    alpha[10:20, :10] = 128
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    with open_image(path) as src:
        out = src.read_level(0)
    assert out.shape == (40, 60, 3)
    assert (out[:10, :10] == 255).all()
    half = rgb[10:20, :10].astype(float) * 128 / 255 + 255 * 127 / 255
    np.testing.assert_allclose(out[10:20, :10], half, atol=1)
    np.testing.assert_array_equal(out[20:, 10:], rgb[20:, 10:])


def test_grayscale_and_16bit(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    tifffile.imwrite(tmp_path / "gray16.tif", gray.astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "gray12.tif", gray.astype(np.uint16) * 16)  # 12-bit in 16
    rgb = _rgb()
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    for name in ("gray.png", "gray16.png", "gray16.tif", "gray12.tif"):
        with open_image(tmp_path / name) as src:
            out = src.read_level(0)
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3), name
        assert np.abs(out.astype(int) - gray[..., None]).max() <= 1, name
    with open_image(tmp_path / "rgb16.tif") as src:
        assert np.abs(src.read_level(0).astype(int) - rgb).max() <= 1


def test_tiff_variants(tmp_path: Path) -> None:
    rgb = _rgb()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:5] = 0
    tifffile.imwrite(
        tmp_path / "rgba.tif",
        np.dstack([rgb, alpha]),
        photometric="rgb",
        extrasamples=["unassalpha"],
    )
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate"
    )
    tifffile.imwrite(tmp_path / "white0.tif", 255 - rgb[..., 0], photometric="miniswhite")
    with open_image(tmp_path / "rgba.tif") as src:
        out = src.read_level(0)
        assert (out[:5] == 255).all()
        np.testing.assert_array_equal(out[5:], rgb[5:])
    with open_image(tmp_path / "planar.tif") as src:
        np.testing.assert_array_equal(src.read_level(0), rgb)
    with open_image(tmp_path / "white0.tif") as src:
        np.testing.assert_array_equal(src.read_level(0)[..., 1], rgb[..., 0])


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        ((20000.0, 20000.0), "CENTIMETER", 0.5),
        ((101600.0, 101600.0), "INCH", 0.25),
        ((40000.0, 20000.0), "CENTIMETER", 0.375),  # anisotropic: averaged
        ((72.0, 72.0), "INCH", None),  # screen dpi, not a microscope
        ((4.0, 4.0), "NONE", None),
    ],
)
def test_tiff_resolution_tags(
    tmp_path: Path, resolution: tuple[float, float], unit: str, expected: float | None
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, _rgb(), photometric="rgb", resolution=resolution, resolutionunit=unit)
    with open_image(path) as src:
        assert src.backend == "image"
        if expected is None:
            assert src.file_mpp is None and src.mpp_origin == "default"
            assert src.mpp == DEFAULT_MPP
        else:
            assert src.file_mpp == pytest.approx(expected)
            assert src.mpp_origin == "file"
    with open_image(path, mpp=0.8) as src:
        assert (src.mpp, src.mpp_origin) == (0.8, "override")


def test_png_phys(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(_rgb()).save(good, dpi=(25400 / 0.5, 25400 / 0.5))
    screen = tmp_path / "screen.png"
    Image.fromarray(_rgb()).save(screen, dpi=(96, 96))
    with open_image(good) as src:
        assert src.file_mpp == pytest.approx(0.5, rel=1e-3) and src.mpp_origin == "file"
    with open_image(screen) as src:
        assert src.file_mpp is None and src.mpp_origin == "default"


def test_plain_image_region_reads(tmp_path: Path) -> None:
    rgb = _rgb(50, 70)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    with open_image(path) as src:
        assert (src.backend, src.is_slide, src.level_count) == ("image", False, 1)
        assert src.level_dimensions == ((70, 50),) and src.level_downsamples == (1.0,)
        np.testing.assert_array_equal(src.read_region(5, 7, 20, 10), rgb[7:17, 5:25])
        edge = src.read_region(60, 45, 20, 10)
        np.testing.assert_array_equal(edge[:5, :10], rgb[45:, 60:])
        assert (edge[5:] == 255).all() and (edge[:, 10:] == 255).all()
        assert src.read_region(0, 0, 0, 5).shape == (5, 0, 3)
        out = src.read_region(0, 0, 4, 4)
        out[:] = 0  # callers may write into what they get
        assert src.read_region(0, 0, 4, 4).max() > 0
        with pytest.raises(ValueError):
            src.read_region(0, 0, 4, 4, level=1)
        thumb = src.thumbnail(35)
        assert thumb.shape == (25, 35, 3)
        assert src.thumbnail(1000).shape == (50, 70, 3)  # never upsampled
        with pytest.raises(InputError, match="region by region"):
            src.read_level(0, max_pixels=100)


def test_thumbnail_is_area_average(tmp_path: Path) -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[::2, ::2] = 255  # a quarter of the pixels white: area average = 63.75
    path = tmp_path / "check.png"
    Image.fromarray(rgb).save(path)
    with open_image(path) as src:
        thumb = src.thumbnail(16)
    assert thumb.shape == (16, 16, 3)
    assert np.abs(thumb.astype(float) - 63.75).max() <= 1


def test_pyramidal_tiff_through_tiffslide(tmp_path: Path) -> None:
    base = np.repeat(np.repeat(_rgb(32, 40), 8, axis=0), 8, axis=1)  # 256×320
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tw:  # SubIFD pyramid: OpenSlide does not read it
        tw.write(base, tile=(64, 64), photometric="rgb", subifds=2)
        tw.write(base[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1)
        tw.write(base[::4, ::4], tile=(64, 64), photometric="rgb", subfiletype=1)
    with open_image(path) as src:
        assert src.backend == "tiffslide" and src.is_slide
        assert src.level_dimensions == ((320, 256), (160, 128), (80, 64))
        assert src.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        np.testing.assert_array_equal(src.read_level(1), base[::2, ::2])
        region = src.read_region(-16, -16, 24, 24, level=1)
        assert (region[:8] == 255).all() and (region[:, :8] == 255).all()
        np.testing.assert_array_equal(region[8:, 8:], base[::2, ::2][:16, :16])
        far = src.read_region(10_000, 10_000, 5, 5, level=2)
        assert (far == 255).all()
        assert src.thumbnail(100).shape == (80, 100, 3)


@pytest.mark.parametrize("tiffslide_available", [True, False])
def test_large_single_level_tiff_is_lazy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiffslide_available: bool
) -> None:
    rgb = _rgb(120, 90)
    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        rowsperstrip=16,
        compression="zlib",
        resolution=(40000.0, 40000.0),
        resolutionunit="CENTIMETER",
    )
    monkeypatch.setattr(reader, "IN_MEMORY_PIXELS", 1000)  # pretend the image is huge
    if not tiffslide_available:
        monkeypatch.setattr(reader, "_try_tiffslide", lambda *args: None)
    with open_image(path) as src:
        assert src.backend == ("tiffslide" if tiffslide_available else "image")
        assert src.dimensions == (90, 120)
        assert src.mpp == pytest.approx(0.25) and src.mpp_origin == "file"
        np.testing.assert_array_equal(src.read_level(0), rgb)
        region = src.read_region(80, 110, 20, 20)
        np.testing.assert_array_equal(region[:10, :10], rgb[110:, 80:])
        assert (region[10:] == 255).all()


def test_close_pickle_and_repr(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.fromarray(_rgb()).save(path)
    src = open_image(path, mpp=0.4)
    clone = pickle.loads(pickle.dumps(src))
    assert isinstance(clone, ImageSource)
    assert (clone.path, clone.mpp, clone.mpp_origin) == (src.path, 0.4, "override")
    np.testing.assert_array_equal(clone.read_level(0), src.read_level(0))
    assert "image" in repr(src)
    with src:
        pass
    with pytest.raises(InputError):
        src.read_region(0, 0, 2, 2)
    src.close()  # idempotent


def test_sha256_and_stem(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError):
        sha256(tmp_path / "nope")
    png = tmp_path / "s.png"
    Image.fromarray(_rgb()).save(png)
    with open_image(png) as src:
        assert src.checksum == hashlib.sha256(png.read_bytes()).hexdigest()
    assert image_stem("a/b/slide.svs") == "slide"
    assert image_stem("x.ome.tif") == "x"
    assert image_stem("x.ome.tiff") == "x"
    assert image_stem("TCGA-21-5786-01Z-00-DX1.tif") == "TCGA-21-5786-01Z-00-DX1"
    assert image_stem("noext") == "noext"


# --------------------------------------------------------------------------- list_inputs


def test_list_inputs(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / ".cache").mkdir()
    names = [
        "b.tif",
        "a.png",
        "C.SVS",
        ".hidden.png",
        "x.labels.tif",
        "x.tissue.tif",
        "x.overlay.png",
        "x.tissue.overlay.png",
        "notes.txt",
        "sub/deep.ndpi",
        ".cache/c.png",
    ]
    for n in names:
        (d / n).write_bytes(b"x")
    assert list_inputs([d]) == [d / "C.SVS", d / "a.png", d / "b.tif"]
    assert list_inputs([d], recursive=True) == [
        d / "C.SVS",
        d / "a.png",
        d / "b.tif",
        d / "sub" / "deep.ndpi",
    ]
    # explicit files are kept whatever their suffix; duplicates collapse, order is kept
    assert list_inputs([d / "notes.txt", d / "a.png", d]) == [
        d / "notes.txt",
        d / "a.png",
        d / "C.SVS",
        d / "b.tif",
    ]
    with pytest.raises(InputError, match="no such"):
        list_inputs([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("nothing here")
    with pytest.raises(InputError, match="no supported"):
        list_inputs([empty])


@pytest.mark.shared_data
def test_list_inputs_on_shared_slides(shared_data: Path) -> None:
    found = list_inputs([shared_data / "slides"])
    assert [p.name for p in found] == sorted(SLIDES)
    assert len(list_inputs([shared_data / "slides"], recursive=True)) == len(SLIDES) + len(BROKEN)


@pytest.mark.parametrize(
    ("array", "kwargs", "message"),
    [
        # tifffile stores an H×W×6 array as H pages of W×6: it was read as an image 6 px wide
        (np.zeros((40, 30, 6), np.uint8), {}, r"40 planes of 6×30 px \(an array of shape"),
        (np.zeros((6, 40, 30), np.uint8), {}, "6 planes of 30×40 px"),
        (np.zeros((40, 30, 6), np.uint8), {"photometric": "rgb"}, "6 channels per pixel"),
    ],
)
def test_multichannel_tiffs_are_refused_not_misread(tmp_path, array, kwargs, message):
    path = tmp_path / "multi.tif"
    tifffile.imwrite(path, array, **kwargs)
    with pytest.raises(InputError, match=message):
        open_image(path)


def test_rgb_rgba_and_grey_tiffs_still_open(tmp_path):
    for name, array, kwargs in [
        ("rgb", np.full((40, 30, 3), 9, np.uint8), {}),
        ("grey", np.full((40, 30), 9, np.uint8), {}),
        ("rgba", np.full((40, 30, 4), 9, np.uint8), {"extrasamples": ["unassalpha"]}),
    ]:
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, array, **kwargs)
        with open_image(path) as src:
            assert src.dimensions == (30, 40)
