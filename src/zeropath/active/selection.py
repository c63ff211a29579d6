"""Selection rules: which candidate regions to label next.

Everything is numpy in, ids out, and deterministic for a given ``numpy.random.Generator``.
Candidates are described by a :class:`Candidates` record: region mean features (the loop passes
unit-length ones, so Euclidean distances follow the prototypes' cosine geometry), the features of
the already labelled regions, the classifier's per-region uncertainty, BADGE gradient embeddings,
the visual prototypes and an optional per-region text-prototype term.

Rules (:func:`select`):

- ``random`` — uniform without replacement;
- ``entropy`` — the ``batch`` most uncertain regions (mean normalised entropy of the joint
  classifier over the region's cells; :func:`region_uncertainty` also offers the margin);
- ``coreset`` — k-center greedy on region features, the labelled regions as initial centres;
- ``badge`` — k-means++ seeding on the gradient embeddings of the head's last layer;
- ``coverage`` — ProbCover-style greedy: a candidate *covers* the points (a seeded subsample of
  all pool regions) within ``δ`` of it; points within ``δ`` of a visual prototype or a labelled
  region start covered; ``δ`` is the ``delta_quantile`` (0.5) quantile of the points' distances
  to their nearest prototype / labelled region, recomputed every round; each pick maximises the
  number of newly covered points;
- ``combined`` (default) — greedy batch selection maximising
  ``w_u·U + w_d·D + w_c·C`` with :data:`DEFAULT_WEIGHTS` (0.5 / 0 / 0.5; chosen on GlaS
  ``train_*`` with 25 of its images held out for evaluation, never on the test images — the
  k-center term picked outliers there, as core-set alone does):
  ``U`` the uncertainty min–max normalised over the candidates; ``D`` the distance to the
  nearest labelled-or-already-picked region divided by its current maximum (k-center);
  ``C`` the coverage gain divided by its current maximum — averaged with the min–max normalised
  text term when unseen-class text prototypes exist (regions nearer an unseen class's text
  prototype than any visual prototype are where labels turn a zero-shot class into a seen one).
  A weight of 0 switches a part off; with only one part on, the ranking equals that rule's.

Ties always go to the lowest candidate index.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from zeropath.errors import ConfigError

__all__ = [
    "DEFAULT_WEIGHTS",
    "RULES",
    "Candidates",
    "badge_select",
    "choose_delta",
    "combined_select",
    "coverage_graph",
    "coverage_select",
    "kcenter_greedy",
    "random_select",
    "region_uncertainty",
    "select",
    "top_k",
]

#: Weights of the ``combined`` rule's three normalised scores.
DEFAULT_WEIGHTS: dict[str, float] = {"uncertainty": 0.5, "diversity": 0.0, "coverage": 0.5}

RULES: tuple[str, ...] = ("random", "entropy", "coreset", "badge", "coverage", "combined")


@dataclass(frozen=True)
class Candidates:
    """What the rules see of the unlabelled candidate regions (``R`` of them).

    ``features (R, D)``; ``labelled (L, D)`` labelled regions' features; ``uncertainty (R,)``;
    ``gradients (R, E)`` BADGE embeddings; ``prototypes (P, D)`` visual prototypes;
    ``points (M, D)`` coverage points (default: candidates + labelled);
    ``text_term (R,)`` affinity to unseen-class text prototypes.
    """

    ids: Sequence[Hashable]
    features: np.ndarray
    labelled: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    gradients: np.ndarray | None = None
    prototypes: np.ndarray | None = None
    points: np.ndarray | None = None
    text_term: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.features):
            raise ValueError(f"{len(self.ids)} ids for {len(self.features)} feature rows")

    @property
    def labelled_features(self) -> np.ndarray:
        if self.labelled is None or len(self.labelled) == 0:
            return np.zeros((0, self.features.shape[1]), np.float32)
        return np.asarray(self.labelled, np.float32)

    @property
    def anchors(self) -> np.ndarray:
        """Prototypes and labelled regions: what already covers the feature space."""
        parts = [self.labelled_features]
        if self.prototypes is not None and len(self.prototypes):
            parts.append(np.asarray(self.prototypes, np.float32))
        return np.concatenate(parts)

    @property
    def coverage_points(self) -> np.ndarray:
        if self.points is not None:
            return np.asarray(self.points, np.float32)
        return np.concatenate([np.asarray(self.features, np.float32), self.labelled_features])


# --------------------------------------------------------------------------- helpers


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _min_dist(x: np.ndarray, centres: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Distance of each row of ``x`` to its nearest centre (``inf`` without centres)."""
    if len(centres) == 0:
        return np.full(len(x), np.inf)
    out = np.empty(len(x))
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = np.sqrt(_sqdist(x[s : s + chunk], centres).min(axis=1))
    return out


