"""Per-cell predictions to pixels, and pixel Dice / IoU on test images.

Cell probabilities are upsampled bilinearly (cell centres at ``(i + 0.5)·cell``, clamped at the
borders) to the image's pixels and the arg-max class is taken. Scores are pooled over all test
pixels (one confusion matrix for the whole test set): for two classes the Dice / IoU of class 1
(the foreground, e.g. gland), otherwise the mean over the classes present in the ground truth
or the prediction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Confusion", "predict_mask", "upsample_proba"]


def _linear_matrix(n_out: int, n_in: int, cell: int) -> np.ndarray:
    src = np.clip((np.arange(n_out) + 0.5) / cell - 0.5, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def upsample_proba(proba: np.ndarray, shape: tuple[int, int], cell: int) -> np.ndarray:
    """``(h, w, C)`` cell probabilities → ``(H, W, C)`` pixel probabilities (bilinear)."""
    p = np.asarray(proba, np.float32)
    a = _linear_matrix(shape[0], p.shape[0], cell)
    b = _linear_matrix(shape[1], p.shape[1], cell)
    return np.einsum("ij,jkc,lk->ilc", a, p, b, optimize=True)


def predict_mask(proba: np.ndarray, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Arg-max class per pixel of upsampled cell probabilities, ``(H, W)`` uint8."""
    return upsample_proba(proba, shape, cell).argmax(axis=-1).astype(np.uint8)


class Confusion:
    """A ``C × C`` pixel confusion matrix accumulated over images (rows: truth)."""

    def __init__(self, n_classes: int) -> None:
        self.n = int(n_classes)
        self.matrix = np.zeros((self.n, self.n), np.int64)

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        t = np.asarray(truth, np.int64).ravel()
        p = np.asarray(pred, np.int64).ravel()
        ok = (t >= 0) & (t < self.n)
        self.matrix += np.bincount(t[ok] * self.n + p[ok], minlength=self.n * self.n).reshape(
            self.n, self.n
        )

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dice, iou, present)`` per class (``present``: in truth or prediction)."""
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(0) - tp
        fn = self.matrix.sum(1) - tp
        present = (tp + fp + fn) > 0
        dice = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
        iou = np.where(present, tp / np.maximum(tp + fp + fn, 1), np.nan)
        return dice, iou, present

    def scores(self) -> tuple[float, float]:
        """``(dice, iou)``: class 1's for binary tasks, else the mean over present classes.

        A binary task whose foreground is absent from truth and prediction scores 1.
        """
        dice, iou, present = self.per_class()
        if self.n == 2:
            return (float(dice[1]), float(iou[1])) if present[1] else (1.0, 1.0)
        if not present.any():
            return 1.0, 1.0
        return float(np.nanmean(dice)), float(np.nanmean(iou))
