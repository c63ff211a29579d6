"""MoNuSeg benchmark of a nucleus model, end to end through the CLI.

Runs ``zeropath nuclei segment`` on the images of each split and ``zeropath eval`` against
the labels (the official test XML annotations, or the training label PNGs for the Kumar
splits), then prints a markdown table of Dice / AJI / AJI+ / PQ / object Dice / detection F1
and the segmentation throughput.

    python benchmarks/bench_nuclei_monuseg.py --data ../shared/data/monuseg --model classical

Labels are read only by ``eval``, never by the segmenter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("dice", "aji", "aji_plus", "pq", "dq", "sq", "object_dice", "det_f1")


def _split_inputs(data: Path, split: str, tmp: Path) -> tuple[list[Path], Path]:
    """Image paths and a ground-truth directory for one split."""
    if split == "test":
        return sorted((data / "test" / "images").glob("*.tif")), data / "test" / "annotations"
    splits = json.loads((data / "splits_kumar.json").read_text())["split"]
    stems = splits[split.removeprefix("kumar_")]
    gt = tmp / f"gt-{split}"
    gt.mkdir(parents=True, exist_ok=True)
    for s in stems:  # link only the labels of this split so eval sees exactly them
        link = gt / f"{s}.png"
        if not link.exists():
            os.symlink((data / "train" / "labels" / f"{s}.png").resolve(), link)
    return [data / "train" / "images" / f"{s}.tif" for s in stems], gt


def run_split(data: Path, split: str, model: str, tmp: Path, extra: list[str]) -> dict:
    images, gt = _split_inputs(data, split, tmp)
    pred = tmp / f"pred-{split}"
    cmd = [
        sys.executable,
        "-m",
        "zeropath",
        "nuclei",
        "segment",
        *map(str, images),
        "--out",
        str(pred),
        "--model",
        model,
        *extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seg_s = time.perf_counter() - t0
    out_json = tmp / f"eval-{split}.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "zeropath",
            "eval",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--json",
            str(out_json),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out_json.read_text())
    mp = sum(1000 * 1000 for _ in images) / 1e6
    result["segment_wall_s"] = seg_s
    result["megapixels"] = mp
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monuseg"))
    ap.add_argument("--model", default="classical")
    ap.add_argument(
        "--splits",
        nargs="+",
        default=["test", "kumar_test", "kumar_testA", "kumar_testB", "kumar_val"],
    )
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    ap.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="extra arguments for `nuclei segment`"
    )
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no MoNuSeg data at {args.data}", file=sys.stderr)
        return 2
    rows = {}
    with tempfile.TemporaryDirectory(prefix="zp-bench-") as tmp:
        for split in args.splits:
            rows[split] = run_split(args.data, split, args.model, Path(tmp), args.extra)
    print(f"| split | n | {' | '.join(KEYS)} | segment s/MP |")
    print("|---|---|" + "---|" * len(KEYS) + "---|")
    for split, r in rows.items():
        m = r["mean"]
        vals = " | ".join(f"{m[k]:.4f}" for k in KEYS)
        print(
            f"| {split} | {r['n_images']} | {vals} | {r['segment_wall_s'] / r['megapixels']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
