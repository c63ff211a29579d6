"""Peer rows on the same MoNuSeg images: classical, label-free SAM, InstanSeg (and ZA-Net).

    python benchmarks/bench_peers.py --data ../shared/data/monuseg --split test \\
        --methods classical instanseg sam --cache /tmp/zp-peers --json /tmp/peers-test.json

Each method segments every image of the split in this process (no labels are read by any
segmenter); ``zeropath.metrics.evaluate_pair`` scores it against the labels (official test XML
annotations, or the training label PNGs for the Kumar splits). Prints a markdown table (rows =
methods; mean over images of Dice, AJI, AJI+, PQ, object Dice, detection F1, and seconds per
image) and, with ``--json``, writes per-image and mean metrics.

Predictions are cached as ``CACHE/METHOD_KEY/STEM.npy`` (uint32 labels at the image grid) with
``STEM.json`` (seconds, settings), so reruns and other splits reuse them: ``kumar_test`` is
``kumar_testA`` ∪ ``kumar_testB`` (14 of the 30 official training images), ``test`` the 14
official test images. Cached rows report the seconds measured when they were computed.

Methods (``--methods``):

* ``classical`` — :class:`zeropath.nuclei.classical.ClassicalSegmenter` on the whole image at
  0.25 µm/px (a 1000² MoNuSeg image is one tile of the engine, so this is what
  ``nuclei segment --model classical`` computes, without the threshold adaptation that only
  multi-tile inputs get).
* ``instanseg`` — InstanSeg ``brightfield_nuclei`` (supervised peer) at its native 0.5 µm/px:
  image resized to 500², labels resized back (nearest), as the tile engine does.
* ``sam`` — label-free MobileSAM automatic masks (``SamPredictor.automatic_crops``). Default:
  the whole 1000² image at 0.25 µm/px (SAM resizes it to 1024², about 1×; feeding a 0.5 µm/px
  copy would reach the same 1024² frame, only blurrier), a 24×24 point grid (576 single-point
  prompts, three masks each), SAM's predicted-IoU ≥ 0.8 and stability ≥ 0.9 filters, each mask
  computed in a 96 px window around its point (masks cut by the window are dropped), box NMS at
  0.7. About 55 s per image on one busy thread (the decoder's two-way transformer, ~0.1 s per
  prompt, dominates; the encoder is ~4 s). ``--sam-grid G`` instead cuts the image into G×G
  crops overlapping by 20 µm, each with ``--sam-pps``² points (magnified ~G× by SAM's resize;
  masks touching an inner crop border are dropped, duplicates removed by a second box NMS).
  Then two label-free filters: masks larger than ``--sam-max-um2`` µm² (default 200, far above
  a nucleus; applied before NMS, via ``max_area_frac``) or smaller than ``--sam-min-um2`` (4) are
  dropped, and masks whose mean hematoxylin OD (``zeropath.stain.hematoxylin_od``) is below the
  image's tissue mean (pixels with summed RGB OD > 0.15) are dropped as background/stroma.
  Survivors are painted largest first so smaller masks win overlaps; a mask left with under
  half its own area visible (mostly covered by smaller ones) is removed.
* ``zanet:MODEL_DIR`` (or ``--zanet MODEL_DIR``) — :class:`zeropath.nuclei.zanet.ZANetSegmenter`;
  ``zanet-default`` (or ``--model-default``) — the bundled default model, when it exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MPP = 0.25  # MoNuSeg: 40x, 0.25 µm/px (the TIFFs carry no resolution tags)
KEYS = ("dice", "aji", "aji_plus", "pq", "object_dice", "det_f1")
HEADERS = ("Dice", "AJI", "AJI+", "PQ", "object Dice", "det F1")
SPLITS = ("test", "kumar_test", "kumar_testA", "kumar_testB", "kumar_train", "kumar_val")

Segment = Callable[[np.ndarray, float], np.ndarray]


def machine_info() -> str:
    import torch

    return (
        f"machine: {platform.machine()} {os.cpu_count()} CPUs (affinity "
        f"{len(os.sched_getaffinity(0))}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}, "
        f"{dt.datetime.now().isoformat(timespec='seconds')}"
    )


def read_rgb(path: Path) -> np.ndarray:
    from zeropath.io.reader import open_image

    with open_image(path, mpp=MPP) as src:
        w, h = src.dimensions
        return src.read_region(0, 0, w, h)


# ------------------------------------------------------------------------------ label-free SAM


class SamAuto:
    """MobileSAM automatic masks turned into nucleus instance labels (see the module doc)."""

    def __init__(
        self,
        grid: int = 1,
        points_per_side: int = 24,
        overlap_um: float = 20.0,
        window_px: float = 96.0,
        max_um2: float = 200.0,
        min_um2: float = 4.0,
        pred_iou: float = 0.8,
        stability: float = 0.9,
    ) -> None:
        self.grid = grid
        self.points_per_side = points_per_side
        self.overlap_um = overlap_um
        self.window_px = window_px
        self.max_um2 = max_um2
        self.min_um2 = min_um2
        self.pred_iou = pred_iou
        self.stability = stability
        self._predictor = None
        self.last_stats: dict[str, int] = {}

    def settings(self) -> dict[str, float | int]:
        return {
            "grid": self.grid,
            "points_per_side": self.points_per_side,
            "overlap_um": self.overlap_um,
            "window_px": self.window_px,
            "max_um2": self.max_um2,
            "min_um2": self.min_um2,
            "pred_iou": self.pred_iou,
            "stability": self.stability,
        }

    @property
    def predictor(self):
        if self._predictor is None:
            from zeropath.models.mobilesam.predictor import SamPredictor

            self._predictor = SamPredictor(cache_size=0)
        return self._predictor

    def _crops(self, h: int, w: int, mpp: float) -> list[tuple[int, int, int, int]]:
        """(y0, y1, x0, x1) of a grid×grid cover with ``overlap_um`` of overlap."""
        ov = int(round(self.overlap_um / mpp))

        def spans(n: int) -> list[tuple[int, int]]:
            size = min(n, int(np.ceil((n + (self.grid - 1) * ov) / self.grid)))
            starts = np.linspace(0, n - size, self.grid).round().astype(int)
            return [(int(s), int(s) + size) for s in np.unique(starts)]

        return [(y0, y1, x0, x1) for y0, y1 in spans(h) for x0, x1 in spans(w)]

    def __call__(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        from zeropath.models.mobilesam.predictor import MaskCrop, box_nms
        from zeropath.stain import hematoxylin_od, optical_density

        h, w = rgb.shape[:2]
        area_um2 = mpp * mpp
        max_px = self.max_um2 / area_um2
        min_px = max(self.min_um2 / area_um2, 4)
        masks: list[MaskCrop] = []
        n_raw = n_border = 0
        for y0, y1, x0, x1 in self._crops(h, w, mpp):
            crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            ch, cw = crop.shape[:2]
            found = self.predictor.automatic_crops(
                crop,
                points_per_side=self.points_per_side,
                pred_iou_thresh=self.pred_iou,
                stability_thresh=self.stability,
                min_area_px=int(min_px),
                max_area_frac=min(1.0, max_px / (ch * cw)),
                window_px=self.window_px,
            )
            n_raw += len(found)
            for m in found:
                mh, mw = m.mask.shape
                inner_edge = (
                    (m.r0 == 0 and y0 > 0)
                    or (m.r0 + mh == ch and y1 < h)
                    or (m.c0 == 0 and x0 > 0)
                    or (m.c0 + mw == cw and x1 < w)
                )
                if inner_edge:
                    n_border += 1
                    continue
                masks.append(MaskCrop(m.r0 + y0, m.c0 + x0, m.mask, m.iou, m.stability))
        # duplicates from overlapping crops
        if masks:
            boxes = np.array([m.bbox() for m in masks], np.float64)
            keep = box_nms(boxes, np.array([m.iou for m in masks]), 0.7)
            masks = [masks[i] for i in keep.tolist()]
        n_nms = len(masks)
        # background-like masks: mean hematoxylin OD below the tissue mean
        hema = hematoxylin_od(rgb)
        tissue = optical_density(rgb).sum(-1) > 0.15
        tissue_mean = float(hema[tissue].mean()) if tissue.any() else float(hema.mean())
        kept = []
        for m in masks:
            mh, mw = m.mask.shape
            sub = hema[m.r0 : m.r0 + mh, m.c0 : m.c0 + mw][m.mask]
            if min_px <= sub.size <= max_px and float(sub.mean()) >= tissue_mean:
                kept.append(m)
        # paint largest first, so smaller masks win overlaps
        kept.sort(key=lambda m: -m.area)
        out = np.zeros((h, w), np.uint32)
        own = np.zeros(len(kept) + 1, np.int64)
        for i, m in enumerate(kept, start=1):
            mh, mw = m.mask.shape
            out[m.r0 : m.r0 + mh, m.c0 : m.c0 + mw][m.mask] = i
            own[i] = m.area
        visible = np.bincount(out.ravel(), minlength=len(kept) + 1)
        ok = (visible >= 0.5 * own) & (visible >= min_px)
        ok[0] = False
        lut = np.zeros(len(kept) + 1, np.uint32)
        lut[ok] = np.arange(1, int(ok.sum()) + 1, dtype=np.uint32)
        self.last_stats = {
            "raw": n_raw,
            "inner_border": n_border,
            "after_nms": n_nms,
            "after_filters": len(kept),
            "final": int(ok.sum()),
        }
        return lut[out]


# ------------------------------------------------------------------------------ other methods


def classical() -> Segment:
    from zeropath.nuclei.classical import ClassicalSegmenter

    return ClassicalSegmenter().segment


def instanseg() -> Segment:
    from zeropath.nuclei.instanseg import InstanSegSegmenter

    return InstanSegSegmenter().segment  # resampled to its 0.5 µm/px and back by the segmenter


def zanet(model_dir: Path, name: str) -> Segment:
    from zeropath.nuclei.zanet import ZANetSegmenter

    return ZANetSegmenter(model_dir, name=name).segment


def resolve_methods(args: argparse.Namespace) -> list[tuple[str, str, Segment, dict]]:
    """(row name, cache key, segment function, settings) per requested method."""
    out = []
    names = list(args.methods)
    names += [f"zanet:{d}" for d in args.zanet]
    if args.model_default:
        names.append("zanet-default")
    for name in names:
        if name == "classical":
            out.append(("classical", "classical", classical(), {}))
        elif name == "instanseg":
            out.append(("InstanSeg brightfield_nuclei", "instanseg", instanseg(), {}))
        elif name == "sam":
            sam = SamAuto(
                grid=args.sam_grid,
                points_per_side=args.sam_pps,
                max_um2=args.sam_max_um2,
                min_um2=args.sam_min_um2,
            )
            st = sam.settings()
            tag = hashlib.sha256(json.dumps(st, sort_keys=True).encode()).hexdigest()[:10]
            row = f"MobileSAM auto (label-free, {args.sam_grid}x{args.sam_grid}x{args.sam_pps}²)"
            out.append((row, f"sam-{tag}", sam, st))
        elif name.startswith("zanet:") or name == "zanet-default":
            from zeropath.nuclei.zanet import MODEL_JSON, bundled_model_dir, model_sha256

            if name == "zanet-default":
                d = bundled_model_dir()
                if not (d / MODEL_JSON).is_file():
                    print(f"no bundled ZA-Net model at {d}: skipped", file=sys.stderr)
                    continue
                row = "ZA-Net (bundled default)"
            else:
                d = Path(name.removeprefix("zanet:"))
                row = f"ZA-Net {d.name}"
            key = f"zanet-{model_sha256(d)[:12]}"
            out.append((row, key, zanet(d, d.name), {"model_dir": str(d)}))
        else:
            raise SystemExit(f"unknown method {name!r}")
    return out


def run_method(samples, key: str, seg: Segment, settings: dict, cache: Path | None) -> dict:
    from zeropath.io.datasets import load_labels
    from zeropath.metrics import evaluate_pair

    per_image = {}
    for s in samples:
        npy = cache / key / f"{s.stem}.npy" if cache else None
        meta = npy.with_suffix(".json") if npy else None
        rgb = read_rgb(s.image_path)
        if npy is not None and npy.is_file() and meta.is_file():
            pred = np.load(npy)
            info = json.loads(meta.read_text())
            cached = True
        else:
            t0 = time.perf_counter()
            pred = np.asarray(seg(rgb, MPP), np.uint32)
            info = {"seconds": time.perf_counter() - t0, "settings": settings}
            if getattr(seg, "last_stats", None):
                info["stats"] = dict(seg.last_stats)
            cached = False
            if npy is not None:
                npy.parent.mkdir(parents=True, exist_ok=True)
                np.save(npy, pred)
                meta.write_text(json.dumps(info))
        gt = load_labels(s, shape=rgb.shape[:2])
        r = evaluate_pair(gt, pred)
        r["seconds"] = float(info["seconds"])
        r["cached"] = cached
        if "stats" in info:
            r["sam_stats"] = info["stats"]
        per_image[s.stem] = r
        print(
            f"  {key} {s.stem}: AJI {r['aji']:.3f} PQ {r['pq']:.3f} n_pred {r['n_pred']} "
            f"n_gt {r['n_gt']} {r['seconds']:.1f} s{' (cached)' if cached else ''}",
            file=sys.stderr,
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in per_image.values()])) for k in (*KEYS, "seconds")}
    return {"n_images": len(per_image), "mean": mean, "per_image": per_image}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monuseg"))
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument(
        "--methods",
        nargs="*",
        default=["classical", "instanseg", "sam"],
        help="classical, sam, instanseg, zanet:MODEL_DIR, zanet-default",
    )
    ap.add_argument("--zanet", action="append", default=[], type=Path, metavar="MODEL_DIR")
    ap.add_argument("--model-default", action="store_true", help="add the bundled ZA-Net model")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--cache", type=Path, default=None, help="cache predictions here")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ZP_THREADS", "2")))
    ap.add_argument("--sam-grid", type=int, default=1, help="SAM crops per side")
    ap.add_argument("--sam-pps", type=int, default=24, help="SAM points per side per crop")
    ap.add_argument("--sam-max-um2", type=float, default=200.0)
    ap.add_argument("--sam-min-um2", type=float, default=4.0)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from zeropath.io.datasets import monuseg_samples

    samples = monuseg_samples(args.data, args.split)
    if args.limit:
        samples = samples[: args.limit]
    print(machine_info())
    print(f"split {args.split}: {len(samples)} images at {MPP} µm/px")
    rows = {}
    for row, key, seg, settings in resolve_methods(args):
        res = run_method(samples, key, seg, settings, args.cache)
        res["key"] = key
        res["settings"] = settings
        rows[row] = res
    print()
    print(f"| method | n | {' | '.join(HEADERS)} | s/image |")
    print("|---|---|" + "---|" * len(KEYS) + "---|")
    for row, r in rows.items():
        m = r["mean"]
        vals = " | ".join(f"{m[k]:.4f}" for k in KEYS)
        print(f"| {row} | {r['n_images']} | {vals} | {m['seconds']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": machine_info(), "split": args.split, "mpp": MPP}
        args.json.write_text(json.dumps({"meta": meta, "methods": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
