"""Hidden staging folders for one input's outputs: owned, swept when stale, published at once.

An input's outputs are written into ``OUT/.STEM.<kind>-<id>-p<pid>-h<host>`` and only moved
into ``OUT`` when all of them are complete (:func:`publish`, all-or-nothing, with rollback).
The folder name records the process that owns it (its PID and a short hash of the host and
PID namespace), and an ``owner.json`` inside adds the process start time, so a later run can
tell the leftovers of a killed run (SIGKILL, power loss) from the folders of a run that is
still going: :func:`sweep_stale_staging` removes only folders whose owner process is gone on
this host. Folders of other hosts, and folders it cannot attribute, are left alone.

Shared by nucleus segmentation (:mod:`zeropath.run.segment`) and ZEUS tissue maps
(:mod:`zeropath.tissue.zeus`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "OWNER_FILE",
    "host_id",
    "make_staging",
    "parse_staging_name",
    "publish",
    "staging_is_stale",
    "sweep_stale_staging",
]

#: Small file inside a staging folder naming its owner (pid, host, process start time).
OWNER_FILE = "owner.json"

# ``.STEM.partial-1a2b3c4d-p12345-h0123abcd`` (``kind`` may be ``tissue-partial`` etc.)
_NAME = re.compile(r"^\..+\.(?:[a-z]+-)*partial-[0-9a-f]{8}-p(?P<pid>\d+)-h(?P<host>[0-9a-f]{8})$")


def host_id() -> str:
    """8 hex digits naming this host and PID namespace (PIDs mean something only within it)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    text = f"{socket.gethostname()}|{ns}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a PID we can judge: keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True
    return True


def make_staging(out: str | os.PathLike[str], stem: str, kind: str = "partial") -> Path:
    """Create and return a new staging folder for ``stem`` in ``out``, owned by this process."""
    pid = os.getpid()
    path = Path(out) / f".{stem}.{kind}-{uuid.uuid4().hex[:8]}-p{pid}-h{host_id()}"
    path.mkdir()
    owner = {"pid": pid, "host": socket.gethostname(), "start_time": _start_time(pid)}
    with contextlib.suppress(OSError):
        (path / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")
    return path


def parse_staging_name(name: str) -> tuple[int, str] | None:
    """``(pid, host_id)`` recorded in a staging folder name, or None if it is not one."""
    m = _NAME.match(name)
    return (int(m["pid"]), m["host"]) if m else None


def staging_is_stale(path: Path) -> bool:
    """Whether ``path`` is a staging folder whose owner process on this host has ended."""
    owner = parse_staging_name(path.name)
    if owner is None or not path.is_dir() or path.is_symlink():
        return False
    pid, host = owner
    if host != host_id():
        return False  # another machine (shared file system): cannot tell, keep it
    if not _alive(pid):
        return True
    # The PID is in use: by the owner, or by a new process that reused it after a reboot.
    try:
        recorded = json.loads((path / OWNER_FILE).read_text(encoding="utf-8")).get("start_time")
    except (OSError, ValueError, AttributeError):
        return False
    now = _start_time(pid)
    return recorded is not None and now is not None and str(recorded) != now


def sweep_stale_staging(out: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders in ``out`` left by processes that no longer run.

    Returns the folders removed. Never touches a folder whose owner may still be running.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(out).iterdir())
    except OSError:
        return removed
    for p in entries:
        if p.name.startswith(".") and staging_is_stale(p):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
    return removed


def publish(staging: Path, out: Path, names: Sequence[str]) -> list[Path]:
    """Move ``staging/NAME`` to ``out/NAME`` for every name, all or nothing.

    An existing output of the same kind (file over file, folder over folder) is replaced; it
    is first moved aside into ``staging`` so that, if a later move fails (or the process is
    interrupted), every output already moved goes back into ``staging`` and the previous
    ones are restored.
    Something of the other kind in the way (a folder where a file goes) is an error. Returns
    the published paths; the caller removes ``staging`` afterwards.
    """
    backup = staging / ".replaced"
    done: list[tuple[Path, Path | None]] = []  # (destination, its previous version)
    try:
        for name in names:
            src, dest = staging / name, out / name
            previous: Path | None = None
            if dest.exists() or dest.is_symlink():
                if src.is_dir() != (dest.is_dir() and not dest.is_symlink()):
                    what = "a folder" if dest.is_dir() else "a file"
                    raise IsADirectoryError(f"{dest}: {what} of that name is in the way")
                backup.mkdir(exist_ok=True)
                previous = backup / name
                os.replace(dest, previous)
            try:
                os.replace(src, dest)
            except BaseException:
                if previous is not None:
                    os.replace(previous, dest)
                raise
            done.append((dest, previous))
    except BaseException:
        for dest, previous in reversed(done):  # back into staging, the old one into place
            with contextlib.suppress(OSError):
                os.replace(dest, staging / dest.name)
                if previous is not None:
                    os.replace(previous, dest)
        raise
    return [dest for dest, _ in done]
