"""Nucleus centre points with a confidence each, and small helpers on them.

:class:`Points` is the currency between the detection stages (coarse detector → confidence-map
refiner → pseudo-labels): coordinates are ``(x, y) = (col, row)`` pixels of the image the points
were detected on, scores are in ``[0, 1]``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = [
    "Points",
    "match_counts",
    "nms_points",
    "points_from_csv",
    "points_to_csv",
    "points_to_labels",
]


@dataclass(frozen=True)
class Points:
    """Detected points: ``xy`` (N, 2) float64 (x=col, y=row), ``score`` (N,) float32 in [0, 1]."""

    xy: np.ndarray  # (N, 2) float64, x=col, y=row
    score: np.ndarray  # (N,) float32 in [0, 1]

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls) -> Points:
        return cls(np.zeros((0, 2)), np.zeros(0, np.float32))

    def select(self, keep: np.ndarray) -> Points:
        return Points(self.xy[keep], self.score[keep])

    def scaled(self, factor: float) -> Points:
        return Points(self.xy * factor, self.score)


def nms_points(points: Points, radius_px: float) -> Points:
    """Greedy non-maximum suppression: keep the best-scored point of every cluster.

    A point is dropped when a higher-scored kept point lies within ``radius_px``. Ties are
    broken by input order, so the result is deterministic. The kept points are returned sorted
    by decreasing score.
    """
    n = len(points)
    if n == 0 or radius_px <= 0:
        return points
    from scipy.spatial import cKDTree

    order = np.argsort(-points.score.astype(np.float64), kind="stable")
    xy = points.xy[order]
    tree = cKDTree(xy)
    neighbours = tree.query_ball_point(xy, r=float(radius_px))
    suppressed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[neighbours[i]] = True
    return points.select(order[np.asarray(keep, np.intp)])


def points_to_labels(points: Points, shape: tuple[int, int]) -> np.ndarray:
    """A uint32 label image with one pixel per point (ids ``1..N``; out-of-image points dropped).

    Lets point sets be scored with :func:`zeropath.metrics.detection_f1`, which matches
    instance centroids.
    """
    labels = np.zeros(shape, np.uint32)
    if len(points) == 0:
        return labels
    cols = np.rint(points.xy[:, 0]).astype(np.intp)
    rows = np.rint(points.xy[:, 1]).astype(np.intp)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    ids = np.arange(1, len(points) + 1, dtype=np.uint32)
    labels[rows[inside], cols[inside]] = ids[inside]
    return labels


def points_to_csv(points: Points, path: str | PathLike[str]) -> None:
    """Write ``x,y,score`` rows (with a header) to ``path``."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "score"])
        for (x, y), s in zip(points.xy.tolist(), points.score.tolist(), strict=True):
            writer.writerow([f"{x:.3f}", f"{y:.3f}", f"{s:.5f}"])


def points_from_csv(path: str | PathLike[str]) -> Points:
    """Read a CSV with ``x,y`` columns and an optional ``score`` column (default 1)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return Points.empty()
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows], np.float64)
    score = np.array([float(r.get("score") or 1.0) for r in rows], np.float32)
    return Points(xy, np.clip(score, 0.0, 1.0))


def match_counts(pred: Points, gt: Points, radius_px: float) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of a maximum one-to-one matching of points closer than ``radius_px``."""
    n_pred, n_gt = len(pred), len(gt)
    if n_pred == 0 or n_gt == 0:
        return 0, n_pred, n_gt
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    pairs = cKDTree(pred.xy).query_ball_point(gt.xy, r=float(radius_px))
    rows = np.repeat(np.arange(n_gt), [len(p) for p in pairs])
    cols = np.fromiter((j for p in pairs for j in p), np.intp, count=len(rows))
    graph = csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_gt, n_pred))
    tp = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    return tp, n_pred - tp, n_gt - tp
