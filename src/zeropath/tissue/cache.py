"""Tile embeddings of a slide cached on disk, so that a new prompt set costs no encoder time.

Image embeddings depend on the pixels and the encoder, never on the prompts: one ZEUS pass
over a slide stores every tile's embedding in a zarr store, and any later prompt set on the
same slide (same encoder, µm/px, tile and stride) only computes cosine similarities.

The store is ``ROOT/STEM-KEY.zarr`` with ``KEY`` = SHA-256 of ``{slide sha256, encoder name,
encoder weights id (sha256 / revision), embedding size, work µm/px, tile, stride}``; ``ROOT``
defaults to ``$ZEROPATH_HOME/embeddings`` (the user cache directory, e.g.
``~/.cache/zeropath/embeddings``), shared by every output folder. It holds
``embeddings`` (tile rows × tile cols × D, float32, one chunk per tile row) and ``done``
(tile rows × tile cols, bool). A row's flags are written after its embeddings, so an
interrupted run leaves only valid rows behind and a rerun continues from there.
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EmbeddingCache", "cache_key", "default_cache_dir"]

_FORMAT = 1


def default_cache_dir() -> Path:
    """``$ZEROPATH_HOME/embeddings`` (by default the user cache's ``zeropath/embeddings``)."""
    from zeropath.models.cache import home

    return home() / "embeddings"


def cache_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of ``fields`` as canonical JSON."""
    text = json.dumps({"format": _FORMAT, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Row-wise read/write access to one slide's cached tile embeddings.

    With ``root=None`` nothing is stored: every row reads as not done and writes are dropped.
    """

    def __init__(
        self,
        root: str | PathLike[str] | None,
        stem: str,
        fields: dict[str, Any],
        tile_shape: tuple[int, int],
        dim: int,
    ) -> None:
        self.key = cache_key(fields)
        self.fields = dict(fields)
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))
        self.dim = int(dim)
        self.path = (
            None if root is None else Path(root).expanduser() / f"{stem}-{self.key[:32]}.zarr"
        )
        self._group: Any = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _open(self) -> Any:
        if self._group is not None or self.path is None:
            return self._group
        import zarr

        self.path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(store=str(self.path), mode="a")
        rows, cols = self.tile_shape
        ok = (
            "embeddings" in group
            and "done" in group
            and tuple(group["embeddings"].shape) == (rows, cols, self.dim)
            and group.attrs.get("key") == self.key
        )
        if not ok:  # new, or a stale/foreign layout: start it afresh
            group = zarr.open_group(store=str(self.path), mode="w")
            group.create_array(
                "embeddings",
                shape=(rows, cols, self.dim),
                chunks=(1, cols, self.dim),
                dtype="float32",
                fill_value=0.0,
            )
            group.create_array(
                "done", shape=(rows, cols), chunks=(1, cols), dtype="bool", fill_value=False
            )
            group.attrs.update({"key": self.key, "fields": self.fields, "format": _FORMAT})
        self._group = group
        return group

    def read_row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings (cols, D) float32, done (cols,) bool)`` of tile row ``i``."""
        cols = self.tile_shape[1]
        group = self._open()
        if group is None:
            return np.zeros((cols, self.dim), np.float32), np.zeros(cols, bool)
        done = np.asarray(group["done"][i], bool)
        if not done.any():
            return np.zeros((cols, self.dim), np.float32), done
        return np.asarray(group["embeddings"][i], np.float32), done

    def read_done(self) -> np.ndarray:
        """``(tile rows, tile cols)`` bool: which tiles have a cached embedding."""
        group = self._open()
        if group is None:
            return np.zeros(self.tile_shape, bool)
        return np.asarray(group["done"][...], bool)

    def write_row(self, i: int, embeddings: np.ndarray, done: np.ndarray) -> None:
        """Store tile row ``i`` (embeddings first, then its done flags)."""
        group = self._open()
        if group is None:
            return
        group["embeddings"][i] = np.asarray(embeddings, np.float32)
        group["done"][i] = np.asarray(done, bool)
