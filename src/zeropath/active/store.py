"""What an active-learning run keeps on disk: its state, its labels and its annotation queue.

Layout under ``OUT``::

    state/<strategy>-seed<N>/state.json    the run's state (below), rewritten atomically
    state/<strategy>-seed<N>/labels/ID.png  imported region masks (class indices, uint8)
    queue/                the regions waiting for an annotator (:mod:`.queue`)

``state.json`` holds the run's identity (options that must not change on resume), the labelled
region ids with the round that labelled them, the pending (selected, not yet labelled) ids,
the round counter, the numpy ``Generator`` state and the curve rows — everything a resumed run
needs to continue exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.active.queue import QueueStore
from zeropath.errors import ConfigError, InputError

__all__ = ["QueueStore", "RunState", "StateStore", "run_key", "state_files"]

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


def state_files(out: str | os.PathLike[str]) -> list[Path]:
    """The state files under ``OUT/state``: ``state/*.json``, then ``state/*/state.json``."""
    root = Path(out) / "state"
    if not root.is_dir():
        return []
    return sorted(root.glob("*.json")) + sorted(root.glob("*/state.json"))


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
