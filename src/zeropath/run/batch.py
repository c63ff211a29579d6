"""Running one segmenter over many inputs: serially, in local processes, or on Dask.

A failing input is recorded and the others go on; its staged outputs are discarded by
:func:`~zeropath.run.segment.segment_input`, so nothing partial is left behind. The caller
decides the exit status from :attr:`BatchReport.failures`.
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


@dataclass
class BatchReport:
    results: list[SegmentResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def _run_one(
    path: str,
    out_dir: str,
    segmenter: InstanceSegmenter,
    mpp: float | None,
    options: SegmentOptions | None,
    progress: ProgressFn | None = None,
) -> SegmentResult | Failure:
    """Worker body: never raises for a bad input, returns a :class:`Failure` instead."""
    try:
        return segment_input(path, out_dir, segmenter, mpp=mpp, options=options, progress=progress)
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
    """Segment every input; results are in input order whatever the executor."""
    t0 = time.perf_counter()
    paths = [Path(p) for p in inputs]
    out = str(out_dir)
    Path(out).mkdir(parents=True, exist_ok=True)
    dups = _duplicate_stems(paths)
    todo = [p for p in paths if p not in dups]
    outcomes: dict[Path, SegmentResult | Failure] = {
        p: Failure(str(p), msg) for p, msg in dups.items()
    }

    def record(p: Path, r: SegmentResult | Failure) -> None:
        outcomes[p] = r
        if on_done:
            on_done(r)

    if scheduler is not None:
        for p, r in zip(
            todo, _run_dask(todo, out, segmenter, mpp, options, scheduler, workers), strict=True
        ):
            record(p, r)
    elif workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {p: pool.submit(_run_one, str(p), out, segmenter, mpp, options) for p in todo}
            for p, fut in futures.items():
                record(p, fut.result())
    else:
        for i, p in enumerate(todo):

            def tile_progress(done: int, total: int | None, msg: str, _i: int = i) -> None:
                if progress:
                    progress(done, total, f"[{_i + 1}/{len(todo)}] {msg}")

            record(p, _run_one(str(p), out, segmenter, mpp, options, tile_progress))
    report = BatchReport(wall_s=time.perf_counter() - t0)
    for p in paths:
        r = outcomes[p]
        (report.failures if isinstance(r, Failure) else report.results).append(r)  # type: ignore[arg-type]
    return report


def _run_dask(
    todo: Sequence[Path],
    out: str,
    segmenter: InstanceSegmenter,
    mpp: float | None,
    options: SegmentOptions | None,
    scheduler: str,
    workers: int = 2,
) -> list[SegmentResult | Failure]:
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
        seg = client.scatter(segmenter, broadcast=True)
        futures = client.map(
            _run_one,
            [str(p) for p in todo],
            out_dir=out,
            segmenter=seg,
            mpp=mpp,
            options=options,
            pure=False,
        )
        results: list[SegmentResult | Failure] = []
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
