"""The model registry: one table of every model zeropath knows, and every lookup of one.

Each row (:class:`~zeropath.models.spec.ModelSpec`) is one encoder, nucleus segmenter, model
directory format, coarse detector, feature extractor or weights file, identified by its
``kind`` and ``name``; the built-in rows are in :mod:`zeropath.models.catalog`. A row's
``factory`` (``"module:attr"``) is imported only when the model is built:

- :func:`get_encoder` (``--encoder NAME|DIR``), :func:`get_segmenter` (``nuclei segment
  --model NAME|DIR``; a directory is dispatched on the ``format`` in its ``model.json``),
  :func:`get_detector` (``nuclei fit --detector``) and :func:`find` / :func:`factory` for
  the other kinds;
- :func:`fetch` returns a verified local copy of a row's weights file, trying its sources in
  order (a local path, the cache, then remote sources, see :mod:`zeropath.models.sources`),
  or raises :class:`~zeropath.errors.ModelError` with one line listing what was tried and how
  to fix it by hand.

Plugins add rows with :func:`register_model` (directly, or from an entry point in the
``zeropath.models`` group). Importing this module is cheap: torch is imported only inside the
loading helpers and the factories.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from zeropath.errors import ModelError
from zeropath.models import cache
from zeropath.models import catalog as _catalog
from zeropath.models.cache import ProgressCallback, verify
from zeropath.models.sources import (
    Cache,
    HuggingFace,
    LocalPath,
    PyPIMember,
    Source,
    Unavailable,
    Url,
    _oneline,
    cache_path,
    default_env,
)
from zeropath.models.spec import FORMATS, KINDS, ModelSpec

__all__ = [
    "DEFAULT_SEGMENTER",
    "FORMATS",
    "KINDS",
    "Cache",
    "HuggingFace",
    "LocalPath",
    "ModelSpec",
    "PyPIMember",
    "Source",
    "Url",
    "cache_location",
    "cached_path",
    "factory",
    "fetch",
    "find",
    "get_detector",
    "get_encoder",
    "get_encoder_info",
    "get_segmenter",
    "get_spec",
    "is_cached",
    "list_encoders",
    "list_specs",
    "load",
    "load_state_dict",
    "load_torchscript",
    "provenance",
    "register_model",
    "resolve",
    "rows",
    "unregister_model",
    "verify",
]

ENTRY_POINT_GROUP = "zeropath.models"
#: ``nuclei segment`` without ``--model``; an installation without the bundled model falls
#: back to :data:`FALLBACK_SEGMENTER`.
DEFAULT_SEGMENTER = "zanet-default"
FALLBACK_SEGMENTER = "classical"
MODEL_JSON = "model.json"

_REGISTRY: dict[tuple[str, str], ModelSpec] = {}
_plugins_loaded = False


# ---------------------------------------------------------------------------------- the table


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a row; registering the identical row twice is harmless.

    Rows are keyed by ``(kind, name)``; a name that has a weights file must be unique among
    the rows with one (it names the cache folder).
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"expected a ModelSpec, got {type(spec).__name__}")
    key = (spec.kind, spec.name)
    old = _REGISTRY.get(key)
    if old is not None and old != spec and not overwrite:
        raise ValueError(f"model {spec.name!r} is already registered with different values")
    if spec.has_weights:
        clash = next(
            (s for k, s in _REGISTRY.items() if k != key and s.name == spec.name and s.has_weights),
            None,
        )
        if clash is not None:
            raise ValueError(f"model {spec.name!r}: a {clash.kind} row already has that file")
    _REGISTRY[key] = spec
    return spec


def unregister_model(name: str, kind: str | None = None) -> None:
    """Remove the rows named ``name`` (of ``kind`` only, when given)."""
    for key in [k for k in _REGISTRY if k[1] == name and kind in (None, k[0])]:
        del _REGISTRY[key]


def _load_plugins() -> None:
    """Register the rows of entry points in the ``zeropath.models`` group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if isinstance(loaded, ModelSpec):
                register_model(loaded)
            elif callable(loaded):
                loaded()
        except Exception as exc:  # a broken plugin must not break the registry
            warnings.warn(f"model plugin {ep.name!r} failed: {exc}", stacklevel=2)


