"""ZEUS scoring: tiles → image embeddings → cosine similarity per class → per-cell score maps.

Each tile's similarity to every class vector is added to all ``k × k`` cells it covers and the
sum is divided by the number of tiles covering the cell (its *coverage*), so a cell's score is
the mean over the overlapping tiles that saw it — the sliding-window averaging of ZEUS. The
maps are then smoothed with a Gaussian of ``sigma`` cells (normalised convolution, so cells
without coverage neither contribute nor drag their neighbours down) and the class of a tissue
cell is the argmax of its smoothed scores.

Memory is bounded by the grid (a few hundred cells a side) plus one batch of tiles: tiles are
read one batch ahead in a background thread while the encoder works on the current batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.tissue.grid import ScoreGrid

if TYPE_CHECKING:
    from zeropath.models.encoders.base import Encoder
    from zeropath.tissue.cache import EmbeddingCache

__all__ = [
    "ScoreStats",
    "accumulate_scores",
    "class_map",
    "mean_scores",
    "read_cells",
    "smooth_scores",
]

ProgressFn = Callable[[int, int | None, str], None]


@dataclass
class ScoreStats:
    """What the embedding pass did (for ``run.json``)."""

    n_tiles: int = 0
    n_encoded: int = 0
    n_cached: int = 0
    encode_s: float = 0.0
    read_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def read_cells(source: Any, grid: ScoreGrid, row: int, c0: int, c1: int) -> np.ndarray:
    """Cells ``[c0, c1)`` of cell row ``row`` as ``stride × (c1 - c0)·stride × 3`` uint8 at the
    working µm/px (white beyond the image).

    Read from the coarsest pyramid level still at least as fine as the working resolution and
    area-averaged (or bilinearly enlarged) to exactly ``stride`` pixels per cell, so a pixel
    has the same value in every tile that contains it.
    """
    from zeropath.io.tiler import read_rect

    x0, x1 = int(round(c0 * grid.cell)), int(round(c1 * grid.cell))
    y0, y1 = int(round(row * grid.cell)), int(round((row + 1) * grid.cell))
    shape = (grid.stride, (c1 - c0) * grid.stride)
    ds = grid.work_mpp / float(source.mpp)
    return read_rect(source, x0, y0, x1 - x0, y1 - y0, shape, ds, snap=round, box_filter=True)


def _tile_batches(
    source: Any, grid: ScoreGrid, todo: np.ndarray, batch_size: int, stats: ScoreStats
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(tiles (n, 2), pixels (n, tile, tile, 3))`` per batch of ``todo`` (``(N, 2)`` tile
    ``(row, col)`` in row-major order).

    Pixels come from a rolling band of ``k`` cell rows (one stride high each, read only where
    some pending tile needs them), so each slide pixel is read about once although tiles
    overlap ``k²``-fold, and memory holds ``k`` strips whatever the slide size.
    """
    import time

    k, stride = grid.k, grid.stride
    span_rows = max(grid.rows, k)
    span_cols = max(grid.cols, k)
    pending = np.zeros((grid.tile_rows, grid.tile_cols), bool)
    pending[todo[:, 0], todo[:, 1]] = True
    wanted = np.zeros((span_rows + k, span_cols + k), bool)  # cells some pending tile covers
    for di in range(k):
        for dj in range(k):
            wanted[di : di + grid.tile_rows, dj : dj + grid.tile_cols] |= pending
    strips: dict[int, np.ndarray] = {}

    def strip(r: int) -> np.ndarray:
        if r not in strips:
            t0 = time.perf_counter()
            band = np.full((stride, span_cols * stride, 3), 255, np.uint8)
            hit = np.concatenate([[False], wanted[r, :span_cols], [False]])
            edges = np.flatnonzero(hit[1:] != hit[:-1])
            for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
                band[:, c0 * stride : c1 * stride] = read_cells(source, grid, r, int(c0), int(c1))
            strips[r] = band
            stats.read_s += time.perf_counter() - t0
        return strips[r]

    for a in range(0, len(todo), batch_size):
        chunk = todo[a : a + batch_size]
        pixels = np.empty((len(chunk), grid.tile, grid.tile, 3), np.uint8)
        for n, (i, j) in enumerate(chunk.tolist()):
            for old in [r for r in strips if r < i]:
                del strips[old]
            for dr in range(k):
                pixels[n, dr * stride : (dr + 1) * stride] = strip(i + dr)[
                    :, j * stride : (j + k) * stride
                ]
        yield chunk, pixels


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead (errors re-raised here)."""
    import queue
    import threading

    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))

    thread = threading.Thread(target=work, name="zeropath-tiles", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def accumulate_scores(
    source: Any,
    grid: ScoreGrid,
    needed: np.ndarray,
    text: np.ndarray,
    get_encoder: Callable[[], Encoder],
    cache: EmbeddingCache,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    label: str = "",
) -> tuple[np.ndarray, np.ndarray, ScoreStats]:
    """Sum of tile similarities per cell and class, and the coverage of each cell.

    ``needed`` (``tile_rows × tile_cols`` bool) says which tiles to use; ``text`` is ``(C, D)``
    unit class vectors. Tiles whose embedding is in ``cache`` are not read nor encoded; the
    encoder is only built (``get_encoder()``) when some tile needs it. Returns
    ``(sums (C, rows, cols) float64, coverage (rows, cols) int32, stats)``.
    """
    import time

    from zeropath.models.encoders.base import l2_normalise

    text = np.asarray(text, np.float32)
    n_classes = text.shape[0]
    sums = np.zeros((n_classes, grid.rows, grid.cols), np.float64)
    coverage = np.zeros((grid.rows, grid.cols), np.int32)
    needed = np.asarray(needed, bool)
    stats = ScoreStats(n_tiles=int(needed.sum()))
    if stats.n_tiles == 0:
        return sums, coverage, stats

    rows_needed = [int(i) for i in np.flatnonzero(needed.any(axis=1))]
    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def row(i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in buffers:
            buffers[i] = cache.read_row(i)
        return buffers[i]

    # which tiles must be encoded: the cached flags (a small bool grid); row buffers of
    # embeddings exist only while a row is in flight, so memory stays flat
    done_all = cache.read_done()
    todo_parts: list[np.ndarray] = []
    pending_rows: dict[int, int] = {}
    for i in rows_needed:
        missing = np.flatnonzero(needed[i] & ~done_all[i])
        if missing.size:
            todo_parts.append(np.column_stack([np.full(missing.size, i), missing]))
            pending_rows[i] = int(missing.size)
        stats.n_cached += int(np.count_nonzero(needed[i] & done_all[i]))
    del done_all
    todo = np.concatenate(todo_parts).astype(np.int64) if todo_parts else np.zeros((0, 2), np.int64)
    stats.n_encoded = len(todo)

    batches = (
        _prefetch(_tile_batches(source, grid, todo, batch_size, stats)) if len(todo) else iter(())
    )
    encoder: Encoder | None = None
    processed = 0
    try:
        for i in rows_needed:
            while pending_rows.get(i, 0) > 0:
                chunk, pixels = next(batches)
                if encoder is None:
                    encoder = get_encoder()
                t0 = time.perf_counter()
                emb = l2_normalise(np.asarray(encoder.encode_images(pixels), np.float32))
                stats.encode_s += time.perf_counter() - t0
                if emb.shape != (len(chunk), text.shape[1]):
                    raise ValueError(
                        f"encoder returned {emb.shape} for {len(chunk)} tiles of dimension "
                        f"{text.shape[1]}"
                    )
                for (ti, tj), e in zip(chunk.tolist(), emb, strict=True):
                    vectors, done = row(ti)
                    vectors[tj] = e
                    done[tj] = True
                    pending_rows[ti] -= 1
                    if pending_rows[ti] == 0:
                        cache.write_row(ti, vectors, done)
            vectors, done = row(i)
            buffers.pop(i, None)
            use = needed[i]
            sims = vectors @ text.T  # (tile_cols, C) cosine similarities of unit vectors
            sims[~use] = 0.0
            _add_row(sums, coverage, sims.astype(np.float64), use, i, grid.k)
            processed += int(use.sum())
            if progress:
                progress(processed, stats.n_tiles, label)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return sums, coverage, stats


def _add_row(
    sums: np.ndarray, coverage: np.ndarray, sims: np.ndarray, use: np.ndarray, i: int, k: int
) -> None:
    """Add tile row ``i`` (``sims (tile_cols, C)``, zero where unused) to its ``k`` cell rows."""
    n_classes, rows, cols = sums.shape
    row_sum = np.zeros((n_classes, cols), np.float64)
    row_cov = np.zeros(cols, np.int32)
    tcols = sims.shape[0]
    for dj in range(k):  # each tile adds to the k cells to its right, origin included
        width = min(tcols, cols - dj)
        if width <= 0:
            break
        row_sum[:, dj : dj + width] += sims[:width].T
        row_cov[dj : dj + width] += use[:width]
    r1 = min(i + k, rows)
    sums[:, i:r1] += row_sum[:, None, :]
    coverage[i:r1] += row_cov[None, :]


def mean_scores(sums: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Per-cell mean similarity ``(C, rows, cols)`` float32; NaN where no tile covered the cell."""
    out = np.full(sums.shape, np.nan, np.float32)
    covered = coverage > 0
    out[:, covered] = (sums[:, covered] / coverage[covered]).astype(np.float32)
    return out


