"""Tissue detection: blank glass, near-white tiles, pen marks, real tissue, slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeropath.io.reader import bundled_sample, open_image
from zeropath.io.tissue import pen_mask, tissue_mask, tissue_mask_for_source
from zeropath.testing import render_nuclei

BLANK_TILES = [
    "almost-white-1.png",
    "almost-white-ihc.png",
    "liver-level2-38626-13514-39426-14315.png",
    "no-tissue.png",
    "no-tissue2.png",
    "no-tissue-line.png",
    "no-tissue-green-pen.png",
    "no-tissue-red-pen.png",
]
TISSUE_TILES = {
    "he-1000px-tiatoolbox-target.png": 0.9,
    "high-nuclei-score-level0.png": 0.9,
    "high-nuclei-score-red-pen-level1.png": 0.8,
    "kidney-ihc-level0-340-520-390-550.png": 0.6,  # IHC, bluish-grey
}


def _tile(shared_data: Path, name: str) -> np.ndarray:
    with open_image(shared_data / "tiles" / name) as src:
        return src.read_level(0)


def _glass(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """Slightly tinted, noisy blank glass."""
    rng = np.random.default_rng(seed)
    base = np.array([242, 240, 244], np.float32)
    return np.clip(base + rng.normal(0, 3, (*shape, 3)), 0, 255).astype(np.uint8)


def _big_blobs(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Pixels of ``mask`` in 8-connected groups (after a small closing) of ``min_size`` or more."""
    from scipy import ndimage as ndi

    closed = ndi.binary_closing(mask, structure=np.ones((5, 5), bool))
    labels, _ = ndi.label(closed, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return mask & keep[labels]


# --------------------------------------------------------------------------- shared tiles


@pytest.mark.shared_data
@pytest.mark.parametrize("name", BLANK_TILES)
def test_blank_and_pen_only_tiles_are_empty(shared_data: Path, name: str) -> None:
    mask = tissue_mask(_tile(shared_data, name))
    assert mask.dtype == bool
    assert mask.mean() < 0.01


@pytest.mark.shared_data
def test_almost_white_with_a_fragment(shared_data: Path) -> None:
    # almost-white-2 is glass with one small real tissue fragment at its top edge
    mask = tissue_mask(_tile(shared_data, "almost-white-2.png"))
    assert 0.005 < mask.mean() < 0.05
    rows = np.nonzero(mask.any(axis=1))[0]
    assert rows.max() < 160  # the fragment, not the noisy glass below it


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(TISSUE_TILES))
def test_tissue_tiles_are_mostly_tissue(shared_data: Path, name: str) -> None:
    assert tissue_mask(_tile(shared_data, name)).mean() > TISSUE_TILES[name]


@pytest.mark.shared_data
def test_red_pen_is_excluded(shared_data: Path) -> None:
    rgb = _tile(shared_data, "high-nuclei-score-red-pen-level1.png")
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    red = (r > 180) & (g < 90) & (b < 110)
    ink = _big_blobs(red, 1000)  # the marker strokes, not single red blood cells
    assert ink.sum() > 3000
    mask = tissue_mask(rgb)
    # the strokes go; what stays is their faint fringe where tissue shows through the ink
    assert (mask & ink).sum() / ink.sum() < 0.15
    assert mask.mean() > 0.8  # the tissue around them stays

    blank = _tile(shared_data, "no-tissue-red-pen.png")
    assert not tissue_mask(blank).any()
    assert pen_mask(blank).mean() > 0.3


@pytest.mark.shared_data
def test_green_pen_over_tissue_is_excluded(shared_data: Path) -> None:
    rgb = _tile(shared_data, "medium-nuclei-score-green-pen-level1.png")
    r, g = rgb[..., 0].astype(int), rgb[..., 1].astype(int)
    ink = _big_blobs((g > r + 40) & (g > 60), 1000)  # green/teal ink; H&E is never green
    assert ink.sum() > 5000
    mask = tissue_mask(rgb)
    assert (mask & ink).sum() / ink.sum() < 0.05
    # the uninked H&E below the stroke is kept
    assert mask[400:, :].mean() > 0.5


@pytest.mark.shared_data
def test_known_mpp_reduces_work_resolution(shared_data: Path) -> None:
    rgb = _tile(shared_data, "he-1000px-tiatoolbox-target.png")
    mask = tissue_mask(rgb, mpp=0.25)
    assert mask.shape == rgb.shape[:2]
    assert mask.mean() > 0.95


