"""CLIP image preprocessing in numpy + PIL (no torchvision): what every CLIP-family encoder uses."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "as_uint8_batch", "clip_preprocess"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(
    images: np.ndarray,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 → ``(N, 3, size, size)`` float32, as CLIP was trained.

    Shortest side resized to ``size`` with PIL bicubic (long side ``int(size * long / short)``),
    centre crop (offset ``(extent - size) // 2``), scaled to [0, 1], normalised by ``mean``/``std``
    — the same arithmetic as transformers' ``CLIPImageProcessor`` (and torchvision's
    ``Resize(size, BICUBIC) + CenterCrop``, up to its half-pixel rounding of odd crop offsets).
    """
    from PIL import Image

    images = as_uint8_batch(images)
    out = np.empty((len(images), size, size, 3), np.uint8)

    def one(i: int) -> None:
        img = images[i]
        h, w = img.shape[:2]
        if min(h, w) != size:
            if w <= h:
                new_w, new_h = size, int(size * h / w)
            else:
                new_w, new_h = int(size * w / h), size
            img = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BICUBIC))
            h, w = new_h, new_w
        top, left = (h - size) // 2, (w - size) // 2
        out[i] = img[top : top + size, left : left + size]

    workers = min(len(images), os.cpu_count() or 1, 16)
    if workers > 1 and images.shape[1:3] != (size, size):
        # PIL's resize releases the GIL: on a GPU machine the CPU resize was the bottleneck
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(images))))
    else:
        for i in range(len(images)):
            one(i)
    x = out.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def as_uint8_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return images
