"""Time :func:`zeropath.metrics.evaluate_pair` on a synthetic MoNuSeg-sized pair.

Builds a 1000x1000 ground truth with about 1000 jittered disk nuclei and a prediction made from
it by shifting, dilating/eroding, dropping, splitting and adding nuclei, then reports the median
wall time of ``evaluate_pair`` over ``--repeats`` runs after one warm-up run::

    python benchmarks/bench_eval_speed.py --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np


def synthetic_pair(size: int = 1000, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (gt, pred) pair of uint32 instance label images with ~``n`` nuclei each."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.uint32)
    pred = np.zeros((size, size), np.uint32)
    # Nuclei on a jittered grid so that ~n of them fit with little overlap.
    side = int(np.ceil(np.sqrt(n)))
    step = size / side
    centres = [
        ((i + 0.5) * step + rng.uniform(-3, 3), (j + 0.5) * step + rng.uniform(-3, 3))
        for i in range(side)
        for j in range(side)
    ][:n]
    yy, xx = np.ogrid[:size, :size]
    next_pred = 1
    for k, (cy, cx) in enumerate(centres, start=1):
        r = rng.uniform(6.0, 12.0)
        y0, y1 = max(int(cy - r - 6), 0), min(int(cy + r + 7), size)
        x0, x1 = max(int(cx - r - 6), 0), min(int(cx + r + 7), size)
        win_y, win_x = yy[y0:y1], xx[:, x0:x1]
        d2 = (win_y - cy) ** 2 + (win_x - cx) ** 2
        gt[y0:y1, x0:x1][d2 <= r * r] = k
        u = rng.uniform()
        if u < 0.05:  # missed nucleus
            continue
        py, px = cy + rng.normal(0, 1.5), cx + rng.normal(0, 1.5)
        pr = r + rng.normal(0, 1.0)
        pd2 = (win_y - py) ** 2 + (win_x - px) ** 2
        disk = pd2 <= pr * pr
        if u < 0.10:  # split into two halves
            pred[y0:y1, x0:x1][disk & (win_x < px)] = next_pred
            pred[y0:y1, x0:x1][disk & (win_x >= px)] = next_pred + 1
            next_pred += 2
        else:
            pred[y0:y1, x0:x1][disk] = next_pred
            next_pred += 1
    # A few false positives in the background.
    for _ in range(n // 20):
        cy, cx = rng.uniform(10, size - 10, 2)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        blob = (d2 <= 16) & (pred == 0)
        pred[blob] = next_pred
        next_pred += 1
    return gt, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (default 7)")
    parser.add_argument("--size", type=int, default=1000, help="image side in pixels")
    parser.add_argument("--nuclei", type=int, default=1000, help="nuclei in the ground truth")
    args = parser.parse_args()

    from zeropath.metrics import evaluate_pair

    gt, pred = synthetic_pair(args.size, args.nuclei)
    result = evaluate_pair(gt, pred)  # warm-up
    times = []
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        evaluate_pair(gt, pred)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(
        f"| evaluate_pair {args.size}x{args.size}, {result['n_gt']} gt / {result['n_pred']} pred "
        f"nuclei | median {median:.3f} s over {len(times)} runs (min {min(times):.3f} s) "
        f"| {platform.processor() or platform.machine()} |"
    )
    summary = ", ".join(
        f"{k}={result[k]:.3f}" for k in ("dice", "aji", "aji_plus", "pq", "object_dice", "det_f1")
    )
    print(f"metrics: {summary}")


if __name__ == "__main__":
    main()
