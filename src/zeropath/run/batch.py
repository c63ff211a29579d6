"""Running one per-input task over many inputs: serially, in local processes, or on Dask.

:func:`run_many` is pipeline-agnostic: a *task* is any picklable callable
``task(path, out_dir, progress) -> result`` that writes one input's outputs (nucleus
segmentation through :func:`segment_many`, ZEUS tissue maps through
:class:`zeropath.tissue.zeus.TissueTask`). A failing input is recorded and the others go on;
the task stages its outputs and discards them on failure, so nothing partial is left behind.
The caller decides the exit status from :attr:`BatchReport.failures`.

Faults: at the start, staging folders left in the output folder by runs that were killed
are removed (:func:`zeropath.run.staging.sweep_stale_staging`). While a batch runs, SIGTERM
is handled like Ctrl+C: it raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
thread, so the input in progress discards its staging folder; local worker processes are
stopped the same way and whatever they leave is swept before the exception propagates.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeropath.errors import InputError, ZeropathError
from zeropath.run.segment import (
    RECORD_SUFFIX,
    InstanceSegmenter,
    ProgressFn,
    SegmentOptions,
    SegmentResult,
    read_record,
    segment_input,
    software_versions,
    utc_timestamp,
)
from zeropath.run.staging import sweep_stale_staging


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a batch ran (handled like Ctrl+C; the exit status is 143)."""

    exit_code = 143


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread.

    A no-op outside the main thread (where signal handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # pragma: no cover - embedded interpreters
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: In a worker process: whether a task is running (then a stop signal raises, so that the
#: task cleans up; between tasks the worker just exits).
_IN_TASK = False


def _worker_signal(signum: int, frame: Any) -> None:
    if _IN_TASK:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    os._exit(128 + signum)


def _init_worker() -> None:
    """Initializer of local worker processes: SIGTERM/SIGINT stop the task with cleanup."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, _worker_signal)


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
    skip_complete: bool = False
    provenance: Mapping[str, Any] | None = None

    def __call__(
        self, path: str, out_dir: str, progress: ProgressFn | None = None
    ) -> SegmentResult:
        return segment_input(
            path,
            out_dir,
            self.segmenter,
            mpp=self.mpp,
            options=self.options,
            progress=progress,
            skip_complete=self.skip_complete,
            provenance=self.provenance,
        )


def _run_task(
    path: str, out_dir: str, task: Task, progress: ProgressFn | None = None
) -> Any | Failure:
    """Worker body: never raises for a bad input, returns a :class:`Failure` instead."""
    global _IN_TASK
    _IN_TASK = True
    try:
        return task(path, out_dir, progress)
    except ZeropathError as exc:
        return Failure(path, str(exc))
    except MemoryError:
        return Failure(path, f"{path}: out of memory while processing this input")
    except Exception as exc:  # a library failure on one input must not stop the batch
        return Failure(path, f"{path}: failed while processing ({type(exc).__name__}: {exc})")
    finally:
        _IN_TASK = False


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


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if needed and check that files can be written in it.

    Raises :class:`InputError` (one line, no traceback at the CLI) when it cannot be.
    """
    import tempfile

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".zeropath-write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(out, f"cannot write the output folder ({reason})") from exc
    return out


@contextlib.contextmanager
def _sweep_on_abort(out: str) -> Iterator[None]:
    """On an exception (Ctrl+C, SIGTERM), remove what stopped workers left in ``out``."""
    try:
        yield
    except BaseException:
        sweep_stale_staging(out)
        raise


def _stop_pool(pool: Any) -> None:
    """Stop a ProcessPoolExecutor now: cancel what has not started, signal the workers."""
    pool.shutdown(wait=False, cancel_futures=True)
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()  # SIGTERM: the task in progress discards its staging folder
    deadline = time.monotonic() + 10.0
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


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
    an output stem fail (all but the first) instead of overwriting each other. ``on_done`` is
    called in this process with each input's result (or :class:`Failure`) as soon as it is
    known, in the order inputs finish. Stale staging folders of killed runs are swept first;
    SIGTERM raises :class:`Terminated` after the running inputs are cleaned up.
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in inputs]
    out = str(prepare_out_dir(out_dir))
    sweep_stale_staging(out)
    dups = _duplicate_stems(paths)
    todo = [p for p in paths if p not in dups]
    outcomes: dict[Path, Any] = {}

    def record(p: Path, r: Any) -> None:
        outcomes[p] = r
        if on_done:
            on_done(r)

    for p, msg in dups.items():
        record(p, Failure(str(p), msg))
    with sigterm_as_interrupt(), _sweep_on_abort(out):
        if scheduler is not None:
            _run_dask(todo, out, task, scheduler, workers, record)
        elif workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), initializer=_init_worker
            )
            try:
                futures = {pool.submit(_run_task, str(p), out, task): p for p in todo}
                for fut in as_completed(futures):
                    p = futures[fut]
                    try:
                        r = fut.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        r = Failure(str(p), f"{p}: worker process failed ({exc})")
                    record(p, r)
            except BaseException:
                _stop_pool(pool)
                raise
            pool.shutdown(wait=True)
        else:
            for i, p in enumerate(todo):

                def tile_progress(done: int, total: int | None, msg: str, _i: int = i) -> None:
                    if progress:
                        progress(done, total, f"[{_i + 1}/{len(todo)}] {msg}")

                record(p, _run_task(str(p), out, task, tile_progress))
    if workers > 1 or scheduler is not None:
        sweep_stale_staging(out)  # what a worker that died (out of memory, killed) left
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
    skip_complete: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> BatchReport:
    """Segment the nuclei of every input; results are in input order whatever the executor.

    With ``skip_complete``, inputs whose outputs in ``out_dir`` are complete and current are
    not recomputed (their results come back with ``skipped=True``). ``provenance`` adds
    fields (e.g. the command and its parameters) to each input's ``STEM.run.json``.
    """
    task = SegmentTask(segmenter, mpp, options, skip_complete, provenance)
    return run_many(inputs, out_dir, task, workers, scheduler, progress, on_done)


