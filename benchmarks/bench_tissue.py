"""ZEUS tissue maps at whole-slide scale: throughput, peak memory and accuracy vs a known map.

Builds a large synthetic slide — a tiled (256×256), JPEG-compressed, pyramidal generic TIFF at
``--mpp`` µm/px, written tile by tile from a generator so that neither the builder nor any
level ever sits in memory — holding two irregular tissue sections on glass, split into three
"classes" (tumour purple, stroma pink, necrosis dusky red) along wavy boundaries, with
per-pixel texture so that tissue detection sees tissue. The true class of every point is an
analytic function of its position, so the ground-truth map is known exactly.

Each encoder then runs through the real command line in a fresh child process, twice:

1. ``cold`` — empty embedding cache: every tissue tile is read and embedded;
2. ``warm`` — a second prompt set on the same slide: every embedding comes from the cache.

Reported per run: wall time, tiles, tiles/s, slides/h, exact peak RSS of the child (its own
``VmHWM``, see ``peak_rss.py``), encoder / read time from ``run.json``, and per-class Dice of
``STEM.tissue.tif`` against the true map (``zeropath eval --task tissue`` maths, inside the
tissue). Encoders: ``synthetic`` (a saved SyntheticEncoder whose class colours are the slide's,
so the expected answer is the true map) and optionally ``test-tiny`` (a random tiny CLIP: speed
only, its map is meaningless).

    python benchmarks/bench_tissue.py --size 51200 --encoders synthetic test-tiny   # the real one
    python benchmarks/bench_tissue.py --size 10240                                  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 256
#: H&E-like class colours of the synthetic slide (and of the synthetic encoder's classes).
CLASSES = {
    "tumor": (130, 60, 140),
    "stroma": (230, 150, 190),
    "necrosis": (180, 110, 110),
}
GLASS = (242, 240, 244)
PROMPTS_A = """\
templates: ["an H&E image of {}.", "{}."]
classes:
  tumor: {names: [tumor, carcinoma], color: [200, 40, 160]}
  stroma: {names: [stroma, fibrous stroma], color: [240, 170, 200]}
  necrosis: {names: [necrosis, necrotic debris], color: [120, 120, 120]}
