"""ZEUS zero-shot tissue segmentation of one slide, and the per-slide task for batches.

Steps (one slide, bounded memory):

1. tissue mask on a thumbnail (:func:`zeropath.io.tissue.tissue_mask`), pooled onto the
   score grid (cells of one stride at the encoder's µm/px, :mod:`~zeropath.tissue.grid`);
2. tiles of ``tile`` px (default the encoder's input size) every ``stride`` px (default a
   quarter tile) at the encoder's µm/px, only where they cover tissue, read in batches and
   embedded — or taken from the embedding cache (:mod:`~zeropath.tissue.cache`);
3. cosine similarity to each class vector, averaged per cell over the covering tiles,
   Gaussian-smoothed, argmax on tissue (:mod:`~zeropath.tissue.scoring`);
4. outputs (:mod:`~zeropath.tissue.outputs`) staged in a hidden folder and moved into place
   only when all are written, the score store last: its attributes hold the run's fingerprint,
   which lets a rerun skip slides whose outputs are complete and current.

:class:`TissueTask` is what :func:`zeropath.run.batch.run_many` calls per slide, in this
process, in worker processes or on Dask workers. It carries the class vectors (computed once
from the prompts) and a reference to the encoder that a worker loads only if some tile is not
in the cache.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.tissue.prompts import PromptSet

if TYPE_CHECKING:
    from zeropath.models.encoders.base import Encoder

__all__ = [
    "OUTPUT_SUFFIXES",
    "EncoderRef",
    "TissueOptions",
    "TissueResult",
    "TissueTask",
    "completed_result",
    "run_record",
    "segment_slide",
]

ProgressFn = Callable[[int, int | None, str], None]

#: Files written per slide (flat in the output folder), the score store last.
OUTPUT_SUFFIXES = (".tissue.tif", ".tissue.geojson", ".tissue.overlay.png", ".scores.zarr")


@dataclass(frozen=True)
class TissueOptions:
    """Parameters of a ZEUS run (sizes in pixels at the working µm/px).

    ``tile``/``stride``: ``None`` → the encoder's input size and a quarter tile (or the nearest
    finer divisor; ZEUS: 448 / 112 for CONCH). ``work_mpp``: ``None`` → the encoder's µm/px.
    ``sigma``: Gaussian smoothing of the score maps in cells. ``out_mpp``: µm/px of
    ``STEM.tissue.tif``, snapped to an integer downsample of level 0. ``tissue_only``: ``None``
    → tissue detection on slides only (plain images are all tissue). ``cache_dir``: ``None`` →
    no embedding cache.
    """

    tile: int | None = None
    stride: int | None = None
    work_mpp: float | None = None
    batch_size: int = 32
    sigma: float = 1.0
    out_mpp: float | None = 2.0
    tissue_only: bool | None = None
    min_tissue_fraction: float = 0.25
    thumbnail_size: int = 2048
    overlay_max_size: int = 2048
    cache_dir: str | None = None
    threads: int | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """The options that change the outputs (not batch size, threads or cache place)."""
        skip = {"batch_size", "cache_dir", "threads"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


_ENCODERS: dict[tuple[str, str], Encoder] = {}


@dataclass
class EncoderRef:
    """An encoder that travels to worker processes by name and is loaded there on first use.

    ``spec`` is what :func:`~zeropath.models.encoders.get_encoder` takes (a registry name
    or a local directory); with ``spec=None`` the ``instance`` itself is pickled (encoders
    built in Python). The static facts (``name``, ``input_size``, ``mpp``, ``embed_dim``,
    ``provenance``) are copied so that planning and cache keys need no loaded model.
    """

    spec: str | None
    device: str = "cpu"
    instance: Encoder | None = None
    name: str = ""
    input_size: int = 224
    mpp: float = 0.5
    embed_dim: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    @classmethod
    def of(cls, encoder: Encoder, spec: str | None = None, device: str = "cpu") -> EncoderRef:
        """A reference to a loaded ``encoder`` (reloadable by ``spec`` in other processes)."""
        return cls(
            spec=spec,
            device=device,
            instance=encoder,
            name=str(encoder.name),
            input_size=int(encoder.input_size),
            mpp=float(encoder.mpp),
            embed_dim=int(encoder.embed_dim),
            provenance=dict(getattr(encoder, "provenance", {}) or {}),
        )

    def get(self) -> Encoder:
        """The encoder, loaded once per process."""
        if self.instance is None:
            if self.threads:
                import torch

                torch.set_num_threads(int(self.threads))
            key = (str(self.spec), self.device)
            if key not in _ENCODERS:
                from zeropath.models.encoders import get_encoder

                _ENCODERS[key] = get_encoder(str(self.spec), device=self.device)
            self.instance = _ENCODERS[key]
        return self.instance

    def weights_id(self) -> str:
        """What identifies the weights: sha256, else revision, else the provenance as text."""
        p = self.provenance
        return str(p.get("sha256") or p.get("revision") or sorted(p.items()))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.spec is not None:
            state["instance"] = None  # reload by name in the worker
        return state


@dataclass
class TissueResult:
    """What one slide produced (a row of ``run.json``)."""

    input: str
    stem: str
    sha256: str
    backend: str
    width: int
    height: int
    mpp: float
    mpp_origin: str
    grid: dict[str, Any]
    out_mpp: float
    out_downsample: int
    n_tiles: int
    n_tiles_total: int
    n_encoded: int
    n_cached: int
    tissue_fraction: float
    class_fractions: dict[str, float]
    n_regions: int
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fingerprint(
    path: Path, prompts: PromptSet, options: TissueOptions, encoder: EncoderRef, mpp: float | None
) -> str:
    """Identity of a slide's outputs: the input file, prompts, options, encoder and µm/px."""
    import hashlib
    import json

    st = path.stat()
    fields = {
        "input": [path.name, st.st_size, st.st_mtime_ns],
        "prompts": prompts.fingerprint(),
        "options": options.fingerprint_fields(),
        "encoder": [encoder.name, encoder.weights_id()],
        "mpp": mpp,
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def completed_result(out_dir: Path, stem: str, fingerprint: str) -> TissueResult | None:
    """The recorded result when ``out_dir`` already holds this slide's complete, current outputs."""
    if not all((out_dir / f"{stem}{s}").exists() for s in OUTPUT_SUFFIXES):
        return None
    try:
        import zarr

        attrs = dict(zarr.open_group(store=str(out_dir / f"{stem}.scores.zarr"), mode="r").attrs)
    except Exception:  # an unreadable store is simply not complete
        return None
    if attrs.get("fingerprint") != fingerprint or not isinstance(attrs.get("result"), dict):
        return None
    try:
        result = TissueResult(**attrs["result"])
    except TypeError:
        return None
    result.skipped = True
    return result


def _move_into_place(staging: Path, out: Path, names: list[str]) -> list[str]:
    """Move staged outputs into ``out`` (replacing old ones) all or nothing; the score store
    goes last (see :func:`zeropath.run.staging.publish`)."""
    from zeropath.run.staging import publish

    return [str(p) for p in publish(staging, out, names)]


def segment_slide(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    encoder: EncoderRef,
    text: np.ndarray,
    prompts: PromptSet,
    options: TissueOptions | None = None,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    skip_complete: bool = True,
) -> TissueResult:
    """Segment one image or slide into the prompt classes and write its outputs.

    ``text`` is ``(C, D)``: the class vectors of ``prompts.classes`` (see
    :func:`~zeropath.tissue.prompts.class_embeddings`). With ``skip_complete``, a slide whose
    outputs in ``out_dir`` are complete and were made with the same input, prompts, options
    and encoder is not recomputed (its recorded result is returned with ``skipped=True``).
    Raises :class:`~zeropath.errors.InputError` for unusable inputs and
    :class:`~zeropath.errors.ConfigError` for impossible options.
    """
    from zeropath.io.reader import open_image
    from zeropath.io.tissue import is_blank, tissue_mask
    from zeropath.tissue.cache import EmbeddingCache
    from zeropath.tissue.grid import ScoreGrid, resolve_tiling
    from zeropath.tissue.outputs import (
        class_regions,
        output_downsample,
        write_class_tif,
        write_overlay,
        write_regions_geojson,
        write_scores_zarr,
    )
    from zeropath.tissue.scoring import accumulate_scores, class_map, mean_scores, smooth_scores

    opts = options or TissueOptions()
    text = np.asarray(text, np.float32)
    if text.shape[0] != len(prompts.classes):
        raise ValueError(f"{text.shape[0]} class vectors for {len(prompts.classes)} classes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(path)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    with open_image(path, mpp=mpp) as src:
        stem = src.stem
        fingerprint = _fingerprint(path, prompts, opts, encoder, mpp)
        if skip_complete:
            done = completed_result(out, stem, fingerprint)
            if done is not None:
                return done
        width, height = src.dimensions
        tile, stride = resolve_tiling(opts.tile, opts.stride, encoder.input_size)
        work_mpp = float(opts.work_mpp or encoder.mpp)
        grid = ScoreGrid.build(width, height, src.mpp, work_mpp, tile, stride)

        # 1. tissue on a thumbnail, pooled onto the grid
        thumb = src.thumbnail(opts.thumbnail_size)
        th, tw = thumb.shape[:2]
        tissue_only = src.is_slide if opts.tissue_only is None else opts.tissue_only
        if tissue_only:
            sx, sy = width / tw, height / th
            mask = tissue_mask(thumb, mpp=src.mpp * (sx + sy) / 2.0)
            tissue = grid.tissue_cells(mask, (sx, sy), opts.min_tissue_fraction)
        else:  # a plain image is classified whole, unless it holds no stain at all
            tissue = np.full((grid.rows, grid.cols), not is_blank(thumb), bool)
        needed = grid.tiles_needed(tissue)
        timings["tissue_s"] = time.perf_counter() - t0

        # 2-3. embeddings (cached) → per-cell scores
        t1 = time.perf_counter()
        cache = EmbeddingCache(
            opts.cache_dir,
            stem,
            {
                "slide_sha256": src.checksum,
                "encoder": encoder.name,
                "weights": encoder.weights_id(),
                "embed_dim": encoder.embed_dim,
                "work_mpp": round(work_mpp, 6),
                "tile": tile,
                "stride": stride,
                "grid": [grid.tile_rows, grid.tile_cols],
            },
            (grid.tile_rows, grid.tile_cols),
            text.shape[1],
        )
        sums, coverage, stats = accumulate_scores(
            src, grid, needed, text, encoder.get, cache, opts.batch_size, progress, stem
        )
        raw = mean_scores(sums, coverage)
        scores = smooth_scores(raw, opts.sigma)
        classes = class_map(scores, tissue, prompts.scored_indices, prompts.background_index)
        timings["score_s"] = time.perf_counter() - t1
        timings["encode_s"] = stats.encode_s
        timings["read_s"] = stats.read_s

        # 4. outputs, staged
        t2 = time.perf_counter()
        table = prompts.table()
        ds = output_downsample(src.mpp, opts.out_mpp)
        from zeropath.run.staging import make_staging

        staging = make_staging(out, stem, "tissue-partial")
        try:
            names = [f"{stem}{s}" for s in OUTPUT_SUFFIXES]
            write_class_tif(
                staging / names[0],
                classes,
                grid,
                ds,
                table,
                pyramid=src.is_slide or None,
                extra={"cell_px_level0": grid.cell, "stride_um": stride * work_mpp},
            )
            regions = class_regions(classes, grid)
            write_regions_geojson(staging / names[1], regions, table, stem, src.mpp)
            write_overlay(
                staging / names[2],
                thumb
                if max(th, tw) <= opts.overlay_max_size
                else src.thumbnail(opts.overlay_max_size),
                classes,
                grid,
                table,
            )
            n_tissue = int(tissue.sum())
            names_by_index = {row["index"]: row["name"] for row in table}
            counts = np.bincount(classes[tissue], minlength=256) if n_tissue else np.zeros(256)
            fractions = {
                names_by_index[i]: round(float(counts[i]) / n_tissue, 6) if n_tissue else 0.0
                for i in sorted(names_by_index)
            }
            timings["write_s"] = time.perf_counter() - t2
            timings["total_s"] = time.perf_counter() - t0
            result = TissueResult(
                input=str(path),
                stem=stem,
                sha256=src.checksum,
                backend=src.backend,
                width=width,
                height=height,
                mpp=float(src.mpp),
                mpp_origin=src.mpp_origin,
                grid=grid.describe(),
                out_mpp=float(src.mpp) * ds,
                out_downsample=ds,
                n_tiles=stats.n_tiles,
                n_tiles_total=grid.tile_rows * grid.tile_cols,
                n_encoded=stats.n_encoded,
                n_cached=stats.n_cached,
                tissue_fraction=round(n_tissue / tissue.size, 6),
                class_fractions=fractions,
                n_regions=len(regions),
                outputs=[str(out / n) for n in names],
                timings={k: round(v, 4) for k, v in timings.items()},
            )
            write_scores_zarr(
                staging / names[3],
                scores,
                raw,
                coverage,
                tissue,
                classes,
                {
                    "score_classes": [
                        {"axis": n, "index": c.index, "name": c.name}
                        for n, c in enumerate(prompts.classes)
                    ],
                    "classes": table,
                    "background_index": prompts.background_index,
                    "sigma_cells": opts.sigma,
                    "mpp": float(src.mpp),
                    **grid.describe(),
                    "encoder": {"name": encoder.name, **encoder.provenance},
                    "prompts": prompts.to_dict(),
                    "fingerprint": fingerprint,
                    "result": result.to_dict(),
                },
            )
            _move_into_place(staging, out, names)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class TissueTask:
    """``task(path, out_dir, progress)`` → :class:`TissueResult`, picklable for workers."""

    encoder: EncoderRef
    text: np.ndarray
    prompts: PromptSet
    options: TissueOptions = field(default_factory=TissueOptions)
    mpp: float | None = None
    skip_complete: bool = True

    def __call__(self, path: str, out_dir: str, progress: ProgressFn | None = None) -> TissueResult:
        return segment_slide(
            path,
            out_dir,
            self.encoder,
            self.text,
            self.prompts,
            self.options,
            mpp=self.mpp,
            progress=progress,
            skip_complete=self.skip_complete,
        )


def run_record(
    results: list[TissueResult],
    failures: list[Any],
    wall_s: float,
    encoder: EncoderRef,
    prompts: PromptSet,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """The ``run.json`` record of a tissue batch (``failures`` have ``.input``, ``.message``)."""
    import platform

    from zeropath import __version__

    weights = encoder.provenance.get("sha256") or encoder.provenance.get("revision")
    return {
        "version": __version__,
        "command": parameters.get("command", "tissue segment"),
        "model": {"name": encoder.name, "sha256": encoder.provenance.get("sha256")},
        "encoder": {
            "name": encoder.name,
            "spec": encoder.spec,
            "weights": weights,
            "input_size": encoder.input_size,
            "mpp": encoder.mpp,
            "embed_dim": encoder.embed_dim,
            "device": encoder.device,
            "provenance": encoder.provenance,
        },
        "prompts": {
            **prompts.to_dict(),
            "source": prompts.source,
            "fingerprint": prompts.fingerprint(),
            "table": prompts.table(),
            "background_index": prompts.background_index,
        },
        "parameters": parameters,
        "inputs": [r.to_dict() for r in results],
        "failures": [{"input": f.input, "error": f.message} for f in failures],
        "mpp": {r.stem: {"value": r.mpp, "origin": r.mpp_origin} for r in results},
        "timings": {
            "wall_s": round(wall_s, 3),
            "encode_s": round(
                sum(r.timings.get("encode_s", 0.0) for r in results if not r.skipped), 3
            ),
        },
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
