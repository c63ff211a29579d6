"""Dense feature maps on a regular grid of cells, and their cache on disk.

Every extractor turns an RGB image into ``(h, w, D)`` float32 features, one vector per *cell*:
a ``cell × cell`` pixel square at the image's own resolution (16 px by default), cell ``(i, j)``
covering rows ``[i·cell, (i+1)·cell)`` and columns ``[j·cell, (j+1)·cell)``;
``h = ceil(H / cell)``, ``w = ceil(W / cell)`` (the last row/column of cells may be partial).
Active-learning regions are whole blocks of cells, and predictions per cell are upsampled to
pixels, so every extractor shares this grid.

Extractors (:func:`get_extractor`):

- ``histology`` — handcrafted and offline: on the stain-normalised image, per cell HED stain
  statistics (colour deconvolution, mean/std of hematoxylin and eosin), RGB / brightness mean
  and std, texture (Gaussian gradient magnitude at two scales, Gabor energy at
  4 orientations × 2 wavelengths), a nucleus proxy
  (hematoxylin blobs: thresholded H + connected components → blob count, mean blob size and
  nuclear fraction per cell), and the same 22 statistics box-averaged over 5×5 and 11×11 cells
  for context: 66 features. Raw values; the loop standardises them over the pool.
- ``encoder:NAME`` — any registered vision-language :class:`~zeropath.models.encoders.base.Encoder`:
  ``encode_patches`` on windows of ``input_size`` image pixels when the model has patch tokens,
  else ``encode_images`` on a sliding window; the features live in the text space (unit length),
  so text prototypes of unseen classes can be compared with them.
- ``encoder:mobilesam`` (alias ``mobilesam``) — the MobileSAM image encoder as a dense extractor:
  its 64×64×256 embedding of the 1024-px resized image, bilinearly resampled to the cell grid.
  The embeddings are also cached by :class:`~zeropath.models.mobilesam.predictor.SamPredictor`.

:class:`FeatureCache` keeps one ``.npy`` per (image sha256, extractor id), so a selection round
costs no feature time.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.errors import ConfigError, InputError
from zeropath.stain import as_rgb, hed_od

if TYPE_CHECKING:
    from zeropath.models.encoders.base import Encoder

__all__ = [
    "DEFAULT_CELL",
    "EncoderFeatures",
    "FeatureCache",
    "FeatureExtractor",
    "HistologyFeatures",
    "MobileSAMFeatures",
    "cell_grid_shape",
    "get_extractor",
    "read_rgb",
]

#: Default cell side in pixels (at the image's resolution).
DEFAULT_CELL = 16


def cell_grid_shape(height: int, width: int, cell: int) -> tuple[int, int]:
    """``(ceil(height / cell), ceil(width / cell))``: the cell grid of an image."""
    return -(-int(height) // int(cell)), -(-int(width) // int(cell))


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The whole of a plain image file as ``H×W×3`` uint8 RGB (slides are refused)."""
    from zeropath.io.reader import open_image

    with open_image(path) as src:
        if src.is_slide:
            raise InputError(path, "active learning pools hold plain images, not whole slides")
        return src.read_region(0, 0, src.width, src.height)


class FeatureExtractor(ABC):
    """RGB image → ``(h, w, D)`` float32 cell features (see the module docstring).

    ``name`` and ``version`` with :meth:`params` make :attr:`cache_id`; ``text_space`` is true
    when the features are unit vectors in a text-embedding space (then :meth:`encode_texts`
    gives text prototypes and the features are not standardised).
    """

    name: str = "extractor"
    version: str = "1"
    cell: int = DEFAULT_CELL
    text_space: bool = False

    @abstractmethod
    def features(self, rgb: np.ndarray) -> np.ndarray:
        """``(h, w, D)`` float32 features of an ``H×W×3`` image on the cell grid."""

    def params(self) -> dict[str, Any]:
        """Parameters that change the features (part of the cache key)."""
        return {"cell": self.cell}

    @property
    def cache_id(self) -> str:
        """A file-name-safe id of this extractor, its version and parameters."""
        text = ",".join(f"{k}={v}" for k, v in sorted(self.params().items()))
        digest = hashlib.sha256(f"{self.name}|{self.version}|{text}".encode()).hexdigest()[:12]
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")
        return f"{safe}-v{self.version}-{digest}"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray | None:
        """``(T, D)`` unit text embeddings in the feature space, or ``None`` (no text side)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records about the extractor."""
        return {"name": self.name, "version": self.version, "id": self.cache_id, **self.params()}


