"""The active-learning loop: select → label → update → evaluate, until the budget is spent.

Round 0 labels a *seed set* (``seed_size`` regions, random or k-center on the features — the
same for every strategy with the same seed); each later round fits ProZS on everything
labelled so far, scores the unlabelled regions and labels the ``batch`` regions the strategy
picks. After every round the model is evaluated on the test images (when given with labels),
a row ``(round, labelled_fraction, dice, iou)`` joins ``OUT/curve.csv`` / ``curve.png``, and the
state is saved atomically (:mod:`.store`). The run stops when no further whole region fits in
``budget × pool pixels`` (or after ``max_rounds``).

Labels come from an *oracle* (label masks by stem) or, without one, from an annotator: the
selected regions are written to ``OUT/queue/`` and the run returns ``status="waiting"``; the
next call imports the masks (or GeoJSON) dropped there and carries on. Resuming is exact: the
model is refitted from the labelled set with seeds derived from (seed, round), and the selection
RNG state is part of the saved state.

Features: the pool's cell features are standardised with the pool's mean / std (text-space
encoder features are kept as they are); region features are the unit-length means of their
cells' features, so distances in selection follow the prototypes' cosine geometry.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.active.annotations import (
    find_label,
    rasterise_geojson,
    read_class_mask,
    read_geojson,
)
from zeropath.active.curves import merge_curve, plot_curve
from zeropath.active.evaluate import Confusion, predict_mask
from zeropath.active.features import FeatureCache, FeatureExtractor, get_extractor, read_rgb
from zeropath.active.prototypes import ProZS, ProZSConfig
from zeropath.active.queue import QueueEntry, QueueStore
from zeropath.active.regions import (
    PoolImage,
    RegionIndex,
    cell_fractions,
    parse_region_id,
    region_id,
)
from zeropath.active.selection import (
    RULES,
    Candidates,
    kcenter_greedy,
    random_select,
    region_uncertainty,
    select,
)
from zeropath.active.store import RunState, StateStore, run_key
from zeropath.errors import ConfigError, InputError

__all__ = ["ActiveConfig", "ActiveResult", "ActiveRun", "list_images", "run_active"]

ProgressCallback = Callable[[int, int | None, str], None]


@dataclass(frozen=True)
class ActiveConfig:
    """Options of one run. ``batch=None``: about ten rounds to the budget;
    ``seed_size=None``: the batch size."""

    strategy: str = "combined"
    seed: int = 0
    budget: float = 0.1
    region_px: int = 64
    cell_px: int = 16
    batch: int | None = None
    seed_size: int | None = None
    seed_set: str = "random"
    uncertainty: str = "entropy"
    weights: Mapping[str, float] | None = None
    delta_quantile: float = 0.5
    coverage_points: int = 3000
    class_names: tuple[str, ...] | None = None
    prozs: ProZSConfig = field(default_factory=ProZSConfig)
    max_rounds: int | None = None

    def check(self) -> None:
        if self.strategy not in RULES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; known: {', '.join(RULES)}")
        if not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"budget must be a fraction in (0, 1], got {self.budget}")
        if self.seed_set not in ("random", "coreset"):
            raise ConfigError(f"seed set must be 'random' or 'coreset', got {self.seed_set!r}")
        for name in ("batch", "seed_size", "max_rounds"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be at least 1, got {v}")


@dataclass
class ActiveResult:
    """What a call of :func:`run_active` ended with."""

    status: str  # "done" | "waiting"
    rows: list[dict[str, Any]]
    queued: list[str]
    labelled_fraction: float
    state_dir: Path
    timings: dict[str, float]
    model: dict[str, Any] | None = None


def list_images(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Plain image files of a directory (sorted) or the files given."""
    from zeropath.io.reader import IMAGE_SUFFIXES, list_inputs

    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    files = [p for p in list_inputs(items) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(items[0] if items else None, "no images (png/tif/jpg) found")
    return files


def _pool_images(files: Sequence[Path]) -> list[PoolImage]:
    from zeropath.io.datasets import image_shape
    from zeropath.io.reader import image_stem

    out = []
    for p in files:
        h, w = image_shape(p)
        if h < 2 or w < 2:
            raise InputError(p, f"image of {w}×{h} px is too small")
        out.append(PoolImage(Path(p), image_stem(p), h, w))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _jsonable_identity(d: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, sort_keys=True, default=str))


