"""Active learning for tissue segmentation on GlaS, and a prototype check on CRC tiles.

**GlaS** (``DATA/glas``): the 85 ``train_*`` images are the pool, their ``labels/`` masks the
oracle (0/255 → non-gland / gland), the 60 ``testA_*`` images the test set. For every feature
extractor, every strategy × seed runs ``active run`` (the library call behind it) up to
``--budget`` of the pool's pixels; the *ceiling* is ProZS (prototypes + head) fitted on every
pool label. Reported per strategy: Dice at 10 % labelled (linear interpolation on the curve;
mean ± sd over seeds) and relative to the ceiling, the normalised area under the Dice curve,
and the time per round (fit, evaluation, selection). A separate timing: one selection round of
every strategy over the *whole* pool with cached features (the issue asks for ≤ 30 s).

**CRC tiles** (``DATA/crc-tiles/<CLASS>/*.png``, 9 classes × 12): ``k`` labelled tiles per class
(k = 1, 3, 5; 20 random draws each) give ProZS prototypes (and a head) on their cells; every
other tile is classified by the mean of its cells' probabilities. Accuracy per extractor.

Outputs under ``--out``: ``glas/<extractor>/curve.csv|png`` (all runs, ceiling line),
``summary.json``, ``summary.csv`` and the CRC table; timings are printed.

    python benchmarks/bench_active.py                                   # the full run (lead)
    python benchmarks/bench_active.py --pool-limit 12 --test-limit 6 --seeds 0 \\
        --strategies random entropy combined --crc-repeats 3            # smoke run
    python benchmarks/bench_active.py --features histology encoder:mobilesam
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "entropy", "coreset", "badge", "combined")


def _interp(rows: list[dict], at: float) -> float | None:
    f = np.array([r["labelled_fraction"] for r in rows])
    d = np.array([np.nan if r["dice"] is None else r["dice"] for r in rows])
    if not len(f) or at < f[0] - 1e-9 or at > f[-1] + 1e-9:
        return None
    return float(np.interp(at, f, d))


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v))


def glas(args: argparse.Namespace, extractor_spec: str, out: Path) -> dict:
    from zeropath.active.curves import area_under_curve, plot_curve, read_curve
    from zeropath.active.features import get_extractor
    from zeropath.active.loop import ActiveConfig, ActiveRun
    from zeropath.cli.active import _weights  # the CLI's own parser of U,D,C

    root = args.data / "glas"
    pool = sorted((root / "images").glob("train_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    test = sorted((root / "images").glob("testA_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    if args.protocol == "val":  # choose settings here: never on testA's labels
        rng = np.random.default_rng(12345)
        held = set(rng.choice(len(pool), args.val_images, replace=False).tolist())
        test = [p for i, p in enumerate(pool) if i in held]
        pool = [p for i, p in enumerate(pool) if i not in held]
    if args.pool_limit:
        pool = pool[: args.pool_limit]
    if args.test_limit:
        test = test[: args.test_limit]
    labels = root / "labels"
    extractor = get_extractor(extractor_spec, cell=args.cell_px)
    run_out = out / "glas" / extractor_spec.replace(":", "_")
    run_out.mkdir(parents=True, exist_ok=True)
    report: dict = {"extractor": extractor_spec, "pool": len(pool), "test": len(test), "runs": {}}
    kw = dict(oracle=labels, test=test, extractor=extractor, cache_dir=args.cache)

    t0 = time.perf_counter()
    base = ActiveRun(pool, run_out, ActiveConfig(budget=args.budget, cell_px=args.cell_px), **kw)
    base._test_data()
    report["features_s"] = round(time.perf_counter() - t0, 2)
    print(
        f"[{extractor_spec}] features of {len(pool)}+{len(test)} images: {report['features_s']} s",
        flush=True,
    )

    t0 = time.perf_counter()
    _, c_dice, c_iou = base.ceiling(seed=0)
    report["ceiling"] = {
        "dice": c_dice,
        "iou": c_iou,
        "fit_eval_s": round(time.perf_counter() - t0, 2),
    }
    print(
        f"[{extractor_spec}] ceiling (all pool labels): dice {c_dice:.4f} iou {c_iou:.4f} "
        f"({report['ceiling']['fit_eval_s']} s)",
        flush=True,
    )

    for strategy in args.strategies:
        per_seed = []
        for seed in args.seeds:
            cfg = ActiveConfig(
                strategy=strategy,
                weights=_weights(args.weights),
                seed=seed,
                budget=args.budget,
                cell_px=args.cell_px,
                region_px=args.region_px,
            )
            t0 = time.perf_counter()
            res = ActiveRun(pool, run_out, cfg, **kw).run()
            wall = time.perf_counter() - t0
            state = json.loads((res.state_dir / "state.json").read_text())
            tim = state["timings"]
            rounds = res.rows
            entry = {
                "seed": seed,
                "rounds": len(rounds),
                "dice_at_10": _interp(rounds, 0.10),
                "final_dice": rounds[-1]["dice"] if rounds else None,
                "final_fraction": res.labelled_fraction,
                "auc": area_under_curve(
                    [r["labelled_fraction"] for r in rounds], [r["dice"] for r in rounds]
                ),
                "wall_s": round(wall, 2),
                "select_s_mean": float(np.mean([t.get("select_s", 0) for t in tim[1:]] or [0])),
                "select_s_max": float(max([t.get("select_s", 0) for t in tim] or [0])),
                "fit_s_mean": float(np.mean([t.get("fit_s", 0) for t in tim] or [0])),
                "eval_s_mean": float(np.mean([t.get("eval_s", 0) for t in tim] or [0])),
            }
            per_seed.append(entry)
            d10 = entry["dice_at_10"]
            print(
                f"[{extractor_spec}] {strategy} seed {seed}: {len(rounds)} rounds, "
                f"dice@10% {d10 if d10 is None else round(d10, 4)}, "
                f"final {entry['final_dice']:.4f} at {100 * res.labelled_fraction:.1f} %, "
                f"AUC {entry['auc']:.4f}, {wall:.1f} s (select {entry['select_s_mean']:.2f} s/"
                f"round, fit {entry['fit_s_mean']:.2f}, eval {entry['eval_s_mean']:.2f})",
                flush=True,
            )
        d10, d10_sd = _mean_sd([e["dice_at_10"] for e in per_seed])
        auc, auc_sd = _mean_sd([e["auc"] for e in per_seed])
        report["runs"][strategy] = {
            "seeds": per_seed,
            "dice_at_10": d10,
            "dice_at_10_sd": d10_sd,
            "dice_at_10_rel_ceiling": None if d10 is None else d10 / c_dice,
            "auc": auc,
            "auc_sd": auc_sd,
        }
    plot_curve(
        read_curve(run_out / "curve.csv"),
        run_out / "curve.png",
        title=f"GlaS, {extractor_spec} features",
        ceiling=c_dice,
    )

    if args.selection_timing:
        report["selection_timing"] = selection_timing(args, extractor, out)
    return report


def selection_timing(args: argparse.Namespace, extractor, out: Path) -> dict:
    """One round of every strategy over the whole GlaS pool, features cached."""
    from zeropath.active.loop import ActiveConfig, ActiveRun
    from zeropath.active.regions import region_id

    root = args.data / "glas"
    pool = sorted((root / "images").glob("train_*.png"))
    t0 = time.perf_counter()
    base = ActiveRun(
        pool,
        out / "timing",
        ActiveConfig(budget=args.budget, cell_px=args.cell_px),
        oracle=root / "labels",
        extractor=extractor,
        cache_dir=args.cache,
    )
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n_regions = len(base.index)
    labelled = [
        region_id(base.index.keys[i]) for i in rng.choice(n_regions, n_regions // 20, replace=False)
    ]
    model = base.fit(labelled, 0)
    batch = base.default_batch()
    result = {
        "pool_images": len(pool),
        "regions": n_regions,
        "labelled": len(labelled),
        "batch": batch,
        "load_s": round(load_s, 2),
        "select_s": {},
    }
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        picks = base.select_batch(model, set(labelled), batch, np.random.default_rng(1), strategy)
        dt = time.perf_counter() - t0
        assert len(picks) == batch
        result["select_s"][strategy] = round(dt, 3)
        print(
            f"selection over the whole pool ({n_regions} regions, batch {batch}): "
            f"{strategy} {dt:.2f} s",
            flush=True,
        )
    return result


def crc(args: argparse.Namespace, extractor_spec: str) -> dict:
    from zeropath.active.features import FeatureCache, get_extractor
    from zeropath.active.prototypes import ProZS, ProZSConfig

    root = args.data / "crc-tiles"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (c, p) for c in classes for p in sorted((root / c).glob("*.png"))[: args.crc_per_class]
    ]
    cache = FeatureCache(get_extractor(extractor_spec, cell=args.cell_px), args.cache)
    t0 = time.perf_counter()
    feats = [cache.get(p) for _, p in files]
    feat_s = time.perf_counter() - t0
    y = np.array([classes.index(c) for c, _ in files])
    cells = [f.reshape(-1, f.shape[-1]) for f in feats]
    allc = np.concatenate(cells)
    text_space = cache.extractor.text_space
    mu = 0 if text_space else allc.mean(0)
    sd = 1 if text_space else np.maximum(allc.std(0), 1e-6)
    cells = [(c - mu) / sd for c in cells]
    out: dict = {"extractor": extractor_spec, "tiles": len(files), "features_s": round(feat_s, 2)}
    for head in (False, True):
        cfg = ProZSConfig(head=head, head_steps=150)
        name = "prototypes+head" if head else "prototypes"
        for k in (1, 3, 5):
            accs = []
            for rep in range(args.crc_repeats):
                rng = np.random.default_rng([rep, k])
                train = np.concatenate(
                    [
                        rng.choice(np.flatnonzero(y == c), k, replace=False)
                        for c in range(len(classes))
                    ]
                )
                test = np.setdiff1d(np.arange(len(y)), train)
                x = np.concatenate([cells[i] for i in train])
                t = np.concatenate([np.full(len(cells[i]), y[i]) for i in train])
                model = ProZS(len(classes), cfg).fit(x, t, seed=rep)
                pred = np.array([model.predict_proba(cells[i]).mean(0).argmax() for i in test])
                accs.append(float((pred == y[test]).mean()))
            out[f"{name}_k{k}"] = {"acc": float(np.mean(accs)), "sd": float(np.std(accs))}
            print(
                f"[crc {extractor_spec}] {name}, k={k}: accuracy {np.mean(accs):.3f} ± "
                f"{np.std(accs):.3f} ({args.crc_repeats} draws)",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "active")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default OUT/cache)")
    ap.add_argument("--features", nargs="+", default=["histology"])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--cell-px", type=int, default=16)
    ap.add_argument("--region-px", type=int, default=64)
    ap.add_argument("--pool-limit", type=int, default=None)
    ap.add_argument(
        "--protocol",
        choices=("test", "val"),
        default="test",
        help="test: pool train_*, evaluate on testA_*; val: hold --val-images of train_* out "
        "of the pool and evaluate on them (for choosing settings)",
    )
    ap.add_argument("--val-images", type=int, default=25)
    ap.add_argument(
        "--weights", default=None, help="combined-rule weights U,D,C (default: the package's)"
    )
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--no-selection-timing", dest="selection_timing", action="store_false")
    ap.add_argument("--skip-glas", action="store_true")
    ap.add_argument("--skip-crc", action="store_true")
    ap.add_argument("--crc-repeats", type=int, default=20)
    ap.add_argument("--crc-per-class", type=int, default=None, help="tiles per class (all: 12)")
    ap.add_argument("--crc-features", nargs="+", default=None, help="default: --features")
    args = ap.parse_args(argv)
    args.cache = args.cache or args.out / "cache"
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.data / "glas").is_dir():
        print(f"no GlaS data under {args.data}", file=sys.stderr)
        return 2
    summary: dict = {
        "budget": args.budget,
        "cell_px": args.cell_px,
        "region_px": args.region_px,
        "seeds": args.seeds,
        "glas": [],
        "crc": [],
    }
    t_all = time.perf_counter()
    for spec in args.features:
        if not args.skip_glas:
            summary["glas"].append(glas(args, spec, args.out))
    for spec in args.crc_features or args.features:
        if not args.skip_crc and (args.data / "crc-tiles").is_dir():
            summary["crc"].append(crc(args, spec))
    summary["total_s"] = round(time.perf_counter() - t_all, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (args.out / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "extractor",
                "strategy",
                "dice_at_10",
                "dice_at_10_sd",
                "rel_ceiling",
                "auc",
                "auc_sd",
                "ceiling",
            ]
        )
        for g in summary["glas"]:
            for strategy, r in g["runs"].items():
                w.writerow(
                    [
                        g["extractor"],
                        strategy,
                        r["dice_at_10"],
                        r["dice_at_10_sd"],
                        r["dice_at_10_rel_ceiling"],
                        r["auc"],
                        r["auc_sd"],
                        g["ceiling"]["dice"],
                    ]
                )
    print(f"summary in {args.out / 'summary.json'} ({summary['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