"""
PROMPTS_B = PROMPTS_A.replace('"{}."', '"a histopathology image showing {}."')


# --------------------------------------------------------------------------- the slide


def _tissue(y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """Two irregular elliptical sections (level-0 ``y``, ``x`` broadcastable)."""
    mask = np.zeros(np.broadcast_shapes(y.shape, x.shape), bool)
    for cy, cx, ry, rx, phase in ((0.30, 0.33, 0.25, 0.27, 0.4), (0.69, 0.65, 0.25, 0.28, 1.9)):
        dy = (y / size - cy) / ry
        dx = (x / size - cx) / rx
        angle = np.arctan2(dy, dx)
        edge = 1.0 + 0.08 * np.sin(5 * angle + phase) + 0.05 * np.sin(11 * angle + 2 * phase)
        mask |= dy * dy + dx * dx <= edge * edge
    return mask


def true_classes(y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """Class index (0 glass, 1 tumour, 2 stroma, 3 necrosis) at level-0 ``(y, x)``."""
    u = (x / size) * 3.0 + 0.35 * np.sin(2 * np.pi * y / size * 1.5) + 0.2 * (y / size)
    cls = (np.floor(u).astype(np.int64) % 3) + 1
    return np.where(_tissue(y, x, size), cls, 0).astype(np.uint8)


def _noise_bank(seed: int, n: int = 8) -> np.ndarray:
    """``n`` texture tiles: pixel noise plus dark nucleus-like dots (zero mean)."""
    rng = np.random.default_rng(seed)
    bank = rng.normal(0.0, 10.0, (n, TILE, TILE, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for k in range(n):
        for cy, cx in rng.uniform(0, TILE, (40, 2)):
            bank[k][(yy - cy) ** 2 + (xx - cx) ** 2 < 16] -= 45.0
    return bank - bank.mean(axis=(1, 2, 3), keepdims=True)


def _level_tiles(size: int, level: int, bank: np.ndarray) -> Iterator[np.ndarray]:
    """Row-major 256×256 RGB tiles of pyramid ``level`` (each level rendered from the model)."""
    ds = 2**level
    n = -(-size // ds)
    lut = np.array([GLASS, *CLASSES.values()], np.float32)
    # real tissue is textured at every scale (cells, glands, fibres), so the reduced levels keep
    # the texture's amplitude: the tissue detector drops smooth regions as ink or blur
    amp = 1.0
    for ty in range(0, n, TILE):
        ys = (np.arange(ty, ty + TILE) + 0.5) * ds
        for tx in range(0, n, TILE):
            xs = (np.arange(tx, tx + TILE) + 0.5) * ds
            cls = true_classes(ys[:, None], xs[None, :], size)
            tex = bank[(ty // TILE * 7 + tx // TILE * 13 + level) % len(bank)]
            rgb = lut[cls] + np.where(cls[..., None] > 0, tex * amp, tex * 0.1)
            yield np.clip(rgb, 0, 255).astype(np.uint8)


def build_slide(path: Path, size: int, mpp: float) -> Path:
    """Write the ``size``×``size`` pyramidal tiled JPEG TIFF (levels halve down to ≤ 512 px)."""
    import tifffile

    levels = [0]
    while -(-size // 2 ** levels[-1]) > 512:
        levels.append(levels[-1] + 1)
    raw = sum((-(-size // 2**k)) ** 2 * 3 for k in levels)
    bank = _noise_bank(size)
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=raw > 2**31) as tif:
        for k in levels:
            n = -(-size // 2**k)
            ppcm = 1e4 / (mpp * 2**k)
            tif.write(
                _level_tiles(size, k, bank),
                shape=(n, n, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if k else 0,
                metadata=None,
            )
    os.replace(tmp, path)
    return path


def _slide_ok(path: Path, size: int) -> bool:
    if not path.is_file():
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].shape[:2] == (size, size)
    except Exception:
        return False


# --------------------------------------------------------------------------- measuring


def run_measured(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` (``python -m ...``) in a child; wall time, exit code, CPU time, peak RSS (MB).

    The peak is the child's own ``VmHWM`` (see ``peak_rss.py``): ``wait4``'s ``ru_maxrss``
    would include this benchmark's own resident size at ``fork`` (the slide and the truth
    masks it holds), which once reported 2.1 GB for a 0.4 GB run.
    """
    import subprocess

    from peak_rss import read_mb, wrap

    hwm = log.with_suffix(".hwm")
    hwm.unlink(missing_ok=True)
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrap(cmd, hwm), stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    peak = read_mb(hwm)
    return {
        "wall_s": wall,
        "rc": float(os.waitstatus_to_exitcode(status)),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": peak if peak is not None else usage.ru_maxrss / 1024,
    }


def dice_vs_truth(pred_tif: Path, size: int) -> dict[str, float]:
    """Per-class Dice of the tissue map against the analytic truth, inside the true tissue."""
    import tifffile

    from zeropath.tissue.evaluate import class_scores

    with tifffile.TiffFile(pred_tif) as tif:
        pred = tif.pages.first.asarray()
        meta = json.loads(tif.pages.first.description)
    ds = int(meta["downsample"])
    h, w = pred.shape
    ys = (np.arange(h) + 0.5) * ds
    xs = (np.arange(w) + 0.5) * ds
    truth = np.concatenate(
        [true_classes(ys[a : a + 512, None], xs[None, :], size) for a in range(0, h, 512)]
    )
    scores = class_scores(pred, truth, ignore_index=None)
    names = {int(c["index"]): c["name"] for c in meta["classes"]}
    out = {names.get(k, str(k)): round(v["dice"], 4) for k, v in scores["classes"].items()}
    out["mean"] = round(scores["mean_dice"] or 0.0, 4)
    return out


