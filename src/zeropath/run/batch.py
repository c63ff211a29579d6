"""Running one per-input task over many inputs: serially, in local processes, or on Dask.

:func:`run_many` is pipeline-agnostic: a *task* is any picklable callable
``task(path, out_dir, progress) -> result`` that writes one input's outputs (nucleus
segmentation through :func:`segment_many`, ZEUS tissue maps through
:class:`zeropath.tissue.zeus.TissueTask`). A failing input is recorded and the others go on;
the task stages its outputs and discards them on failure, so nothing partial is left behind.
The caller decides the exit status from :attr:`BatchReport.failures`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeropath.errors import InputError, ZeropathError
from zeropath.run.segment import (
    InstanceSegmenter,
    ProgressFn,
    SegmentOptions,
    SegmentResult,
    segment_input,
)


@dataclass
class Failure:
    input: str
    message: str


#: ``task(path, out_dir, progress) -> result``: what :func:`run_many` runs per input.
Task = Callable[[str, str, ProgressFn | None], Any]


@dataclass
class BatchReport:
    results: list[Any] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class SegmentTask:
    """The nucleus-segmentation task: :func:`segment_input` with a fixed segmenter."""

    segmenter: InstanceSegmenter
    mpp: float | None = None
    options: SegmentOptions | None = None

    def __call__(
        self, path: str, out_dir: str, progress: ProgressFn | None = None
    ) -> SegmentResult:
        return segment_input(
            path, out_dir, self.segmenter, mpp=self.mpp, options=self.options, progress=progress
        )


def _run_task(
    path: str, out_dir: str, task: Task, progress: ProgressFn | None = None
) -> Any | Failure:
    """Worker body: never raises for a bad input, returns a :class:`Failure` instead."""
    try:
        return task(path, out_dir, progress)
    except ZeropathError as exc:
        return Failure(path, str(exc))
    except MemoryError:
        return Failure(path, f"{path}: out of memory while processing this input")
    except Exception as exc:  # a library failure on one input must not stop the batch
        return Failure(path, f"{path}: failed while processing ({type(exc).__name__}: {exc})")


def _duplicate_stems(inputs: Sequence[Path]) -> dict[Path, str]:
    """Inputs whose output stem was already taken by an earlier input."""
    from zeropath.io.reader import image_stem

    seen: dict[str, Path] = {}
    dup: dict[Path, str] = {}
    for p in inputs:
        stem = image_stem(p)
        if stem in seen:
            dup[p] = f"{p}: output name {stem!r} is already used by {seen[stem]}; rename one"
        else:
            seen[stem] = p
    return dup


def run_many(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    task: Task,
    workers: int = 1,
    scheduler: str | None = None,
    progress: ProgressFn | None = None,
    on_done: Callable[[Any], None] | None = None,
) -> BatchReport:
    """Run ``task`` on every input; results are in input order whatever the executor.

    ``workers > 1`` runs inputs in local processes; ``scheduler`` (an address, or ``"local"``
    for a LocalCluster of ``workers`` processes) sends one Dask task per input. Inputs sharing
    an output stem fail (all but the first) instead of overwriting each other.
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in inputs]
    out = str(out_dir)
    Path(out).mkdir(parents=True, exist_ok=True)
    dups = _duplicate_stems(paths)
    todo = [p for p in paths if p not in dups]
    outcomes: dict[Path, Any] = {p: Failure(str(p), msg) for p, msg in dups.items()}

    def record(p: Path, r: Any) -> None:
        outcomes[p] = r
        if on_done:
            on_done(r)

    if scheduler is not None:
        for p, r in zip(todo, _run_dask(todo, out, task, scheduler, workers), strict=True):
            record(p, r)
    elif workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {p: pool.submit(_run_task, str(p), out, task) for p in todo}
            for p, fut in futures.items():
                record(p, fut.result())
    else:
        for i, p in enumerate(todo):

            def tile_progress(done: int, total: int | None, msg: str, _i: int = i) -> None:
                if progress:
                    progress(done, total, f"[{_i + 1}/{len(todo)}] {msg}")

            record(p, _run_task(str(p), out, task, tile_progress))
    report = BatchReport(wall_s=time.perf_counter() - t0)
    for p in paths:
        r = outcomes[p]
        (report.failures if isinstance(r, Failure) else report.results).append(r)
    return report


def segment_many(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    segmenter: InstanceSegmenter,
    mpp: float | None = None,
    options: SegmentOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: ProgressFn | None = None,
    on_done: Callable[[SegmentResult | Failure], None] | None = None,
) -> BatchReport:
    """Segment the nuclei of every input; results are in input order whatever the executor."""
    task = SegmentTask(segmenter, mpp, options)
    return run_many(inputs, out_dir, task, workers, scheduler, progress, on_done)


def _run_dask(
    todo: Sequence[Path],
    out: str,
    task: Task,
    scheduler: str,
    workers: int = 2,
) -> list[Any]:
    """Send one task per input to a Dask cluster; ``"local"`` starts a LocalCluster."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a core dependency
        raise ZeropathError(f"--scheduler needs dask.distributed: {exc}") from exc
    cluster = None
    if scheduler in ("local", "localcluster"):
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None
        )
        scheduler = cluster.scheduler_address
    try:
        client = Client(scheduler, timeout="10s")
    except Exception as exc:
        if cluster is not None:
            cluster.close()
        raise InputError(None, f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    try:
        shared = client.scatter(task, broadcast=True)
        futures = client.map(
            _run_task,
            [str(p) for p in todo],
            out_dir=out,
            task=shared,
            pure=False,
        )
        results: list[Any] = []
        for p, fut in zip(todo, futures, strict=True):
            try:
                results.append(fut.result())
            except Exception as exc:  # a worker died or the task could not run
                results.append(Failure(str(p), f"{p}: failed on the Dask cluster ({exc})"))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_record(
    report: BatchReport, segmenter: InstanceSegmenter, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The ``run.json`` provenance record of a batch."""
    import platform

    from zeropath import __version__

    desc = segmenter.describe()
    return {
        "version": __version__,
        "command": parameters.get("command"),
        "model": {"name": desc.get("name"), "sha256": desc.get("sha256")},
        "model_parameters": desc.get("params", {}),
        "parameters": parameters,
        "inputs": [r.to_dict() for r in report.results],
        "failures": [{"input": f.input, "error": f.message} for f in report.failures],
        "mpp": {r.stem: {"value": r.mpp, "origin": r.mpp_origin} for r in report.results},
        "timings": {"wall_s": round(report.wall_s, 3)},
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
