"""Tissue detection on thumbnails: where on the glass is there stained tissue?

Used to skip blank glass when tiling a slide. The method is classical and fast:

1. *foreground* — colour away from the glass: optical density relative to an estimated white
   point, and saturation, both smoothed; each is thresholded by Otsu clamped to a fixed band,
   so blank or near-white images give an empty mask instead of thresholded noise, and fully
   stained images are not split into "dark" and "light" tissue;
2. *pen marks* — blobs of ink colours H&E never produces (green/teal, saturated blue,
   saturated red, dark red-purple, near-black), grown through their smooth, blurred edge
   (tissue is textured and stops the growth), are removed;
3. *clean-up* — opening by reconstruction (thin lines go), closing, dropping specks, filling
   small enclosed holes and dropping smooth, detail-free blobs, with sizes in µm when the
   thumbnail's µm/px is known, otherwise relative to the thumbnail size.

Checked on histolab's blank / near-white / pen-mark tiles, IHC tiles, GlaS, MoNuSeg and the
shared slides (see ``tests/test_tissue.py``). Known limit: adipose tissue (thin membranes
around empty fat cells) is mostly left out at tile resolution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from zeropath.stain import as_rgb

if TYPE_CHECKING:
    from zeropath.io.reader import ImageSource

__all__ = ["is_blank", "pen_mask", "tissue_mask", "tissue_mask_for_source"]

# Clamp bands for the Otsu thresholds (relative OD summed over RGB; HSV saturation).
OD_BAND = (0.15, 0.35)
SAT_BAND = (0.08, 0.18)
# Below this fine-detail energy (OD units) a stained region is smooth: ink or blur, not tissue.
SMOOTH_TEXTURE = 0.01
# With a known µm/px, finer inputs are reduced to about this resolution before detection.
WORK_MPP = 2.0


#: An image whose 99th percentile of summed optical density (absolute, white = 255) stays
#: below this holds no stain: blank glass or an all-white tile. Stained tiles, adipose
#: included, reach 2.5 and more; histolab's near-white and pen-free blank tiles stay < 0.8.
BLANK_OD_P99 = 1.0


def is_blank(rgb: np.ndarray) -> bool:
    """Whether an RGB image (or thumbnail) holds no stain at all.

    Unlike :func:`tissue_mask`, which leaves adipose out at tile resolution, this only
    answers "is anything stained here?", so plain images that are classified whole can
    still be told apart from blank ones. Pixels are not modified.
    """
    rgb = as_rgb(rgb)
    if rgb.size == 0:
        return True
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 1_000_000)))
    sample = rgb[::step, ::step].astype(np.float32)
    od = -np.log((sample + 1.0) / 256.0).sum(axis=-1)
    return float(np.percentile(od, 99)) < BLANK_OD_P99


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], float32."""
    f = rgb.astype(np.float32) / 255.0
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    mx = f.max(axis=-1)
    mn = f.min(axis=-1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6.0,
        np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0).astype(np.float32)
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1.0), 0.0).astype(np.float32)
    return hue, sat, mx


def _white_point(rgb: np.ndarray) -> np.ndarray:
    """Glass colour: median of the brightest tenth of pixels when bright and neutral, else 255."""
    flat = rgb.reshape(-1, 3).astype(np.float32)
    brightness = flat.sum(axis=1)
    cut = np.percentile(brightness, 90)
    white = np.median(flat[brightness >= cut], axis=0)
    if white.min() >= 200 and white.max() - white.min() <= 25:
        return white
    return np.full(3, 255.0, np.float32)


def _clamped_otsu(values: np.ndarray, band: tuple[float, float]) -> float:
    from skimage.filters import threshold_otsu

    lo, hi = band
    if float(values.max()) - float(values.min()) < 1e-6:
        return lo
    return float(np.clip(threshold_otsu(values), lo, hi))


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without 8-connected components of fewer than ``min_size`` pixels."""
    from scipy import ndimage as ndi

    if min_size <= 1 or not mask.any():
        return mask
    from zeropath.io.morphology import drop_small_labels

    labels, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    return drop_small_labels(labels, min_size) > 0


def _fill_small_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` with enclosed background regions of at most ``max_size`` pixels filled.

    Background touching the image border is never a hole: it may be glass beyond the edge.
    """
    from scipy import ndimage as ndi

    labels, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    fill = sizes <= max_size
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill[border] = False
    fill[0] = False
    return mask | fill[labels]


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r + r  # slightly rounder than the strict disk


