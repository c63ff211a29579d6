"""Small operations on label images shared by the segmenters (nuclei, points, tissue)."""

from __future__ import annotations

import numpy as np

__all__ = ["drop_small_labels"]


def drop_small_labels(labels: np.ndarray, min_px: int) -> np.ndarray:
    """``labels`` without the labels of fewer than ``min_px`` pixels (at least 1), the rest
    renumbered ``1..N`` in label order (uint32; 0 stays background)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.uint32)
    size = np.bincount(labels.ravel())
    keep = size >= max(min_px, 1)
    keep[0] = False
    lut = np.zeros(len(size), np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[labels]
