"""Stain and geometry augmentation for the learned nucleus stages.

* :func:`hed_jitter` perturbs each stain's concentration in HED optical-density space (scale
  and shift per stain), the usual way to make a network robust to stain variation between
  labs and scanners (Tellez et al., MedIA 2019).
* :func:`d4` / :func:`d4_inverse` apply one of the 8 symmetries of the square (rot90 × flip);
  used for training augmentation and for test-time augmentation.

All functions return new arrays and never modify their inputs.
"""

from __future__ import annotations

import numpy as np

from zeropath.stain import HED_VECTORS

__all__ = ["d4", "d4_inverse", "hed_jitter", "random_d4"]

_RGB_FROM_HED = HED_VECTORS.astype(np.float32)
_HED_FROM_RGB = np.linalg.inv(HED_VECTORS).astype(np.float32)


def hed_jitter(
    rgb: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05
) -> np.ndarray:
    """Scale each stain's OD by ``1 + U(-sigma, sigma)`` and shift it by ``U(-bias, bias)``.

    ``rgb`` is ``H×W×3`` uint8 (or float in [0, 1]); the result has the same dtype and shape.
    The shift is scaled by each pixel's total OD so that white glass stays white.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {arr.shape}")
    alpha = 1.0 + rng.uniform(-sigma, sigma, 3).astype(np.float32)
    beta = rng.uniform(-bias, bias, 3).astype(np.float32)
    is_float = np.issubdtype(arr.dtype, np.floating)
    x = arr.astype(np.float32) * (255.0 if is_float else 1.0)
    od = -np.log10((x + 1.0) / 256.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    total = np.clip(od.reshape(-1, 3).sum(axis=1, keepdims=True), 0.0, 1.0)
    hed = hed * alpha + beta * total
    out = 256.0 * np.power(10.0, -(hed @ _RGB_FROM_HED)) - 1.0
    out = np.clip(out, 0.0, 255.0).reshape(arr.shape)
    if is_float:
        return (out / 255.0).astype(arr.dtype)
    return np.rint(out).astype(arr.dtype)


def d4(arr: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` (0..7) of the square on the first two axes: rot90 ``k % 4``, then a
    left-right flip when ``k >= 4``. ``k = 0`` is the identity (a copy)."""
    out = np.rot90(arr, k % 4, axes=(0, 1))
    if k % 8 >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def d4_inverse(arr: np.ndarray, k: int) -> np.ndarray:
    """Undo :func:`d4` with the same ``k``."""
    out = arr[:, ::-1] if k % 8 >= 4 else arr
    return np.ascontiguousarray(np.rot90(out, -(k % 4), axes=(0, 1)))


def random_d4(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same random symmetry applied to every array (image and its target maps)."""
    k = int(rng.integers(8))
    return tuple(d4(a, k) for a in arrays)