def run_cli(
    slide: Path, out: Path, encoder: str, prompts: Path, cache: Path, extra: list[str]
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "zeropath", "tissue", "segment", str(slide),
        "--prompts", str(prompts),
        "--out", str(out), "--encoder", encoder, "--cache", str(cache), *extra,
    ]  # fmt: skip
    meas = run_measured(cmd, out / "cli.log")
    if meas["rc"] != 0:
        tail = (out / "cli.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"zeropath failed on {slide} (exit {meas['rc']:.0f}):\n{tail}")
    row = json.loads((out / "run.json").read_text())["inputs"][0]
    return {**meas, **row}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=51200, help="slide side in level-0 pixels")
    ap.add_argument("--mpp", type=float, default=0.5, help="level-0 µm/px of the slide")
    ap.add_argument(
        "--encoders", nargs="+", default=["synthetic"], help="synthetic and/or test-tiny"
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="folder for the slide and outputs")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the slide and outputs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="zeropath-bench-tissue-"))
    work.mkdir(parents=True, exist_ok=True)
    slide = work / f"synthetic-{args.size}.tif"
    if not _slide_ok(slide, args.size):
        t0 = time.perf_counter()
        build_slide(slide, args.size, args.mpp)
        print(
            f"built {slide.name} ({slide.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - t0:.0f} s"
        )
    prompts_a, prompts_b = work / "prompts-a.yaml", work / "prompts-b.yaml"
    prompts_a.write_text(PROMPTS_A)
    prompts_b.write_text(PROMPTS_B)
    from zeropath.testing.synthetic import SyntheticEncoder

    # the synthetic encoder at 1 µm/px with 224-px tiles (stride 56), colours = the slide's
    synthetic_dir = work / "synthetic-encoder"
    SyntheticEncoder(dict(CLASSES), input_size=224, mpp=1.0).save(synthetic_dir)
    extra = ["--batch-size", str(args.batch_size), "--overwrite"]
    if args.threads:
        extra += ["--threads", str(args.threads)]

    rows = []
    for name in args.encoders:
        encoder = str(synthetic_dir) if name == "synthetic" else name
        cache = work / f"cache-{name}"
        shutil.rmtree(cache, ignore_errors=True)
        for phase, prompts in (("cold", prompts_a), ("warm", prompts_b)):
            r = run_cli(slide, work / f"out-{name}-{phase}", encoder, prompts, cache, extra)
            tif = work / f"out-{name}-{phase}" / f"{slide.stem}.tissue.tif"
            dice = dice_vs_truth(tif, args.size) if name == "synthetic" else {}
            row = {
                "encoder": name,
                "phase": phase,
                "size": args.size,
                "megapixels": args.size**2 / 1e6,
                "tiles": r["n_tiles"],
                "encoded": r["n_encoded"],
                "cached": r["n_cached"],
                "wall_s": round(r["wall_s"], 2),
                "tiles_per_s": round(r["n_tiles"] / r["wall_s"], 1),
                "slides_per_h": round(3600.0 / r["wall_s"], 1),
                "maxrss_mb": round(r["maxrss_mb"], 0),
                "cpu_s": round(r["cpu_s"], 1),
                "encode_s": r["timings"].get("encode_s"),
                "read_s": r["timings"].get("read_s"),
                "tissue_fraction": r["tissue_fraction"],
                "grid": r["grid"],
                "dice": dice,
            }
            rows.append(row)
            print(
                f"{name:>9} {phase}: {row['tiles']} tiles ({row['cached']} cached) "
                f"in {row['wall_s']:.1f} s "
                f"= {row['tiles_per_s']:.0f} tiles/s, {row['slides_per_h']:.0f} slides/h, "
                f"peak RSS {row['maxrss_mb']:.0f} MB"
                + (f", Dice {dice['mean']:.3f}" if dice else "")
            )

    print()
    print(
        "| encoder | run | slide px | tiles | cached | wall s | tiles/s | slides/h "
        "| peak RSS MB | mean Dice |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        dice = f"{row['dice']['mean']:.3f}" if row["dice"] else "–"
        print(
            f"| {row['encoder']} | {row['phase']} | {args.size}² | {row['tiles']} "
            f"| {row['cached']} | "
            f"{row['wall_s']:.1f} | {row['tiles_per_s']:.0f} | {row['slides_per_h']:.0f} | "
            f"{row['maxrss_mb']:.0f} | {dice} |"
        )
    if args.json:
        meta = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
