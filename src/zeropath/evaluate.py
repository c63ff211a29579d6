"""Evaluate a folder of predicted instance labels against a folder of ground truth.

``evaluate_dirs`` pairs files by stem, computes :func:`zeropath.metrics.evaluate_pair` per
image and averages the metrics over images (the HoVer-Net / MoNuSeg convention).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeropath.errors import InputError
from zeropath.io.datasets import check_xml_grid, label_stem, read_label_image, read_monuseg_xml
from zeropath.metrics import evaluate_pair

__all__ = ["METRIC_KEYS", "collect_gt", "collect_pred", "evaluate_dirs"]

# The metrics of docs/reference.md, in table order.
METRIC_KEYS = ("dice", "aji", "aji_plus", "pq", "dq", "sq", "object_dice", "det_f1")

# Preference among several files of one stem: lower rank wins.
_PRED_RANK = (".labels.tif", ".labels.tiff", ".tif", ".tiff", ".png")
_GT_RANK = (".labels.tif", ".labels.tiff", ".tif", ".tiff", ".png", ".xml")
# Side products of `nuclei segment` / `tissue segment` that are not instance labels.
_NOT_LABELS = (".overlay.png", ".tissue.tif", ".tissue.tiff")

ProgressCallback = Callable[[int, int, str], None]


def _rank(name: str, ranks: tuple[str, ...]) -> int | None:
    lower = name.lower()
    for i, suffix in enumerate(ranks):
        if lower.endswith(suffix):
            return i
    return None


def _collect(folder: Path, ranks: tuple[str, ...], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, f"{what} directory not found")
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.lower().endswith(_NOT_LABELS):
            continue
        rank = _rank(path.name, ranks)
        if rank is None:
            continue
        stem = label_stem(path)
        if stem not in found or rank < found[stem][0]:
            found[stem] = (rank, path)
    return {stem: path for stem, (_, path) in sorted(found.items())}


def collect_pred(pred_dir: str | Path) -> dict[str, Path]:
    """``{stem: file}`` of the prediction label images in ``pred_dir``."""
    return _collect(Path(pred_dir), _PRED_RANK, "prediction")


def collect_gt(gt_dir: str | Path) -> dict[str, Path]:
    """``{stem: file}`` of the ground-truth label images / MoNuSeg XML files in ``gt_dir``."""
    return _collect(Path(gt_dir), _GT_RANK, "ground-truth")


def evaluate_dirs(
    pred_dir: str | Path,
    gt_dir: str | Path,
    radius: float = 12.0,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Metrics of every prediction against its ground truth, and their per-image means.

    ``pred_dir`` holds ``STEM.labels.tif`` (or ``STEM.tif`` / ``STEM.png``); ``gt_dir`` holds
    label images with the same stems or ``STEM.xml`` MoNuSeg annotations, rasterised on the
    prediction's grid. That grid must be the annotated image's, as a label image must have
    the prediction's shape: the image is looked up beside the XML or in a sibling
    ``images/`` folder (:func:`~zeropath.io.datasets.check_xml_grid`); where it is not
    found, annotations reaching outside the prediction are an error and the stem is listed
    in ``xml_without_image``. Every ground-truth stem must have a prediction (an evaluation never
    skips images silently); predictions without ground truth are listed in ``unmatched_pred``.

    Returns ``{"per_image": {stem: metrics}, "mean": metrics, "det_radius_px": radius,
    "n_images": N, "unmatched_pred": [...]}``.
    """
    if not radius > 0:
        raise InputError(None, f"--radius must be positive, got {radius}")
    preds = collect_pred(pred_dir)
    gts = collect_gt(gt_dir)
    if not gts:
        raise InputError(gt_dir, "no ground-truth label images or XML annotations found")
    missing = [stem for stem in gts if stem not in preds]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            Path(gt_dir) / gts[missing[0]].name,
            f"no prediction for ground truth {missing[0]!r}{more} in {pred_dir}",
        )
    unmatched = [stem for stem in preds if stem not in gts]

    per_image: dict[str, dict[str, float | int]] = {}
    unsized: list[str] = []
    total = len(gts)
    for done, (stem, gt_path) in enumerate(gts.items()):
        if progress is not None:
            progress(done, total, stem)
        pred = read_label_image(preds[stem])
        if gt_path.suffix.lower() == ".xml":
            if check_xml_grid(gt_path, pred.shape) == "extent":
                unsized.append(stem)
            gt = read_monuseg_xml(gt_path, pred.shape)
        else:
            gt = read_label_image(gt_path)
            if gt.shape != pred.shape:
                raise InputError(
                    preds[stem],
                    f"shape {pred.shape} differs from the ground truth {gt_path.name} {gt.shape}",
                )
        per_image[stem] = evaluate_pair(gt, pred, radius=radius)
    if progress is not None:
        progress(total, total, "done")

    keys = next(iter(per_image.values())).keys()
    mean = {k: float(sum(m[k] for m in per_image.values()) / total) for k in keys}
    return {
        "per_image": per_image,
        "mean": mean,
        "det_radius_px": float(radius),
        "n_images": total,
        "unmatched_pred": unmatched,
        "xml_without_image": unsized,
    }
