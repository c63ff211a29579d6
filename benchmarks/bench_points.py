"""MoNuSeg benchmark of the point-supervised pipeline (``points fit`` + ``points segment``).

Points are the centroids of the training labels (Kumar train + val: 16 images; the centroids
are the only use of those labels), optionally moved by up to ``--shift`` pixels
(:func:`~zeropath.points.io.jitter_points`). The model is fitted on those images and evaluated
on the 14 official test images with :func:`zeropath.metrics.evaluate_pair`. Reference row:
MobileSAM prompted with the (equally shifted) test centroids, no training — the smallest of
its three masks per point, painted at the same working µm/px.

    python benchmarks/bench_points.py --data ../shared/data/monuseg --steps 200 --shift 0 8

Short smoke run: ``--limit 4 --test-limit 3 --steps 10``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEYS = ("dice", "object_dice", "aji", "pq")


def centroids(labels: np.ndarray) -> np.ndarray:
    """``(N, 2)`` xy centroids of the instances of a label image."""
    from scipy import ndimage as ndi

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not len(ids):
        return np.zeros((0, 2))
    c = np.asarray(ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids))
    return c[:, ::-1].copy()


def write_points(path: Path, xy: np.ndarray) -> None:
    rows = ["x,y"] + [f"{x:.2f},{y:.2f}" for x, y in xy]
    path.write_text("\n".join(rows) + "\n")


def _mean(rows: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def reference_labels(predictor, rgb: np.ndarray, xy: np.ndarray, mpp: float, work_mpp: float):
    """MobileSAM prompted with ``xy`` (level-0 px) at ``work_mpp``: smallest of 3 masks each."""
    from zeropath.io.dense import tile_spans
    from zeropath.io.tiler import resize_labels, resize_rgb
    from zeropath.points.fit import pad_crop

    h, w = rgb.shape[:2]
    scale = mpp / work_mpp
    wh, ww = int(round(h * scale)), int(round(w * scale))
    work = resize_rgb(rgb, (wh, ww))
    pts = np.stack([(xy[:, 0] + 0.5) * ww / w - 0.5, (xy[:, 1] + 0.5) * wh / h - 0.5], 1)
    s = predictor.img_size
    out = np.zeros((wh, ww), np.uint32)
    next_id = 1
    for y0, y1, ylo, yhi in tile_spans(wh, s, s // 16, "spread"):
        for x0, x1, xlo, xhi in tile_spans(ww, s, s // 16, "spread"):
            own = (pts[:, 0] >= xlo) & (pts[:, 0] < xhi) & (pts[:, 1] >= ylo) & (pts[:, 1] < yhi)
            if not own.any():
                continue
            crop = work[y0:y1, x0:x1]
            predictor.set_image(pad_crop(crop, s))
            lab, _ = predictor.predict_labels(
                pts[own] - (x0, y0),
                multimask=True,
                choice="smallest",
                window_px=32.0 / work_mpp,
                drop_truncated=False,
            )
            lab = lab[: crop.shape[0], : crop.shape[1]]
            view = out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
            paint = (lab > 0) & (view == 0)
            view[paint] = lab[paint] + next_id - 1
            next_id += int(own.sum())
    return resize_labels(out, (h, w))


def _progress(done: int, total: int | None, message: str) -> None:
    if (message == "training" and done % 10 == 0) or (message != "training" and done == 0):
        print(f"  {message} {done}/{total} ({time.strftime('%H:%M:%S')})", flush=True)


def run_shift(args, shift: float, tmp: Path) -> dict:
    import torch

    from zeropath.io.datasets import load_labels, monuseg_samples
    from zeropath.io.reader import open_image
    from zeropath.metrics import evaluate_pair
    from zeropath.points.fit import PointsFitOptions
    from zeropath.points.io import jitter_points
    from zeropath.points.model import PointsSegmenter
    from zeropath.points.train import fit_points_files
    from zeropath.run.segment import SegmentOptions, segment_input

    rng = np.random.default_rng(args.seed)
    train = monuseg_samples(args.data, "kumar_train") + monuseg_samples(args.data, "kumar_val")
    train = train[: args.limit]
    test = monuseg_samples(args.data, "test")[: args.test_limit]
    pdir = tmp / f"points-{shift:g}"
    pdir.mkdir()
    n_points = 0
    for s in train:
        xy = jitter_points(centroids(load_labels(s)), shift, rng)
        write_points(pdir / f"{s.stem}.csv", xy)
        n_points += len(xy)
    model_dir = tmp / f"model-{shift:g}"
    t0 = time.perf_counter()
    model = fit_points_files(
        [s.image_path for s in train],
        pdir,
        model_dir,
        work_mpp=args.work_mpp,
        options=PointsFitOptions(
            steps=args.steps,
            seed=args.seed,
            lr=args.lr,
            decoder_warmup_steps=args.decoder_warmup,
            decoder_polish_steps=args.decoder_polish,
            recentre_um=args.recentre_um,
        ),
        cache_dir=tmp / f"emb-{shift:g}",  # fresh: the fit time includes the base encoder
        command="bench_points",
        progress=_progress,
    )
    fit_s = time.perf_counter() - t0
    timings = model.provenance["timings"]
    seg = PointsSegmenter(model_dir)
    opts = SegmentOptions(tile_um=seg.tile_um())
    rows, ref_rows, seg_times, ref_times = [], [], [], []
    predictor = None
    if args.reference:
        from zeropath.models.mobilesam.predictor import SamPredictor

        predictor = SamPredictor(cache_size=1)
    for s in test:
        t = time.perf_counter()
        r = segment_input(s.image_path, tmp / f"pred-{shift:g}", seg, options=opts)
        seg_times.append(time.perf_counter() - t)
        gt = load_labels(s)
        pred = load_labels(tmp / f"pred-{shift:g}" / f"{r.stem}.labels.tif")
        rows.append(evaluate_pair(gt, pred))
        print(f"  {s.stem}: points {rows[-1]['aji']:.3f} AJI ({seg_times[-1]:.0f} s)", flush=True)
        if predictor is not None:
            xy = jitter_points(centroids(gt), shift, rng)
            with open_image(s.image_path) as src:
                rgb = src.read_region(0, 0, *src.dimensions)
                mpp = src.mpp
            t = time.perf_counter()
            ref = reference_labels(predictor, rgb, xy, mpp, args.work_mpp)
            ref_times.append(time.perf_counter() - t)
            ref_rows.append(evaluate_pair(gt, ref))
            print(f"  {s.stem}: reference {ref_rows[-1]['aji']:.3f} AJI", flush=True)
    return {
        "shift": shift,
        "n_train": len(train),
        "n_points": n_points,
        "n_test": len(test),
        "steps": args.steps,
        "decoder_warmup": args.decoder_warmup,
        "decoder_polish": args.decoder_polish,
        "threads": torch.get_num_threads(),
        "fit_s": fit_s,
        "fit_timings": timings,
        "points": _mean(rows),
        "points_s_per_image": float(np.mean(seg_times)),
        "reference": _mean(ref_rows) if ref_rows else None,
        "reference_s_per_image": float(np.mean(ref_times)) if ref_times else None,
        "per_image": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monuseg"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--limit", type=int, default=16, help="training images (of 16)")
    ap.add_argument("--test-limit", type=int, default=14, help="test images (of 14)")
    ap.add_argument("--shift", type=float, nargs="+", default=[0.0, 8.0], help="max px")
    ap.add_argument("--work-mpp", type=float, default=0.125)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3, help="decoder/head learning rate")
    ap.add_argument("--decoder-warmup", type=int, default=400, help="decoder-only steps first")
    ap.add_argument("--decoder-polish", type=int, default=400, help="decoder-only steps last")
    ap.add_argument("--recentre-um", type=float, default=2.0, help="click re-centring (0: off)")
    ap.add_argument("--no-reference", dest="reference", action="store_false")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no MoNuSeg data at {args.data}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="zp-points-") as tmp:
        for shift in args.shift:
            print(f"shift {shift:g} px", flush=True)
            results.append(run_shift(args, shift, Path(tmp)))
    print("| row | shift px | Dice | object Dice | AJI | PQ | fit s | s/step | s/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["points"]
        print(
            f"| points fit ({r['n_train']} img, {r['steps']} steps) | {r['shift']:g} | "
            + " | ".join(f"{m[k]:.4f}" for k in KEYS)
            + f" | {r['fit_s']:.0f} | {r['fit_timings'].get('s_per_step', 0):.2f} | "
            f"{r['points_s_per_image']:.1f} |"
        )
        if r["reference"]:
            m = r["reference"]
            print(
                f"| MobileSAM + test points (no training) | {r['shift']:g} | "
                + " | ".join(f"{m[k]:.4f}" for k in KEYS)
                + f" | – | – | {r['reference_s_per_image']:.1f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
