"""The annotation queue of an active-learning run (``OUT/queue/``), read and answered.

Without an oracle, ``zeropath active run`` queues the regions it selected for a person to
label (``zeropath.active.store.QueueStore`` writes it). The folder holds:

* ``index.json`` — ``{"regions": [ID, ...], "round", "classes", ...}`` (entries may also be
  objects ``{"id": ID, ...}``; a bare list, or the keys ``queue``/``items``, are read the same).
  Its other top-level keys (``round``, ``classes``, ``unlabelled`` …) apply to every region that
  does not say otherwise;
* ``ID.json`` — one region: ``image`` (path: absolute, or relative to the queue folder, the
  run folder or the working directory), ``box`` in the image's level-0 pixels — an object
  ``{"x", "y", "width", "height"}`` (what the loop writes), ``{"x0", "y0", "x1", "y1"}`` or a
  list ``[x0, y0, x1, y1]`` (``x1``/``y1`` exclusive) — ``round`` and ``classes``: names
  (``["background", "tumour"]``, numbered by position, colours from a palette) or objects
  ``{"index", "name", "color"}``. When neither the region nor the index lists classes,
  ``OUT/run.json`` or ``OUT/state/**/state.json`` is asked. Fields of an index entry given as
  an object are used where the region file lacks them (the region file may then be absent);
* ``ID.mask.png`` — the answer, written here: a greyscale uint8 PNG of the box's size
  (``height`` rows, ``width`` columns) holding a class index per pixel. A region counts as
  done once its mask exists.

*Unlabelled pixels.* The loop reads a mask as complete class indices (any value outside the
classes is an error, and a mask of only 0/255 is read as binary 0/1), so by default a mask
must give every pixel a class. A queue that accepts partial masks says so with
``"unlabelled": V`` (or ``"ignore_index": V``; usually 255) in the index or the region file:
pixels left unpainted are then saved as ``V``. The page keeps unpainted pixels as
:data:`UNLABELLED` (255) either way, and the server refuses them where the queue has no
unlabelled value.

Region ids come only from the index and must be plain file names (no separators, no leading
dot, no control characters), so a request can never name a file outside the queue folder.
Masks are validated (size, class values) and written atomically. Nothing here knows HTTP.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError, ZeropathError

__all__ = [
    "UNLABELLED",
    "AnnotationQueue",
    "MaskError",
    "QueueClass",
    "QueueRegion",
    "decode_mask_png",
    "encode_mask_png",
    "find_queue",
    "rle_decode",
    "rle_encode",
]

#: Value of pixels nobody painted (in the page, and in saved masks of queues that allow it).
UNLABELLED = 255
#: Names a region id may have: a plain file name (no separators, no leading dot).
_ID_RE = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,199}")
#: Largest region the page is asked to paint (pixels).
MAX_REGION_PIXELS = 1 << 24
#: Colours for classes without one (tab10).
_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


class MaskError(ZeropathError):
    """A submitted mask does not fit its region (size, class values, encoding)."""


@dataclass(frozen=True)
class QueueClass:
    index: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "color": list(self.color)}


@dataclass
class QueueRegion:
    """One queued region: the image, the level-0 box and how to label it."""

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


# --------------------------------------------------------------------------- parsing helpers


def _color(value: Any, index: int) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value):
        h = value.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    try:
        r, g, b = (int(v) for v in list(value)[:3])
        return (min(max(r, 0), 255), min(max(g, 0), 255), min(max(b, 0), 255))
    except (TypeError, ValueError):
        return _PALETTE[index % len(_PALETTE)]


def parse_classes(raw: Any) -> list[QueueClass] | None:
    """A class list from the shapes runs write: ``[{"index"?, "name", "color"}]``,
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
        out.append(QueueClass(index, name, _color(color, index)))
    seen: set[int] = set()
    unique = [c for c in out if not (c.index in seen or seen.add(c.index))]
    return unique or None


