"""``zeropath eval``: score predicted instance labels against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from zeropath.cli.common import Progress, handle_errors, warn

_COLUMNS = ("dice", "aji", "aji_plus", "pq", "dq", "sq", "object_dice", "det_f1")


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table: one row per image, then the mean row."""
    rows = [(stem, m) for stem, m in result["per_image"].items()]
    rows.append(("mean", result["mean"]))
    width = max(len("image"), *(len(stem) for stem, _ in rows))
    col_w = {c: max(len(c), 6) for c in _COLUMNS}
    header = "image".ljust(width) + "".join(f"  {c:>{col_w[c]}}" for c in _COLUMNS)
    lines = [header, "-" * len(header)]
    for i, (stem, metrics) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(header))
        cells = "".join(f"  {metrics[c]:>{col_w[c]}.4f}" for c in _COLUMNS)
        lines.append(stem.ljust(width) + cells)
    return "\n".join(lines)


@click.command(name="eval")
@click.option(
    "--pred",
    "pred_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of predicted label images (STEM.labels.tif, STEM.tif or STEM.png).",
)
@click.option(
    "--gt",
    "gt_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of ground-truth label images or MoNuSeg XML (STEM.xml), same stems.",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the per-image and mean metrics to this JSON file.",
)
@click.option(
    "--radius",
    default=12.0,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Detection matching radius in pixels (12 px = 3 µm at 0.25 µm/px).",
)
@click.option(
    "--task",
    type=click.Choice(["nuclei", "tissue"]),
    default="nuclei",
    show_default=True,
    help="nuclei: instance metrics of STEM.labels.tif; tissue: per-class Dice/IoU of "
    "STEM.tissue.tif inside the tissue (ground-truth label 0 is not scored).",
)
@handle_errors
def eval_command(
    pred_dir: Path, gt_dir: Path, json_path: Path | None, radius: float, task: str
) -> None:
    """Score predictions against ground truth.

    nuclei (default): Dice, AJI, AJI+, PQ, object Dice, detection F1. tissue: per-class Dice
    and IoU of tissue class maps.
    """
    from zeropath.errors import InputError
    from zeropath.evaluate import evaluate_dirs
    from zeropath.io.writers import write_run_json

    if json_path is not None and not json_path.resolve().parent.is_dir():
        raise InputError(json_path, "folder for the JSON output does not exist")
    if task == "tissue":
        _eval_tissue(pred_dir, gt_dir, json_path)
        return
    with Progress("evaluating") as progress:
        result = evaluate_dirs(pred_dir, gt_dir, radius=radius, progress=progress)
    click.echo(format_table(result))
    click.echo(
        f"{result['n_images']} image(s); detection radius {result['det_radius_px']:g} px; "
        "means are per-image averages"
    )
    if result["unmatched_pred"]:
        names = ", ".join(result["unmatched_pred"][:5])
        more = " …" if len(result["unmatched_pred"]) > 5 else ""
        n = len(result["unmatched_pred"])
        warn(f"{n} prediction(s) without ground truth ignored: {names}{more}")
    if result["xml_without_image"]:
        n = len(result["xml_without_image"])
        warn(
            f"{n} XML annotation(s) without their image (beside them or in ../images): "
            "the prediction's size was checked only against the annotations' extent"
        )
    if json_path is not None:
        try:
            write_run_json(json_path, result)
        except OSError as exc:
            raise InputError(json_path, f"cannot write: {exc.strerror or exc}") from exc
        click.echo(f"wrote {json_path}")


def format_tissue_table(result: dict[str, Any]) -> str:
    """Plain-text table of a tissue evaluation: one row per class, then the means."""
    rows = [
        (name, m["dice"], m["iou"], str(m["n_images"])) for name, m in result["per_class"].items()
    ]
    mean = result["mean"]
    rows.append(("mean (per image)", mean["dice"], mean["iou"], str(result["n_images"])))
    width = max(len("class"), *(len(r[0]) for r in rows))

    def cell(v: float | None) -> str:
        return f"{v:>8.4f}" if v is not None else f"{'-':>8}"

    header = f"{'class'.ljust(width)}  {'dice':>8}  {'iou':>8}  {'images':>6}"
    lines = [header, "-" * len(header)]
    for i, (name, dice, iou, n) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(header))
        lines.append(f"{name.ljust(width)}  {cell(dice)}  {cell(iou)}  {n:>6}")
    return "\n".join(lines)


def _eval_tissue(pred_dir: Path, gt_dir: Path, json_path: Path | None) -> None:
    from zeropath.errors import InputError
    from zeropath.io.writers import write_run_json
    from zeropath.tissue.evaluate import evaluate_tissue_dirs

    with Progress("evaluating") as progress:
        result = evaluate_tissue_dirs(pred_dir, gt_dir, progress=progress)
    click.echo(format_tissue_table(result))
    accuracy = result["mean"]["accuracy"]
    acc = f"{accuracy:.4f}" if accuracy is not None else "-"
    click.echo(f"{result['n_images']} image(s); pixel accuracy {acc}; scored inside the tissue")
    if result["unmatched_pred"]:
        n = len(result["unmatched_pred"])
        warn(
            f"{n} prediction(s) without ground truth ignored: "
            f"{', '.join(result['unmatched_pred'][:5])}"
        )
    if json_path is not None:
        try:
            write_run_json(json_path, result)
        except OSError as exc:
            raise InputError(json_path, f"cannot write: {exc.strerror or exc}") from exc
        click.echo(f"wrote {json_path}")
