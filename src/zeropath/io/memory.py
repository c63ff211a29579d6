"""Keeping resident memory flat while streaming through disk-backed arrays.

A file-backed ``np.memmap`` keeps every page it has touched resident until the kernel needs
the memory, so peak RSS of a whole-slide run would grow with the slide. Rows that a streaming
pass has finished with are handed back with ``madvise(MADV_DONTNEED)``: the data stay in the
file (shared mapping), only the process' resident pages go.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np


def _base_mmap(arr: Any) -> tuple[mmap.mmap, int] | None:
    """The ``mmap`` behind a C-contiguous ``np.memmap`` and the array's byte offset in it."""
    if not isinstance(arr, np.memmap) or not arr.flags.c_contiguous:
        return None
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return None
    # ``arr`` may start inside the mapping (e.g. after a .npy header).
    start = arr.__array_interface__["data"][0]
    base = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
    return mm, start - base


def release_rows(arr: Any, row_start: int, row_stop: int) -> bool:
    """Drop the resident pages of ``arr[row_start:row_stop]``; a no-op for in-RAM arrays.

    Returns ``True`` when pages were released. Only whole pages inside the row range are
    released, so neighbouring rows are never affected.
    """
    found = _base_mmap(arr)
    if found is None or row_stop <= row_start or arr.ndim < 1:
        return False
    mm, offset = found
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize
    lo = offset + max(0, row_start) * row_bytes
    hi = offset + min(arr.shape[0], row_stop) * row_bytes
    page = mmap.PAGESIZE
    lo = -(-lo // page) * page
    hi = (hi // page) * page
    if hi <= lo:
        return False
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - platform without it
        return False
    return True


__all__ = ["release_rows"]
