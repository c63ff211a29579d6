"""The model cache on disk: where it lives, streaming checksums, atomic installs, safe extraction.

Everything here is standard library (plus platformdirs) so that importing it never loads torch.
The cache root is ``$ZEROPATH_HOME`` when set, else ``platformdirs.user_cache_dir("zeropath")``;
model files live under ``ROOT/models/NAME/FILENAME``. Beside each verified file sits a small
``FILENAME.sha256`` memo (digest, size, mtime) so that ``fetch`` and ``models list`` need not
re-hash large files. The memo never vouches for the bytes that are *loaded*: every loader hashes
the file as it reads it (:mod:`zeropath.models.weights`), because a file damaged in place can keep
its size and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from zeropath.errors import ModelError

ENV_HOME = "ZEROPATH_HOME"
CHUNK = 1 << 20

#: ``progress(done, total, message)``; total is None when unknown.
ProgressCallback = Callable[[int, int | None, str], None]


def home() -> Path:
    """The zeropath cache root: ``$ZEROPATH_HOME`` or the platform's user cache directory."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("zeropath"))


def models_dir() -> Path:
    """The directory holding downloaded models (``home()/models``)."""
    return home() / "models"


# --------------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> str:
    """Hex SHA-256 of a file, streamed (:func:`zeropath.io.reader.sha256`, the package's one
    file hash); an unreadable file raises its ``OSError`` here, not an input error."""
    from zeropath.errors import InputError
    from zeropath.io.reader import sha256

    try:
        return sha256(path, CHUNK, progress)
    except InputError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise cause from None
        raise


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a directory: the digest of ``relpath NUL filedigest LF`` over sorted files.

    Symbolic links and empty directories do not count, so the value depends only on the
    regular files' relative paths and bytes.
    """
    root = Path(path)
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            rel = p.relative_to(root).as_posix()
            lines.append(f"{rel}\0{sha256_file(p)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a directory tree (see :func:`sha256_tree`)."""
    return sha256_tree(path) if Path(path).is_dir() else sha256_file(path)


def verify(path: str | os.PathLike[str], sha256: str) -> bool:
    """True when the file (or directory tree) at ``path`` has the given SHA-256."""
    return digest(path) == sha256.lower()


def _stamp(path: Path) -> list:
    """Cheap fingerprint (size, mtime) of a file or tree, to know when a memo is stale."""
    if path.is_dir():
        return sorted(
            [p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
            for p in path.rglob("*")
            if p.is_file()
        )
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def memo_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_memoized(path: Path, sha256: str) -> bool:
    """Like :func:`verify`, but trusts a fresh memo left by an earlier successful check.

    Used for files inside the cache only; a successful full check writes the memo. A memo is
    only a hint for :func:`~zeropath.models.registry.fetch` and listings: loaders hash the bytes
    they load again (see :mod:`zeropath.models.weights`), so a file damaged in place with its
    size and mtime restored is still refused.
    """
    memo = memo_path(path)
    try:
        data = json.loads(memo.read_text())
        if data.get("sha256") == sha256.lower() and data.get("stamp") == _stamp(path):
            return True
    except (OSError, ValueError):
        pass
    ok = verify(path, sha256)
    if ok:
        write_memo(path, sha256)
    return ok


def write_memo(path: Path, sha256: str) -> None:
    """Record that ``path`` was verified (best effort: a read-only cache simply re-hashes)."""
    with contextlib.suppress(OSError):
        memo_path(path).write_text(json.dumps({"sha256": sha256.lower(), "stamp": _stamp(path)}))


def remove(path: Path) -> None:
    """Delete a cached file or directory and its memo, ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(FileNotFoundError):
        memo_path(path).unlink()


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A temporary directory inside ``parent`` (same filesystem, so installs are renames)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(tmp: Path, dest: Path) -> Path:
    """Move a verified temporary file or directory into place atomically; return ``dest``."""
    if dest.is_dir() and not dest.is_symlink():
        trash = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        os.replace(dest, trash)
        os.replace(tmp, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


# ------------------------------------------------------------------------------- streaming IO


def copy_stream(
    src: BinaryIO,
    dst: BinaryIO,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    message: str = "",
    limit: int | None = None,
) -> int:
    """Copy a byte stream in chunks, reporting progress; stop with ModelError past ``limit``."""
    done = 0
    while chunk := src.read(CHUNK):
        done += len(chunk)
        if limit is not None and done > limit:
            raise ModelError(f"{message or 'download'} is larger than the expected {limit} bytes")
        dst.write(chunk)
        if progress is not None:
            progress(done, total, message)
    return done


# ------------------------------------------------------------------------ archive extraction


def check_member_name(member: str) -> str:
    """Return the normalised archive member name, or raise ModelError if it is unsafe.

    Rejected: empty names, absolute paths, drive letters, backslashes and any ``..`` part —
    a registry entry must name one file inside the archive, nothing outside it.
    """
    bad = (
        not member
        or member.startswith(("/", "\\"))
        or "\\" in member
        or (len(member) > 1 and member[1] == ":")
        or any(part == ".." for part in member.split("/"))
    )
    if bad:
        raise ModelError(f"unsafe archive member name {member!r} (absolute or outside the archive)")
    norm = posixpath.normpath(member.removeprefix("./"))
    if norm in ("", "."):
        raise ModelError(f"unsafe archive member name {member!r}")
    return norm


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() in (".whl", ".zip", ".egg") or (
        not tarfile.is_tarfile(path) and zipfile.is_zipfile(path)
    )


def extract_member(
    archive: str | os.PathLike[str],
    member: str,
    dest: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    limit: int | None = None,
) -> Path:
    """Stream one regular-file member of a wheel/zip or (compressed) tar archive to ``dest``.

    Only the named member is read; its name is checked with :func:`check_member_name`, and
    links, devices and directories are refused. ``dest`` is chosen by the caller, so nothing
    in the archive decides where bytes land on disk.
    """
    archive, dest = Path(archive), Path(dest)
    want = check_member_name(member)
    msg = f"extracting {posixpath.basename(want)}"
    try:
        if _is_zip(archive):
            with zipfile.ZipFile(archive) as zf:
                try:
                    info = zf.getinfo(want)
                except KeyError:
                    raise ModelError(f"{archive.name} has no member {want!r}") from None
                ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when no Unix mode is stored
                if info.is_dir() or ftype not in (0, stat.S_IFREG):
                    raise ModelError(f"{archive.name}: member {want!r} is not a regular file")
                with zf.open(info) as src, dest.open("wb") as dst:
                    copy_stream(src, dst, info.file_size, progress, msg, limit)
            return dest
        with tarfile.open(archive, mode="r|*") as tf:
            for info in tf:
                if posixpath.normpath(info.name.removeprefix("./")) != want:
                    continue
                if not info.isreg():
                    raise ModelError(f"{archive.name}: member {want!r} is not a regular file")
                src = tf.extractfile(info)
                if src is None:  # pragma: no cover - isreg() members always have data
                    break
                with dest.open("wb") as dst:
                    copy_stream(src, dst, info.size, progress, msg, limit)
                return dest
        raise ModelError(f"{archive.name} has no member {want!r}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{archive.name}: unreadable archive ({exc})") from None