def _box(raw: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` from ``box``/``bbox``: ``{"x", "y", "width", "height"}``,
    ``{"x0", "y0", "x1", "y1"}`` or ``[x0, y0, x1, y1]``; or top-level ``x0``… keys."""
    value = raw.get("box", raw.get("bbox"))
    if value is None and all(k in raw for k in ("x0", "y0", "x1", "y1")):
        value = raw
    if isinstance(value, dict):
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the queue file: {exc}") from None


def find_queue(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(queue folder, run folder)`` for ``view PATH --annotate``.

    PATH may be the run's ``--out`` folder, its ``queue/`` folder or ``queue/index.json``.
    Raises :class:`InputError` when there is no queue there.
    """
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


class AnnotationQueue:
    """The regions waiting in one queue folder; re-reads ``index.json`` when it changes."""

    def __init__(
        self, folder: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
    ):
        self.folder = Path(folder).resolve()
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else self.folder.parent
        self.index_path = self.folder / "index.json"
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._defaults: dict[str, Any] = {}
        self._run_classes: list[QueueClass] | bool | None = False  # False: not looked up yet
        self.warnings: list[str] = []
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
            try:
                raw = _read_json(self.index_path)
            except FileNotFoundError:
                raise InputError(self.index_path, "the queue index has disappeared") from None
            self._parse_index(raw)
            self._stamp = stamp

    def _parse_index(self, raw: Any) -> None:
        defaults: dict[str, Any] = {}
        if isinstance(raw, dict):
            defaults = {k: v for k, v in raw.items() if k not in ("regions", "queue", "items")}
            items = raw.get("regions", raw.get("queue", raw.get("items")))
        else:
            items = raw
        if not isinstance(items, list):
            raise InputError(self.index_path, "the queue index has no list of regions")
        entries: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        skipped: list[str] = []
        for item in items:
            entry = dict(item) if isinstance(item, dict) else {"id": item}
            rid = entry.get("id", entry.get("region_id"))
            rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else ""
            if not _ID_RE.fullmatch(rid) or rid.endswith(".mask") or rid == "index":
                skipped.append(repr(rid or item)[:40])
                continue
            if rid not in entries:
                order.append(rid)
            entries[rid] = entry
        self.warnings = (
            [f"{self.index_path}: skipped {len(skipped)} entries without a usable id: "
             + ", ".join(skipped[:3])]
            if skipped
            else []
        )  # fmt: skip
        self._entries, self._order, self._defaults = entries, order, defaults

    @property
    def ids(self) -> list[str]:
        self.refresh()
        return list(self._order)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and rid in self.ids

    def _check_id(self, rid: str) -> str:
        self.refresh()
        if not isinstance(rid, str) or not _ID_RE.fullmatch(rid) or rid not in self._entries:
            raise KeyError(rid)
        return rid

    # ------------------------------------------------------------------ regions

    def _run_class_list(self) -> list[QueueClass] | None:
        """Classes recorded by the run itself: ``run.json``, else ``state/*.json``."""
        if self._run_classes is False:
            found: list[QueueClass] | None = None
            candidates = [self.run_dir / "run.json"]
            state = self.run_dir / "state"
            if state.is_dir():
                candidates += sorted(state.glob("*.json")) + sorted(state.glob("*/state.json"))
            for path in candidates:
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
            self._run_classes = found
        return self._run_classes or None

    def _resolve_image(self, value: Any, rid: str) -> Path:
        if not isinstance(value, str) or not value:
            raise InputError(self.folder / f"{rid}.json", "the region names no image")
        p = Path(value).expanduser()
        candidates = [p] if p.is_absolute() else [self.folder / p, self.run_dir / p, Path.cwd() / p]
        for c in candidates:
            if c.is_file():
                return c.resolve()
        raise InputError(candidates[0], f"the image of region {rid!r} does not exist")

    def region(self, rid: str) -> QueueRegion:
        """Region ``rid`` of the index (KeyError when it is not queued; :class:`InputError`
        when its files are unusable)."""
        rid = self._check_id(rid)
        entry = self._entries[rid]
        path = self.folder / f"{rid}.json"
        try:
            data = _read_json(path)
        except FileNotFoundError:
            data = {}
        if not isinstance(data, dict):
            raise InputError(path, "a region file must hold a JSON object")
        merged = {**self._defaults, **entry, **data}
        box = _box(merged)
        if box is None:
            raise InputError(path, "the region has no box [x0, y0, x1, y1]")
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
            raise InputError(path, f"the region box {list(box)} is empty or negative")
        if (x1 - x0) * (y1 - y0) > MAX_REGION_PIXELS:
            raise InputError(path, f"the region box {list(box)} is too large to annotate")
        classes = None
        for holder in (data, entry, self._defaults):
            if "classes" in holder:
                classes = parse_classes(holder["classes"])
                if classes:
                    break
        classes = classes or self._run_class_list()
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
        rnd = merged.get("round")
        return QueueRegion(
            id=rid,
            image=self._resolve_image(image, rid),
            box=box,
            round=int(rnd) if isinstance(rnd, int | float) and not isinstance(rnd, bool) else None,
            classes=classes,
            unlabelled=unlabelled,
            meta={k: v for k, v in merged.items() if isinstance(v, str | int | float | bool)},
        )

    # ------------------------------------------------------------------ masks

    def mask_path(self, rid: str) -> Path:
        return self.folder / f"{self._check_id(rid)}.mask.png"

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
        """The queue for the page: regions (id, round, done, box where known), progress."""
        ids = self.ids
        regions = []
        for rid in ids:
            entry = self._entries[rid]
            item: dict[str, Any] = {"id": rid, "done": self.is_done(rid)}
            rnd = entry.get("round")
            if rnd is None:
                try:
                    rnd = json.loads((self.folder / f"{rid}.json").read_text("utf-8")).get("round")
                except (OSError, ValueError, AttributeError):
                    rnd = None
            if rnd is None:
                rnd = self._defaults.get("round")
            if isinstance(rnd, int) and not isinstance(rnd, bool):
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