def _texture(rgb: np.ndarray) -> np.ndarray:
    """Local fine-detail energy: |OD − blurred OD|, averaged. Ink and out-of-focus blur ≈ 0."""
    from scipy import ndimage as ndi

    od = (-np.log10((rgb.astype(np.float32) + 1.0) / 256.0)).sum(axis=-1)
    return ndi.gaussian_filter(np.abs(od - ndi.gaussian_filter(od, 1.0)), 2.0)


def pen_mask(rgb: np.ndarray, min_size: int = 64, halo: int = 16, margin: int = 2) -> np.ndarray:
    """Pixels covered by marker ink (green, blue, red, dark red-purple, black) as a bool mask.

    Blobs of clearly ink-coloured pixels of at least ``min_size`` pixels seed the mask
    (single blood cells or dense nuclei do not). Each seed then grows by up to ``halo``
    pixels through smooth, stained pixels — the blurred, paler edge of ink on the
    coverslip; tissue stops the growth because it is textured — and finally by ``margin``.
    """
    rgb = as_rgb(rgb)
    return _pen(rgb, *_hsv(rgb), _texture(rgb), min_size, halo, margin)


def _pen(
    rgb: np.ndarray,
    hue: np.ndarray,
    sat: np.ndarray,
    val: np.ndarray,
    texture: np.ndarray,
    min_size: int,
    halo: int,
    margin: int,
) -> np.ndarray:
    from scipy import ndimage as ndi

    red = (hue >= 340.0) | (hue <= 12.0)  # eosin and magenta tissue stay below 340°
    dark_red = (hue >= 325.0) | (hue <= 12.0)
    green = (hue >= 60.0) & (hue < 195.0)
    blue = (hue >= 195.0) & (hue < 230.0)
    ink = (
        (green & (sat > 0.2))
        | (blue & (sat > 0.45))
        | (red & (sat > 0.55))
        | (dark_red & (sat > 0.45) & (val < 0.45))  # dark red / purple-black
        | (val < 0.15)  # black
    )
    ink = ndi.binary_opening(ink, structure=_disk(1))
    ink = _drop_small(ink, int(min_size))
    if not ink.any():
        return ink
    if halo > 0:
        stained = (sat > 0.05) | (val < 0.9)
        smooth = texture < SMOOTH_TEXTURE
        ink = ndi.binary_dilation(
            ink, structure=_disk(1), iterations=int(halo), mask=ink | (stained & smooth)
        )
    if margin > 0:
        ink = ndi.binary_dilation(ink, structure=_disk(margin))
    return ink


class _Sizes(NamedTuple):
    """Morphology sizes in thumbnail pixels."""

    sigma: float  # smoothing of the colour features
    min_object: int  # smaller tissue specks are dropped
    max_hole: int  # smaller enclosed gaps are filled
    open_r: int  # thinner-only objects are dropped
    close_r: int  # gaps this narrow are bridged
    halo: int  # how far pen blobs grow into their blurred edge


def _sizes(shape: tuple[int, int], mpp: float | None, min_um2: float, hole_um2: float) -> _Sizes:
    """Sizes from physical units when ``mpp`` is known, else relative to the image side."""
    if mpp is not None and mpp > 0:
        return _Sizes(
            sigma=float(np.clip(2.0 / mpp, 0.5, 4.0)),
            min_object=max(4, round(min_um2 / mpp**2)),
            max_hole=max(4, round(hole_um2 / mpp**2)),
            open_r=int(np.clip(round(20.0 / mpp), 1, 4)),
            close_r=int(np.clip(round(8.0 / mpp), 1, 4)),
            halo=int(np.clip(round(60.0 / mpp), 1, 64)),
        )
    side = max(shape)
    return _Sizes(
        sigma=float(np.clip(side / 512.0, 0.5, 4.0)),
        min_object=max(16, round((side / 80.0) ** 2)),
        max_hole=max(64, round((side / 10.0) ** 2)),
        open_r=int(np.clip(round(side / 128.0), 1, 4)),
        close_r=int(np.clip(round(side / 512.0), 1, 4)),
        halo=int(np.clip(round(side / 8.0), 1, 64)),
    )