# --------------------------------------------------------------------------- cell statistics


def _cell_sums(maps: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell sums of ``(H, W, K)`` maps and per-cell pixel counts ``(h, w, 1)``."""
    hh, ww = maps.shape[:2]
    h, w = cell_grid_shape(hh, ww, cell)
    pad = ((0, h * cell - hh), (0, w * cell - ww), (0, 0))
    padded = np.pad(maps, pad)
    sums = padded.reshape(h, cell, w, cell, -1).sum(axis=(1, 3), dtype=np.float64)
    ones = np.pad(np.ones((hh, ww), np.float32), pad[:2])
    counts = ones.reshape(h, cell, w, cell).sum(axis=(1, 3))[..., None]
    return sums, counts


def _cell_means(maps: np.ndarray, cell: int) -> np.ndarray:
    sums, counts = _cell_sums(maps, cell)
    return (sums / np.maximum(counts, 1.0)).astype(np.float32)


def _cell_mean_std(maps: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    sums, counts = _cell_sums(np.concatenate([maps, maps * maps], axis=-1), cell)
    k = maps.shape[-1]
    n = np.maximum(counts, 1.0)
    mean = sums[..., :k] / n
    var = np.maximum(sums[..., k:] / n - mean * mean, 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _half(gray: np.ndarray) -> np.ndarray:
    """2×2 block mean (the last odd row/column is replicated)."""
    hh, ww = gray.shape
    g = np.pad(gray, ((0, hh % 2), (0, ww % 2)), mode="edge")
    return g.reshape(g.shape[0] // 2, 2, g.shape[1] // 2, 2).mean(axis=(1, 3))


def gabor_energy(
    gray: np.ndarray, wavelengths: Sequence[float] = (4.0, 8.0), n_orient: int = 4
) -> np.ndarray:
    """``(H, W, len(wavelengths)·n_orient)`` Gabor energy (magnitude of the complex response).

    The filters are built in the frequency domain: a Gaussian (one-octave bandwidth) around the
    centre frequency ``(cos θ, sin θ) / λ``; the image is reflect-padded by one wavelength
    against wrap-around. One FFT plus one inverse FFT per filter.
    """
    from scipy import fft

    g = np.asarray(gray, np.float32)
    g = g - g.mean()
    pad = int(max(wavelengths)) * 2
    hh, ww = g.shape
    p = np.pad(g, pad, mode="reflect") if min(hh, ww) > pad else np.pad(g, pad, mode="edge")
    spec = fft.fft2(p, workers=1)
    fy = fft.fftfreq(p.shape[0])[:, None]
    fx = fft.fftfreq(p.shape[1])[None, :]
    out = np.empty((hh, ww, len(wavelengths) * n_orient), np.float32)
    k = 0
    for lam in wavelengths:
        f0 = 1.0 / lam
        sigma = 0.5 * f0
        for o in range(n_orient):
            theta = math.pi * o / n_orient
            cy, cx = f0 * math.sin(theta), f0 * math.cos(theta)
            filt = np.exp(-((fy - cy) ** 2 + (fx - cx) ** 2) / (2 * sigma * sigma))
            resp = fft.ifft2(spec * filt, workers=1)
            out[..., k] = np.abs(resp[pad : pad + hh, pad : pad + ww])
            k += 1
    return out


def hematoxylin_blobs(
    h_od: np.ndarray, min_area: int = 4, bounds: tuple[float, float] = (0.15, 0.6)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus proxy: ``(mask, centroids (n, 2) row/col, areas (n,))`` of hematoxylin blobs.

    The threshold is Otsu's on the image's hematoxylin OD, kept within ``bounds`` (a blank or
    pale image must not make noise into nuclei); blobs smaller than ``min_area`` px are dropped.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    h = np.asarray(h_od, np.float32)
    sample = h.ravel()[:: max(1, h.size // 65_536)]
    try:
        t = float(threshold_otsu(sample)) if np.ptp(sample) > 1e-6 else bounds[1]
    except ValueError:
        t = bounds[1]
    t = float(np.clip(t, *bounds))
    mask = h > t
    labels, n = ndi.label(mask)
    if n == 0:
        return mask, np.zeros((0, 2)), np.zeros(0)
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    rows, cols = np.indices(labels.shape)
    cy = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1:] / np.maximum(areas, 1)
    cx = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1:] / np.maximum(areas, 1)
    keep = areas >= min_area
    return mask, np.stack([cy[keep], cx[keep]], axis=1), areas[keep]


class HistologyFeatures(FeatureExtractor):
    """Handcrafted H&E features per cell (see the module docstring); about 0.3 s for a
    775×522 image on one core. ``context`` are the box sizes, in cells, of the context copies;
    with ``normalise_stain`` (default) the image's H and E amounts are first scaled to a
    reference (:func:`zeropath.stain.stain_normalise`), which makes features of differently
    stained slides comparable (+0.02–0.03 test Dice on GlaS)."""

    name = "histology"
    version = "2"

    #: names of the 22 base statistics (then repeated for each context size)
    BASE_NAMES: tuple[str, ...] = (
        "H_mean",
        "E_mean",
        "R_mean",
        "G_mean",
        "B_mean",
        "gray_mean",
        "nuclear_frac",
        "H_std",
        "E_std",
        "gray_std",
        "grad1_mean",
        "grad2_mean",
        *(f"gabor_l{lam}_o{o}" for lam in (4, 8) for o in range(4)),
        "blob_density",
        "blob_log_area",
    )

    def __init__(
        self,
        cell: int = DEFAULT_CELL,
        context: Sequence[int] = (5, 11),
        normalise_stain: bool = True,
    ) -> None:
        if cell < 2:
            raise ConfigError(f"cell size must be at least 2 px, got {cell}")
        self.cell = int(cell)
        self.context = tuple(int(c) for c in context)
        self.normalise_stain = bool(normalise_stain)

    def params(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "context": "x".join(map(str, self.context)),
            "stain": "normalised" if self.normalise_stain else "raw",
        }

    @property
    def feature_names(self) -> list[str]:
        names = list(self.BASE_NAMES)
        for c in self.context:
            names += [f"{n}@ctx{c}" for n in self.BASE_NAMES]
        return names

    def base(self, rgb: np.ndarray) -> np.ndarray:
        """The 22 per-cell statistics without context, ``(h, w, 22)``."""
        from scipy import ndimage as ndi

        rgb = as_rgb(rgb)
        hh, ww = rgb.shape[:2]
        if hh < 2 or ww < 2:
            raise InputError(None, f"image of {ww}×{hh} px is too small for features")
        if self.normalise_stain:
            from zeropath.stain import stain_normalise

            rgb = stain_normalise(rgb)
        cell = self.cell
        hed = hed_od(rgb)
        colour = rgb.astype(np.float32) / 255.0
        gray = colour.mean(axis=-1)
        mask, cents, areas = hematoxylin_blobs(hed[..., 0])
        stack = np.concatenate(
            [hed[..., :2], colour, gray[..., None], mask[..., None].astype(np.float32)], axis=-1
        )
        means = _cell_means(stack, cell)
        _, stds = _cell_mean_std(np.stack([hed[..., 0], hed[..., 1], gray], axis=-1), cell)

        # texture at half resolution when the cell allows (4x cheaper, same cell grid)
        if cell % 2 == 0 and min(hh, ww) >= 8:
            g, tcell = _half(gray), cell // 2
        else:
            g, tcell = gray, cell
        grads = np.stack(
            [ndi.gaussian_gradient_magnitude(g, 1.0), ndi.gaussian_gradient_magnitude(g, 2.5)],
            axis=-1,
        )
        texture = _cell_means(np.concatenate([grads, gabor_energy(g)], axis=-1), tcell)

        h, w = means.shape[:2]
        counts = np.zeros(h * w)
        area_sum = np.zeros(h * w)
        if len(areas):
            idx = (cents[:, 0] // cell).astype(int) * w + (cents[:, 1] // cell).astype(int)
            counts = np.bincount(idx, minlength=h * w).astype(np.float64)
            area_sum = np.bincount(idx, weights=areas, minlength=h * w)
        _, pix = _cell_sums(np.zeros((hh, ww, 1), np.float32), cell)
        density = counts.reshape(h, w) / np.maximum(pix[..., 0], 1.0) * (cell * cell)
        log_area = np.log1p(area_sum / np.maximum(counts, 1.0)).reshape(h, w)
        return np.concatenate(
            [means, stds, texture, density[..., None], log_area[..., None]], axis=-1
        ).astype(np.float32)

    def features(self, rgb: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi

        base = self.base(rgb)
        parts = [base]
        for size in self.context:
            parts.append(ndi.uniform_filter(base, size=(size, size, 1), mode="reflect"))
        return np.concatenate(parts, axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- encoders


def _linear_matrix(src: np.ndarray, in_len: int) -> np.ndarray:
    """``(len(src), in_len)`` linear-interpolation weights at source coordinates ``src``
    (sample ``k`` sits at coordinate ``k``; outside positions clamp to the ends)."""
    src = np.clip(np.asarray(src, np.float64), 0.0, in_len - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    lam = src - i0
    m = np.zeros((len(src), in_len))
    rows = np.arange(len(src))
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def _resample(grid: np.ndarray, src_rows: np.ndarray, src_cols: np.ndarray) -> np.ndarray:
    """Bilinear resampling of ``(gh, gw, D)`` at row/column source coordinates."""
    a = _linear_matrix(src_rows, grid.shape[0])
    b = _linear_matrix(src_cols, grid.shape[1])
    return np.einsum("ij,jkd,lk->ild", a, grid.astype(np.float64), b, optimize=True)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class EncoderFeatures(FeatureExtractor):
    """Cell features from a vision-language :class:`Encoder` (text space, unit length).

    With patch tokens: the image is reflect-padded and cut into windows of ``window`` px
    (default: the encoder's ``input_size`` rounded to whole cells); each window's patch grid is
    bilinearly resampled to its cells. Without: ``encode_images`` of a ``window``-px crop
    (default 4 cells) centred every ``stride`` px (default 2 cells), bilinearly resampled to
    the cells. Cells are renormalised to unit length.
    """

    text_space = True
    version = "1"

    def __init__(
        self,
        encoder: Encoder,
        cell: int = DEFAULT_CELL,
        window: int | None = None,
        stride: int | None = None,
        batch_size: int = 16,
    ) -> None:
        self.encoder = encoder
        self.cell = int(cell)
        self.name = f"encoder:{encoder.name}"
        self._window = window
        self.stride = int(stride) if stride else 2 * self.cell
        self.batch_size = int(batch_size)
        self._patches: bool | None = None

    def params(self) -> dict[str, Any]:
        prov = getattr(self.encoder, "provenance", {}) or {}
        weights = prov.get("sha256") or prov.get("revision") or prov.get("config_sha256") or ""
        return {
            "cell": self.cell,
            "window": self._window or 0,
            "stride": self.stride,
            "weights": weights,
        }

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(np.asarray(self.encoder.encode_texts(list(texts)), np.float32))

    def _patch_window(self) -> int:
        if self._window:
            return max(self.cell, int(round(self._window / self.cell)) * self.cell)
        return max(self.cell, int(round(self.encoder.input_size / self.cell)) * self.cell)

    def features(self, rgb: np.ndarray) -> np.ndarray:
        rgb = as_rgb(rgb)
        if self._patches is not False:
            out = self._by_patches(rgb)
            if out is not None:
                self._patches = True
                return out
            self._patches = False
        return self._by_windows(rgb)

    def _by_patches(self, rgb: np.ndarray) -> np.ndarray | None:
        hh, ww = rgb.shape[:2]
        h, w = cell_grid_shape(hh, ww, self.cell)
        win = self._patch_window()
        nr, nc = -(-hh // win), -(-ww // win)
        mode = "reflect" if min(hh, ww) > 1 else "edge"
        padded = np.pad(rgb, ((0, nr * win - hh), (0, nc * win - ww), (0, 0)), mode=mode)
        tiles = (
            padded.reshape(nr, win, nc, win, 3).transpose(0, 2, 1, 3, 4).reshape(-1, win, win, 3)
        )
        k = win // self.cell
        cells: list[np.ndarray] = []
        for start in range(0, len(tiles), self.batch_size):
            patches = self.encoder.encode_patches(tiles[start : start + self.batch_size])
            if patches is None:
                return None
            patches = np.asarray(patches, np.float32)
            g = patches.shape[1]
            src = (np.arange(k) + 0.5) * (g / k) - 0.5  # cell centres in patch coordinates
            for p in patches:
                cells.append(_resample(p, src, src))
        dim = cells[0].shape[-1]
        out = np.stack(cells).reshape(nr, nc, k, k, dim).transpose(0, 2, 1, 3, 4)
        return _unit(out.reshape(nr * k, nc * k, dim)[:h, :w])

    def _by_windows(self, rgb: np.ndarray) -> np.ndarray:
        hh, ww = rgb.shape[:2]
        h, w = cell_grid_shape(hh, ww, self.cell)
        win = int(self._window or 4 * self.cell)
        ys = np.arange(self.stride / 2, hh, self.stride)
        xs = np.arange(self.stride / 2, ww, self.stride)
        half = win // 2
        padded = np.pad(rgb, ((half, half), (half, half), (0, 0)), mode="edge")
        crops = [padded[int(y) : int(y) + win, int(x) : int(x) + win] for y in ys for x in xs]
        embs = []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[start : start + self.batch_size])
            embs.append(np.asarray(self.encoder.encode_images(batch), np.float32))
        grid = np.concatenate(embs).reshape(len(ys), len(xs), -1)
        cy = (np.arange(h) + 0.5) * self.cell
        cx = (np.arange(w) + 0.5) * self.cell
        src_r = (cy - self.stride / 2) / self.stride
        src_c = (cx - self.stride / 2) / self.stride
        return _unit(_resample(grid, src_r, src_c))


class MobileSAMFeatures(FeatureExtractor):
    """MobileSAM image-encoder embeddings (256-D) resampled to the cell grid.

    The image is resized so its longest side is 1024 px (SAM's rule) and encoded once; the
    valid part of the 64×64 embedding is bilinearly sampled at every cell centre. ``model``
    defaults to the official weights; ``cache_dir`` (default ``$ZEROPATH_HOME/sam-embeddings``,
    shared with the other pipelines) keeps the raw embeddings.
    """

    name = "encoder:mobilesam"
    version = "1"

    def __init__(
        self,
        cell: int = DEFAULT_CELL,
        model: Any = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cell = int(cell)
        self._model = model
        self._cache_dir = cache_dir
        self._predictor: Any = None

    def _get_predictor(self) -> Any:
        if self._predictor is None:
            from zeropath.models.cache import home
            from zeropath.models.mobilesam.predictor import SamPredictor
            from zeropath.models.mobilesam.sam import load_mobilesam

            model = self._model if self._model is not None else load_mobilesam()
            cache = self._cache_dir if self._cache_dir is not None else home() / "sam-embeddings"
            self._predictor = SamPredictor(model, cache_size=2, cache_dir=cache)
        return self._predictor

    def params(self) -> dict[str, Any]:
        weights = getattr(self._model, "weights_id", None) if self._model is not None else None
        return {"cell": self.cell, "weights": weights or "official"}

    def features(self, rgb: np.ndarray) -> np.ndarray:
        rgb = as_rgb(rgb)
        hh, ww = rgb.shape[:2]
        pred = self._get_predictor()
        pred.set_image(rgb)
        emb = pred.features[0].detach().cpu().numpy().astype(np.float32)  # (C, e, e)
        ih, iw = pred.input_size
        stride = pred.img_size / emb.shape[-1]  # input px per embedding cell (16)
        eh, ew = max(1, math.ceil(ih / stride)), max(1, math.ceil(iw / stride))
        grid = emb[:, :eh, :ew].transpose(1, 2, 0)
        h, w = cell_grid_shape(hh, ww, self.cell)
        sy, sx = ih / hh, iw / ww
        cy = np.minimum((np.arange(h) + 0.5) * self.cell, hh - 0.5)
        cx = np.minimum((np.arange(w) + 0.5) * self.cell, ww - 0.5)
        out = _resample(grid, cy * sy / stride - 0.5, cx * sx / stride - 0.5)
        return out.astype(np.float32)


# --------------------------------------------------------------------------- factory + cache


def get_extractor(
    spec: str,
    cell: int = DEFAULT_CELL,
    device: str = "cpu",
    **options: Any,
) -> FeatureExtractor:
    """``histology``, ``encoder:NAME`` (a registered encoder or local directory) or
    ``mobilesam`` / ``encoder:mobilesam`` (the ``features`` rows of the model registry);
    :class:`ConfigError` for anything else."""
    from zeropath.models.registry import factory, find

    spec = spec.strip()
    name = spec.removeprefix("encoder:") if spec == "encoder:mobilesam" else spec
    row = find("features", name)
    if row is not None:
        return factory(row)(cell=cell, **options)
    if spec.startswith("encoder:") and len(spec) > len("encoder:"):
        from zeropath.models.encoders import get_encoder

        return EncoderFeatures(get_encoder(spec[len("encoder:") :], device), cell=cell, **options)
    raise ConfigError(
        f"unknown features {spec!r}: use 'histology', 'encoder:NAME' or 'encoder:mobilesam'"
    )


def _array_sha256(rgb: np.ndarray) -> str:
    arr = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features of images on disk: ``ROOT/<extractor id>/<image sha256>.npy``.

    The key is the sha256 of the image *file* (for paths) or of the pixels (for arrays), so a
    renamed copy hits and an edited image misses. ``root=None`` keeps features in memory only.
    Unreadable entries are recomputed and overwritten; writes are atomic.
    """

    def __init__(
        self, extractor: FeatureExtractor, root: str | os.PathLike[str] | None = None
    ) -> None:
        self.extractor = extractor
        self.root = None if root is None else Path(root) / extractor.cache_id
        self._memory: dict[str, np.ndarray] = {}
        self._file_keys: dict[str, str] = {}
        self.stats = {"hits": 0, "misses": 0}

    def key(self, image: str | os.PathLike[str] | np.ndarray) -> str:
        """The cache key (sha256) of an image path or an RGB array."""
        if isinstance(image, np.ndarray):
            return _array_sha256(as_rgb(image))
        from zeropath.io.reader import sha256

        p = str(Path(image).resolve())
        if p not in self._file_keys:
            self._file_keys[p] = sha256(image)
        return self._file_keys[p]

    def _path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.npy"

    def get(
        self,
        image: str | os.PathLike[str] | np.ndarray,
        loader: Callable[[], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Features of ``image`` (a path or an RGB array), computed on a miss.

        ``loader`` returns the pixels of a path (default :func:`read_rgb`).
        """
        key = self.key(image)
        if key in self._memory:
            self.stats["hits"] += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                feats = np.load(path, allow_pickle=False)
                self.stats["hits"] += 1
                self._memory[key] = feats
                return feats
            except (OSError, ValueError):
                pass  # recompute below
        self.stats["misses"] += 1
        if isinstance(image, np.ndarray):
            rgb = image
        else:
            rgb = loader() if loader is not None else read_rgb(image)
        feats = np.ascontiguousarray(self.extractor.features(rgb), np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as fh:
                np.save(fh, feats)
            os.replace(tmp, path)
        self._memory[key] = feats
        return feats
