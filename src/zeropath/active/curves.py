"""Learning curves: ``OUT/curve.csv`` (one row per run and round) and ``OUT/curve.png``.

Several runs (strategies × seeds) may write into the same ``OUT``: each write replaces the rows
of its own (strategy, seed) and keeps the others', so the CSV accumulates a whole comparison.
The plot shows Dice against the labelled fraction, one line per strategy: the mean over seeds
at each round, with a min–max band when there are several seeds.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "area_under_curve", "merge_curve", "plot_curve", "read_curve"]

COLUMNS: tuple[str, ...] = ("strategy", "seed", "round", "labelled_fraction", "dice", "iou")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def read_curve(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a curve CSV with numbers parsed (empty dice/iou → ``None``)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.append(
                {
                    "strategy": r["strategy"],
                    "seed": int(r["seed"]),
                    "round": int(r["round"]),
                    "labelled_fraction": float(r["labelled_fraction"]),
                    "dice": float(r["dice"]) if r.get("dice") else None,
                    "iou": float(r["iou"]) if r.get("iou") else None,
                }
            )
    return rows


def merge_curve(
    path: str | os.PathLike[str], strategy: str, seed: int, rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Replace ``(strategy, seed)``'s rows in the CSV at ``path`` (atomically); return all rows."""
    from zeropath.io.writers import atomic_write

    keep = [r for r in read_curve(path) if (r["strategy"], r["seed"]) != (strategy, int(seed))]
    new = [
        {**{k: r.get(k) for k in COLUMNS}, "strategy": strategy, "seed": int(seed)} for r in rows
    ]
    merged = sorted(keep + new, key=lambda r: (r["strategy"], r["seed"], r["round"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in merged:
        writer.writerow([_fmt(r[k]) for k in COLUMNS])
    with atomic_write(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return merged


def _by_strategy(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, list[Mapping]]]:
    out: dict[str, dict[int, list[Mapping]]] = {}
    for r in rows:
        out.setdefault(r["strategy"], {}).setdefault(int(r["seed"]), []).append(r)
    return out


def area_under_curve(fractions: Sequence[float], dice: Sequence[float]) -> float:
    """Trapezoidal area under Dice vs labelled fraction, divided by the fraction range
    (a mean Dice over the budget; 0 with fewer than two points)."""
    f = np.asarray(fractions, np.float64)
    d = np.asarray(dice, np.float64)
    ok = np.isfinite(d)
    f, d = f[ok], d[ok]
    if len(f) < 2 or f[-1] <= f[0]:
        return float(d[0]) if len(d) == 1 else 0.0
    return float(np.trapezoid(d, f) / (f[-1] - f[0]))


def plot_curve(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "Active learning",
    ceiling: float | None = None,
) -> Path:
    """Dice vs labelled fraction, one line per strategy (mean ± min–max band over seeds)."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no GUI backend

    from zeropath.io.writers import atomic_write

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.add_subplot(111)
    for strategy, seeds in sorted(_by_strategy(rows).items()):
        curves = []
        for seed_rows in seeds.values():
            seed_rows = sorted(seed_rows, key=lambda r: r["round"])
            curves.append(
                (
                    [r["labelled_fraction"] for r in seed_rows],
                    [np.nan if r["dice"] is None else r["dice"] for r in seed_rows],
                )
            )
        n = min(len(c[0]) for c in curves)
        if n == 0:
            continue
        frac = np.mean([c[0][:n] for c in curves], axis=0)
        dice = np.array([c[1][:n] for c in curves], np.float64)
        if not np.isfinite(dice).any():
            continue
        mean = np.nanmean(dice, axis=0)
        (line,) = ax.plot(frac, mean, marker="o", ms=3, label=f"{strategy} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(
                frac,
                np.nanmin(dice, axis=0),
                np.nanmax(dice, axis=0),
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
    if ceiling is not None:
        ax.axhline(ceiling, color="k", ls="--", lw=1, label="fully labelled")
    ax.set_xlabel("labelled fraction of the pool's pixels")
    ax.set_ylabel("Dice (test)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
