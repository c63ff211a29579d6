"""Shared pieces of the thin CLI: option factories, error reporting, progress rendering."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
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
        except KeyboardInterrupt as exc:
            code = int(getattr(exc, "exit_code", 130))  # 143: SIGTERM (run.batch.Terminated)
            click.echo("terminated" if code == 143 else "interrupted", err=True)
            sys.exit(code)

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


def overwrite_option(func: F) -> F:
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Recompute inputs whose outputs are already complete (default: skip them).",
    )(func)


def expand_inputs(paths: Any) -> tuple[list[Path], list[Any]]:
    """Expand INPUT arguments (files, directories) into files, without stopping at a bad one.

    Returns ``(files, failures)``: a missing path or a directory without inputs becomes a
    :class:`zeropath.run.batch.Failure` (reported as one ``error:`` line) and the others go on.
    """
    from zeropath.errors import InputError
    from zeropath.io.reader import list_inputs
    from zeropath.run.batch import Failure

    files: list[Path] = []
    failures: list[Any] = []
    seen: set[Path] = set()
    for raw in paths:
        try:
            found = list_inputs([raw])
        except InputError as exc:
            failures.append(Failure(str(raw), str(exc)))
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, failures


def device_option(what: str) -> Callable[[F], F]:
    """``--device cpu|cuda|mps`` for ``what`` runs there; commands check it with
    :func:`zeropath.models.device.resolve_device` (absent device: one ``error:`` line)."""
    return click.option(
        "--device",
        type=click.Choice(["cpu", "cuda", "mps"]),
        default="cpu",
        show_default=True,
        help=f"Where {what} runs; a device torch here does not have is an error.",
    )


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
    """A progress callback rendered with rich on a terminal.

    Off a terminal (logs, background jobs, notebooks' captured stderr) a bar is noise, but
    silence for many minutes is worse: with ``stage_lines`` each new stage (a change of the
    callback's message) prints one line ``[elapsed] description: message`` to stderr.
    """

    def __init__(
        self, description: str, enabled: bool | None = None, stage_lines: bool = False
    ) -> None:
        self.description = description
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.stage_lines = stage_lines and not self.enabled
        self._progress: Any = None
        self._task: Any = None
        self._stage: str | None = None
        self._t0 = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def __call__(self, done: int, total: int | None, message: str = "") -> None:
        if self.stage_lines and message != self._stage:
            self._stage = message
            elapsed = time.monotonic() - self._t0
            click.echo(f"[{elapsed:6.0f} s] {self.description}: {message}", err=True)
        if self._progress is not None:
            desc = f"{self.description} {message}".strip()
            self._progress.update(self._task, completed=done, total=total, description=desc)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class BatchLog:
    """``on_done`` of a batch: one stderr line per finished input, flushed at once.

    ``done K/N STEM: … nuclei in … s``, ``skipped K/N STEM: outputs complete …``, or, for a
    failed input, its one ``error:`` line (printed now, not again at the end).
    """

    def __init__(self, total: int, summary: Callable[[Any], str] | None = None) -> None:
        self.total = total
        self.count = 0
        self.summary = summary or (lambda r: f"{r.n_objects} nuclei")

    def __call__(self, r: Any) -> None:
        from zeropath.run.batch import Failure

        self.count += 1
        n = f"{self.count}/{self.total}"
        if isinstance(r, Failure):
            line = f"error: {r.message}"
        elif getattr(r, "skipped", False):
            line = f"skipped {n} {r.stem}: outputs complete (--overwrite recomputes)"
        else:
            took = r.timings.get("total_s", 0)
            line = f"done {n} {r.stem}: {self.summary(r)} in {took:.1f} s"
        click.echo(line, err=True)
        with contextlib.suppress(Exception):
            sys.stderr.flush()


def run_segmentation(
    files: list,
    out_dir: Path,
    segmenter: Any,
    parameters: dict[str, Any],
    mpp: float | None,
    tile_um: float,
    workers: int,
    scheduler: str | None,
    overwrite: bool = False,
    input_failures: list | None = None,
    overlap_um: float | None = None,
) -> None:
    """The body shared by ``nuclei segment`` and ``points segment``.

    Runs the batch with a progress bar and one stderr line per finished input, skipping
    inputs whose outputs are complete and current unless ``overwrite``; warns once about
    inputs whose µm/px was assumed; writes ``run.json`` (``parameters`` plus ``tile_um``, an
    index of every input's record in ``out_dir``), prints one line per input and one
    ``error:`` line per failure (``input_failures``: INPUT arguments that were missing, reported
    first), and exits with code 2 when any input failed.
    """
    from zeropath.io.writers import write_run_json
    from zeropath.run.batch import prepare_out_dir, run_record, segment_many
    from zeropath.run.segment import SegmentOptions

    failures_before = list(input_failures or [])
    if files:
        prepare_out_dir(out_dir)
    for f in failures_before:  # missing INPUTs: reported now, the others go on
        click.echo(f"error: {f.message}", err=True)
    if not files:
        raise SystemExit(2)
    params = {
        **parameters,
        "inputs": [str(p) for p in files],
        "mpp_override": mpp,
        "workers": workers,
        "scheduler": scheduler,
        "tile_um": tile_um,
        "overlap_um": overlap_um,
        "overwrite": overwrite,
    }
    per_input = {
        "command": parameters.get("command"),
        "parameters": {k: v for k, v in params.items() if k != "inputs"},
    }
    with Progress("segmenting") as progress:
        report = segment_many(
            files,
            out_dir,
            segmenter,
            mpp=mpp,
            options=SegmentOptions(tile_um=tile_um, overlap_um=overlap_um),
            workers=workers,
            scheduler=scheduler,
            progress=progress,
            on_done=BatchLog(len(files)),
            skip_complete=not overwrite,
            provenance=per_input,
        )
    report.failures[:0] = failures_before
    defaulted = [r.stem for r in report.results if r.mpp_origin == "default" and not r.skipped]
    if defaulted:
        from zeropath.io.reader import DEFAULT_MPP

        more = f" and {len(defaulted) - 3} more" if len(defaulted) > 3 else ""
        warn(
            f"no µm/px in {', '.join(defaulted[:3])}{more}: assumed {DEFAULT_MPP} µm/px (40x); "
            "pass --mpp to override (recorded in run.json)"
        )
    write_run_json(out_dir / "run.json", run_record(report, segmenter, params, out_dir))
    for r in report.results:
        when = "skipped: outputs complete" if r.skipped else f"{r.timings.get('total_s', 0):.1f} s"
        size = f"{r.width}×{r.height} px at {r.mpp:g} µm/px"
        click.echo(f"{r.stem}: {r.n_objects} nuclei, {size} ({when})")
    if report.failures:  # each already reported by its error line
        raise SystemExit(2)
    click.echo(f"outputs in {out_dir}")