def rows(kind: str | None = None, *, test_only: bool = True) -> list[ModelSpec]:
    """Every row (of ``kind``), sorted by kind then name; ``test_only=False`` hides the
    rows of :mod:`zeropath.testing`."""
    _load_plugins()
    return [
        s
        for _, s in sorted(_REGISTRY.items())
        if (kind is None or s.kind == kind) and (test_only or not s.test_only)
    ]


def _names(kind: str) -> str:
    return ", ".join(s.name for s in rows(kind)) or "none"


def find(kind: str, name: str) -> ModelSpec | None:
    """The row ``name`` of ``kind``, or None."""
    _load_plugins()
    return _REGISTRY.get((kind, name))


def list_specs(task: str | None = None) -> list[ModelSpec]:
    """The rows with a weights file (what :func:`fetch` knows), sorted by name."""
    return sorted(
        (s for s in rows() if s.has_weights and (task is None or s.task == task)),
        key=lambda s: s.name,
    )


def get_spec(name: str, kind: str | None = None) -> ModelSpec:
    """The row ``name`` (of ``kind``; without one, the row with a weights file wins);
    ModelError naming the known models otherwise."""
    found = [s for s in rows(kind) if s.name == name]
    found.sort(key=lambda s: not s.has_weights)
    if not found:
        known = ", ".join(s.name for s in list_specs()) or "none"
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    return found[0]


def _spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    spec = name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)
    if not spec.has_weights:
        raise ModelError(
            f"{spec.kind} {spec.name!r} has no weights file for zeropath to fetch; "
            f"{_how_built(spec)}"
        )
    return spec


def _how_built(spec: ModelSpec) -> str:
    if spec.hub_id:
        return f"it loads {spec.hub_id} from the Hugging Face hub when it is first used"
    return "it needs no download"


def factory(spec: ModelSpec) -> Callable[..., Any]:
    """Import the row's ``factory`` (``"module:attr"``); one-line ModelError when it cannot be."""
    if spec.factory is None:
        raise ModelError(f"{spec.kind} {spec.name!r} has no factory")
    module, _, attr = spec.factory.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"{spec.kind} {spec.name!r}: cannot import its factory {spec.factory} "
            f"({_oneline(f'{type(exc).__name__}: {exc}')})"
        ) from None
    if not callable(obj):
        raise ModelError(f"{spec.kind} {spec.name!r}: factory {spec.factory} is not callable")
    return obj


# ------------------------------------------------------------------------------- encoders


def list_encoders(test_only: bool = True) -> list[ModelSpec]:
    """Every vision-language encoder row, sorted by name."""
    return rows("encoder", test_only=test_only)


def get_encoder_info(name: str) -> ModelSpec:
    """The encoder row ``name``; :class:`~zeropath.models.encoders.base.EncoderError` listing
    the known names if absent."""
    spec = find("encoder", name)
    if spec is None:
        from zeropath.models.encoders.base import EncoderError

        raise EncoderError(
            f"unknown encoder {name!r}; known: {_names('encoder')}; or pass a local directory"
        )
    return spec


def get_encoder(name_or_path: str, device: str = "cpu") -> Any:
    """Build the encoder a user named: a registered name, or a local model directory.

    A registered name is built from its local copy when ``ZEROPATH_ENCODER_<NAME>`` names one,
    else from where its row says; a directory is recognised by the files in it
    (:func:`zeropath.models.encoders.local.load_directory`). Anything missing is an
    ``EncoderError`` with a one-line message saying how to get it.
    """
    spec = find("encoder", name_or_path)
    if spec is not None:
        from zeropath.models.encoders.hf import env_var

        return factory(spec)(spec, os.environ.get(env_var(spec.name)) or None, device)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from zeropath.models.encoders.local import load_directory

        return load_directory(path, device)
    return get_encoder_info(name_or_path)  # raises the unknown-name error


# ----------------------------------------------------------------- segmenters and detectors


def bundled_dir(spec: ModelSpec) -> Path:
    """The model directory a ``bundled`` row ships inside the package."""
    return Path(str(files("zeropath").joinpath(*str(spec.bundled).split("/"))))