def smooth_scores(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each class map over covered cells only (normalised convolution).

    ``sigma`` is in cells; ``0`` returns a copy. Uncovered (NaN) cells stay NaN.
    """
    from scipy import ndimage as ndi

    scores = np.asarray(scores, np.float32)
    if sigma <= 0:
        return scores.copy()
    valid = np.isfinite(scores[0]) if scores.shape[0] else np.zeros(scores.shape[1:], bool)
    weight = valid.astype(np.float64)
    den = ndi.gaussian_filter(weight, sigma, mode="constant", truncate=3.0)
    out = np.full(scores.shape, np.nan, np.float32)
    for c in range(scores.shape[0]):
        num = ndi.gaussian_filter(
            np.where(valid, scores[c], 0.0).astype(np.float64), sigma, mode="constant", truncate=3.0
        )
        out[c][valid] = (num[valid] / den[valid]).astype(np.float32)
    return out


def class_map(
    scores: np.ndarray,
    tissue: np.ndarray,
    class_indices: np.ndarray,
    background_index: int = 0,
) -> np.ndarray:
    """``rows × cols`` uint8 class indices: the argmax class on tissue, ``background_index``
    elsewhere (and on tissue cells no tile covered). Ties go to the earlier class."""
    scores = np.asarray(scores, np.float32)
    tissue = np.asarray(tissue, bool)
    out = np.full(tissue.shape, background_index, np.uint8)
    if scores.shape[0] == 0:
        return out
    valid = tissue & np.isfinite(scores).all(axis=0)
    best = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)
    out[valid] = np.asarray(class_indices, np.uint8)[best[valid]]
    return out
