"""Tiny synthetic pools for the active-learning tests: two colour classes drawn as shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: class 0 (pink, stroma-like) and class 1 (purple, gland-like) colours
COLOURS = ((230, 150, 190), (130, 60, 140))


def draw_image(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its 0/1 mask: purple discs and boxes on a pink background + noise."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(2, 4))):
        cy, cx = rng.uniform(10, size - 10, 2)
        r = rng.uniform(10, 26)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    y0, x0 = rng.integers(0, size - 30, 2)
    mask[y0 : y0 + int(rng.integers(12, 30)), x0 : x0 + int(rng.integers(12, 30))] = 1
    rgb = np.array(COLOURS, np.float64)[mask]
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def write_pool(root: Path, n: int = 6, n_test: int = 2, size: int = 128, binary255: bool = True):
    """``root/pool``, ``root/test`` images and ``root/labels`` masks (0/255 or 0/1)."""
    for sub in ("pool", "test", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n + n_test):
        rgb, mask = draw_image(i, size)
        folder, stem = ("pool", f"img{i}") if i < n else ("test", f"test{i}")
        Image.fromarray(rgb).save(root / folder / f"{stem}.png")
        m = mask * 255 if binary255 else mask
        Image.fromarray(m.astype(np.uint8)).save(root / "labels" / f"{stem}.png")
    return root / "pool", root / "test", root / "labels"
