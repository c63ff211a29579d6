"""The annotation queue of an active-learning run (``OUT/queue/``), answered in the viewer.

Without an oracle, ``zeropath active run`` queues the regions it selected for a person to
label. The folder's format — ``index.json``, one ``ID.json`` per region, the ``ID.mask.png``
answers, how classes and the unlabelled value are found — is :mod:`zeropath.active.queue`'s,
which both the loop and this module use to write and read it. Here: the queue as the page
sees it (re-read when the loop rewrites the index), masks as run lengths or PNGs, and their
validation.

*Unlabelled pixels.* The page keeps unpainted pixels as :data:`UNLABELLED` (255); a queue
with an unlabelled value saves them as that value, and the server refuses them where the
queue has none (the loop needs a class for every pixel then).

Region ids come only from the index and must be plain file names (no separators, no leading
dot, no control characters), so a request can never name a file outside the queue folder.
Masks are validated (size, class values) and written atomically. Nothing here knows HTTP.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.active.queue import (
    MAX_REGION_PIXELS,
    UNLABELLED,
    QueueClass,
    QueueIndex,
    QueueRegion,
    QueueStore,
    find_queue,
    parse_classes,
    valid_id,
)
from zeropath.errors import InputError, ZeropathError

__all__ = [
    "MAX_REGION_PIXELS",
    "UNLABELLED",
    "AnnotationQueue",
    "MaskError",
    "QueueClass",
    "QueueRegion",
    "decode_mask_png",
    "encode_mask_png",
    "find_queue",
    "parse_classes",
    "rle_decode",
    "rle_encode",
]


class MaskError(ZeropathError):
    """A submitted mask does not fit its region (size, class values, encoding)."""


# --------------------------------------------------------------------------- masks


def rle_encode(mask: np.ndarray) -> list[int]:
    """Row-major run lengths as a flat ``[value, count, value, count, ...]`` list."""
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    if flat.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    counts = np.diff(np.r_[starts, flat.size])
    out = np.empty(2 * starts.size, np.int64)
    out[0::2] = flat[starts]
    out[1::2] = counts
    return out.tolist()


def rle_decode(rle: Any, width: int, height: int) -> np.ndarray:
    """The ``height×width`` uint8 mask of :func:`rle_encode`'s list; :class:`MaskError` if
    the list is malformed or does not cover the mask exactly.

    ``rle`` comes from a request: every item must be a Python ``int`` (not a bool, a float
    or a string) and the sizes are checked in Python integers before numpy sees them.
    """
    if type(width) is not int or type(height) is not int or width < 1 or height < 1:
        raise MaskError(f"mask size must be positive integers, not {width!r}×{height!r}")
    size = width * height
    if size > MAX_REGION_PIXELS:
        raise MaskError(f"a {width}×{height} mask is larger than {MAX_REGION_PIXELS} pixels")
    if not isinstance(rle, list) or len(rle) % 2:
        raise MaskError("rle must be a flat list [value, count, ...] of even length")
    if any(type(item) is not int for item in rle):
        raise MaskError("rle must be a flat list of integers")
    values, counts = rle[0::2], rle[1::2]
    if any(not 0 <= v <= 255 for v in values):
        raise MaskError("rle values must lie in 0..255")
    if any(not 0 < c <= size for c in counts):
        raise MaskError(f"rle counts must be positive and at most {size}")
    total = sum(counts)  # exact: Python integers, each at most ``size``
    if total != size:
        raise MaskError(f"rle covers {total} pixels, the region has {width}×{height}")
    return np.repeat(np.array(values, np.uint8), np.array(counts, np.int64)).reshape(height, width)


def decode_mask_png(data: bytes) -> np.ndarray:
    """A greyscale (or palette) PNG as a 2-D uint8 array; :class:`MaskError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise MaskError(f"mask must be a PNG, got {im.format}")
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise MaskError(
                    f"mask PNG must be greyscale (one class index per pixel), not {im.mode}"
                )
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MaskError(f"cannot decode the mask PNG: {exc}") from None
    if arr.ndim != 2:
        raise MaskError("mask PNG must have one channel")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise MaskError("mask values must lie in 0..255")
        arr = arr.astype(np.uint8)
    return arr


def encode_mask_png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- the queue


# --------------------------------------------------------------------------- the queue


class AnnotationQueue:
    """The regions waiting in one queue folder; re-reads ``index.json`` when it changes."""

    def __init__(
        self, folder: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
    ):
        self.folder = Path(folder).resolve()
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else self.folder.parent
        self.store = QueueStore(self.run_dir, self.folder)
        self.index_path = self.store.index_path
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._index = QueueIndex(self.index_path, [], {}, {})
        self.refresh()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AnnotationQueue:
        """The queue of a run folder, a queue folder or ``index.json`` (see :func:`find_queue`)."""
        folder, run_dir = find_queue(path)
        return cls(folder, run_dir)

    # ------------------------------------------------------------------ index

    def refresh(self) -> None:
        """Read ``index.json`` again if it changed on disk (the loop may rewrite it)."""
        with self._lock:
            try:
                st = self.index_path.stat()
            except OSError:
                raise InputError(self.index_path, "the queue index has disappeared") from None
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            self._index = self.store.read_index()
            self._stamp = stamp

    @property
    def warnings(self) -> list[str]:
        return self._index.warnings

    @property
    def ids(self) -> list[str]:
        self.refresh()
        return list(self._index.order)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and rid in self.ids

    def _check_id(self, rid: str) -> str:
        self.refresh()
        if not valid_id(rid) or rid not in self._index.entries:
            raise KeyError(rid)
        return rid

    # ------------------------------------------------------------------ regions

    def region(self, rid: str) -> QueueRegion:
        """Region ``rid`` of the index (KeyError when it is not queued; :class:`InputError`
        when its files are unusable)."""
        rid = self._check_id(rid)
        return self.store.region(self._index, rid)

    # ------------------------------------------------------------------ masks

    def mask_path(self, rid: str) -> Path:
        return self.store.mask_path(self._check_id(rid))

    def is_done(self, rid: str) -> bool:
        return self.mask_path(rid).is_file()

    def read_mask(self, rid: str) -> np.ndarray | None:
        """The saved mask of ``rid``, or None when there is none yet."""
        path = self.mask_path(rid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode_mask_png(data)
        except MaskError as exc:
            raise InputError(path, str(exc)) from None

    def validate(self, region: QueueRegion, mask: np.ndarray) -> np.ndarray:
        """``mask`` as uint8 if it fits ``region``; :class:`MaskError` naming what does not."""
        mask = np.asarray(mask)
        if mask.shape != (region.height, region.width):
            got = "×".join(str(s) for s in mask.shape[::-1])
            raise MaskError(
                f"mask is {got} pixels, region {region.id!r} is {region.width}×{region.height}"
            )
        if mask.dtype.kind not in "ui" and mask.dtype != np.bool_:
            raise MaskError(f"mask must hold integers, not {mask.dtype}")
        present = set(np.unique(mask).tolist())
        bad = sorted(present - region.values)
        allowed = sorted(c.index for c in region.classes)
        if bad == [UNLABELLED] and region.unlabelled is None:
            n = int((mask == UNLABELLED).sum())
            raise MaskError(
                f"{n} pixels are unlabelled ({UNLABELLED}); this queue needs a class "
                f"{allowed} for every pixel"
            )
        if bad:
            also = (
                "" if region.unlabelled is None else f" or the unlabelled value {region.unlabelled}"
            )
            raise MaskError(f"mask holds values {bad[:5]} that are not classes {allowed}{also}")
        return mask.astype(np.uint8)

    def save_mask(self, rid: str, mask: np.ndarray) -> Path:
        """Validate ``mask`` against region ``rid`` and write ``rid.mask.png`` atomically."""
        from PIL import Image

        from zeropath.io.writers import atomic_write

        region = self.region(rid)
        mask = self.validate(region, mask)
        path = self.mask_path(rid)
        with self._lock, atomic_write(path) as tmp:
            Image.fromarray(np.ascontiguousarray(mask), mode="L").save(tmp, format="PNG")
        return path

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        """The queue for the page: regions (id, round, done), progress."""
        ids = self.ids
        index = self._index
        regions = []
        for rid in ids:
            item: dict[str, Any] = {"id": rid, "done": self.is_done(rid)}
            rnd = self.store.entry_round(index, rid)
            if rnd is not None:
                item["round"] = rnd
            regions.append(item)
        done = sum(r["done"] for r in regions)
        return {
            "queue": str(self.folder),
            "regions": regions,
            "done": done,
            "total": len(regions),
            "warnings": list(self.warnings),
        }
