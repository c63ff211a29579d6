"""Find what to show: slides and the zeropath outputs that belong to them.

``zeropath view PATH`` accepts an output folder (of ``nuclei``/``points``/``tissue segment``),
one output file in it, or a slide/image — optionally with ``outputs`` naming its output folder
(by default the slide's own folder). Outputs are paired by stem (``STEM.geojson``,
``STEM.tissue.tif``, ``STEM.labels.tif``); the slide of an output stem is the input recorded
in ``run.json``, else a file with that stem next to the outputs or one folder up.
Only the file system is consulted here: nothing is opened or parsed but ``run.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeropath.errors import InputError
from zeropath.io.reader import OUTPUT_SUFFIXES, SUPPORTED_SUFFIXES, image_stem

__all__ = ["Catalog", "SlideEntry", "discover", "output_stem"]

#: Output file suffixes (longest first) and the layer each one feeds.
_OUTPUT_KINDS: tuple[tuple[str, str], ...] = (
    (".tissue.geojson", "tissue_geojson"),
    (".tissue.tif", "tissue"),
    (".labels.tif", "labels"),
    (".geojson", "nuclei"),
)


@dataclass
class SlideEntry:
    """One slide and the outputs found for it."""

    stem: str
    slide: Path
    nuclei: Path | None = None
    tissue: Path | None = None
    labels: Path | None = None
    tissue_geojson: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass
class Catalog:
    """The slides to show (the first is opened first) and notes about what was skipped."""

    entries: list[SlideEntry]
    warnings: list[str] = field(default_factory=list)

    def get(self, stem: str | None) -> SlideEntry:
        """The entry of ``stem`` (the first one for None); KeyError if unknown."""
        if stem is None:
            return self.entries[0]
        for e in self.entries:
            if e.stem == stem:
                return e
        raise KeyError(stem)

    @property
    def stems(self) -> list[str]:
        return [e.stem for e in self.entries]


def output_stem(name: str) -> tuple[str, str] | None:
    """``(stem, kind)`` of a zeropath output file name, or None for anything else."""
    lower = name.lower()
    for suffix, kind in _OUTPUT_KINDS:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind
    return None


def _is_slide_file(p: Path) -> bool:
    name = p.name
    return (
        p.is_file()
        and not name.startswith(".")
        and p.suffix.lower() in SUPPORTED_SUFFIXES
        and not name.lower().endswith(OUTPUT_SUFFIXES)
    )


def _outputs_in(folder: Path) -> dict[str, dict[str, Path]]:
    """``{stem: {kind: path}}`` of the output files directly in ``folder``."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        hit = output_stem(p.name)
        if hit is not None:
            stem, kind = hit
            found.setdefault(stem, {})[kind] = p
    return found


def _recorded_inputs(folder: Path) -> list[Path]:
    """Input paths recorded in ``folder/run.json`` (any of the layouts the commands write)."""
    run = folder / "run.json"
    try:
        record = json.loads(run.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    raw: list[Any] = []
    for item in record.get("inputs") or []:
        raw.append(item.get("input") if isinstance(item, dict) else item)
    params = record.get("parameters")
    if isinstance(params, dict):
        for key in ("inputs", "slides"):
            value = params.get(key)
            if isinstance(value, list):
                raw.extend(value)
    out = []
    for r in raw:
        if not isinstance(r, str) or not r:
            continue
        p = Path(r).expanduser()
        candidates = [p] if p.is_absolute() else [Path.cwd() / p, folder / p, folder.parent / p]
        out.extend(c for c in candidates if c.is_file())
    return out


def _find_slide(stem: str, recorded: list[Path], folders: list[Path]) -> Path | None:
    for p in recorded:
        if image_stem(p) == stem:
            return p
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if image_stem(p) == stem and _is_slide_file(p):
                return p
    return None


def _entry(stem: str, slide: Path, outputs: dict[str, Path]) -> SlideEntry:
    return SlideEntry(
        stem=stem,
        slide=slide,
        nuclei=outputs.get("nuclei"),
        tissue=outputs.get("tissue"),
        labels=outputs.get("labels"),
        tissue_geojson=outputs.get("tissue_geojson"),
    )


def discover(path: str | Path, outputs: str | Path | None = None) -> Catalog:
    """The catalog for ``zeropath view PATH [--outputs DIR]``.

    Raises :class:`InputError` when PATH does not exist, or holds neither slides nor outputs
    whose slide can be found.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    out_dir = None if outputs is None else Path(outputs)
    if out_dir is not None and not out_dir.is_dir():
        raise InputError(out_dir, "outputs folder does not exist")

    if path.is_file() and output_stem(path.name) is None and path.name != "run.json":
        # a slide or image, with outputs beside it or in --outputs
        stem = image_stem(path)
        found = _outputs_in(out_dir or path.parent).get(stem, {})
        return Catalog([_entry(stem, path, found)])

    only: str | None = None
    if path.is_file():  # one output file (or run.json): its folder, restricted to its stem
        hit = output_stem(path.name)
        only = hit[0] if hit else None
        folder = out_dir or path.parent
        slide_dirs = [folder, folder.parent]
    elif out_dir is not None:  # a folder of slides plus a folder of outputs
        folder = out_dir
        slide_dirs = [path, out_dir, out_dir.parent]
    else:
        folder = path
        slide_dirs = [path, path.parent]

    found = _outputs_in(folder)
    if only is not None:
        found = {only: found.get(only, {})}
    if not found:
        slides = [p for p in sorted(path.iterdir()) if _is_slide_file(p)] if path.is_dir() else []
        if not slides:
            raise InputError(path, "no slides, images or zeropath outputs found")
        return Catalog([_entry(image_stem(p), p, {}) for p in slides])

    recorded = _recorded_inputs(folder)
    entries, missing = [], []
    for stem, files in found.items():
        slide = _find_slide(stem, recorded, slide_dirs)
        if slide is None:
            missing.append(stem)
        else:
            entries.append(_entry(stem, slide, files))
    warnings = []
    if missing and entries:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        warnings.append(
            f"no slide found for {', '.join(missing[:3])}{more} (not in run.json, "
            "not next to the outputs): skipped"
        )
    if not entries:
        raise InputError(
            folder,
            f"cannot find the slide of {missing[0]!r} (not in run.json, not next to the "
            "outputs); pass the slide as PATH and this folder as --outputs",
        )
    return Catalog(entries, warnings)