@pytest.mark.shared_data
def test_shared_slides(shared_data: Path) -> None:
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1-reduced.svs"
    with open_image(path) as src:
        mask, (sx, sy) = tissue_mask_for_source(src, max_size=512)
    assert mask.shape == (411, 512)
    assert sx == pytest.approx(4443 / 512) and sy == pytest.approx(3567 / 411)
    assert 0.5 < mask.mean() < 0.8
    with open_image(shared_data / "slides" / "small-16px.svs") as src:
        mask, scale = tissue_mask_for_source(src)
    assert mask.shape == (16, 16) and scale == (1.0, 1.0)


# --------------------------------------------------------------------------- synthetic


def test_blank_synthetic_images_are_empty() -> None:
    white = np.full((200, 300, 3), 255, np.uint8)
    assert not tissue_mask(white).any()
    assert not tissue_mask(_glass()).any()
    assert not tissue_mask(_glass(), mpp=1.0).any()
    assert not tissue_mask(np.zeros((0, 5, 3), np.uint8)).any()


def test_synthetic_tile_is_tissue(
    synthetic_tile: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    rgb = synthetic_tile[0]
    before = rgb.copy()
    mask = tissue_mask(rgb)
    np.testing.assert_array_equal(rgb, before)  # input untouched
    assert mask.shape == rgb.shape[:2] and mask.mean() > 0.95


def test_tissue_island_on_glass() -> None:
    rgb = _glass((300, 300))
    tile, _, _ = render_nuclei((120, 150), n=12, seed=3)
    rgb[90:210, 60:210] = tile
    truth = np.zeros((300, 300), bool)
    truth[90:210, 60:210] = True
    mask = tissue_mask(rgb)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9


def test_pen_stroke_on_glass_and_tissue() -> None:
    rgb = _glass((300, 300))
    tile, _, _ = render_nuclei((300, 150), n=30, seed=4)
    rgb[:, :150] = tile
    stroke = np.zeros((300, 300), bool)
    stroke[130:160, 20:280] = True  # a green marker line across tissue and glass
    rgb[stroke] = (40, 160, 110)
    mask = tissue_mask(rgb)
    assert (mask & stroke).sum() == 0
    assert mask[:120, :150].mean() > 0.9  # tissue above the stroke
    assert not mask[:, 160:].any()  # glass and ink on the right
    assert pen_mask(rgb)[stroke].mean() > 0.95


def test_grayscale_and_rgba_inputs_are_accepted() -> None:
    tile, _, _ = render_nuclei((128, 128), n=10, seed=5)
    gray = tile.mean(axis=2).astype(np.uint8)
    assert tissue_mask(gray).shape == (128, 128)
    rgba = np.dstack([tile, np.full((128, 128), 255, np.uint8)])
    np.testing.assert_array_equal(tissue_mask(rgba), tissue_mask(tile))


def test_bundled_slide_mask() -> None:
    with open_image(bundled_sample()) as src:
        mask, (sx, sy) = tissue_mask_for_source(src, max_size=256)
        assert mask.shape == (256, 192)  # 2220×2967 scaled to fit 256
        assert sx == pytest.approx(2220 / 192) and sy == pytest.approx(2967 / 256)
        assert 0.25 < mask.mean() < 0.55
        # a level-0 region under a mask pixel that is tissue holds stained pixels
        r, c = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
        region = src.read_region(int(c * sx), int(r * sy), 8, 8)
        assert region.mean() < 235


def test_blank_image_source(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.fromarray(_glass((120, 160))).save(path)
    with open_image(path) as src:
        mask, scale = tissue_mask_for_source(src)
    assert mask.shape == (120, 160) and scale == (1.0, 1.0)
    assert not mask.any()


def test_is_blank_tells_glass_from_any_stain():
    from zeropath.io.tissue import is_blank

    white = np.full((64, 64, 3), 255, np.uint8)
    assert is_blank(white)
    near_white = white.copy()
    near_white[::7, ::5] = 240  # scanner noise, dust
    assert is_blank(near_white)
    sparse = white.copy()
    sparse[20:30, 20:30] = (150, 60, 140)  # 2.4 % stained: adipose-like membranes count
    assert not is_blank(sparse)
    before = sparse.copy()
    is_blank(sparse)
    np.testing.assert_array_equal(sparse, before)
