"""A tiny segmenter for engine tests: dark pixels' connected components (no model, no halo
effects), a :class:`~zeropath.nuclei.base.Segmenter` like any other."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from zeropath.nuclei.base import Segmenter, TileSpec

__all__ = ["ThresholdSegmenter"]


class ThresholdSegmenter(Segmenter):
    """A tile-independent engine test segmenter: connected components of dark pixels."""

    name = "threshold-cc"
    tile = TileSpec(halo_um=6.0)

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        lab, _ = ndi.label(rgb.mean(axis=2) < 150)
        return lab.astype(np.uint32)
