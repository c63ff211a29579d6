"""Whole-slide streaming: wall time, throughput and peak memory of ``nuclei segment`` vs size.

Builds synthetic but realistic whole slides — tiled (256×256), JPEG-compressed, pyramidal
generic TIFFs at 0.5 µm/px — by mirror-tiling the level 0 of the real
``slides/CMU-1-Small-Region.svs`` (read through OpenSlide) and leaving blank glass around two
irregular tissue sections, so tissue detection matters. Slides are written tile by tile from a
generator: the builder never holds a whole slide (or level) in memory.

Each slide then goes through the real command line in a fresh child process::

    python -m zeropath nuclei segment SLIDE --out DIR --model classical

whose wall time and memory are measured: the exact peak RSS of the child from ``wait4``'s
``ru_maxrss``, and the peaks of its anonymous (heap) and file-backed resident memory polled
from ``/proc`` every 0.1 s over the process tree. The label canvas of a slide above 64 MP is a
disk memmap; its pages count as file-backed RSS (page cache the kernel can write back and drop)
while the heap should stay flat whatever the slide size. The bundled sample is the first row::

    python benchmarks/bench_slide.py --data ../shared/data --sizes 4096 12288 24576
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 256
MPP = 0.5


# --------------------------------------------------------------------------- slide builder


def _reflect(coord: np.ndarray, n: int) -> np.ndarray:
    """Index into ``[0, n)`` of a mirror-tiled axis (period ``2n``: a, a-flipped, a, …)."""
    m = np.mod(coord, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _tissue_mask(y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """Two irregular elliptical tissue sections on glass (``y``, ``x`` level-0, broadcastable)."""
    mask = np.zeros(np.broadcast_shapes(y.shape, x.shape), bool)
    sections = ((0.30, 0.34, 0.24, 0.27, 0.4), (0.68, 0.64, 0.26, 0.29, 1.9))
    for cy, cx, ry, rx, phase in sections:
        dy = (y / size - cy) / ry
        dx = (x / size - cx) / rx
        angle = np.arctan2(dy, dx)
        edge = 1.0 + 0.08 * np.sin(5 * angle + phase) + 0.05 * np.sin(11 * angle + 2 * phase)
        mask |= dy * dy + dx * dx <= edge * edge
    return mask


def _glass_colour(rgb: np.ndarray) -> np.ndarray:
    """Median of the brightest tenth of the source's pixels: its blank glass."""
    flat = rgb.reshape(-1, 3).astype(np.float32)
    bright = flat.sum(axis=1)
    return np.median(flat[bright >= np.percentile(bright, 90)], axis=0)


