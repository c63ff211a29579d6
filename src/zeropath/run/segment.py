"""Instance segmentation of one image or whole slide, tile by tile, with bounded memory.

The engine is pipeline-agnostic: anything with ``segment(rgb, mpp) -> labels`` (see
:class:`InstanceSegmenter`) runs through it. Each tile's read box is the tile core plus a halo
wider than a nucleus; an object is kept only by the tile whose core holds its centroid, so no
nucleus is duplicated or cut at a tile border. Labels are painted into a level-0 canvas (RAM
for images, a disk-backed memmap for slides), measurements and outlines stream into the
GeoJSON/CSV writers, and every output is staged in a hidden folder (:mod:`zeropath.run.staging`)
and moved into place only when the whole input has succeeded, all or nothing.

Each input's provenance is written with its outputs as ``STEM.run.json``: the result, model,
options, a fingerprint of what determines the outputs, the output sizes, a UTC timestamp and
the software versions. A rerun with ``skip_complete`` finds it and skips the input when the
outputs are complete and the fingerprint matches (:func:`completed_result`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import ndimage as ndi

from zeropath.errors import InputError
from zeropath.io.memory import release_rows
from zeropath.io.tiler import (
    Tile,
    needs_resample,
    plan_tiles,
    read_box,
    resize_labels,
    resize_rgb,
)
from zeropath.run.staging import make_staging, publish

ProgressFn = Callable[[int, int | None, str], None]

#: Canvases larger than this many pixels live in a memmap on disk instead of in RAM.
MEMMAP_THRESHOLD_PX = 64 * 1024 * 1024

#: Files written per input (flat in the output folder); the provenance record goes last.
OUTPUT_SUFFIXES = (".labels.tif", ".geojson", ".csv", ".overlay.png", ".run.json")
#: The per-input provenance record (``STEM.run.json``).
RECORD_SUFFIX = ".run.json"


class InstanceSegmenter(Protocol):
    """What the engine needs of a nucleus segmenter."""

    name: str
    sha256: str | None
    halo_um: float

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """uint32 instance labels on ``rgb``'s grid."""
        ...

    def describe(self) -> dict[str, Any]:
        """Name, checksum and parameters for ``run.json``."""
        ...


@dataclass(frozen=True)
class SegmentOptions:
    """How an input is cut into tiles and which outputs are written."""

    tile_um: float = 256.0
    #: µm of context read around each tile core on every side (the halo); None: the
    #: segmenter's own ``halo_um``. Objects are kept by the tile whose core holds their centre.
    overlap_um: float | None = None
    tissue_only: bool | None = None  # None: on for slides, off for plain images
    overlay_max_size: int = 4096
    pyramid: bool | None = None  # None: pyramidal labels.tif for slides
    classification: tuple[str, tuple[int, int, int]] = ("Nucleus", (0, 200, 0))


