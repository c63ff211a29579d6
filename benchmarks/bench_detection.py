"""Label-free nucleus detection on MoNuSeg: stain prior (coarse) and precision learning rounds.

Fits the confidence-map refiner (:func:`zeropath.nuclei.refine.fit_refiner`) on the images of
the Kumar train split (12 images; their labels are never read while fitting), then reports
detection precision / recall / F1 on ``kumar_val`` and on the official ``test`` set for the
stain-prior detector alone and for the refiner after each precision-learning round, with the
time of each round. The classical baseline's nucleus centroids are a reference row.

Matching: :func:`zeropath.metrics.detection_f1` between the ground-truth instances and a label
image holding one pixel per predicted point, radius 12 px at 0.25 µm/px (3 µm); counts are
pooled over the images of a split (micro average).

    python benchmarks/bench_detection.py --data ../shared/data/monuseg [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def load_split(data: Path, split: str) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    from zeropath.io.datasets import load_labels, monuseg_samples
    from zeropath.io.reader import open_image

    images, mpps, labels = [], [], []
    for s in monuseg_samples(data, split):
        with open_image(s.image_path) as src:
            images.append(src.read_level(0))
            mpps.append(float(src.mpp))
        labels.append(load_labels(s))
    return images, mpps, labels


def score_points(points: list, labels: list[np.ndarray], radius: float) -> dict[str, float]:
    """Pooled precision/recall/F1 of point sets against instance label images."""
    from zeropath.metrics import detection_f1
    from zeropath.nuclei.centres import points_to_labels

    tp = fp = fn = 0
    for pts, gt in zip(points, labels, strict=True):
        d = detection_f1(gt, points_to_labels(pts, gt.shape), radius=radius)
        tp, fp, fn = tp + int(d["tp"]), fp + int(d["fp"]), fn + int(d["fn"])
    p = tp / max(1, tp + fp)
    r = tp / max(1, tp + fn)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-12, p + r), "n_pred": tp + fp}


def classical_points(rgb: np.ndarray, mpp: float):
    from scipy import ndimage as ndi

    from zeropath.nuclei.centres import Points
    from zeropath.nuclei.classical import segment_classical

    lab = segment_classical(rgb, mpp)
    ids = np.arange(1, int(lab.max()) + 1)
    if ids.size == 0:
        return Points.empty()
    rc = np.array(ndi.center_of_mass(np.ones(lab.shape), lab, ids), np.float64)
    return Points(rc[:, ::-1].copy(), np.ones(len(rc), np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monuseg"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=4.0, help="epochs per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds for the whole fit")
    ap.add_argument("--splits", nargs="+", default=["kumar_val", "test"])
    ap.add_argument("--radius", type=float, default=12.0, help="match radius in input pixels")
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from zeropath.nuclei.detect import StainPriorDetector
    from zeropath.nuclei.refine import fit_refiner

    torch.set_num_threads(args.threads)
    train_images, train_mpps, _ = load_split(args.data, "kumar_train")  # labels unused
    evals = {s: load_split(args.data, s) for s in args.splits}
    detector = StainPriorDetector()
    rows: list[dict] = []

    def evaluate(name: str, detect, extra: dict | None = None) -> None:
        row = {"method": name, **(extra or {})}
        for split, (imgs, mpps, labels) in evals.items():
            t0 = time.perf_counter()
            pts = [detect(im, m) for im, m in zip(imgs, mpps, strict=True)]
            row[f"{split}_s_per_image"] = (time.perf_counter() - t0) / len(imgs)
            for k, v in score_points(pts, labels, args.radius).items():
                row[f"{split}_{k}"] = v
        rows.append(row)
        print(_fmt(row, args.splits), flush=True)

    print(_header(args.splits), flush=True)
    if not args.no_classical:
        evaluate("classical baseline (reference)", classical_points)
    evaluate("stain prior (coarse)", detector.detect)

    def on_round(r: int, refiner) -> None:
        h = refiner.history[-1]
        evaluate(
            f"+ precision learning round {r + 1}",
            refiner.detect,
            {"round_train_s": h["train_s"], "round_select_s": h["select_s"]},
        )

    t0 = time.perf_counter()
    refiner = fit_refiner(
        train_images,
        train_mpps,
        detector,
        rounds=args.rounds,
        epochs_per_round=args.epochs,
        seed=args.seed,
        time_budget_s=args.time_budget,
        on_round=on_round,
    )
    wall = time.perf_counter() - t0
    fit_s = refiner.history[-1]["seconds"]
    print(
        f"\nfit on {len(train_images)} kumar_train images: {fit_s:.1f} s "
        f"(wall {wall:.1f} s including the per-round evaluations), {args.threads} threads"
    )
    for h in refiner.history:
        print("  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()})
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "fit_seconds": fit_s, "history": refiner.history}, indent=1)
        )


def _header(splits: list[str]) -> str:
    cols = ["method", "train s/round"]
    for s in splits:
        cols += [f"{s} P", f"{s} R", f"{s} F1", f"{s} s/img"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def _fmt(row: dict, splits: list[str]) -> str:
    t = row.get("round_train_s")
    cells = [row["method"], "" if t is None else f"{t + row['round_select_s']:.1f}"]
    for s in splits:
        cells += [
            f"{row[f'{s}_precision']:.3f}",
            f"{row[f'{s}_recall']:.3f}",
            f"{row[f'{s}_f1']:.3f}",
            f"{row[f'{s}_s_per_image']:.2f}",
        ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