class ActiveRun:
    """A prepared run: the pool's regions and features, label sources and test data."""

    def __init__(
        self,
        pool: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        out: str | os.PathLike[str],
        config: ActiveConfig | None = None,
        *,
        oracle: str | os.PathLike[str] | None = None,
        test: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        test_labels: str | os.PathLike[str] | None = None,
        extractor: FeatureExtractor | str = "histology",
        cache_dir: str | os.PathLike[str] | None = None,
        text_prompts: Mapping[int, Sequence[str]] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config or ActiveConfig()
        self.config.check()
        self.out = Path(out)
        self.progress = progress or (lambda done, total, message="": None)
        self.oracle = Path(oracle) if oracle is not None else None
        if self.oracle is not None and not self.oracle.is_dir():
            raise InputError(self.oracle, "oracle label folder not found")
        self.extractor = (
            get_extractor(extractor, cell=self.config.cell_px)
            if isinstance(extractor, str)
            else extractor
        )
        if self.extractor.cell != self.config.cell_px:
            raise ConfigError(
                f"extractor cell {self.extractor.cell} px differs from cell_px "
                f"{self.config.cell_px}"
            )
        self.cache = FeatureCache(self.extractor, cache_dir)
        self.images = _pool_images(list_images(pool))
        self.index = RegionIndex(self.images, self.config.region_px, self.config.cell_px)
        self.test_files = list_images(test) if test is not None else []
        self.test_labels = Path(test_labels) if test_labels is not None else self.oracle
        self._oracle_masks: dict[str, np.ndarray] = {}
        self._soft: dict[str, np.ndarray] = {}
        self._test: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.timings: dict[str, float] = {}
        self.class_names = self._classes(text_prompts)
        self.n_classes = len(self.class_names)
        self._load_features()
        self.text_prototypes = self._text_prototypes(text_prompts or {})
        self.key = run_key(self.config.strategy, self.config.seed)
        self.store = StateStore(self.out, self.key)
        self.queue = QueueStore(self.out)

    # ------------------------------------------------------------------ preparation

    def _classes(self, text_prompts: Mapping[int, Sequence[str]] | None) -> list[str]:
        if self.config.class_names:
            names = list(self.config.class_names)
            if len(names) < 2:
                raise ConfigError("at least two classes are needed")
            return names
        n = 2
        if self.oracle is not None:
            for im in self.images:
                m = self._oracle_mask(im.stem)
                if m.size:
                    n = max(n, int(m.max()) + 1)
        if text_prompts:
            n = max(n, max(int(k) for k in text_prompts) + 1)
        return ["background", "foreground"] if n == 2 else [f"class{i}" for i in range(n)]

    def _load_features(self) -> None:
        t0 = time.perf_counter()
        feats = []
        for i, im in enumerate(self.images):
            f = self.cache.get(im.path)
            if f.shape[:2] != self.index.cell_shape[im.stem]:
                raise InputError(
                    im.path,
                    f"features of shape {f.shape[:2]} do not fit the cell grid "
                    f"{self.index.cell_shape[im.stem]} (stale cache?)",
                )
            feats.append(f.reshape(-1, f.shape[-1]))
            self.progress(i + 1, len(self.images), "features")
        raw = np.concatenate(feats).astype(np.float32)
        if self.extractor.text_space:
            self.mu = np.zeros(raw.shape[1], np.float32)
            self.sd = np.ones(raw.shape[1], np.float32)
        else:
            self.mu = raw.mean(axis=0)
            self.sd = np.maximum(raw.std(axis=0), 1e-6)
        self.x = self.standardise(raw)
        self.region_x = _unit(self.index.region_means(self.x))
        self.timings["features_s"] = time.perf_counter() - t0

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Pool standardisation of raw cell features (identity for text-space features)."""
        return ((np.asarray(raw, np.float32) - self.mu) / self.sd).astype(np.float32)

    def _text_prototypes(self, prompts: Mapping[int, Sequence[str]]) -> dict[int, np.ndarray]:
        if not prompts:
            return {}
        if not self.extractor.text_space:
            raise ConfigError(
                f"text prompts need features in a text space (encoder:NAME), not "
                f"{self.extractor.name!r}"
            )
        out = {}
        for c, texts in prompts.items():
            if not 0 <= int(c) < self.n_classes:
                raise ConfigError(f"prompt class index {c} outside 0..{self.n_classes - 1}")
            if texts:
                emb = self.extractor.encode_texts(list(texts))
                out[int(c)] = _unit(_unit(emb).mean(axis=0))
        return out

    def identity(self) -> dict[str, Any]:
        """Options a resumed run must share with the saved one."""
        c = self.config
        stems = "\n".join(sorted(im.stem for im in self.images))
        return _jsonable_identity(
            {
                "strategy": c.strategy,
                "seed": c.seed,
                "region_px": c.region_px,
                "cell_px": c.cell_px,
                "seed_set": c.seed_set,
                "uncertainty": c.uncertainty,
                "weights": dict(c.weights or {}),
                "delta_quantile": c.delta_quantile,
                "coverage_points": c.coverage_points,
                "prozs": c.prozs.to_dict(),
                "features": self.extractor.cache_id,
                "classes": self.class_names,
                "pool": {
                    "images": len(self.images),
                    "stems_sha256": hashlib.sha256(stems.encode()).hexdigest(),
                },
                "oracle": self.oracle is not None,
                "text_classes": sorted(self.text_prototypes),
            }
        )

    # ------------------------------------------------------------------ labels

    def _oracle_mask(self, stem: str) -> np.ndarray:
        if stem not in self._oracle_masks:
            assert self.oracle is not None
            path = find_label(self.oracle, stem)
            mask = read_class_mask(path)
            im = self.index.by_stem.get(stem)
            if im is not None and mask.shape != (im.height, im.width):
                raise InputError(path, f"label shape {mask.shape} differs from the image's")
            self._oracle_masks[stem] = mask
        return self._oracle_masks[stem]

    def _box_shape(self, rid: str) -> tuple[int, int, int, int]:
        return self.index.box(parse_region_id(rid))

    def region_mask(self, rid: str) -> np.ndarray | None:
        """The class mask of a labelled/pending region, or ``None`` while it has no label."""
        key = parse_region_id(rid)
        y0, x0, y1, x1 = self.index.box(key)
        if self.oracle is not None:
            return np.asarray(self._oracle_mask(key[0])[y0:y1, x0:x1])
        if self.store.label_path(rid).is_file():
            return self.store.load_label(rid)
        mpath = self.queue.mask_path(rid)
        if mpath.is_file():
            mask = read_class_mask(mpath, self.n_classes)
            if mask.shape != (y1 - y0, x1 - x0):
                raise InputError(
                    mpath, f"mask of shape {mask.shape}, region is {(y1 - y0, x1 - x0)}"
                )
            return mask
        for gpath in self.queue.geojson_paths(rid, key[0]):
            return rasterise_geojson(
                read_geojson(gpath), (y0, x0, y1, x1), self.class_names, where=str(gpath)
            )
        return None

    def soft_labels(self, rid: str) -> np.ndarray:
        """``(cells, C)`` class fractions of a labelled region's cells (region cell order)."""
        if rid not in self._soft:
            mask = self.region_mask(rid)
            if mask is None:
                raise InputError(None, f"region {rid} has no label")
            self._soft[rid] = cell_fractions(mask, self.config.cell_px, self.n_classes).reshape(
                -1, self.n_classes
            )
        return self._soft[rid]

    # ------------------------------------------------------------------ model

    def fit(self, rids: Sequence[str], seed: int) -> ProZS:
        """ProZS fitted on the cells of the regions ``rids``."""
        pos = [self.index.position[parse_region_id(r)] for r in rids]
        cells = np.concatenate([self.index.cells(i) for i in pos])
        soft = np.concatenate([self.soft_labels(r) for r in rids])
        model = ProZS(self.n_classes, self.config.prozs, self.text_prototypes)
        return model.fit(self.x[cells], soft, seed=seed)

    def _test_data(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._test is None:
            from zeropath.io.reader import image_stem

            data = []
            if self.test_files and self.test_labels is not None:
                for p in self.test_files:
                    truth = read_class_mask(find_label(self.test_labels, image_stem(p)))
                    feats = self.cache.get(p)
                    data.append((feats, truth))
            self._test = data
        return self._test

    def evaluate(self, model: ProZS) -> tuple[float | None, float | None]:
        """Pooled pixel Dice / IoU on the test images (``None`` without test labels)."""
        data = self._test_data()
        if not data:
            return None, None
        conf = Confusion(self.n_classes)
        for feats, truth in data:
            h, w, d = feats.shape
            proba = model.predict_proba(self.standardise(feats.reshape(-1, d)))
            pred = predict_mask(proba.reshape(h, w, -1), truth.shape, self.config.cell_px)
            conf.add(truth, pred)
        return conf.scores()

    # ------------------------------------------------------------------ selection

    def candidates(
        self, model: ProZS | None, exclude: set[str], strategy: str | None = None
    ) -> tuple[Candidates, np.ndarray]:
        """The unlabelled regions as :class:`Candidates` (and their positions), with what
        ``strategy`` (default: the run's) needs."""
        pos = np.array(
            [i for i, k in enumerate(self.index.keys) if region_id(k) not in exclude], np.int64
        )
        ids = [region_id(self.index.keys[i]) for i in pos]
        lab = np.array(
            [i for i, k in enumerate(self.index.keys) if region_id(k) in exclude], np.int64
        )
        feats = self.region_x[pos]
        unc = grads = protos = text = None
        if model is not None:
            strategy = strategy or self.config.strategy
            if strategy in ("entropy", "combined"):
                proba = model.predict_proba(self.x)
                unc = region_uncertainty(
                    proba[self.index.order], self.index.starts, self.config.uncertainty
                )[pos]
            if strategy == "badge":
                grads = self.index.region_means(model.gradient_embedding(self.x))[pos]
            protos = model.all_prototypes()
            unseen = model.unseen_text
            if unseen and strategy in ("combined", "coverage"):
                t = np.stack([_unit(self.text_prototypes[c]) for c in unseen])
                text = (feats @ t.T).max(axis=1)
                if len(protos):
                    text = text - (feats @ protos.T).max(axis=1)
        cands = Candidates(
            ids=ids,
            features=feats,
            labelled=self.region_x[lab],
            uncertainty=unc,
            gradients=grads,
            prototypes=protos if protos is not None and len(protos) else None,
            points=self.region_x,
            text_term=text,
        )
        return cands, pos

    def select_batch(
        self,
        model: ProZS | None,
        exclude: set[str],
        n: int,
        rng: np.random.Generator,
        strategy: str | None = None,
    ) -> list[str]:
        """The next ``n`` region ids: the seed rule without a model, the strategy (default: the
        run's) with one."""
        strategy = strategy or self.config.strategy
        cands, _ = self.candidates(model, exclude, strategy)
        if model is None:
            if self.config.seed_set == "coreset":
                idx = kcenter_greedy(cands.features, cands.labelled_features, n)
            else:
                idx = random_select(len(cands.ids), n, rng)
            return [str(cands.ids[i]) for i in idx]
        return [
            str(r)
            for r in select(
                strategy,
                cands,
                n,
                rng,
                weights=self.config.weights,
                delta_quantile=self.config.delta_quantile,
                max_points=self.config.coverage_points,
            )
        ]

    # ------------------------------------------------------------------ bookkeeping

    def labelled_pixels(self, rids: Sequence[str]) -> int:
        return int(sum(self.index.pixels[self.index.position[parse_region_id(r)]] for r in rids))

    def default_batch(self) -> int:
        area = self.config.region_px**2
        return max(1, math.ceil(self.config.budget * self.index.total_pixels / area / 10))

    def allowed(self, rids: Sequence[str]) -> int:
        """How many more whole regions fit in the budget."""
        room = self.config.budget * self.index.total_pixels - self.labelled_pixels(rids)
        return max(0, math.floor(room / self.config.region_px**2 + 1e-9))

    def _within_budget(self, labelled: Sequence[str], picks: Sequence[str]) -> list[str]:
        """The longest prefix of ``picks`` whose pixels fit the budget (edge regions may be
        larger than ``region_px²``); at least one pick so that a round always moves."""
        room = self.config.budget * self.index.total_pixels - self.labelled_pixels(labelled)
        out: list[str] = []
        for rid in picks:
            px = self.labelled_pixels([rid])
            if out and px > room:
                break
            out.append(rid)
            room -= px
        return out

    def ceiling(self, seed: int = 0) -> tuple[ProZS, float | None, float | None]:
        """The fully labelled reference: ProZS on every pool region (oracle runs only)."""
        if self.oracle is None:
            raise ConfigError("the fully labelled ceiling needs an oracle")
        rids = [region_id(k) for k in self.index.keys]
        model = self.fit(rids, seed)
        return (model, *self.evaluate(model))

    # ------------------------------------------------------------------ the loop

    def _seed_for(self, round_: int) -> int:
        return int(self.config.seed) * 100_003 + int(round_)

    def _queue_entries(self, state: RunState) -> None:
        entries, crops = [], {}
        rgb_cache: dict[str, np.ndarray] = {}
        for rid in state.pending:
            key = parse_region_id(rid)
            im = self.index.by_stem[key[0]]
            y0, x0, y1, x1 = self.index.box(key)
            if key[0] not in rgb_cache:
                rgb_cache[key[0]] = read_rgb(im.path)
            crops[rid] = rgb_cache[key[0]][y0:y1, x0:x1]
            entries.append(
                QueueEntry(
                    id=rid,
                    image=str(im.path.resolve()),
                    stem=key[0],
                    box=(x0, y0, x1, y1),
                    round=state.round,
                    run=self.key,
                    classes=list(self.class_names),
                )
            )
        self.queue.write(entries, crops, self._queue_run(state))

    def _queue_run(self, state: RunState) -> dict[str, Any]:
        return {
            "run": self.key,
            "strategy": self.config.strategy,
            "seed": self.config.seed,
            "round": state.round,
            "classes": self.class_names,
            "out": str(self.out.resolve()),
        }

    def _publish(self, state: RunState, plot: bool = True) -> None:
        """Merge this run's rows into ``curve.csv`` (every round) and redraw ``curve.png``."""
        rows = merge_curve(
            self.out / "curve.csv", self.config.strategy, self.config.seed, state.rows
        )
        if plot:
            plot_curve(rows, self.out / "curve.png")

    def _write_run_json(self, state: RunState, model: ProZS | None) -> None:
        from zeropath import __version__
        from zeropath.io.writers import write_run_json

        c = self.config
        write_run_json(
            self.out / "run.json",
            {
                "version": __version__,
                "command": "active run",
                "run": self.key,
                "status": state.status,
                "parameters": {
                    "strategy": c.strategy,
                    "seed": c.seed,
                    "budget": c.budget,
                    "region_px": c.region_px,
                    "cell_px": c.cell_px,
                    "batch": c.batch or self.default_batch(),
                    "seed_size": c.seed_size or c.batch or self.default_batch(),
                    "seed_set": c.seed_set,
                    "uncertainty": c.uncertainty,
                    "weights": dict(c.weights or {}),
                    "delta_quantile": c.delta_quantile,
                    "prozs": c.prozs.to_dict(),
                    "classes": self.class_names,
                },
                "features": self.extractor.describe(),
                "pool": {
                    "images": len(self.images),
                    "regions": len(self.index),
                    "pixels": self.index.total_pixels,
                },
                "oracle": None if self.oracle is None else str(self.oracle),
                "test": {"images": len(self.test_files), "labels": str(self.test_labels or "")},
                "model": None if model is None else model.describe(),
                "rounds": state.rows,
                "round_timings": state.timings,
                "timings": self.timings,
            },
        )

    def run(self) -> ActiveResult:
        """Run (or resume) until the budget is spent or labels are awaited."""
        t_start = time.perf_counter()
        identity = self.identity()
        state = self.store.load()
        if state is None:
            state = RunState(identity=identity)
        elif state.identity != identity:
            diff = sorted(k for k in identity if identity.get(k) != state.identity.get(k))
            raise ConfigError(
                f"{self.store.path}: saved with different options ({', '.join(diff)}); "
                "use another --out or the same options"
            )
        rng = np.random.default_rng(self.config.seed)
        if state.rng is not None:
            rng.bit_generator.state = state.rng
        batch = self.config.batch or self.default_batch()
        seed_size = self.config.seed_size or batch
        model: ProZS | None = None
        while True:
            # 1. labels for the pending regions
            if state.pending:
                t0 = time.perf_counter()
                missing = [r for r in state.pending if self.region_mask(r) is None]
                if missing:
                    self._queue_entries(state)
                    state.status = "waiting"
                    self.store.save(state)
                    if state.rows:
                        self._publish(state)
                    self._write_run_json(state, model)
                    self.timings["total_s"] = time.perf_counter() - t_start
                    return self._result(state, model, queued=list(state.pending))
                if self.oracle is None:
                    for r in state.pending:
                        self.store.save_label(r, self.region_mask(r))
                    self.queue.remove(state.pending)
                    self.queue.clear_index(self._queue_run(state))
                state.labelled += [[r, state.round] for r in state.pending]
                state.pending = []
                state.status = "running"
                self._timing(state, "label_s", time.perf_counter() - t0)
                self.store.save(state)
            # 2. update + evaluate
            labelled = state.labelled_ids
            done_rounds = {int(r["round"]) for r in state.rows}
            if labelled and state.round not in done_rounds:
                t0 = time.perf_counter()
                model = self.fit(labelled, self._seed_for(state.round))
                t1 = time.perf_counter()
                dice, iou = self.evaluate(model)
                t2 = time.perf_counter()
                frac = self.labelled_pixels(labelled) / self.index.total_pixels
                state.rows.append(
                    {"round": state.round, "labelled_fraction": frac, "dice": dice, "iou": iou}
                )
                self._timing(state, "fit_s", t1 - t0)
                self._timing(state, "eval_s", t2 - t1)
                self.store.save(state)
                self._publish(state, plot=False)
                msg = f"round {state.round}: {100 * frac:.2f} % labelled"
                if dice is not None:
                    msg += f", dice {dice:.4f}, iou {iou:.4f}"
                self.progress(len(state.rows), None, msg)
            # 3. stop?
            n = min(self.allowed(labelled), seed_size if not labelled else batch)
            if n <= 0 and not labelled:
                raise ConfigError(
                    f"budget {self.config.budget:g} of {self.index.total_pixels} pool pixels is "
                    f"less than one {self.config.region_px}-px region; raise --budget"
                )
            rounds_cap = self.config.max_rounds
            if (
                n <= 0
                or len(labelled) >= len(self.index)
                or (rounds_cap is not None and len(state.rows) >= rounds_cap)
            ):
                state.status = "done"
                self.store.save(state)
                if state.rows:
                    self._publish(state)
                if self.oracle is None:
                    self.queue.clear_index(self._queue_run(state))
                self.timings["total_s"] = time.perf_counter() - t_start
                self._write_run_json(state, model)
                return self._result(state, model, queued=[])
            # 4. select
            t0 = time.perf_counter()
            if labelled and model is None:  # resumed between evaluation and selection
                model = self.fit(labelled, self._seed_for(state.round))
            picks = self.select_batch(model if labelled else None, set(labelled), n, rng)
            state.pending = self._within_budget(labelled, picks)
            state.round += 1
            state.rng = rng.bit_generator.state
            self._timing(state, "select_s", time.perf_counter() - t0, state.round)
            self.store.save(state)
            model = None

    def _timing(self, state: RunState, name: str, value: float, round_: int | None = None) -> None:
        r = state.round if round_ is None else round_
        for t in state.timings:
            if t["round"] == r:
                t[name] = round(value, 4)
                return
        state.timings.append({"round": r, name: round(value, 4)})

    def _result(self, state: RunState, model: ProZS | None, queued: list[str]) -> ActiveResult:
        frac = self.labelled_pixels(state.labelled_ids) / self.index.total_pixels
        return ActiveResult(
            status=state.status,
            rows=list(state.rows),
            queued=queued,
            labelled_fraction=frac,
            state_dir=self.store.dir,
            timings=dict(self.timings),
            model=None if model is None else model.describe(),
        )


def run_active(
    pool: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ActiveConfig | None = None,
    **kwargs: Any,
) -> ActiveResult:
    """Prepare and run (or resume) an active-learning run; see :class:`ActiveRun`."""
    return ActiveRun(pool, out, config, **kwargs).run()