@dataclass
class SegmentResult:
    """What one input produced (a row of ``run.json``)."""

    input: str
    stem: str
    sha256: str
    backend: str
    width: int
    height: int
    mpp: float
    mpp_origin: str
    n_objects: int
    n_tiles: int
    n_tiles_total: int
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model_parameters: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def software_versions() -> dict[str, str | None]:
    """Versions of zeropath, numpy, torch and Python (torch's without importing it)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from zeropath import __version__

    try:
        torch_version: str | None = version("torch")
    except PackageNotFoundError:
        torch_version = None
    return {
        "zeropath": __version__,
        "numpy": np.__version__,
        "torch": torch_version,
        "python": platform.python_version(),
    }


def utc_timestamp() -> str:
    """Now, UTC, ISO 8601 to the second (``2024-05-01T12:00:00Z``)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(
    path: str | os.PathLike[str],
    segmenter: InstanceSegmenter,
    options: SegmentOptions,
    mpp: float | None,
) -> str:
    """Identity of an input's outputs: the input file, the model, the options and ``--mpp``."""
    p = Path(path)
    st = p.stat()
    desc = segmenter.describe()
    fields = {
        "input": [p.name, st.st_size, st.st_mtime_ns],
        "model": [desc.get("name"), desc.get("sha256"), desc.get("params", {})],
        "halo_um": getattr(segmenter, "halo_um", None),
        "target_mpp": getattr(segmenter, "target_mpp", None),
        "options": options.__dict__,
        "mpp": mpp,
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def output_names(stem: str) -> list[str]:
    """The file names one input publishes, the provenance record last."""
    return [f"{stem}{s}" for s in OUTPUT_SUFFIXES]


def read_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A per-input provenance record (``STEM.run.json``), or None if unreadable or not one."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("stem"), str):
        return None
    return record


def completed_result(out_dir: Path, stem: str, fp: str) -> SegmentResult | None:
    """The recorded result when ``out_dir`` holds this input's complete, current outputs.

    Complete: every output file exists with the size recorded in ``STEM.run.json``; current:
    the record's fingerprint is ``fp``.
    """
    record = read_record(out_dir / f"{stem}{RECORD_SUFFIX}")
    if record is None or record.get("fingerprint") != fp:
        return None
    sizes = record.get("output_sizes")
    if not isinstance(sizes, dict):
        return None
    for name in output_names(stem)[:-1]:
        f = out_dir / name
        if not f.is_file() or f.stat().st_size != sizes.get(name):
            return None
    known = {k: record[k] for k in SegmentResult.__dataclass_fields__ if k in record}
    try:
        result = SegmentResult(**known)
    except TypeError:
        return None
    result.skipped = True
    return result


def owned_objects(labels: np.ndarray, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the objects in ``labels`` (read-box grid) whose centroid lies in the tile core.

    Returns ``(all_ids, owned_mask)``.
    """
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return ids, np.zeros(0, bool)
    centres = np.asarray(ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids))
    cy = centres[:, 0] + tile.read.y0
    cx = centres[:, 1] + tile.read.x0
    return ids, tile.core.contains(cx, cy)


def paint_owned(
    canvas: np.ndarray, labels: np.ndarray, tile: Tile, next_id: int
) -> tuple[np.ndarray, int]:
    """Paint the tile's owned objects into ``canvas`` where it is still background.

    Owned objects get fresh global ids ``next_id, next_id + 1, …`` (only those that keep at
    least one pixel). Returns ``(new_ids, next_id)``. ``canvas`` is modified in place: it is
    the engine's own output buffer.
    """
    ids, owned = owned_objects(labels, tile)
    if not owned.any():
        return np.zeros(0, np.uint32), next_id
    lut = np.zeros(int(labels.max()) + 1, np.uint32)
    lut[ids[owned]] = np.arange(1, int(owned.sum()) + 1, dtype=np.uint32)
    local = lut[labels]
    view = canvas[tile.read.slices()]
    paint = (local > 0) & (view == 0)
    survivors = np.unique(local[paint])
    if survivors.size == 0:
        return np.zeros(0, np.uint32), next_id
    renumber = np.zeros(int(lut.max()) + 1, np.uint32)
    renumber[survivors] = np.arange(next_id, next_id + survivors.size, dtype=np.uint32)
    view[paint] = renumber[local[paint]]
    return renumber[survivors], next_id + int(survivors.size)


def _new_canvas(shape: tuple[int, int], tmpdir: Path) -> np.ndarray:
    if shape[0] * shape[1] <= MEMMAP_THRESHOLD_PX:
        return np.zeros(shape, np.uint32)
    return np.lib.format.open_memmap(tmpdir / "canvas.npy", mode="w+", dtype=np.uint32, shape=shape)


def _downsampled_labels(canvas: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour view of ``canvas`` at ``shape``, read in row chunks (memmap-safe)."""
    h, w = canvas.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    out = np.empty(shape, np.uint32)
    for start in range(0, shape[0], 256):
        block = rows[start : start + 256]
        out[start : start + block.size] = np.asarray(canvas[block])[:, cols]
        release_rows(canvas, int(block[0]), int(block[-1]) + 1)
    return out


def segment_input(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    segmenter: InstanceSegmenter,
    mpp: float | None = None,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    skip_complete: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> SegmentResult:
    """Segment one image or slide and write its outputs into ``out_dir``.

    Writes ``STEM.labels.tif``, ``STEM.geojson``, ``STEM.csv``, ``STEM.overlay.png`` and the
    provenance record ``STEM.run.json`` (``provenance`` adds fields to it, e.g. the command
    and its parameters). All of them appear together or not at all; outputs of an earlier
    run are replaced only when the new ones are all in place. With ``skip_complete``, an
    input whose outputs are complete and were made from the same file, model, options and
    ``mpp`` is not recomputed: its recorded result is returned with ``skipped=True``.
    Raises :class:`InputError` for unusable inputs.
    """
    from zeropath.io.measure import label_polygons, measure_objects
    from zeropath.io.reader import open_image
    from zeropath.io.writers import ObjectWriter, write_labels_tif, write_overlay

    opts = options or SegmentOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    with open_image(path, mpp=mpp) as src:
        width, height = src.dimensions
        stem = src.stem
        fp = fingerprint(path, segmenter, opts, mpp)
        if skip_complete:
            done = completed_result(out, stem, fp)
            if done is not None:
                return done
        desc = segmenter.describe()
        staging = make_staging(out, stem)
        scratch = Path(tempfile.mkdtemp(prefix="zeropath-", dir=staging))
        try:
            core_px = max(64, int(round(opts.tile_um / src.mpp)))
            overlap_um = segmenter.halo_um if opts.overlap_um is None else opts.overlap_um
            overlap_px = int(np.ceil(overlap_um / src.mpp))
            # Learned models run at their own µm/px: tiles are resampled to it and their
            # labels back to level 0. ``None`` (or a match within 5 %) means native pixels.
            work_mpp = getattr(segmenter, "target_mpp", None)
            if not needs_resample(src.mpp, work_mpp):
                work_mpp = None
            tissue_only = src.is_slide if opts.tissue_only is None else opts.tissue_only
            tissue = None
            tissue_ds: tuple[float, float] | float = 1.0
            if tissue_only and (width > core_px or height > core_px):
                from zeropath.io.tissue import tissue_mask_for_source

                tissue, tissue_ds = tissue_mask_for_source(src)
            plan = plan_tiles(width, height, core_px, overlap_px, tissue, tissue_ds)
            full = plan_tiles(width, height, core_px, overlap_px)
            # A segmenter may tune itself to the whole input (e.g. one threshold per slide).
            adapt = getattr(segmenter, "adapt", None)
            if adapt is not None and len(plan) > 1:
                segmenter = adapt(src, list(plan.tiles))
            timings["plan_s"] = time.perf_counter() - t0
            canvas = _new_canvas((height, width), scratch)
            next_id = 1
            released = 0  # canvas rows above this one are done and no longer resident
            t_seg = t_meas = 0.0
            with ObjectWriter(staging, stem, mpp=src.mpp, classification=opts.classification) as ow:
                for i, tile in enumerate(plan):
                    if progress:
                        progress(i, len(plan), stem)
                    if tile.read.y0 > released:  # tiles are row-major: earlier rows are final
                        release_rows(canvas, released, tile.read.y0)
                        released = tile.read.y0
                    rgb = read_box(src, tile.read, work_mpp)
                    ts = time.perf_counter()
                    labels = segmenter.segment(rgb, work_mpp or src.mpp)
                    t_seg += time.perf_counter() - ts
                    if labels.shape != rgb.shape[:2]:
                        raise RuntimeError(
                            f"segmenter {segmenter.name} returned {labels.shape} for a "
                            f"{rgb.shape[:2]} tile"
                        )
                    if work_mpp is not None:  # back to the level-0 grid of the read box
                        labels = resize_labels(labels, tile.read.shape)
                        rgb = resize_rgb(rgb, tile.read.shape)
                    new_ids, next_id = paint_owned(canvas, labels, tile, next_id)
                    if new_ids.size == 0:
                        continue
                    tm = time.perf_counter()
                    final = np.asarray(canvas[tile.read.slices()])
                    offset = (tile.read.x0, tile.read.y0)
                    table = measure_objects(final, rgb, src.mpp, offset=offset, ids=new_ids)
                    polygons = label_polygons(final, offset=offset, ids=new_ids)
                    ow.add(table, polygons)
                    del final
                    t_meas += time.perf_counter() - tm
                if progress:
                    progress(len(plan), len(plan), stem)
            timings["segment_s"] = t_seg
            timings["measure_s"] = t_meas
            tw = time.perf_counter()
            pyramid = src.is_slide if opts.pyramid is None else opts.pyramid
            write_labels_tif(
                staging / f"{stem}.labels.tif", canvas, mpp=src.mpp, pyramid=pyramid or None
            )
            scale = min(1.0, opts.overlay_max_size / max(width, height))
            if scale < 1.0:
                base = src.thumbnail(opts.overlay_max_size)
            else:
                base = src.read_region(0, 0, width, height)
            small = (
                canvas
                if base.shape[:2] == canvas.shape
                else _downsampled_labels(canvas, base.shape[:2])
            )
            write_overlay(staging / f"{stem}.overlay.png", base, small)
            timings["write_s"] = time.perf_counter() - tw
            del canvas
            shutil.rmtree(scratch, ignore_errors=True)
            names = output_names(stem)
            timings["total_s"] = time.perf_counter() - t0
            result = SegmentResult(
                input=str(path),
                stem=stem,
                sha256=src.checksum,
                backend=src.backend,
                width=width,
                height=height,
                mpp=float(src.mpp),
                mpp_origin=src.mpp_origin,
                n_objects=next_id - 1,
                n_tiles=len(plan),
                n_tiles_total=len(full),
                outputs=[str(out / n) for n in names],
                timings={k: round(v, 4) for k, v in timings.items()},
                model_parameters=dict(segmenter.describe().get("params", {})),
            )
            sizes = {n: (staging / n).stat().st_size for n in names[:-1]}
            record = input_record(result, desc, fp, sizes, provenance)
            from zeropath.io.writers import write_run_json

            write_run_json(staging / names[-1], record)
            publish(staging, out, names)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def input_record(
    result: SegmentResult,
    model: Mapping[str, Any],
    fp: str,
    sizes: Mapping[str, int],
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The per-input provenance record (``STEM.run.json``): the result, when, with what."""
    versions = software_versions()
    record: dict[str, Any] = {
        **result.to_dict(),
        "timestamp": utc_timestamp(),
        "version": versions["zeropath"],
        "versions": versions,
        "model": {"name": model.get("name"), "sha256": model.get("sha256")},
        "fingerprint": fp,
        "output_sizes": dict(sizes),
    }
    record.pop("skipped", None)
    for k, v in (provenance or {}).items():
        record.setdefault(k, v)
    return record


__all__ = [
    "OUTPUT_SUFFIXES",
    "InputError",
    "InstanceSegmenter",
    "SegmentOptions",
    "SegmentResult",
    "completed_result",
    "fingerprint",
    "input_record",
    "output_names",
    "owned_objects",
    "paint_owned",
    "read_record",
    "segment_input",
    "software_versions",
    "utc_timestamp",
]
