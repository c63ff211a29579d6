"""Score tissue class maps against label masks: per-class Dice and IoU inside the tissue.

Predictions are ``STEM.tissue.tif`` files (class names from their ImageDescription); ground
truth is a single-channel label image per stem (``STEM.png``, ``STEM.tif``, ``STEM.tiff`` or
``STEM.tissue.tif``) using the same class indices. Pixels where the ground truth is ``0``
(background, outside the tissue) or ``ignore_index`` are not scored. The two maps are
compared on the coarser of the two grids (the finer one is nearest-neighbour sampled at the
coarser one's pixel centres), so a level-0 mask can score a map written at 2 µm/px.

Per image and class: ``dice = 2|P∩G| / (|P| + |G|)``, ``iou = |P∩G| / |P∪G|`` over the scored
pixels; a class absent from both is left out (not counted as 1), and predicting background
(0) on ground-truth tissue counts against the true class only. Per image, ``mean_dice`` /
``mean_iou`` average over the classes present and ``accuracy`` is the scored-pixel accuracy.
Over images: per-class means over the images where the class occurs, and the mean of the
per-image means.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError

__all__ = ["class_scores", "evaluate_tissue_dirs"]

_PRED_SUFFIXES = (".tissue.tif", ".tissue.tiff")
_GT_SUFFIXES = (".tissue.tif", ".tissue.tiff", ".png", ".tif", ".tiff")
_NOT_GT = (".overlay.png", ".labels.tif", ".labels.tiff")

ProgressCallback = Callable[[int, int, str], None]


def _stem(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    for s in suffixes:
        if lower.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return None


def _collect(
    folder: Path, suffixes: tuple[str, ...], what: str, exclude: tuple[str, ...] = ()
) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, f"{what} directory not found")
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.lower().endswith(exclude):
            continue
        for rank, s in enumerate(suffixes):
            stem = _stem(path.name, (s,))
            if stem is not None:
                if stem not in found or rank < found[stem][0]:
                    found[stem] = (rank, path)
                break
    return {stem: p for stem, (_, p) in sorted(found.items())}


def _read_pred(path: Path) -> tuple[np.ndarray, dict[int, str]]:
    """Level 0 of a ``STEM.tissue.tif`` and its ``{index: name}`` table (empty if none)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            data = page.asarray()
            description = page.description or ""
    except Exception as exc:  # a broken file is a bad input
        raise InputError(path, f"cannot read the class map: {exc}") from None
    if data.ndim != 2:
        raise InputError(path, f"not a class map: shape {data.shape}")
    names: dict[int, str] = {}
    try:
        meta = json.loads(description)
        names = {int(c["index"]): str(c["name"]) for c in meta.get("classes", [])}
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return data, names


def _on_grid(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from zeropath.io.tiler import resize_labels

    return resize_labels(np.asarray(labels), shape)


def class_scores(
    pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = 255
) -> dict[str, Any]:
    """Per-class Dice/IoU of two label maps of one shape, over pixels with ``gt ∉ {0, ignore}``.

    Returns ``{"classes": {index: {"dice", "iou", "gt_pixels", "pred_pixels"}}, "mean_dice",
    "mean_iou", "accuracy", "pixels"}`` (means ``None`` when nothing is scored).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    scored = gt != 0
    if ignore_index is not None:
        scored &= gt != ignore_index
    p = pred[scored].astype(np.int64)
    g = gt[scored].astype(np.int64)
    n = int(max(p.max(initial=0), g.max(initial=0))) + 1
    confusion = np.bincount(g * n + p, minlength=n * n).reshape(n, n)
    inter = np.diag(confusion)
    gt_count = confusion.sum(axis=1)
    pred_count = confusion.sum(axis=0)
    classes: dict[int, dict[str, float | int]] = {}
    for c in range(1, n):  # 0 is never scored ground truth: predicting it is a miss, not a class
        if gt_count[c] == 0 and pred_count[c] == 0:
            continue
        if ignore_index is not None and c == ignore_index:
            continue
        union = gt_count[c] + pred_count[c] - inter[c]
        classes[c] = {
            "dice": float(2 * inter[c] / (gt_count[c] + pred_count[c])),
            "iou": float(inter[c] / union),
            "gt_pixels": int(gt_count[c]),
            "pred_pixels": int(pred_count[c]),
        }
    dices = [v["dice"] for v in classes.values()]
    ious = [v["iou"] for v in classes.values()]
    return {
        "classes": classes,
        "mean_dice": float(np.mean(dices)) if dices else None,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "accuracy": float(inter.sum() / p.size) if p.size else None,
        "pixels": int(p.size),
    }


def evaluate_tissue_dirs(
    pred_dir: str | Path,
    gt_dir: str | Path,
    ignore_index: int | None = 255,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Per-class Dice/IoU of every ``STEM.tissue.tif`` in ``pred_dir`` against ``gt_dir``.

    Every ground-truth stem needs a prediction. Returns ``{"task": "tissue", "per_image":
    {stem: {"classes": {name: {...}}, "mean_dice", "mean_iou", "accuracy", "pixels", "grid"}},
    "per_class": {name: {"dice", "iou", "n_images"}}, "mean": {"dice", "iou", "accuracy"},
    "n_images", "unmatched_pred"}``.
    """
    from zeropath.io.datasets import read_label_image

    preds = _collect(Path(pred_dir), _PRED_SUFFIXES, "prediction")
    gts = _collect(Path(gt_dir), _GT_SUFFIXES, "ground-truth", _NOT_GT)
    if not gts:
        raise InputError(gt_dir, "no ground-truth label images found")
    missing = [s for s in gts if s not in preds]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            gts[missing[0]], f"no STEM.tissue.tif prediction for {missing[0]!r}{more} in {pred_dir}"
        )
    per_image: dict[str, Any] = {}
    sums: dict[str, list[tuple[float, float]]] = {}
    for done, (stem, gt_path) in enumerate(gts.items()):
        if progress:
            progress(done, len(gts), stem)
        pred, names = _read_pred(preds[stem])
        if gt_path.name.lower().endswith(_PRED_SUFFIXES):
            gt, _ = _read_pred(gt_path)
        else:
            gt = read_label_image(gt_path)
        if gt.ndim != 2:
            raise InputError(gt_path, f"not a single-channel label image: shape {gt.shape}")
        if pred.size <= gt.size:
            shape = pred.shape
            gt = _on_grid(gt, shape)
        else:
            shape = gt.shape
            pred = _on_grid(pred, shape)
        result = class_scores(pred, gt, ignore_index)
        named = {names.get(c, str(c)): v for c, v in result["classes"].items()}
        result["classes"] = named
        result["grid"] = list(shape)
        per_image[stem] = result
        for name, v in named.items():
            if v["gt_pixels"]:
                sums.setdefault(name, []).append((v["dice"], v["iou"]))
    if progress:
        progress(len(gts), len(gts), "done")
    per_class = {
        name: {
            "dice": float(np.mean([d for d, _ in vals])),
            "iou": float(np.mean([i for _, i in vals])),
            "n_images": len(vals),
        }
        for name, vals in sorted(sums.items())
    }

    def mean_of(key: str) -> float | None:
        vals = [r[key] for r in per_image.values() if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "task": "tissue",
        "per_image": per_image,
        "per_class": per_class,
        "mean": {
            "dice": mean_of("mean_dice"),
            "iou": mean_of("mean_iou"),
            "accuracy": mean_of("accuracy"),
        },
        "n_images": len(per_image),
        "unmatched_pred": [s for s in preds if s not in gts],
        "ignore_index": ignore_index,
    }
