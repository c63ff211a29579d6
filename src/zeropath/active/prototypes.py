"""ProZS: a joint classifier of visual prototypes, text prototypes and a light head.

Per cell (features ``x``, L2-normalised inside), for ``C`` classes:

- **visual prototypes** of every *seen* class (one with labelled cells): k-means centroids of
  its labelled cells (up to ``prototypes_per_class``, k-means++ seeding, unit length);
  ``s_c(x) = max_j cos(x, p_cj)``;
- **text prototypes** of *unseen* classes (no labelled cell), when the features live in a
  text-embedding space: the unit mean of the class prompts' text embeddings;
  ``s_u(x) = cos(x, t_u) + β``, where the offset ``β`` aligns text similarities with visual ones:
  the median over labelled cells of ``s_y(x) − cos(x, t_y)`` for seen classes that also have a
  prompt (0 when none has);
- prototype logits ``z = τ · s`` with one temperature ``τ`` fitted on the labelled cells by
  minimising the NLL (bounded 1-D search on ``log τ``; a fixed ``τ = 10`` while fewer than two
  classes are seen); classes with neither kind of prototype get probability 0;
- a **head** (``D → hidden → C_seen`` MLP, i.e. a 1×1 conv on the cell grid) trained on the
  labelled cells with soft-label cross-entropy + soft Dice (Adam, a few hundred steps).

Combination: the head only knows seen classes, so it redistributes the probability the
prototypes give to seen classes, and unseen classes keep their prototype probability::

    p(c) = P_seen · ((1 − α) p_proto(c | seen) + α p_head(c))   for seen c
    p(u) = p_proto(u)                                            for unseen u

with ``α = n / (n + n0)`` (``n`` labelled cells, ``n0 = head_prior_cells``): with few labels
the non-parametric prototypes dominate, with many the head does.

The model is refitted from scratch whenever labels change (prototypes updated as labels
arrive); every random choice comes from the ``seed`` given to :meth:`ProZS.fit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Head",
    "ProZS",
    "ProZSConfig",
    "class_prototypes",
    "entropy",
    "fit_temperature",
    "kmeans",
    "kmeans_pp",
    "nll",
    "softmax",
    "train_head",
]


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically safe softmax (``-inf`` entries get probability 0)."""
    z = np.asarray(z, np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(z - m)
    return e / np.maximum(e.sum(axis=axis, keepdims=True), 1e-300)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of probability rows."""
    p = np.asarray(p, np.float64)
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


# --------------------------------------------------------------------------- k-means


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` k-means++ seeds (D² sampling; the first is drawn uniformly)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    k = min(int(k), n)
    first = int(rng.integers(n))
    chosen = [first]
    d2 = _sqdist(x, x[first : first + 1])[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            rest = np.setdiff1d(np.arange(n), chosen)
            if len(rest) == 0:
                break
            nxt = int(rest[rng.integers(len(rest))])
        else:
            nxt = int(rng.choice(n, p=d2 / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, _sqdist(x, x[nxt : nxt + 1])[:, 0])
    return np.asarray(chosen, np.int64)


def kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: ``(centres (k', D), assignment (N,))``.

    ``k' <= min(k, N)``: clusters left empty (duplicate points) are dropped.
    """
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        raise ValueError("k-means of no points")
    centres = x[kmeans_pp(x, max(min(int(k), len(x)), 1), rng)]
    assign = np.zeros(len(x), np.int64)
    for it in range(iters):
        new = np.argmin(_sqdist(x, centres), axis=1)
        if it > 0 and np.array_equal(new, assign):
            break
        assign = new
        keep = []
        for j in range(len(centres)):
            members = assign == j
            if members.any():
                centres[j] = x[members].mean(axis=0)
                keep.append(j)
        if len(keep) < len(centres):
            centres = centres[keep]
            assign = np.argmin(_sqdist(x, centres), axis=1)
    return centres, assign


def class_prototypes(
    x: np.ndarray,
    y: np.ndarray,
    per_class: int,
    seed: int = 0,
    max_points: int = 20_000,
) -> dict[int, np.ndarray]:
    """Unit-length k-means prototypes of each class present in ``y``: ``{class: (k, D)}``.

    Features are L2-normalised first (cosine geometry); at most ``max_points`` cells per class
    (a seeded subsample) go into k-means.
    """
    x = _unit(x)
    y = np.asarray(y)
    out: dict[int, np.ndarray] = {}
    for c in np.unique(y):
        rng = np.random.default_rng([seed, int(c)])
        pts = x[y == c]
        if len(pts) > max_points:
            pts = pts[np.sort(rng.choice(len(pts), max_points, replace=False))]
        centres, _ = kmeans(pts, per_class, rng)
        out[int(c)] = _unit(centres)
    return out


# --------------------------------------------------------------------------- temperature


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(logits)``."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    picked = z[np.arange(len(y)), np.asarray(y)]
    return float(np.mean(lse - picked))


def fit_temperature(
    sims: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.5, 500.0)
) -> float:
    """The ``τ`` in ``bounds`` minimising ``nll(τ · sims, y)`` (bounded Brent on ``log τ``).

    ``sims`` may hold ``-inf`` for impossible classes (they stay impossible).
    """
    from scipy.optimize import minimize_scalar

    s = np.asarray(sims, np.float64)
    finite = np.where(np.isfinite(s), s, -1e6)

    def loss(log_t: float) -> float:
        return nll(np.exp(log_t) * finite, y)

    res = minimize_scalar(
        loss,
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(res.x))


