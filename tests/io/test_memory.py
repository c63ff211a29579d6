"""Releasing finished rows of disk-backed canvases keeps data and drops resident pages."""

import numpy as np

from zeropath.io.memory import release_rows


def _rss_pages_of(arr: np.memmap) -> int:
    import mmap
    import os

    # mincore is not exposed in Python; count resident pages via /proc/self/smaps instead.
    path = os.path.realpath(arr.filename)
    total = 0
    with open("/proc/self/smaps") as fh:
        inside = False
        for line in fh:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024 // mmap.PAGESIZE
    return total


def test_release_rows_keeps_values_and_drops_pages(tmp_path):
    a = np.lib.format.open_memmap(
        tmp_path / "c.npy", mode="w+", dtype=np.uint32, shape=(2048, 2048)
    )
    a[:] = np.arange(2048, dtype=np.uint32)[:, None]
    before = _rss_pages_of(a)
    assert release_rows(a, 0, 1024)
    after = _rss_pages_of(a)
    assert after < before * 0.6
    # values come back from the file
    assert int(a[10, 3]) == 10 and int(a[1023, 7]) == 1023 and int(a[2047, 0]) == 2047


def test_release_rows_ignores_plain_arrays_and_empty_ranges(tmp_path):
    assert not release_rows(np.zeros((8, 8)), 0, 4)
    a = np.lib.format.open_memmap(tmp_path / "c.npy", mode="w+", dtype=np.uint8, shape=(8, 8))
    assert not release_rows(a, 4, 4)
    assert not release_rows(a, 0, 1)  # less than a page: nothing to release