def get_segmenter(name_or_dir: str | os.PathLike[str] | None = None, **kw: Any) -> Any:
    """The nucleus segmenter ``nuclei segment --model NAME|DIR`` means.

    ``None`` is :data:`DEFAULT_SEGMENTER` (:data:`FALLBACK_SEGMENTER` when the installation
    lacks the bundled model); a ``segmenter`` row is built by its factory with ``kw``; a model
    directory (or its ``model.json``) by the ``segmenter-format`` row named by the ``format``
    in its ``model.json`` (``NAME/VERSION``: the row ``NAME``), as
    ``factory(model_dir, name=None, **kw)``.
    """
    if name_or_dir is None:
        default = find("segmenter", DEFAULT_SEGMENTER)
        ok = default is not None and (
            default.bundled is None or (bundled_dir(default) / MODEL_JSON).is_file()
        )
        name_or_dir = DEFAULT_SEGMENTER if ok else FALLBACK_SEGMENTER
    name = os.fspath(name_or_dir)
    spec = find("segmenter", name)
    if spec is not None and spec.bundled is not None:
        model_dir = bundled_dir(spec)
        if not (model_dir / MODEL_JSON).is_file():
            raise ModelError(
                f"the bundled model is missing from this installation ({model_dir}); "
                f"reinstall zeropath or pass --model {FALLBACK_SEGMENTER}"
            )
        return _segmenter_from_dir(model_dir, name=spec.name, **kw)
    if spec is not None:
        return factory(spec)(**kw)
    path = Path(name).expanduser()
    if path.name == MODEL_JSON and path.is_file():
        path = path.parent
    if path.is_dir():
        return _segmenter_from_dir(path, **kw)
    raise ModelError(
        f"unknown nucleus model {name!r}: not a model directory ({MODEL_JSON}) and not one of "
        f"{', '.join(s.name for s in rows('segmenter', test_only=False))}"
    )


