"""Shared pieces of the thin CLI: option factories, error reporting, progress rendering."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
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
