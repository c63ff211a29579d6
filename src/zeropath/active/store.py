"""What an active-learning run keeps on disk: its state, its labels and its annotation queue.

Layout under ``OUT``::

    state/<strategy>-seed<N>/state.json    the run's state (below), rewritten atomically
    state/<strategy>-seed<N>/labels/ID.png  imported region masks (class indices, uint8)
    queue/index.json      the regions waiting for an annotator
    queue/ID.json         one region: image path, box, round, mask file name
    queue/ID.png          the region's pixels (what the annotator sees)
    queue/ID.mask.png     written by the annotator: class index per pixel (0/255 for binary
                          tasks); or a QuPath GeoJSON as ID.geojson or STEM.geojson

``state.json`` holds the run's identity (options that must not change on resume), the labelled
region ids with the round that labelled them, the pending (selected, not yet labelled) ids,
the round counter, the numpy ``Generator`` state and the curve rows — everything a resumed run
needs to continue exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ConfigError, InputError

__all__ = ["QueueStore", "RunState", "StateStore", "run_key"]

STATE_VERSION = 1


def run_key(strategy: str, seed: int) -> str:
    """The folder name of one (strategy, seed) run under ``OUT/state``."""
    return f"{strategy}-seed{int(seed)}"


@dataclass
class RunState:
    """The mutable state of one run (see the module docstring)."""

    identity: dict[str, Any]
    labelled: list[list[Any]] = field(default_factory=list)  # [region id, round]
    pending: list[str] = field(default_factory=list)
    round: int = -1
    rng: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "identity": self.identity,
            "labelled": self.labelled,
            "pending": self.pending,
            "round": self.round,
            "rng": self.rng,
            "rows": self.rows,
            "timings": self.timings,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(
            identity=dict(data["identity"]),
            labelled=[list(x) for x in data.get("labelled", [])],
            pending=list(data.get("pending", [])),
            round=int(data.get("round", -1)),
            rng=data.get("rng"),
            rows=list(data.get("rows", [])),
            timings=list(data.get("timings", [])),
            status=str(data.get("status", "running")),
        )

    @property
    def labelled_ids(self) -> list[str]:
        return [str(x[0]) for x in self.labelled]


class StateStore:
    """``OUT/state/<key>/``: the state JSON and the imported label masks."""

    def __init__(self, out: str | os.PathLike[str], key: str) -> None:
        self.dir = Path(out) / "state" / key
        self.path = self.dir / "state.json"
        self.labels_dir = self.dir / "labels"

    def load(self) -> RunState | None:
        """The saved state, or ``None`` when this run has none yet."""
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"unreadable run state: {exc}") from None
        if data.get("version") != STATE_VERSION:
            raise ConfigError(f"{self.path}: state version {data.get('version')} not supported")
        return RunState.from_dict(data)

    def save(self, state: RunState) -> None:
        """Write the state atomically (a crash leaves the previous complete state)."""
        from zeropath.io.writers import write_run_json

        write_run_json(self.path, state.to_dict())

    def label_path(self, rid: str) -> Path:
        return self.labels_dir / f"{rid}.png"

    def save_label(self, rid: str, mask: np.ndarray) -> None:
        from PIL import Image

        from zeropath.io.writers import atomic_write

        with atomic_write(self.label_path(rid)) as tmp:
            Image.fromarray(np.asarray(mask, np.uint8)).save(tmp, format="PNG")

    def load_label(self, rid: str) -> np.ndarray:
        from zeropath.io.datasets import read_label_image

        return np.asarray(read_label_image(self.label_path(rid)), np.int64)


class QueueStore:
    """``OUT/queue/``: regions waiting for an annotator and the masks they drop in."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.dir = Path(out) / "queue"

    def entry_path(self, rid: str) -> Path:
        return self.dir / f"{rid}.json"

    def mask_path(self, rid: str) -> Path:
        return self.dir / f"{rid}.mask.png"

    def geojson_paths(self, rid: str, stem: str) -> list[Path]:
        """Where a GeoJSON for this region may be: ``ID.geojson``, then ``STEM.geojson``."""
        return [
            p for p in (self.dir / f"{rid}.geojson", self.dir / f"{stem}.geojson") if p.is_file()
        ]

    def write(
        self,
        entries: Sequence[Mapping[str, Any]],
        crops: Mapping[str, np.ndarray],
        run: Mapping[str, Any],
    ) -> Path:
        """Write one JSON (+ crop PNG) per entry and ``index.json`` listing them."""
        from PIL import Image

        from zeropath.io.writers import atomic_write, write_run_json

        for e in entries:
            rid = str(e["id"])
            write_run_json(self.entry_path(rid), e)
            crop = crops.get(rid)
            png = self.dir / f"{rid}.png"
            if crop is not None and not png.is_file():
                with atomic_write(png) as tmp:
                    Image.fromarray(np.asarray(crop, np.uint8)).save(tmp, format="PNG")
        index = {**run, "regions": [str(e["id"]) for e in entries]}
        return write_run_json(self.dir / "index.json", index)

    def remove(self, rids: Sequence[str]) -> None:
        """Forget regions whose labels were imported (their files leave the queue)."""
        for rid in rids:
            for p in (
                self.entry_path(rid),
                self.dir / f"{rid}.png",
                self.mask_path(rid),
                self.dir / f"{rid}.geojson",
            ):
                p.unlink(missing_ok=True)

    def clear_index(self, run: Mapping[str, Any]) -> None:
        from zeropath.io.writers import write_run_json

        if self.dir.is_dir():
            write_run_json(self.dir / "index.json", {**run, "regions": []})
