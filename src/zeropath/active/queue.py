"""The annotation queue of an active-learning run (``OUT/queue/``): its one format.

Without an oracle, ``zeropath active run`` queues the regions it selected for a person to
label; ``zeropath view --annotate`` shows them and saves the answers. Both go through
:class:`QueueStore`, which writes and reads the folder:

* ``index.json`` — ``{"regions": [ID, ...], "round", "classes", ...}`` (entries may also be
  objects ``{"id": ID, ...}``; a bare list, or the keys ``queue``/``items``, are read the same).
  Its other top-level keys (``round``, ``classes``, ``unlabelled`` …) apply to every region that
  does not say otherwise;
* ``ID.json`` — one region (:class:`QueueEntry` as the loop writes it): ``image`` (path:
  absolute, or relative to the queue folder, the run folder or the working directory), ``box``
  in the image's level-0 pixels — an object ``{"x", "y", "width", "height"}`` (what the loop
  writes), ``{"x0", "y0", "x1", "y1"}`` or a list ``[x0, y0, x1, y1]`` (``x1``/``y1``
  exclusive) — ``round`` and ``classes``: names (``["background", "tumour"]``, numbered by
  position, colours from :data:`zeropath.io.colors.PALETTE`) or objects ``{"index", "name",
  "color"}``. When neither the region nor the index lists classes, ``OUT/run.json`` or
  ``OUT/state/**/state.json`` is asked. Fields of an index entry given as an object are used
  where the region file lacks them (the region file may then be absent);
* ``ID.png`` — the region's pixels (what the annotator sees);
* ``ID.mask.png`` — the answer: a greyscale uint8 PNG of the box's size (``height`` rows,
  ``width`` columns) holding a class index per pixel (0/255 for binary tasks), or a QuPath
  GeoJSON as ``ID.geojson`` or ``STEM.geojson``. A region counts as done once its mask exists.

*Unlabelled pixels.* The loop reads a mask as complete class indices (any value outside the
classes is an error, and a mask of only 0/255 is read as binary 0/1), so by default a mask
must give every pixel a class. A queue that accepts partial masks says so with
``"unlabelled": V`` (or ``"ignore_index": V``; usually 255) in the index or the region file:
pixels left unpainted are then saved as ``V``.

Region ids come only from the index and must be plain file names (no separators, no leading
dot, no control characters), so a request can never name a file outside the queue folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError
from zeropath.io.colors import palette_color, parse_color

__all__ = [
    "MAX_REGION_PIXELS",
    "UNLABELLED",
    "QueueClass",
    "QueueEntry",
    "QueueIndex",
    "QueueRegion",
    "QueueStore",
    "find_queue",
    "parse_box",
    "parse_classes",
    "valid_id",
]

#: Value of unpainted pixels (in the annotation page, and in saved masks of queues allowing it).
UNLABELLED = 255
#: Largest region an annotator is asked to paint (pixels).
MAX_REGION_PIXELS = 1 << 24
#: Names a region id may have: a plain file name (no separators, no leading dot).
_ID_RE = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,199}")
#: Keys of ``index.json`` that hold the list of regions (the first present wins).
_LIST_KEYS = ("regions", "queue", "items")


def valid_id(rid: Any) -> bool:
    """True for a usable region id: a plain file name that names no queue file of its own."""
    return (
        isinstance(rid, str)
        and _ID_RE.fullmatch(rid) is not None
        and not rid.endswith(".mask")
        and rid != "index"
    )


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class QueueClass:
    """One row of a queue's class table."""

    index: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "color": list(self.color)}


def parse_classes(raw: Any) -> list[QueueClass] | None:
    """A class table from the shapes runs write: ``[{"index"?, "name", "color"}]``,
    ``["name", ...]`` or ``{"name": color | {"index", "color"}}``; None when absent/unusable.

    Without explicit indices, classes are numbered by position.
    """
    items: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        if isinstance(raw.get("classes"), list | dict):
            return parse_classes(raw["classes"])
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(None, r) for r in raw]
    else:
        return None
    out: list[QueueClass] = []
    for pos, (key, value) in enumerate(items):
        if isinstance(value, dict):
            name = value.get("name", key)
            index = value.get("index", value.get("value", pos))
            color = value.get("color", value.get("colour"))
        elif key is not None:  # {"name": color}
            name, index, color = key, pos, value
        else:  # "name"
            name, index, color = value, pos, None
        if not isinstance(name, str) or not name:
            name = f"class {pos}"
        try:
            index = int(index)
        except (TypeError, ValueError):
            index = pos
        if not 0 <= index < UNLABELLED:
            continue
        out.append(QueueClass(index, name, parse_color(color) or palette_color(index)))
    seen: set[int] = set()
    unique = [c for c in out if not (c.index in seen or seen.add(c.index))]
    return unique or None