def _minmax(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def _argmax_free(score: np.ndarray, taken: np.ndarray) -> int:
    s = np.where(taken, -np.inf, score)
    return int(np.argmax(s))


def region_uncertainty(proba: np.ndarray, starts: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Mean per-cell uncertainty of each region.

    ``proba (N, C)`` holds the cells ordered region by region, region ``r`` spanning
    ``starts[r]:starts[r+1]``. ``entropy``: entropy / log C; ``margin``: 1 − (p1 − p2).
    """
    p = np.asarray(proba, np.float64)
    if kind == "entropy":
        u = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1) / np.log(max(p.shape[1], 2))
    elif kind == "margin":
        top = np.sort(p, axis=1)
        u = 1.0 - (top[:, -1] - (top[:, -2] if p.shape[1] > 1 else 0.0))
    else:
        raise ConfigError(f"unknown uncertainty {kind!r}: use 'entropy' or 'margin'")
    starts = np.asarray(starts, np.int64)
    counts = np.diff(np.append(starts, len(u)))
    return np.add.reduceat(u, starts) / np.maximum(counts, 1)


# --------------------------------------------------------------------------- rules


def random_select(n: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """``batch`` distinct indices drawn uniformly from ``range(n)``."""
    return rng.choice(n, size=min(batch, n), replace=False).astype(np.int64)


def top_k(scores: np.ndarray, batch: int) -> np.ndarray:
    """Indices of the ``batch`` largest scores, largest first (ties: lowest index)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")[:batch].astype(np.int64)


def kcenter_greedy(x: np.ndarray, centres: np.ndarray, batch: int) -> np.ndarray:
    """Greedy k-center: repeatedly pick the point farthest from every centre so far.

    Without centres the first pick is the point farthest from the mean of ``x``.
    """
    x = np.asarray(x, np.float32)
    n = len(x)
    mind = _min_dist(x, np.asarray(centres, np.float32).reshape(-1, x.shape[1]))
    if not np.isfinite(mind).any():
        mind = _min_dist(x, x.mean(axis=0, keepdims=True))
    taken = np.zeros(n, bool)
    out = []
    for _ in range(min(batch, n)):
        i = _argmax_free(mind, taken)
        out.append(i)
        taken[i] = True
        mind = np.minimum(mind, np.sqrt(_sqdist(x, x[i : i + 1])[:, 0]))
    return np.asarray(out, np.int64)


def badge_select(gradients: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE: k-means++ seeding on gradient embeddings (large, diverse gradients first).

    The first pick is the largest-norm embedding (BADGE's deterministic start); then D²
    sampling. When every remaining embedding coincides with a pick, the rest are uniform.
    """
    g = np.asarray(gradients, np.float64)
    n = len(g)
    batch = min(batch, n)
    if batch == 0:
        return np.zeros(0, np.int64)
    first = int(np.argmax((g * g).sum(1)))
    chosen = [first]
    taken = np.zeros(n, bool)
    taken[first] = True
    d2 = _sqdist(g, g[first : first + 1])[:, 0].astype(np.float64)
    while len(chosen) < batch:
        w = np.where(taken, 0.0, d2)
        total = w.sum()
        if total <= 1e-20:
            free = np.flatnonzero(~taken)
            nxt = int(free[rng.integers(len(free))])
        else:
            nxt = int(rng.choice(n, p=w / total))
        chosen.append(nxt)
        taken[nxt] = True
        d2 = np.minimum(d2, _sqdist(g, g[nxt : nxt + 1])[:, 0])
    return np.asarray(chosen, np.int64)


def choose_delta(points: np.ndarray, anchors: np.ndarray, quantile: float = 0.5) -> float:
    """Ball radius: the ``quantile`` of the points' distances to their nearest anchor.

    Without anchors: the same quantile of each point's distance to its 10th nearest neighbour.
    """
    points = np.asarray(points, np.float32)
    if len(anchors):
        d = _min_dist(points, np.asarray(anchors, np.float32))
    else:
        k = min(10, len(points) - 1)
        if k < 1:
            return 0.0
        d = np.empty(len(points))
        for s in range(0, len(points), 2048):
            block = np.sqrt(_sqdist(points[s : s + 2048], points))
            d[s : s + 2048] = np.partition(block, k, axis=1)[:, k]
    return float(np.quantile(d, quantile))


def coverage_graph(x: np.ndarray, points: np.ndarray, delta: float, chunk: int = 1024):
    """Sparse boolean ``(R, M)`` matrix: candidate ``r`` covers point ``m`` iff
    ``|x_r − p_m| <= delta`` (scipy CSR)."""
    from scipy import sparse

    x = np.asarray(x, np.float32)
    points = np.asarray(points, np.float32)
    blocks = []
    for s in range(0, len(x), chunk):
        blocks.append(sparse.csr_matrix(_sqdist(x[s : s + chunk], points) <= delta * delta))
    if not blocks:
        return sparse.csr_matrix((0, len(points)), dtype=bool)
    return sparse.vstack(blocks, format="csr")


def _initially_covered(points: np.ndarray, anchors: np.ndarray, delta: float) -> np.ndarray:
    if len(anchors) == 0:
        return np.zeros(len(points), bool)
    return _min_dist(points, anchors) <= delta


def coverage_select(graph, covered: np.ndarray, batch: int) -> np.ndarray:
    """Greedy max coverage: each pick covers the most still-uncovered points."""
    n = graph.shape[0]
    uncovered = (~np.asarray(covered, bool)).astype(np.float64)
    taken = np.zeros(n, bool)
    out = []
    for _ in range(min(batch, n)):
        gain = graph @ uncovered
        i = _argmax_free(gain, taken)
        out.append(i)
        taken[i] = True
        uncovered[graph[i].indices] = 0.0
    return np.asarray(out, np.int64)


def _coverage_setup(
    cands: Candidates, delta_quantile: float, max_points: int, rng: np.random.Generator
):
    pts = cands.coverage_points
    if len(pts) > max_points:
        pts = pts[np.sort(rng.choice(len(pts), max_points, replace=False))]
    anchors = cands.anchors
    delta = choose_delta(pts, anchors, delta_quantile)
    graph = coverage_graph(cands.features, pts, delta)
    covered = _initially_covered(pts, anchors, delta)
    return graph, covered


def combined_select(
    cands: Candidates,
    batch: int,
    rng: np.random.Generator,
    weights: Mapping[str, float] | None = None,
    delta_quantile: float = 0.5,
    max_points: int = 3000,
) -> np.ndarray:
    """The ``combined`` rule (module docstring): greedy on ``w_u·U + w_d·D + w_c·C``."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(w) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ConfigError(f"unknown combined-rule weights: {sorted(unknown)}")
    x = np.asarray(cands.features, np.float32)
    n = len(x)
    batch = min(batch, n)
    score_u = np.zeros(n)
    if w["uncertainty"] > 0:
        if cands.uncertainty is None:
            raise ConfigError("the combined rule needs uncertainties (or weight 0)")
        score_u = _minmax(cands.uncertainty)
    mind = np.zeros(n)
    if w["diversity"] > 0:
        mind = _min_dist(x, cands.labelled_features)
        if not np.isfinite(mind).any():
            mind = _min_dist(x, x.mean(axis=0, keepdims=True))
    graph, uncovered = None, None
    text = None
    if w["coverage"] > 0:
        graph, covered = _coverage_setup(cands, delta_quantile, max_points, rng)
        uncovered = (~covered).astype(np.float64)
        if cands.text_term is not None and np.ptp(np.asarray(cands.text_term)) > 0:
            text = _minmax(cands.text_term)
    taken = np.zeros(n, bool)
    out = []
    for _ in range(batch):
        score = w["uncertainty"] * score_u
        if w["diversity"] > 0:
            top = float(np.max(np.where(taken, 0.0, mind))) if n else 0.0
            score = score + w["diversity"] * (mind / top if top > 0 else np.zeros(n))
        if graph is not None:
            gain = graph @ uncovered
            top = float(np.max(np.where(taken, 0.0, gain)))
            cov = gain / top if top > 0 else np.zeros(n)
            if text is not None:
                cov = 0.5 * (cov + text)
            score = score + w["coverage"] * cov
        i = _argmax_free(score, taken)
        out.append(i)
        taken[i] = True
        if w["diversity"] > 0:
            mind = np.minimum(mind, np.sqrt(_sqdist(x, x[i : i + 1])[:, 0]))
        if graph is not None:
            uncovered[graph[i].indices] = 0.0
    return np.asarray(out, np.int64)


def select(
    rule: str,
    cands: Candidates,
    batch: int,
    rng: np.random.Generator,
    weights: Mapping[str, float] | None = None,
    delta_quantile: float = 0.5,
    max_points: int = 3000,
) -> list[Hashable]:
    """The ids of the ``batch`` regions ``rule`` picks, in pick order."""
    n = len(cands.ids)
    batch = min(int(batch), n)
    if batch <= 0:
        return []
    if rule == "random":
        idx = random_select(n, batch, rng)
    elif rule == "entropy":
        if cands.uncertainty is None:
            raise ConfigError("the entropy rule needs uncertainties")
        idx = top_k(cands.uncertainty, batch)
    elif rule == "coreset":
        idx = kcenter_greedy(cands.features, cands.labelled_features, batch)
    elif rule == "badge":
        if cands.gradients is None:
            raise ConfigError("the badge rule needs gradient embeddings")
        idx = badge_select(cands.gradients, batch, rng)
    elif rule == "coverage":
        graph, covered = _coverage_setup(cands, delta_quantile, max_points, rng)
        idx = coverage_select(graph, covered, batch)
    elif rule == "combined":
        idx = combined_select(cands, batch, rng, weights, delta_quantile, max_points)
    else:
        raise ConfigError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")
    return [cands.ids[int(i)] for i in idx]
