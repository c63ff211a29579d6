"""The label-free nucleus pipeline (ZA-Net style) on MoNuSeg, stage by stage.

Fits :func:`zeropath.nuclei.fit.fit_zanet` on the *images* of ``--fit-split`` (labels are never
read while fitting), then evaluates every stage on ``--eval-split`` at 0.25 µm/px:

* ``classical``: the training-free stain segmentation (reference baseline);
* ``stain masks + coarse points``: its masks split by a watershed seeded at the stain-prior
  detector's points; ``+ refined points``: seeded at the precision-learned refiner's points;
* ``pseudo-labels``: the pixel pseudo-labels of the evaluated image itself (consensus of the
  sources, from its refined points) taken as a segmentation;
* ``+ segnet``: the segmentation network after its main training; ``+ self-training``: the
  final model (what ``nuclei fit`` saves).

Ground truth is read for scoring only. Choices were made on ``kumar_val`` (and kumar_train
labels for pseudo-label statistics), never on a test split.

    python benchmarks/bench_zanet.py --data ../shared/data --fit-split kumar_train \\
        --eval-split kumar_val [--out DIR] [--ablation]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

NATIVE_MPP = 0.25
KEYS = ("dice", "aji", "aji_plus", "pq", "object_dice", "det_f1")

#: --ablation: one change to the default options each (every variant is a full fit)
ABLATIONS = {
    "2 classes (no boundary)": {"segnet_classes": 2},
    "no stain source": {"pseudolabel_sources": ("voronoi", "cluster")},
    "no stain normalisation": {"stain_normalise": False},
    "mild stain jitter": {"hed_sigma": 0.05, "hed_bias": 0.02},
    "previous pipeline": {
        "segnet_classes": 2,
        "pseudolabel_sources": ("voronoi", "cluster"),
        "stain_normalise": False,
        "hed_sigma": 0.05,
        "hed_bias": 0.02,
    },
}


def _root(data: Path) -> Path:
    return data / "monuseg" if (data / "monuseg").is_dir() else data


def _load_eval(root: Path, split: str) -> list[dict]:
    import tifffile

    from zeropath.io.datasets import load_labels, monuseg_samples
    from zeropath.nuclei.detect import to_work
    from zeropath.stain import as_rgb

    out = []
    for s in monuseg_samples(root, split):
        rgb = as_rgb(tifffile.imread(s.image_path))
        work, _ = to_work(rgb, NATIVE_MPP)
        gt = load_labels(s, shape=rgb.shape[:2]).astype(np.int64)
        out.append({"stem": s.stem, "rgb": rgb, "work": work, "gt": gt})
    return out


def _score(items: list[dict], predict) -> dict[str, float]:
    from zeropath.io.tiler import resize_labels
    from zeropath.metrics import evaluate_pair

    rows = []
    for it in items:
        lab = predict(it)
        if lab.shape != it["gt"].shape:
            lab = resize_labels(lab, it["gt"].shape)
        rows.append(evaluate_pair(it["gt"], lab))
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def run(args: argparse.Namespace, options, name: str, items: list[dict]) -> dict:
    """Fit once with ``options``; score every stage on ``items``."""
    from zeropath.io.datasets import monuseg_samples
    from zeropath.nuclei.classical import segment_classical
    from zeropath.nuclei.detect import StainPriorDetector
    from zeropath.nuclei.fit import fit_zanet
    from zeropath.nuclei.instances import instances_from_probability
    from zeropath.nuclei.pseudolabels import make_pseudolabels
    from zeropath.nuclei.zanet import WORK_MPP, ZANetSegmenter

    root = _root(args.data)
    paths = [s.image_path for s in monuseg_samples(root, args.fit_split)]  # images only
    rows: dict[str, dict] = {}
    eval_s = 0.0
    classical = {it["stem"]: segment_classical(it["work"], WORK_MPP) for it in items}

    def seeded(it: dict, pts) -> np.ndarray:
        mask = (classical[it["stem"]] > 0).astype(np.float32)
        return instances_from_probability(mask, pts, mpp=WORK_MPP)

    def on_stage(stage: str, obj) -> None:
        nonlocal eval_s
        t = time.perf_counter()
        if stage == "refiner":
            det = StainPriorDetector()
            rows["stain masks + coarse points"] = _score(
                items, lambda it: seeded(it, det.detect(it["work"], WORK_MPP))
            )
            rows["stain masks + refined points"] = _score(
                items, lambda it: seeded(it, obj.detect_work(it["work"]))
            )
            refiner = obj

            def pl_seg(it: dict) -> np.ndarray:
                pts = refiner.detect_work(it["work"])
                lab = make_pseudolabels(
                    it["work"],
                    pts,
                    WORK_MPP,
                    use=options.pseudolabel_sources,
                    stain_masks=classical[it["stem"]],
                )
                return instances_from_probability((lab == 1).astype(np.float32), pts, mpp=WORK_MPP)

            rows["pseudo-labels (of the image itself)"] = _score(items, pl_seg)
        elif stage in ("segnet", "self_train_1", "self_train_2"):
            label = "+ segnet" if stage == "segnet" else f"+ self-training ({stage[-1]})"
            rows[label] = _score(items, lambda it: obj.segment_work(it["work"]))
        eval_s += time.perf_counter() - t

    rows["classical"] = _score(items, lambda it: classical[it["stem"]])
    out_dir = args.out / name.replace(" ", "_") if args.out else None
    t0 = time.perf_counter()
    model = fit_zanet(paths, out_dir, mpp=NATIVE_MPP, options=options, on_stage=on_stage)
    fit_s = time.perf_counter() - t0 - eval_s
    # inference time per native 1000x1000 tile, through the engine-facing segmenter
    infer_s = float("nan")
    if out_dir is not None:
        seg = ZANetSegmenter(out_dir)
        seg.segment(items[0]["rgb"], NATIVE_MPP)  # warm-up (loads the model)
        t = time.perf_counter()
        for it in items:
            seg.segment(it["rgb"], NATIVE_MPP)
        infer_s = (time.perf_counter() - t) / len(items)
    else:
        t = time.perf_counter()
        for it in items:
            model.segment_work(it["work"])
        infer_s = (time.perf_counter() - t) / len(items)
    return {
        "name": name,
        "rows": rows,
        "fit_s": fit_s,
        "infer_s_per_tile": infer_s,
        "options": options.to_dict(),
        "timings": model.provenance.get("timings"),
    }


def _table(result: dict, split: str) -> None:
    print(
        f"\n### {result['name']}: eval {split}; fit {result['fit_s']:.0f} s; "
        f"inference {result['infer_s_per_tile']:.2f} s per 1000x1000 tile\n"
    )
    print("| stage | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for stage, r in result["rows"].items():
        print(f"| {stage} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--fit-split", default="kumar_train")
    ap.add_argument("--eval-split", default="kumar_val")
    ap.add_argument("--out", type=Path, default=None, help="save the fitted model(s) here")
    ap.add_argument("--ablation", action="store_true", help="also fit the ABLATIONS variants")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options-json", default="{}", help="ZANetFitOptions overrides (JSON)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    root = _root(args.data)
    if not root.is_dir():
        print(f"no MoNuSeg data at {root}", file=sys.stderr)
        return 2
    import torch

    from zeropath.nuclei.fit import ZANetFitOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    over = json.loads(args.options_json)
    for k in ("pseudolabel_sources", "segnet_widths"):
        if k in over:
            over[k] = tuple(over[k])
    base = replace(ZANetFitOptions(), seed=args.seed, **over)
    items = _load_eval(root, args.eval_split)
    variants = {"default": base}
    if args.ablation:
        variants.update({n: replace(base, **kw) for n, kw in ABLATIONS.items()})
    results = []
    for name, opts in variants.items():
        res = run(args, opts, name, items)
        results.append(res)
        _table(res, args.eval_split)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