# --------------------------------------------------------------------------- head


@dataclass
class Head:
    """A trained ``D → hidden → C`` ReLU MLP kept as numpy weights (inference needs no torch)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(np.asarray(x, np.float32) @ self.w1 + self.b1, 0.0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.hidden(x) @ self.w2 + self.b2

    def proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))


def train_head(
    x: np.ndarray,
    targets: np.ndarray,
    hidden: int = 64,
    steps: int = 300,
    lr: float = 1e-2,
    dice_weight: float = 1.0,
    weight_decay: float = 1e-4,
    batch_size: int = 8192,
    seed: int = 0,
) -> Head:
    """Train the head on cells ``x (N, D)`` with soft targets ``(N, C)`` (rows sum to 1).

    Loss = soft-label cross-entropy + ``dice_weight`` × soft Dice (1 − mean over classes of
    ``2Σpq / (Σp + Σq)`` on the batch). Adam; full batch when ``N <= batch_size``. Runs on one
    torch thread (restored afterwards): the matrices are small, and extra threads only spin.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_head(
            torch, x, targets, hidden, steps, lr, dice_weight, weight_decay, batch_size, seed
        )
    finally:
        torch.set_num_threads(threads)


def _train_head(
    torch: Any,
    x: np.ndarray,
    targets: np.ndarray,
    hidden: int,
    steps: int,
    lr: float,
    dice_weight: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> Head:
    x = np.asarray(x, np.float32)
    t = np.asarray(targets, np.float32)
    gen = torch.Generator().manual_seed(int(seed))
    d, c = x.shape[1], t.shape[1]
    l1 = torch.nn.Linear(d, hidden)
    l2 = torch.nn.Linear(hidden, c)
    with torch.no_grad():  # seeded init, independent of the global torch RNG
        for layer in (l1, l2):
            bound = 1.0 / np.sqrt(layer.in_features)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
            layer.bias.copy_(torch.rand(layer.bias.shape, generator=gen) * 2 * bound - bound)
    params = [*l1.parameters(), *l2.parameters()]
    # plain Adam (L2 weight decay added to the gradient, like torch.optim.Adam); written out
    # because importing torch.optim pulls in torch._dynamo, seconds of start-up on a CPU
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    n = len(x)
    for step in range(1, int(steps) + 1):
        if n > batch_size:
            idx = torch.randint(n, (batch_size,), generator=gen)
            xb, tb = xt[idx], tt[idx]
        else:
            xb, tb = xt, tt
        logits = l2(torch.relu(l1(xb)))
        logp = torch.log_softmax(logits, dim=1)
        ce = -(tb * logp).sum(dim=1).mean()
        p = logp.exp()
        inter = (p * tb).sum(dim=0)
        denom = p.sum(dim=0) + tb.sum(dim=0)
        dice = 1.0 - (2 * inter / denom.clamp_min(1e-6)).mean()
        loss = ce + dice_weight * dice
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            c1, c2 = 1 - beta1**step, 1 - beta2**step
            for prm, g, mi, vi in zip(params, grads, m, v, strict=True):
                g = g + weight_decay * prm
                mi.mul_(beta1).add_(g, alpha=1 - beta1)
                vi.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                prm.sub_(lr * (mi / c1) / ((vi / c2).sqrt() + eps))
    return Head(
        w1=l1.weight.detach().numpy().T.copy(),
        b1=l1.bias.detach().numpy().copy(),
        w2=l2.weight.detach().numpy().T.copy(),
        b2=l2.bias.detach().numpy().copy(),
    )


# --------------------------------------------------------------------------- ProZS


@dataclass(frozen=True)
class ProZSConfig:
    """Hyper-parameters of :class:`ProZS` (see the module docstring)."""

    prototypes_per_class: int = 4
    head: bool = True
    head_hidden: int = 64
    head_steps: int = 300
    head_lr: float = 1e-2
    dice_weight: float = 1.0
    head_prior_cells: float = 500.0
    max_cells: int = 50_000
    default_temperature: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProZS:
    """The joint prototype + head classifier over ``n_classes`` classes.

    ``text_prototypes`` maps class index → unit text embedding (only meaningful when the cell
    features live in that text space).
    """

    n_classes: int
    config: ProZSConfig = field(default_factory=ProZSConfig)
    text_prototypes: Mapping[int, np.ndarray] = field(default_factory=dict)
    prototypes: dict[int, np.ndarray] = field(default_factory=dict, init=False)
    temperature: float = field(default=10.0, init=False)
    text_offset: float = field(default=0.0, init=False)
    head: Head | None = field(default=None, init=False)
    head_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), init=False)
    alpha: float = field(default=0.0, init=False)
    n_labelled: int = field(default=0, init=False)

    @property
    def seen(self) -> list[int]:
        return sorted(self.prototypes)

    @property
    def unseen_text(self) -> list[int]:
        """Unseen classes that have a text prototype."""
        return sorted(c for c in self.text_prototypes if c not in self.prototypes)

    def fit(self, x: np.ndarray, targets: np.ndarray, seed: int = 0) -> ProZS:
        """Fit on labelled cells: ``x (N, D)``, ``targets`` integer ``(N,)`` or soft ``(N, C)``.

        Prototypes use each cell's majority class; the head uses the soft targets.
        """
        x = np.asarray(x, np.float32)
        t = np.asarray(targets)
        soft = (
            t.astype(np.float32)
            if t.ndim == 2
            else np.eye(self.n_classes, dtype=np.float32)[t.astype(np.int64)]
        )
        if len(x) != len(soft):
            raise ValueError("features and targets differ in length")
        if soft.shape[1] != self.n_classes:
            raise ValueError(f"targets have {soft.shape[1]} classes, expected {self.n_classes}")
        rng = np.random.default_rng([seed, 17])
        if len(x) > self.config.max_cells:  # a seeded subsample bounds the fitting time
            keep = np.sort(rng.choice(len(x), self.config.max_cells, replace=False))
            x, soft = x[keep], soft[keep]
        y = soft.argmax(axis=1)
        self.n_labelled = len(x)
        self.prototypes = (
            class_prototypes(x, y, self.config.prototypes_per_class, seed) if len(x) else {}
        )
        self.text_offset = self._fit_text_offset(x, y)
        # with a single seen class the NLL only falls as τ grows (every labelled cell is
        # right whatever τ), which would make unseen classes vanish: keep the default then
        self.temperature = self.config.default_temperature
        if len(self.prototypes) >= 2:
            self.temperature = fit_temperature(self.similarities(x), y)
        self.head, self.alpha = None, 0.0
        seen = np.array(self.seen, np.int64)
        if self.config.head and len(seen) >= 2:
            self.head = train_head(
                x,
                soft[:, seen] / np.maximum(soft[:, seen].sum(1, keepdims=True), 1e-6),
                hidden=self.config.head_hidden,
                steps=self.config.head_steps,
                lr=self.config.head_lr,
                dice_weight=self.config.dice_weight,
                seed=seed,
            )
            self.head_classes = seen
            self.alpha = len(x) / (len(x) + self.config.head_prior_cells)
        return self

    def _fit_text_offset(self, x: np.ndarray, y: np.ndarray) -> float:
        both = [c for c in self.prototypes if c in self.text_prototypes]
        if not both or not len(x):
            return 0.0
        xu = _unit(x)
        gaps = []
        for c in both:
            xc = xu[y == c]
            vis = (xc @ self.prototypes[c].T).max(axis=1)
            txt = xc @ _unit(self.text_prototypes[c])
            gaps.append(vis - txt)
        return float(np.median(np.concatenate(gaps)))

    def similarities(self, x: np.ndarray) -> np.ndarray:
        """``(N, C)`` similarities ``s`` (``-inf`` for classes without any prototype)."""
        xu = _unit(x)
        s = np.full((len(xu), self.n_classes), -np.inf)
        for c, protos in self.prototypes.items():
            s[:, c] = (xu @ protos.T).max(axis=1)
        for c in self.unseen_text:
            s[:, c] = xu @ _unit(self.text_prototypes[c]) + self.text_offset
        return s

    def prototype_proba(self, x: np.ndarray) -> np.ndarray:
        """``softmax(τ · s)`` over the classes that have a prototype."""
        s = self.similarities(x)
        if not np.isfinite(s).any(axis=1).all():  # no prototype at all: uniform
            return np.full(s.shape, 1.0 / self.n_classes)
        return softmax(self.temperature * s)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(N, C)`` joint probabilities (the combination in the module docstring)."""
        p = self.prototype_proba(x)
        if self.head is None:
            return p
        seen = self.head_classes
        p_seen = p[:, seen]
        mass = p_seen.sum(axis=1, keepdims=True)
        cond = p_seen / np.maximum(mass, 1e-12)
        mixed = (1.0 - self.alpha) * cond + self.alpha * self.head.proba(x)
        out = p.copy()
        out[:, seen] = mass * mixed
        return out

    def gradient_embedding(self, x: np.ndarray) -> np.ndarray:
        """BADGE embeddings ``(N, C·H)``: the gradient of the cross-entropy at the predicted
        class w.r.t. the head's last layer, ``(p − onehot(ŷ)) ⊗ hidden``. Without a head, the
        same with the prototype probabilities and the unit features."""
        if self.head is not None:
            h = self.head.hidden(x)
            p = self.head.proba(x)
        else:
            h = _unit(x)
            p = self.prototype_proba(x)
        g = p.copy()
        g[np.arange(len(g)), p.argmax(axis=1)] -= 1.0
        return (g[:, :, None] * h[:, None, :]).reshape(len(x), -1).astype(np.float32)

    def all_prototypes(self) -> np.ndarray:
        """Every visual prototype stacked, ``(P, D)`` (empty when nothing is labelled)."""
        if not self.prototypes:
            return np.zeros((0, 0), np.float32)
        return np.concatenate([self.prototypes[c] for c in self.seen]).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for ``run.json`` and the state."""
        return {
            "seen": self.seen,
            "unseen_text": self.unseen_text,
            "prototypes": {str(c): len(p) for c, p in self.prototypes.items()},
            "temperature": round(self.temperature, 4),
            "text_offset": round(self.text_offset, 4),
            "head": self.head is not None,
            "alpha": round(self.alpha, 4),
            "labelled_cells": self.n_labelled,
        }