def _level_tiles(
    source: np.ndarray, glass: np.ndarray, size: int, level: int, seed: int
) -> Iterator[np.ndarray]:
    """Row-major 256×256 tiles of pyramid ``level`` of a ``size``×``size`` mosaic slide.

    Level ``k`` pixel ``(Y, X)`` samples the ``2**k``-reduced source at the mirror-tiled
    position of its level-0 centre, so levels agree with level 0 without reading it.
    """
    from PIL import Image

    ds = 2**level
    sh, sw = source.shape[:2]
    reduced = source if ds == 1 else np.array(Image.fromarray(source).reduce(ds))
    rh, rw = reduced.shape[:2]
    n = -(-size // ds)
    rng = np.random.default_rng(seed + level)
    centre = ds // 2
    for ty in range(0, n, TILE):
        ys = np.arange(ty, min(ty + TILE, n)) * ds + centre
        sy = np.minimum(_reflect(ys, sh) // ds, rh - 1)
        for tx in range(0, n, TILE):
            xs = np.arange(tx, min(tx + TILE, n)) * ds + centre
            sx = np.minimum(_reflect(xs, sw) // ds, rw - 1)
            tile = np.empty((TILE, TILE, 3), np.uint8)
            tile[:] = glass.astype(np.uint8)
            body = reduced[sy[:, None], sx[None, :]]
            tissue = _tissue_mask(ys[:, None].astype(float), xs[None, :].astype(float), size)
            noisy = np.clip(glass + rng.normal(0, 1.0, body.shape), 0, 255).astype(np.uint8)
            tile[: body.shape[0], : body.shape[1]] = np.where(tissue[..., None], body, noisy)
            yield tile


def build_slide(source_path: Path, size: int, out: Path, compression: str = "jpeg") -> Path:
    """Write a ``size``×``size`` pyramidal tiled TIFF mosaic of ``source_path`` to ``out``.

    Levels are separate top-level pages (OpenSlide's generic-TIFF layout), halved until the
    longest side is ≤ 512, each with resolution tags in pixels per cm (0.5 µm/px at level 0).
    """
    import openslide
    import tifffile

    with openslide.OpenSlide(str(source_path)) as slide:
        w, h = slide.dimensions
        source = np.ascontiguousarray(np.asarray(slide.read_region((0, 0), 0, (w, h)))[..., :3])
    glass = _glass_colour(source)
    levels = [0]
    while -(-size // 2 ** levels[-1]) > 512:
        levels.append(levels[-1] + 1)
    raw = sum((-(-size // 2**k)) ** 2 * 3 for k in levels)
    codec: dict[str, object] = (
        {"compression": "jpeg", "compressionargs": {"level": 90}}
        if compression == "jpeg"
        else {"compression": "zlib", "compressionargs": {"level": 6}}
    )
    tmp = out.with_name(f".{out.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=raw > 2**31) as tif:
        for k in levels:
            n = -(-size // 2**k)
            ppcm = 1e4 / (MPP * 2**k)
            tif.write(
                _level_tiles(source, glass, size, k, seed=size),
                shape=(n, n, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if k else 0,
                metadata=None,
                **codec,
            )
    os.replace(tmp, out)
    return out


def _slide_ok(path: Path, size: int) -> bool:
    """An existing slide from an earlier ``--keep`` run with the right size."""
    if not path.is_file():
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].shape[:2] == (size, size)
    except Exception:
        return False


# --------------------------------------------------------------------------- measurement


def _status_kb(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``VmHWM`` (kB) of one process from ``/proc``."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


def run_measured(cmd: list[str], log: Path, interval: float = 0.1) -> dict[str, float]:
    """Run ``cmd``; return wall time, exit code and memory peaks (MB) of its process tree."""
    import psutil

    peaks = {"tree_rss": 0.0, "anon": 0.0, "file": 0.0}
    done = threading.Event()
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)

        def poll() -> None:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = [root]
                tot = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
                for p in procs:
                    st = _status_kb(p.pid)
                    for k in tot:
                        tot[k] += st.get(k, 0)
                peaks["tree_rss"] = max(peaks["tree_rss"], tot["VmRSS"] / 1024)
                peaks["anon"] = max(peaks["anon"], tot["RssAnon"] / 1024)
                peaks["file"] = max(peaks["file"], tot["RssFile"] / 1024)
                done.wait(interval)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        # wait4 gives this child's own rusage: ru_maxrss is its exact RSS high-water mark (kB)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        poller.join()
    return {
        "wall_s": wall,
        "rc": float(proc.returncode),
        "maxrss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **{f"peak_{k}_mb": v for k, v in peaks.items()},
    }


def segment_slide(slide: Path, out: Path, model: str) -> dict[str, object]:
    """Run the CLI on ``slide`` and merge the measurement with its ``run.json`` row."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "zeropath", "nuclei", "segment", str(slide), "--out", str(out)]
    cmd += ["--model", model]
    meas = run_measured(cmd, out / "cli.log")
    if meas["rc"] != 0:
        tail = (out / "cli.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"zeropath failed on {slide} (exit {meas['rc']:.0f}):\n{tail}")
    row = json.loads((out / "run.json").read_text())["inputs"][0]
    return {**meas, **row}


# --------------------------------------------------------------------------- report


def _row(label: str, r: dict) -> str:
    w, h = r["width"], r["height"]
    mp = w * h / 1e6
    frac = r["n_tiles"] / max(r["n_tiles_total"], 1)
    tissue_mp = mp * frac
    return (
        f"| {label} | {w}×{h} | {mp:.1f} | {r['n_tiles']}/{r['n_tiles_total']} "
        f"({100 * frac:.0f}%) | {r['n_objects']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
        f"{mp / r['wall_s']:.2f} | "
        f"{tissue_mp / r['wall_s']:.2f} | {r['maxrss_mb']:.0f} | {r['peak_anon_mb']:.0f} | "
        f"{r['peak_file_mb']:.0f} | {w * h * 4 / 2**20:.0f} |"
    )


def _timing_row(label: str, r: dict) -> str:
    t = r["timings"]
    keys = ("plan_s", "segment_s", "measure_s", "write_s", "total_s")
    return f"| {label} | " + " | ".join(f"{t.get(k, float('nan')):.1f}" for k in keys) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data root")
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[4096, 12288, 24576], help="slide sides in px"
    )
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep slides and outputs (reused)")
    ap.add_argument("--model", default="classical")
    ap.add_argument("--compression", choices=["jpeg", "zlib"], default="jpeg")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    source = args.data / "slides" / "CMU-1-Small-Region.svs"
    if not source.is_file():
        ap.error(f"{source} not found (pass --data pointing at shared/data)")
    scratch = args.out or Path(tempfile.mkdtemp(prefix="zeropath-bench-slide-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict]] = []
    try:
        print(f"sample: {source.name}", file=sys.stderr, flush=True)
        rows.append(("sample", segment_slide(source, scratch / "out-sample", args.model)))
        for size in args.sizes:
            slide = scratch / f"mosaic-{size}.tiff"
            if not _slide_ok(slide, size):
                t0 = time.perf_counter()
                build_slide(source, size, slide, args.compression)
                print(
                    f"built {slide.name}: {slide.stat().st_size / 2**20:.0f} MB in "
                    f"{time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            out = scratch / f"out-{size}"
            shutil.rmtree(out, ignore_errors=True)
            r = segment_slide(slide, out, args.model)
            print(
                f"{size}: {r['wall_s']:.0f} s, peak RSS {r['maxrss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
            rows.append((str(size), r))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n`nuclei segment --model {args.model}`, one process; {os.cpu_count()} CPUs, ")
    print(f"Python {platform.python_version()}, load average at the end {load}\n")
    print(
        "| slide | px | MP | tissue tiles | nuclei | wall s | CPU s | MP/s slide | MP/s tissue "
        "| peak RSS MB | peak anon MB | peak file MB | canvas MB |"
    )
    print("|" + " --- |" * 13)
    for label, r in rows:
        print(_row(label, r))
    print("\n| slide | plan s | segment s | measure s | write s | total s |")
    print("|" + " --- |" * 6)
    for label, r in rows:
        print(_timing_row(label, r))
    if args.json:
        args.json.write_text(json.dumps([{"slide": lab, **r} for lab, r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