def _segmenter_from_dir(model_dir: Path, name: str | None = None, **kw: Any) -> Any:
    path = model_dir / MODEL_JSON
    if not path.is_file():
        raise ModelError(
            f"{model_dir}: no {MODEL_JSON} here; train one with "
            "`zeropath nuclei fit IMAGES --out MODEL_DIR` or omit --model for the default"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({_oneline(exc)})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    family = fmt.rsplit("/", 1)[0] if isinstance(fmt, str) else None
    spec = find("segmenter-format", family) if family else None
    if spec is None:
        known = ", ".join(f"{s.name}/…" for s in rows("segmenter-format"))
        raise ModelError(f"{model_dir}: unknown model format {fmt!r} (known: {known})")
    return factory(spec)(model_dir, name=name, **kw)


def get_detector(name: str, **kw: Any) -> Any:
    """The coarse nucleus detector row ``name`` built with ``kw``; ModelError when unknown."""
    spec = find("detector", name)
    if spec is None:
        raise ModelError(f"unknown detector {name!r}: use one of {_names('detector')}")
    return factory(spec)(**kw)


# ----------------------------------------------------------------------------------- fetching


def cache_location(name_or_spec: str | ModelSpec) -> Path:
    """Where the model lives in the cache, whether or not it is there yet."""
    return cache_path(_spec(name_or_spec))


def cached_path(name: str | ModelSpec) -> Path | None:
    """The verified cached copy of a model, or None (a bad copy is left for :func:`fetch`)."""
    spec = _spec(name)
    path = cache_location(spec)
    try:
        if path.exists() and cache.verify_memoized(path, spec.sha256):
            return path
    except OSError:
        pass
    return None


def is_cached(name: str | ModelSpec) -> bool:
    """True when a verified copy of the model is in the cache."""
    return cached_path(name) is not None


def fetch(
    name: str | ModelSpec, progress: ProgressCallback | None = None, force: bool = False
) -> Path:
    """Return a verified local path to the model, downloading it into the cache if needed.

    Sources are tried in order; ``force=True`` skips the local path and the cache and
    downloads again (the old cached copy stays until a new one has been verified).
    """
    spec = _spec(name)
    tried: list[tuple[str, str]] = []
    for source in spec.sources:
        if force and not source.remote:
            continue
        try:
            return source.obtain(spec, progress)
        except Unavailable as exc:
            tried.append((source.describe(spec), _oneline(exc)))
        except OSError as exc:  # e.g. an unreadable local file or cache
            tried.append((source.describe(spec), _oneline(f"{type(exc).__name__}: {exc}")))
    raise ModelError(_missing_message(spec, tried))


def _missing_message(spec: ModelSpec, tried: list[tuple[str, str]]) -> str:
    """One line: what was tried, why each failed, and the exact manual fix."""
    attempts = "; ".join(f"{what} ({why})" for what, why in tried) or "no sources"
    get = f"download it from {spec.url or 'its homepage'}"
    for kind in (Url, HuggingFace, PyPIMember):  # a plain URL is the easiest to follow
        s = next((s for s in spec.sources if isinstance(s, kind)), None)
        if isinstance(s, Url):
            get = f"download {s.url}"
        elif isinstance(s, HuggingFace):
            get = f"download {s.filename or spec.filename} from https://huggingface.co/{s.repo_id}"
        elif isinstance(s, PyPIMember):
            get = f"download {s.archive} (listed at {s.index_url()}), take {s.member} out of it"
        if s is not None:
            break
    flag = "--encoder" if spec.kind == "encoder" else "--model"
    gated = (
        f"{spec.name} is gated: accept its licence at {spec.url or 'its homepage'} and provide "
        "an access token (HF_TOKEN or huggingface-cli login). "
        if spec.gated
        else ""
    )
    return (
        f"model {spec.name!r} is not available; tried: {attempts}. {gated}"
        f"Fix: {get} (sha256 {spec.sha256[:12]}…) and pass {flag} PATH, "
        f"or set {default_env(spec.name)}=PATH, or place it at {cache_location(spec)}, "
        f"or set ZEROPATH_HOME to a cache holding models/{spec.name}/{spec.filename}"
    )


def resolve(name_or_path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> Path:
    """A registered model name → :func:`fetch`; an existing file or directory → itself.

    This is what ``--model NAME|PATH`` options call: users may pass their own weights.
    """
    if isinstance(name_or_path, str) and name_or_path in _weights_names():
        return fetch(name_or_path, progress)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    known = ", ".join(sorted(_weights_names())) or "none"
    raise ModelError(
        f"{name_or_path}: neither an existing file nor a registered model (known: {known})"
    )


def provenance(name_or_path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"name", "sha256"}`` for run.json: the digest of the file that is there now.

    For a registered model that is the file :func:`fetch` returns, hashed again (never taken
    from the registry or a memo), so a damaged copy is recorded as what it is.
    """
    if isinstance(name_or_path, str) and name_or_path in _weights_names():
        return {"name": name_or_path, "sha256": cache.digest(fetch(name_or_path))}
    path = Path(name_or_path).expanduser()
    return {"name": str(path), "sha256": cache.digest(path)}


def _weights_names() -> set[str]:
    return {s.name for s in list_specs()}


# ------------------------------------------------------------------------------------ loading


def load_torchscript(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    sha256: str | None = None,
    name: str | None = None,
) -> Any:
    """Load a TorchScript module (``torch.jit.load``; no Python pickles are executed).

    The file is hashed as it is read; with ``sha256`` a different digest is refused
    (:func:`zeropath.models.weights.load_torchscript` also returns the digest).
    """
    from zeropath.models import weights

    return weights.load_torchscript(path, sha256, name=name, map_location=map_location).value


def load_state_dict(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    sha256: str | None = None,
    name: str | None = None,
) -> Mapping[str, Any]:
    """Load a weights mapping safely: safetensors, or ``torch.load(weights_only=True)``.

    Arbitrary pickled objects are refused, so a tampered checkpoint cannot run code; with
    ``sha256`` a file with another digest is refused before it is read as weights.
    """
    from zeropath.models import weights

    return weights.load_state_dict(path, sha256, name=name, map_location=map_location).value


def load(name: str | ModelSpec, progress: ProgressCallback | None = None) -> Any:
    """Fetch a registered model and load it, checking the SHA-256 of the bytes it loads.

    Returns a :class:`zeropath.models.weights.Loaded` (``path``, ``sha256``, ``value``):
    a state dict for ``state_dict``/``safetensors`` models, a module for ``torchscript``.
    A cached copy damaged in place (even with its size and mtime kept) is refused with a
    :class:`~zeropath.errors.ChecksumError` telling the user to fetch it again.
    """
    from zeropath.models import weights

    spec = _spec(name)
    path = fetch(spec, progress)
    if spec.format == "torchscript":
        return weights.load_torchscript(path, spec.sha256, name=spec.name)
    if spec.format in ("state_dict", "safetensors"):
        return weights.load_state_dict(path, spec.sha256, name=spec.name)
    raise ModelError(f"model {spec.name!r} has format {spec.format!r}: load it with its own code")


for _row in _catalog.ROWS:
    register_model(_row)
del _row