def tissue_mask(
    rgb: np.ndarray,
    mpp: float | None = None,
    *,
    remove_pen: bool = True,
    min_object_um2: float = 2500.0,
    max_hole_um2: float = 10000.0,
) -> np.ndarray:
    """Boolean ``H×W`` mask of stained tissue in an RGB thumbnail (True = tissue).

    ``mpp`` is the thumbnail's µm/px; with it, specks under ``min_object_um2`` are dropped,
    holes under ``max_hole_um2`` filled, and inputs finer than about 2 µm/px are analysed
    at that resolution; without it, sizes scale with the image. Blank glass, near-white
    images and pen-only images give an (almost) empty mask. The input is not modified.
    """
    from scipy import ndimage as ndi

    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((h, w), bool)
    options = {
        "remove_pen": remove_pen,
        "min_object_um2": min_object_um2,
        "max_hole_um2": max_hole_um2,
    }
    if mpp is not None and mpp > 0:
        factor = min(int(WORK_MPP / mpp), min(h, w) // 64)  # keep >= 64 px to work on
        if factor >= 2:
            # tissue is a coarse notion: at ~WORK_MPP µm/px cytoplasm and small lumens no
            # longer look like glass; each input pixel then gets its block's answer
            from PIL import Image

            small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(factor))
            coarse = tissue_mask(small, mpp * factor, **options)  # type: ignore[arg-type]
            up = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)
            return up[:h, :w]  # reduce() rounds up, so this covers the input

    size = _sizes((h, w), mpp, min_object_um2, max_hole_um2)
    white = _white_point(rgb)
    od = np.clip(-np.log10((rgb.astype(np.float32) + 1.0) / (white + 1.0)), 0.0, None)
    hue, sat, val = _hsv(rgb)
    texture = _texture(rgb)
    od_s = ndi.gaussian_filter(od.sum(axis=-1), size.sigma)
    sat_s = ndi.gaussian_filter(sat, size.sigma)
    fg = (od_s > _clamped_otsu(od_s, OD_BAND)) | (sat_s > _clamped_otsu(sat_s, SAT_BAND))

    pen = None
    if remove_pen:
        seed = max(size.min_object, size.max_hole // 4)
        margin = max(2, size.close_r + 1)
        pen = _pen(rgb, hue, sat, val, texture, seed, size.halo, margin)
        fg &= ~pen

    # opening by reconstruction: drops thin-only objects (coverslip edges, hairs, scratches)
    # but keeps the full outline of everything that survives the opening
    fg = ndi.binary_propagation(ndi.binary_opening(fg, structure=_disk(size.open_r)), mask=fg)
    r = size.close_r
    padded = np.pad(fg, r, mode="edge")  # so that closing does not erode the image border
    fg = ndi.binary_closing(padded, structure=_disk(r))[r:-r, r:-r]
    fg = _drop_small(fg, size.min_object)
    fg = _fill_small_holes(fg, size.max_hole)
    if pen is not None:
        fg &= ~pen  # holes filled inside tissue must not bring the ink back
        fg = _drop_small(fg, size.min_object)
    return _drop_smooth(fg, texture)


def _drop_smooth(mask: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Remove components without fine detail (ink blobs, bubbles, blur): tissue is textured."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    medians = np.asarray(ndi.median(texture, labels, np.arange(1, n + 1)))
    keep = np.concatenate([[False], medians >= SMOOTH_TEXTURE])
    return keep[labels]


def tissue_mask_for_source(
    source: ImageSource, max_size: int = 2048, **kwargs: object
) -> tuple[np.ndarray, tuple[float, float]]:
    """Tissue mask of a slide or image thumbnail and its ``(sx, sy)`` downsample.

    Mask pixel ``(row, col)`` covers level-0 pixels from ``(col·sx, row·sy)`` to
    ``((col+1)·sx, (row+1)·sy)``; ``sx = width / mask_width`` and ``sy = height / mask_height``
    (they differ slightly because the thumbnail size is rounded).
    """
    thumb = source.thumbnail(max_size)
    th, tw = thumb.shape[:2]
    w0, h0 = source.dimensions
    sx, sy = w0 / tw, h0 / th
    mask = tissue_mask(thumb, mpp=source.mpp * (sx + sy) / 2.0, **kwargs)  # type: ignore[arg-type]
    return mask, (sx, sy)
