"""Colour deconvolution of H&E images (Ruifrok & Johnston, 2001).

Pure numpy: RGB uint8 in, optical density (OD) out. Used by the classical segmenter, the
stain-prior detector and the per-nucleus measurements, so all three read the same
hematoxylin signal.
"""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston's H&E-DAB stain vectors (rows: hematoxylin, eosin, DAB), unit length, as
# scikit-image's ``rgb2hed``. The segmenters, detectors and stain normalisation use these (the
# bundled models were trained on them); the per-nucleus measurements use QuPath's vectors
# (:func:`qupath_he_od`) so that they match what QuPath shows for the same nuclei.
HED_VECTORS = np.array(
    [
        [0.65, 0.70, 0.29],
        [0.07, 0.99, 0.11],
        [0.27, 0.57, 0.78],
    ],
    dtype=np.float64,
)
HED_VECTORS = HED_VECTORS / np.linalg.norm(HED_VECTORS, axis=1, keepdims=True)
_HED_TO_RGB_INV = np.linalg.inv(HED_VECTORS)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return a / np.linalg.norm(a)


# QuPath's "H&E default" stains (hematoxylin, eosin) and their residual: the normalised cross
# product of the two, as QuPath's StainVector.makeResidualStainVector makes it.
QUPATH_HE_VECTORS = np.stack(
    [
        _unit((0.65111, 0.70119, 0.29049)),
        _unit((0.2159, 0.8012, 0.5581)),
        _unit(tuple(np.cross(_unit((0.65111, 0.70119, 0.29049)), _unit((0.2159, 0.8012, 0.5581))))),
    ]
)
_QUPATH_HE_INV = np.linalg.inv(QUPATH_HE_VECTORS)


def qupath_he_od(rgb: np.ndarray, background: float = 255.0) -> np.ndarray:
    """Hematoxylin, eosin and residual amounts as QuPath computes them, ``H×W×3`` float32.

    QuPath's colour deconvolution with its "H&E default" stains and a white of ``background``:
    per channel ``OD = max(0, -log10(max(I, 1) / background))``, then the OD vector times the
    inverse of the stain matrix (rows: hematoxylin, eosin, residual). Negative amounts are
    kept, as QuPath keeps them in its intensity measurements. The input is not modified.
    """
    rgb = as_rgb(rgb).astype(np.float64)
    od = np.maximum(0.0, -np.log10(np.maximum(rgb, 1.0) / float(background)))
    return (od.reshape(-1, 3) @ _QUPATH_HE_INV).astype(np.float32).reshape(od.shape)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Return an ``H×W×3`` uint8 view/copy: grayscale is replicated, alpha is dropped.

    Float images in [0, 1] are scaled to 0..255; other dtypes are clipped.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        arr = np.repeat(arr[..., :1], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] >= 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a 2-D gray or H×W×C colour image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density ``-log10((I + 1) / 256)`` as float32, shape ``H×W×3``."""
    rgb = as_rgb(rgb).astype(np.float32)
    return -np.log10((rgb + 1.0) / 256.0)


def hed_od(rgb: np.ndarray) -> np.ndarray:
    """Stain concentrations (OD units) for hematoxylin, eosin and DAB, ``H×W×3`` float32."""
    od = optical_density(rgb)
    hed = od.reshape(-1, 3) @ _HED_TO_RGB_INV.astype(np.float32)
    return np.maximum(hed, 0.0).reshape(od.shape)


def hematoxylin_od(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin concentration (OD units, >= 0) per pixel, ``H×W`` float32."""
    od = optical_density(rgb)
    h = od.reshape(-1, 3) @ _HED_TO_RGB_INV[:, 0].astype(np.float32)
    return np.maximum(h, 0.0).reshape(od.shape[:2])


#: stain_normalise's reference 99th percentiles of hematoxylin and eosin (OD), about the
#: median over the MoNuSeg Kumar training images
REFERENCE_HE_P99 = (0.7, 0.26)


def stain_normalise(
    rgb: np.ndarray,
    reference: tuple[float, float] = REFERENCE_HE_P99,
    percentile: float = 99.0,
    max_scale: float = 3.0,
) -> np.ndarray:
    """Scale each image's hematoxylin and eosin amounts to a reference (uint8 RGB out).

    Colour deconvolution; the H and E concentrations are multiplied so that their
    ``percentile`` matches ``reference`` (each factor kept within ``[1 / max_scale,
    max_scale]``); then back to RGB. A pale slide gets the contrast of a typical one, so a
    network that learnt absolute stain levels still finds its nuclei. Label-free, per image.
    """
    rgb = as_rgb(rgb)
    od = -np.log10((rgb.reshape(-1, 3).astype(np.float32) + 1.0) / 256.0)
    conc = od @ _HED_TO_RGB_INV.astype(np.float32)
    step = max(1, conc.shape[0] // 65_536)
    sample = conc[::step]
    for c in range(2):
        level = float(np.percentile(sample[:, c], percentile))
        scale = reference[c] / level if level > 1e-3 else 1.0
        conc[:, c] *= float(np.clip(scale, 1.0 / max_scale, max_scale))
    out = 256.0 * np.power(10.0, -(conc @ HED_VECTORS.astype(np.float32))) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape)
