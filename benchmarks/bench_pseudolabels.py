"""ZA-Net stages 3-4 on MoNuSeg: pseudo-label quality, then a segnet trained on them.

For each kind of points — ``oracle`` (centroids of the ground-truth nuclei: the upper-bound
setting, for stage checking only, never a label-free result) and ``detector`` (the label-free
stain-prior detector, :class:`zeropath.nuclei.detect.StainPriorDetector`) — it

1. builds pseudo-labels (:func:`zeropath.nuclei.pseudolabels.make_pseudolabels`) on every
   image at 0.5 µm/px and reports their pixel precision / recall against the ground-truth
   foreground (ignore pixels left out) and their coverage (share of non-ignore pixels);
2. trains the segnet on ``kumar_train`` images + pseudo-labels only (a time budget, CPU);
3. segments ``kumar_val`` and the official ``test`` set: probability → instances seeded by the
   same kind of points (detector points on the evaluated image: never ground truth, except in
   the oracle rows), labels resized back to 1000×1000, Dice / AJI / PQ (HoVer-Net definitions).

Ground truth is read for the oracle points and for scoring only; the detector rows never see
it while fitting or predicting. Parameters were tuned on kumar_train / kumar_val only.

    python benchmarks/bench_pseudolabels.py --data ../shared/data/monuseg --budget-s 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

WORK_MPP = 0.5
NATIVE_MPP = 0.25
SHAPE = (1000, 1000)


def load_split(root: Path, split: str) -> list[dict]:
    """Images at 0.5 µm/px plus native-resolution labels (for scoring / oracle points)."""
    import tifffile

    from zeropath.io.datasets import load_labels, monuseg_samples
    from zeropath.io.tiler import resize_rgb
    from zeropath.stain import as_rgb

    out = []
    for s in monuseg_samples(root, split):
        rgb = as_rgb(tifffile.imread(s.image_path))
        gt = load_labels(s, shape=rgb.shape[:2]).astype(np.int64)
        h, w = rgb.shape[:2]
        f = NATIVE_MPP / WORK_MPP
        work = resize_rgb(rgb, (round(h * f), round(w * f)))
        out.append({"stem": s.stem, "rgb": work, "gt": gt, "native_shape": (h, w)})
    return out


def oracle_points(gt: np.ndarray, factor: float) -> np.ndarray:
    """Centroids (x, y) of the ground-truth nuclei, scaled to the work grid."""
    ids = np.unique(gt)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return np.zeros((0, 2))
    rc = np.array(ndi.center_of_mass(np.ones_like(gt), gt, ids))
    # pixel centres: native (r + 0.5) * f - 0.5 on the work grid
    return ((rc[:, ::-1] + 0.5) * factor - 0.5).reshape(-1, 2)


def detector_points(rgb: np.ndarray) -> np.ndarray:
    try:
        from zeropath.nuclei.detect import StainPriorDetector
    except ImportError:  # stand-in while the detector is not there
        from skimage.feature import blob_log

        from zeropath.stain import hematoxylin_od

        blobs = blob_log(hematoxylin_od(rgb), min_sigma=2.0, max_sigma=6.0, threshold=0.05)
        return blobs[:, [1, 0]].astype(np.float64)
    return StainPriorDetector().detect(rgb, WORK_MPP).xy


def work_gt(item: dict) -> np.ndarray:
    from zeropath.io.tiler import resize_labels

    return resize_labels(item["gt"], item["rgb"].shape[:2])


def pl_stats(labels: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    tp = fp = fn = btp = bfp = cov = tot = 0
    for lab, gt in zip(labels, gts, strict=True):
        fg = gt > 0
        tp += int(((lab == 1) & fg).sum())
        fp += int(((lab == 1) & ~fg).sum())
        fn += int((fg & (lab != 1)).sum())
        btp += int(((lab == 0) & ~fg).sum())
        bfp += int(((lab == 0) & fg).sum())
        cov += int((lab != 255).sum())
        tot += lab.size
    return {
        "nuc_precision": tp / max(tp + fp, 1),
        "nuc_recall": tp / max(tp + fn, 1),
        "bg_precision": btp / max(btp + bfp, 1),
        "coverage": cov / max(tot, 1),
    }


def evaluate(
    net: object, items: list[dict], points: list[np.ndarray], inst_kw: dict, tta: bool
) -> dict[str, float]:
    from zeropath.io.tiler import resize_labels
    from zeropath.metrics import evaluate_pair
    from zeropath.nuclei.instances import instances_from_probability

    rows = []
    t_prob = t_inst = 0.0
    for item, xy in zip(items, points, strict=True):
        t0 = time.perf_counter()
        prob = net.predict_proba(item["rgb"], tta=tta)  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        lab = instances_from_probability(prob, xy, mpp=WORK_MPP, **inst_kw)
        t_prob += t1 - t0
        t_inst += time.perf_counter() - t1
        lab = resize_labels(lab, item["native_shape"])
        rows.append(evaluate_pair(item["gt"], lab))
    keys = ("dice", "aji", "pq", "det_f1")
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    # seconds per megapixel of the native (0.25 µm/px) image
    mp = sum(it["native_shape"][0] * it["native_shape"][1] for it in items) / 1e6
    out["prob_s_per_mp"] = t_prob / mp
    out["inst_s_per_mp"] = t_inst / mp
    return out


def classical_rows(items: list[dict]) -> dict[str, float]:
    from zeropath.io.tiler import resize_labels
    from zeropath.metrics import evaluate_pair
    from zeropath.nuclei.classical import segment_classical

    rows = []
    for item in items:
        lab = segment_classical(item["rgb"], WORK_MPP)
        rows.append(evaluate_pair(item["gt"], resize_labels(lab, item["native_shape"])))
    return {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "aji", "pq", "det_f1")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monuseg"))
    ap.add_argument("--points", nargs="+", default=["oracle", "detector"])
    ap.add_argument("--use", nargs="+", default=["voronoi", "cluster"])
    ap.add_argument("--budget-s", type=float, default=300.0, help="segnet fit time (s)")
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--self-train", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--splits", nargs="+", default=["kumar_val", "test"])
    ap.add_argument("--pl-json", default="{}", help="JSON of make_pseudolabels keywords")
    ap.add_argument("--inst-json", default="{}", help="JSON of instances_from_probability kw")
    ap.add_argument("--no-fit", action="store_true", help="pseudo-label statistics only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--save-model", type=Path, default=None, help="save each SegNet here (dir)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no MoNuSeg data at {args.data}", file=sys.stderr)
        return 2
    import torch

    from zeropath.models.unet import UNetConfig
    from zeropath.nuclei.pseudolabels import make_pseudolabels
    from zeropath.nuclei.segnet import fit_segnet

    torch.set_num_threads(args.threads)
    pl_kw = json.loads(args.pl_json)
    inst_kw = json.loads(args.inst_json)
    f = NATIVE_MPP / WORK_MPP
    splits = {s: load_split(args.data, s) for s in ["kumar_train", *args.splits]}
    results: dict = {"pseudolabels": {}, "segnet": {}, "classical": {}, "use": list(args.use)}
    for kind in args.points:
        pts = {
            s: [
                oracle_points(it["gt"], f) if kind == "oracle" else detector_points(it["rgb"])
                for it in items
            ]
            for s, items in splits.items()
        }
        for s, items in splits.items():
            labels = [
                make_pseudolabels(it["rgb"], xy, WORK_MPP, use=args.use, **pl_kw)
                for it, xy in zip(items, pts[s], strict=True)
            ]
            stats = pl_stats(labels, [work_gt(it) for it in items])
            results["pseudolabels"][f"{kind}/{s}"] = stats
            print(kind, s, {k: round(v, 3) for k, v in stats.items()}, flush=True)
            if s == "kumar_train":
                train_labels = labels
                # source ablation on the fitting split
                for use in (("voronoi",), ("cluster",)):
                    part = [
                        make_pseudolabels(it["rgb"], xy, WORK_MPP, use=use, **pl_kw)
                        for it, xy in zip(items, pts[s], strict=True)
                    ]
                    key = f"{kind}/{s}/{'+'.join(use)}"
                    results["pseudolabels"][key] = pl_stats(part, [work_gt(it) for it in items])
        if args.no_fit:
            continue
        t0 = time.perf_counter()
        net = fit_segnet(
            [it["rgb"] for it in splits["kumar_train"]],
            train_labels,
            mpp=WORK_MPP,
            unet=UNetConfig(widths=tuple(args.widths)),
            iterations=args.iterations,
            crop=args.crop,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            time_budget_s=args.budget_s,
            self_train_rounds=args.self_train,
        )
        fit_s = time.perf_counter() - t0
        if args.save_model:
            args.save_model.mkdir(parents=True, exist_ok=True)
            net.save(args.save_model / f"segnet-{kind}.pt")
        n_it = sum(len(v) * 10 for v in net.config["history"].values())
        print(f"{kind}: fit {fit_s:.0f}s, ~{n_it} iterations", flush=True)
        results.setdefault("fit", {})[kind] = {
            "seconds": fit_s,
            "iterations_approx": n_it,
            "config": {k: v for k, v in net.config.items() if k != "history"},
            "parameters": net.n_parameters(),
        }
        for s in args.splits:
            r = evaluate(net, splits[s], pts[s], inst_kw, args.tta)
            r["fit_s"] = fit_s
            results["segnet"][f"{kind}/{s}"] = r
            print(kind, s, {k: round(v, 4) for k, v in r.items()}, flush=True)
    for s in args.splits:
        results["classical"][s] = classical_rows(splits[s])
    _table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _table(results: dict) -> None:
    print("\nPseudo-labels vs ground-truth foreground (0.5 µm/px; ignore pixels left out)\n")
    print("| points | sources | split | nucleus prec. | nucleus recall | bg prec. | coverage |")
    print("|---|---|---|---|---|---|---|")
    for key, r in results["pseudolabels"].items():
        kind, split, *src = key.split("/")
        label = "oracle (stage check only)" if kind == "oracle" else kind
        sources = src[0] if src else "+".join(results["use"])
        print(
            f"| {label} | {sources} | {split} | {r['nuc_precision']:.3f} | {r['nuc_recall']:.3f} "
            f"| {r['bg_precision']:.3f} | {r['coverage']:.3f} |"
        )
    print("\nSegnet trained on kumar_train pseudo-labels; instances seeded by the same points\n")
    print("| points | split | Dice | AJI | PQ | det F1 | fit s | prob s/MP | instances s/MP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in results["segnet"].items():
        kind, split = key.split("/")
        label = "oracle (stage check only)" if kind == "oracle" else kind
        print(
            f"| {label} | {split} | {r['dice']:.4f} | {r['aji']:.4f} | {r['pq']:.4f} "
            f"| {r['det_f1']:.4f} | {r['fit_s']:.0f} | {r['prob_s_per_mp']:.3f} "
            f"| {r['inst_s_per_mp']:.3f} |"
        )
    for split, r in results["classical"].items():
        print(
            f"| classical baseline (reference) | {split} | {r['dice']:.4f} | {r['aji']:.4f} "
            f"| {r['pq']:.4f} | {r['det_f1']:.4f} | 0 | | |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