def _run_dask(
    todo: Sequence[Path],
    out: str,
    task: Task,
    scheduler: str,
    workers: int = 2,
    record: Callable[[Path, Any], None] | None = None,
) -> list[Any]:
    """Send one task per input to a Dask cluster; ``"local"`` starts a LocalCluster.

    ``record(path, result)`` is called as each input finishes; the results are returned in
    input order.
    """
    try:
        from distributed import Client, as_completed
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
    futures: list[Any] = []
    try:
        shared = client.scatter(task, broadcast=True)
        futures = client.map(
            _run_task,
            [str(p) for p in todo],
            out_dir=out,
            task=shared,
            pure=False,
        )
        by_key = {fut.key: p for p, fut in zip(todo, futures, strict=True)}
        results: dict[Path, Any] = {}
        for fut in as_completed(futures):
            p = by_key[fut.key]
            try:
                r = fut.result()
            except Exception as exc:  # a worker died or the task could not run
                r = Failure(str(p), f"{p}: failed on the Dask cluster ({exc})")
            results[p] = r
            if record is not None:
                record(p, r)
        return [results[p] for p in todo]
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _recorded_inputs(out: Path) -> dict[str, dict[str, Any]]:
    """The per-input records (``STEM.run.json``) in ``out``, by stem."""
    found: dict[str, dict[str, Any]] = {}
    for f in sorted(out.glob(f"*{RECORD_SUFFIX}")):
        if f.name.startswith(".") or not f.is_file():
            continue
        record = read_record(f)
        if record is not None and f.name == f"{record['stem']}{RECORD_SUFFIX}":
            found[record["stem"]] = record
    return found


def _earlier_run_inputs(out: Path) -> list[dict[str, Any]]:
    """Input entries of an existing ``run.json`` (as written by earlier versions too)."""
    try:
        import json

        old = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or not isinstance(old.get("inputs"), list):
        return []
    entries = []
    for item in old["inputs"]:
        if isinstance(item, dict) and isinstance(item.get("stem"), str):
            entry = dict(item)
            # entries of older run.json files carry no model/time of their own: the run's
            entry.setdefault("model", old.get("model"))
            entry.setdefault("version", old.get("version"))
            entry.setdefault("command", old.get("command"))
            entries.append(entry)
    return entries


def run_record(
    report: BatchReport,
    segmenter: InstanceSegmenter,
    parameters: dict[str, Any],
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The ``run.json`` provenance record of a batch.

    Top level: this run (version, model, parameters, failures, timings, timestamp, software
    versions). ``inputs`` lists a provenance record per input: with ``out_dir``, the records
    of every input whose outputs are in it (the ``STEM.run.json`` files, i.e. also the inputs
    of earlier runs into the same folder, with their own model, parameters and timestamp,
    and entries of an existing ``run.json`` that have no such file), this run's first.
    """
    import platform

    desc = segmenter.describe()
    current = [r.to_dict() for r in report.results]
    inputs: list[dict[str, Any]] = current
    if out_dir is not None:
        out = Path(out_dir)
        recorded = _recorded_inputs(out)
        for entry in _earlier_run_inputs(out):
            if entry["stem"] not in recorded and (out / f"{entry['stem']}.labels.tif").is_file():
                recorded[entry["stem"]] = entry
        ours = {r.stem for r in report.results}
        inputs = []
        for r in report.results:
            rec = dict(recorded.get(r.stem) or r.to_dict())
            rec["skipped"] = r.skipped
            inputs.append(rec)
        inputs += [rec for stem, rec in sorted(recorded.items()) if stem not in ours]
    versions = software_versions()
    return {
        "version": versions["zeropath"],
        "command": parameters.get("command"),
        "timestamp": utc_timestamp(),
        "model": {"name": desc.get("name"), "sha256": desc.get("sha256")},
        "model_parameters": desc.get("params", {}),
        "parameters": parameters,
        "inputs": inputs,
        "failures": [{"input": f.input, "error": f.message} for f in report.failures],
        "mpp": {
            r["stem"]: {"value": r.get("mpp"), "origin": r.get("mpp_origin")}
            for r in inputs
            if "mpp" in r
        },
        "summary": {
            "computed": sum(not r.skipped for r in report.results),
            "skipped": sum(r.skipped for r in report.results),
            "failed": len(report.failures),
        },
        "timings": {"wall_s": round(report.wall_s, 3)},
        "versions": versions,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
