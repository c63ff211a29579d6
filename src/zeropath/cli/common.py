"""Shared pieces of the thin CLI: option factories, error reporting, progress rendering."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from zeropath.errors import ZeropathError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Print one error line on stderr and exit with code 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def warn(message: str) -> None:
    """Print one warning line on stderr."""
    click.echo(f"warning: {message}", err=True)


def handle_errors(func: F) -> F:
    """Turn :class:`ZeropathError` (and bad-parameter errors) into one line + exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ZeropathError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def mpp_option(func: F) -> F:
    return click.option(
        "--mpp",
        type=click.FloatRange(min=0.0, min_open=True),
        default=None,
        help="Override the input's µm/px (default: from the file, else 0.25).",
    )(func)


def out_option(func: F) -> F:
    return click.option(
        "--out",
        "out",
        required=True,
        type=click.Path(file_okay=False, writable=True),
        help="Output directory (created if missing).",
    )(func)


def workers_option(func: F) -> F:
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Local worker processes.",
    )(func)


def threads_option(func: F) -> F:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="torch CPU threads (default: torch's choice).",
    )(func)


def model_out_option(func: F) -> F:
    """``--out MODEL_DIR`` and ``--seed`` of the ``fit`` commands."""
    func = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(func)
    return click.option(
        "--out",
        "out",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Model directory to write (model.json + weights.pt).",
    )(func)


def scheduler_option(func: F) -> F:
    return click.option(
        "--scheduler",
        default=None,
        help=(
            "Dask scheduler address (tcp://host:port) to send work to; "
            "'local' starts a LocalCluster with --workers processes."
        ),
    )(func)


class Progress:
    """A progress callback rendered with rich; silent when stderr is not a terminal."""

    def __init__(self, description: str, enabled: bool | None = None) -> None:
        self.description = description
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def __call__(self, done: int, total: int | None, message: str = "") -> None:
        if self._progress is not None:
            desc = f"{self.description} {message}".strip()
            self._progress.update(self._task, completed=done, total=total, description=desc)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def run_segmentation(
    files: list,
    out_dir: Path,
    segmenter: Any,
    parameters: dict[str, Any],
    mpp: float | None,
    tile_um: float,
    workers: int,
    scheduler: str | None,
) -> None:
    """The body shared by ``nuclei segment`` and ``points segment``.

    Runs the batch with a progress bar, warns once about inputs whose µm/px was assumed,
    writes ``run.json`` (``parameters`` plus ``tile_um``), prints one line per input and one
    ``error:`` line per failure, and exits with code 2 when any input failed.
    """
    from zeropath.io.writers import write_run_json
    from zeropath.run.batch import run_record, segment_many
    from zeropath.run.segment import SegmentOptions

    with Progress("segmenting") as progress:
        report = segment_many(
            files,
            out_dir,
            segmenter,
            mpp=mpp,
            options=SegmentOptions(tile_um=tile_um),
            workers=workers,
            scheduler=scheduler,
            progress=progress,
        )
    defaulted = [r.stem for r in report.results if r.mpp_origin == "default"]
    if defaulted:
        from zeropath.io.reader import DEFAULT_MPP

        more = f" and {len(defaulted) - 3} more" if len(defaulted) > 3 else ""
        warn(
            f"no µm/px in {', '.join(defaulted[:3])}{more}: assumed {DEFAULT_MPP} µm/px (40x); "
            "pass --mpp to override (recorded in run.json)"
        )
    params = {
        **parameters,
        "inputs": [str(p) for p in files],
        "mpp_override": mpp,
        "workers": workers,
        "scheduler": scheduler,
        "tile_um": tile_um,
    }
    write_run_json(out_dir / "run.json", run_record(report, segmenter, params))
    for r in report.results:
        click.echo(
            f"{r.stem}: {r.n_objects} nuclei, {r.width}×{r.height} px at {r.mpp:g} µm/px "
            f"({r.timings.get('total_s', 0):.1f} s)"
        )
    for f in report.failures:
        click.echo(f"error: {f.message}", err=True)
    if report.failures:
        raise SystemExit(2)
    click.echo(f"outputs in {out_dir}")