# --------------------------------------------------------------------------- regions


def parse_box(raw: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` from ``box``/``bbox``: ``{"x", "y", "width", "height"}``,
    ``{"x0", "y0", "x1", "y1"}`` or ``[x0, y0, x1, y1]``; or top-level ``x0``… keys."""
    value = raw.get("box", raw.get("bbox"))
    if value is None and all(k in raw for k in ("x0", "y0", "x1", "y1")):
        value = raw
    if isinstance(value, Mapping):
        if all(k in value for k in ("x0", "y0", "x1", "y1")):
            value = [value[k] for k in ("x0", "y0", "x1", "y1")]
        else:
            w = value.get("width", value.get("w"))
            h = value.get("height", value.get("h"))
            try:
                x, y = float(value["x"]), float(value["y"])
                value = [x, y, x + float(w), y + float(h)]  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError):
                return None
    try:
        x0, y0, x1, y1 = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite([x0, y0, x1, y1])):
        return None
    return (round(x0), round(y0), round(x1), round(y1))


@dataclass(frozen=True)
class QueueEntry:
    """One region as the loop queues it (``ID.json``); ``box`` is ``(x0, y0, x1, y1)``."""

    id: str
    image: str
    stem: str
    box: tuple[int, int, int, int]
    round: int
    run: str
    classes: list[str]

    @property
    def mask(self) -> str:
        return f"{self.id}.mask.png"

    @property
    def crop(self) -> str:
        return f"{self.id}.png"

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = (int(v) for v in self.box)
        return {
            "id": self.id,
            "image": self.image,
            "stem": self.stem,
            "box": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0},
            "round": self.round,
            "run": self.run,
            "classes": list(self.classes),
            "mask": self.mask,
            "crop": self.crop,
        }


@dataclass
class QueueRegion:
    """One queued region as read back: the image, the level-0 box and how to label it."""

    id: str
    image: Path
    box: tuple[int, int, int, int]
    round: int | None
    classes: list[QueueClass]
    unlabelled: int | None = None  # None: every pixel needs a class
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def empty(self) -> int:
        """The value of unpainted pixels (the unlabelled value, else :data:`UNLABELLED`)."""
        return UNLABELLED if self.unlabelled is None else self.unlabelled

    @property
    def values(self) -> set[int]:
        """The values a saved mask of this region may hold."""
        extra = set() if self.unlabelled is None else {self.unlabelled}
        return {c.index for c in self.classes} | extra

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": str(self.image),
            "image_name": self.image.name,
            "box": list(self.box),
            "width": self.width,
            "height": self.height,
            "round": self.round,
            "classes": [c.to_dict() for c in self.classes],
            "unlabelled": self.unlabelled,
            "empty": self.empty,
        }


def _round(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- the index


@dataclass
class QueueIndex:
    """``index.json`` as read: the region ids in order, each id's index entry (a dict, at
    least ``{"id"}``) and the run-wide ``defaults`` (every other top-level key)."""

    path: Path
    order: list[str]
    entries: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: Any, path: Path) -> QueueIndex:
        """The index of the parsed ``raw`` JSON; entries without a usable id are skipped."""
        defaults: dict[str, Any] = {}
        if isinstance(raw, dict):
            defaults = {k: v for k, v in raw.items() if k not in _LIST_KEYS}
            items = raw.get("regions", raw.get("queue", raw.get("items")))
        else:
            items = raw
        if not isinstance(items, list):
            raise InputError(path, "the queue index has no list of regions")
        entries: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        skipped: list[str] = []
        for item in items:
            entry = dict(item) if isinstance(item, dict) else {"id": item}
            rid = entry.get("id", entry.get("region_id"))
            rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else ""
            if not valid_id(rid):
                skipped.append(repr(rid or item)[:40])
                continue
            if rid not in entries:
                order.append(rid)
            entries[rid] = entry
        return cls(path, order, entries, defaults, skipped)

    @property
    def warnings(self) -> list[str]:
        if not self.skipped:
            return []
        return [
            f"{self.path}: skipped {len(self.skipped)} entries without a usable id: "
            + ", ".join(self.skipped[:3])
        ]


def _read_json(path: Path) -> Any:
    """Parsed JSON; FileNotFoundError passes, other failures are an :class:`InputError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the queue file: {exc}") from None


def find_queue(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(queue folder, run folder)`` of a run's ``--out`` folder, its ``queue/`` folder or
    ``queue/index.json``; :class:`InputError` when there is no queue there."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_file():
        if path.name != "index.json":
            raise InputError(path, "not an annotation queue (expected a run folder or queue/)")
        path = path.parent
    if (path / "index.json").is_file():
        return path, path.parent
    if (path / "queue" / "index.json").is_file():
        return path / "queue", path
    raise InputError(
        path,
        "no annotation queue here (no queue/index.json); "
        "run `zeropath active run` without --oracle first",
    )


# --------------------------------------------------------------------------- the folder


class QueueStore:
    """``OUT/queue/`` (or ``folder``): regions waiting for an annotator and their masks.

    The loop writes it (:meth:`write`, :meth:`remove`, :meth:`clear_index`) and reads the
    answers by :meth:`mask_path` / :meth:`geojson_paths`; the viewer reads it back
    (:meth:`read_index`, :meth:`region`).
    """

    def __init__(
        self, out: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None
    ) -> None:
        self.out = Path(out)
        self.dir = Path(folder) if folder is not None else self.out / "queue"
        self.index_path = self.dir / "index.json"
        self._recorded: list[QueueClass] | bool | None = False  # False: not looked up yet

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> QueueStore:
        """The queue of a run folder, a queue folder or ``index.json`` (see :func:`find_queue`)."""
        folder, run_dir = find_queue(path)
        return cls(run_dir, folder)

    # ------------------------------------------------------------------ paths

    def entry_path(self, rid: str) -> Path:
        return self.dir / f"{rid}.json"

    def crop_path(self, rid: str) -> Path:
        return self.dir / f"{rid}.png"

    def mask_path(self, rid: str) -> Path:
        return self.dir / f"{rid}.mask.png"

    def geojson_paths(self, rid: str, stem: str) -> list[Path]:
        """Where a GeoJSON for this region may be: ``ID.geojson``, then ``STEM.geojson``."""
        return [
            p for p in (self.dir / f"{rid}.geojson", self.dir / f"{stem}.geojson") if p.is_file()
        ]

    # ------------------------------------------------------------------ writing

    def write(
        self,
        entries: Sequence[QueueEntry | Mapping[str, Any]],
        crops: Mapping[str, np.ndarray],
        run: Mapping[str, Any],
    ) -> Path:
        """Write one JSON (+ crop PNG) per entry and ``index.json`` listing them."""
        from PIL import Image

        from zeropath.io.writers import atomic_write, write_run_json

        ids = []
        for e in entries:
            data = e.to_dict() if isinstance(e, QueueEntry) else e
            rid = str(data["id"])
            ids.append(rid)
            write_run_json(self.entry_path(rid), data)
            crop = crops.get(rid)
            png = self.crop_path(rid)
            if crop is not None and not png.is_file():
                with atomic_write(png) as tmp:
                    Image.fromarray(np.asarray(crop, np.uint8)).save(tmp, format="PNG")
        return self.write_index(run, ids)

    def write_index(self, run: Mapping[str, Any], ids: Sequence[str]) -> Path:
        """``index.json``: the run's fields, then the queued ``regions``."""
        from zeropath.io.writers import write_run_json

        return write_run_json(self.index_path, {**run, "regions": [str(r) for r in ids]})

    def remove(self, rids: Sequence[str]) -> None:
        """Forget regions whose labels were imported (their files leave the queue)."""
        for rid in rids:
            for p in (
                self.entry_path(rid),
                self.crop_path(rid),
                self.mask_path(rid),
                self.dir / f"{rid}.geojson",
            ):
                p.unlink(missing_ok=True)

    def clear_index(self, run: Mapping[str, Any]) -> None:
        """An empty ``index.json`` (when the queue folder exists)."""
        if self.dir.is_dir():
            self.write_index(run, [])

    # ------------------------------------------------------------------ reading

    def read_index(self) -> QueueIndex:
        """``index.json`` parsed; :class:`InputError` when it is missing or malformed."""
        try:
            raw = _read_json(self.index_path)
        except FileNotFoundError:
            raise InputError(self.index_path, "the queue index has disappeared") from None
        return QueueIndex.parse(raw, self.index_path)

    def read_entry(self, rid: str) -> dict[str, Any]:
        """``ID.json`` (``{}`` when absent); :class:`InputError` when it is not an object."""
        path = self.entry_path(rid)
        try:
            data = _read_json(path)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise InputError(path, "a region file must hold a JSON object")
        return data

    def entry_round(self, index: QueueIndex, rid: str) -> int | None:
        """The round a region was queued in, without validating the rest of it."""
        rnd = index.entries[rid].get("round")
        if rnd is None:
            try:
                rnd = json.loads(self.entry_path(rid).read_text("utf-8")).get("round")
            except (OSError, ValueError, AttributeError):
                rnd = None
        if rnd is None:
            rnd = index.defaults.get("round")
        return rnd if isinstance(rnd, int) and not isinstance(rnd, bool) else None

    def recorded_classes(self) -> list[QueueClass] | None:
        """Classes recorded by the run itself: ``run.json``, else its state files (cached)."""
        if self._recorded is False:
            from zeropath.active.store import state_files

            found: list[QueueClass] | None = None
            for path in [self.out / "run.json", *state_files(self.out)]:
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if not isinstance(raw, dict):
                    continue
                for holder in (raw, raw.get("parameters"), raw.get("identity")):
                    if isinstance(holder, dict) and "classes" in holder:
                        found = parse_classes(holder["classes"])
                        if found:
                            break
                if found:
                    break
            self._recorded = found
        return self._recorded or None

    def _resolve_image(self, value: Any, rid: str) -> Path:
        if not isinstance(value, str) or not value:
            raise InputError(self.entry_path(rid), "the region names no image")
        p = Path(value).expanduser()
        candidates = [p] if p.is_absolute() else [self.dir / p, self.out / p, Path.cwd() / p]
        for c in candidates:
            if c.is_file():
                return c.resolve()
        raise InputError(candidates[0], f"the image of region {rid!r} does not exist")

    def region(self, index: QueueIndex, rid: str) -> QueueRegion:
        """Region ``rid`` of ``index`` (KeyError when it is not queued; :class:`InputError`
        when its files are unusable)."""
        if not valid_id(rid) or rid not in index.entries:
            raise KeyError(rid)
        entry = index.entries[rid]
        path = self.entry_path(rid)
        data = self.read_entry(rid)
        merged = {**index.defaults, **entry, **data}
        box = parse_box(merged)
        if box is None:
            raise InputError(path, "the region has no box [x0, y0, x1, y1]")
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
            raise InputError(path, f"the region box {list(box)} is empty or negative")
        if (x1 - x0) * (y1 - y0) > MAX_REGION_PIXELS:
            raise InputError(path, f"the region box {list(box)} is too large to annotate")
        classes = None
        for holder in (data, entry, index.defaults):
            if "classes" in holder:
                classes = parse_classes(holder["classes"])
                if classes:
                    break
        classes = classes or self.recorded_classes()
        if not classes:
            raise InputError(path, "no class list (not in the region, the index or run.json)")
        unlabelled = merged.get("unlabelled", merged.get("ignore_index"))
        if unlabelled is not None:
            if (
                isinstance(unlabelled, bool)
                or not isinstance(unlabelled, int | float)
                or unlabelled != int(unlabelled)
                or not 0 <= unlabelled <= 255
                or any(c.index == unlabelled for c in classes)
            ):
                raise InputError(path, f"unusable unlabelled value {unlabelled!r}")
            unlabelled = int(unlabelled)
        image = merged.get("image", merged.get("image_path", merged.get("path")))
        return QueueRegion(
            id=rid,
            image=self._resolve_image(image, rid),
            box=box,
            round=_round(merged.get("round")),
            classes=classes,
            unlabelled=unlabelled,
            meta={k: v for k, v in merged.items() if isinstance(v, str | int | float | bool)},
        )
