"""One row of the model registry (:class:`ModelSpec`): what a model is and how zeropath builds it.

A row names a model of one ``kind`` (see :data:`KINDS`): its licence and gating, the µm/px it
works at, the weights file zeropath downloads for it (name, sha256, sources) where there is one,
and its ``factory`` as a ``"module:attr"`` string, imported only when the model is built. The
rows themselves are in :mod:`zeropath.models.catalog`; lookups are in
:mod:`zeropath.models.registry`. Standard library only: importing this never loads torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from zeropath.models.sources import Cache, LocalPath, Source

__all__ = ["FORMATS", "KINDS", "ModelSpec"]

#: What a row is, and how :mod:`zeropath.models.registry` calls its factory:
#:
#: - ``encoder``: a vision-language encoder; ``factory(spec, path, device) -> Encoder``
#:   (``path`` is a local directory the user gave, or None);
#: - ``segmenter``: a nucleus segmenter by name (``nuclei segment --model NAME``);
#:   ``factory(**kw)``, or, with ``bundled``, the bundled model directory it names;
#: - ``segmenter-format``: a nucleus model directory whose ``model.json`` has a ``format``
#:   ``NAME/VERSION`` (the row is ``NAME``; its factory checks the version);
#:   ``factory(model_dir, name=None, **kw)``;
#: - ``detector``: a coarse nucleus detector of ``nuclei fit --detector NAME``; ``factory(**kw)``
#:   with the ``FitOptions`` fields that ``meta["options"]`` maps to keywords;
#: - ``features``: an active-learning feature extractor; ``factory(cell=..., **options)``;
#: - ``weights``: a pretrained file that other code loads (no factory).
KINDS = ("encoder", "segmenter", "segmenter-format", "detector", "features", "weights")

#: How a weights file is stored (what :func:`zeropath.models.registry.load` can read).
FORMATS = ("torchscript", "state_dict", "safetensors", "directory", "onnx", "file")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One registry row (see the module docstring and :data:`KINDS`).

    Weights: ``sha256``, ``filename`` and ``format`` together (or none of them); ``sources``
    are tried in order, and when they contain no :class:`~zeropath.models.sources.Cache` the
    row puts ``LocalPath()`` (the ``ZEROPATH_MODEL_<NAME>`` variable) and ``Cache()`` in front.
    ``hub_id`` / ``revision`` pin a Hugging Face repository an encoder loads itself; ``bundled``
    is a model directory shipped inside the package (relative to ``zeropath/``). ``test_only``
    rows (``zeropath.testing``) are hidden from ``models list`` unless ``--all`` is given.
    ``meta`` holds what a loader needs to know (input layout, normalisation, notes, …).
    """

    name: str
    kind: str = "weights"
    task: str = ""
    licence: str = "unknown"
    sha256: str | None = None
    filename: str | None = None
    format: str | None = None
    size: int | None = None
    sources: tuple[Source, ...] = ()
    factory: str | None = None
    gated: bool = False
    commercial_use: bool = True
    test_only: bool = False
    mpp: float | None = None
    input_size: int | None = None
    hub_id: str | None = None
    revision: str | None = None
    extra: str | None = None
    bundled: str | None = None
    description: str = ""
    url: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        who = f"model {self.name!r}"
        if not _NAME_RE.match(self.name):
            raise ValueError(f"{who}: use lower-case letters, digits, . _ - in names")
        if self.kind not in KINDS:
            raise ValueError(f"{who}: kind must be one of {', '.join(KINDS)}")
        if self.factory is not None and not _FACTORY_RE.match(self.factory):
            raise ValueError(f"{who}: factory must be 'module:attr', not {self.factory!r}")
        if self.kind not in ("weights",) and self.factory is None and self.bundled is None:
            raise ValueError(f"{who}: a {self.kind} row needs a factory")
        weights = (self.sha256, self.filename, self.format)
        if any(w is not None for w in weights):
            self._check_weights()
        elif self.kind == "weights":
            raise ValueError(f"{who}: a weights row needs sha256, filename and format")
        elif self.sources:
            raise ValueError(f"{who}: sources without a weights file (sha256, filename, format)")
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def _check_weights(self) -> None:
        who = f"model {self.name!r}"
        sha = (self.sha256 or "").lower()
        if not _SHA_RE.match(sha):
            raise ValueError(f"{who}: sha256 must be 64 hex digits")
        name = self.filename or ""
        if not name or "/" in name or "\\" in name:
            raise ValueError(f"{who}: filename must be a plain file name")
        if name in (".", "..") or name.endswith(".sha256"):
            raise ValueError(f"{who}: invalid filename {name!r}")
        if self.format not in FORMATS:
            raise ValueError(f"{who}: format must be one of {', '.join(FORMATS)}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"{who}: size must be >= 0")
        sources = tuple(self.sources)
        for s in sources:
            if not isinstance(s, Source):
                raise TypeError(f"{who}: {s!r} is not a Source")
        if not any(isinstance(s, Cache) for s in sources):
            sources = (LocalPath(), Cache(), *sources)
        object.__setattr__(self, "sha256", sha)
        object.__setattr__(self, "sources", sources)

    @property
    def has_weights(self) -> bool:
        """True when zeropath downloads and caches a file for this row."""
        return self.sha256 is not None

    def __hash__(self) -> int:
        return hash((self.kind, self.name, self.sha256))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (sources as their one-line descriptions)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "licence": self.licence,
            "gated": self.gated,
            "commercial_use": self.commercial_use,
            "test_only": self.test_only,
            "mpp": self.mpp,
            "input_size": self.input_size,
            "size": self.size,
            "sha256": self.sha256,
            "filename": self.filename,
            "format": self.format,
            "factory": self.factory,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "extra": self.extra,
            "description": self.description,
            "url": self.url,
            "sources": [s.describe(self) for s in self.sources],
            "meta": dict(self.meta),
        }
