"""Loading weights files: hashed as they are read, checked, loaded safely, errors on one line.

Every place that reads network weights goes through this module, so that

- the file is hashed **when it is loaded** (never trusted by its size or modification time):
  files up to :data:`IN_MEMORY_LIMIT` are read once, hashed, and loaded from those same bytes,
  so the digest recorded in ``run.json`` is that of the bytes actually used; larger files are
  hashed in 1 MiB chunks and then loaded;
- a known SHA-256 is compared before anything is unpickled: a mismatch is a
  :class:`~zeropath.errors.ChecksumError` that names the file and, for a registered model, the
  fix (``zeropath models fetch NAME --force``);
- ``torch.load`` always runs with ``weights_only=True``, and its failures (a truncated file,
  garbage, pickled code) become one :class:`~zeropath.errors.WeightsError` line — torch's
  advice to set ``weights_only=False`` never reaches a user;
- :func:`load_into` loads a state dict strictly and reports missing, unexpected or mis-shaped
  entries on one line.

Importing this module is cheap: torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeropath.errors import ChecksumError, WeightsError
from zeropath.models import cache

__all__ = [
    "IN_MEMORY_LIMIT",
    "Loaded",
    "describe_load_error",
    "entry",
    "load_into",
    "load_state_dict",
    "load_torchscript",
    "read_verified",
    "verify_file",
]

#: Files up to this size are read into memory once and loaded from the hashed bytes.
IN_MEMORY_LIMIT = 1 << 30


@dataclass(frozen=True)
class Loaded:
    """What was loaded (``value``), from which file, and the SHA-256 of the bytes used."""

    path: Path
    sha256: str
    value: Any


def _oneline(text: object, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _fix(name: str | None) -> str:
    return f"; run `zeropath models fetch {name} --force`" if name else ""


def _check(path: Path, got: str, expected: str | None, name: str | None) -> None:
    if expected is None or got == expected.lower():
        return
    # a stale "verified" memo beside a cached file must not vouch for it any more
    with contextlib.suppress(OSError):
        cache.memo_path(path).unlink()
    what = f"model {name!r}" if name else "weights file"
    raise ChecksumError(
        f"{path}: {what} is damaged or was replaced (sha256 {got[:12]}…, expected "
        f"{expected.lower()[:12]}…); refusing to use it{_fix(name)}"
    )


def _read_error(path: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})")


def read_verified(
    path: str | os.PathLike[str], sha256: str | None = None, *, name: str | None = None
) -> tuple[bytes | None, str]:
    """``(data, digest)`` of a file: its bytes (None above :data:`IN_MEMORY_LIMIT`) and SHA-256.

    With ``sha256`` given, a different digest is a :class:`ChecksumError` (and the cache memo
    beside the file is removed). ``name`` is the registered model name used in the fix hint.
    """
    path = Path(path)
    try:
        if path.stat().st_size <= IN_MEMORY_LIMIT:
            data: bytes | None = path.read_bytes()
            got = hashlib.sha256(data).hexdigest()
        else:
            data, got = None, cache.sha256_file(path)
    except OSError as exc:
        raise _read_error(path, exc) from None
    _check(path, got, sha256, name)
    return data, got


def verify_file(
    path: str | os.PathLike[str], sha256: str | None = None, *, name: str | None = None
) -> str:
    """Hash a file in 1 MiB chunks and return its SHA-256; a mismatch is a ChecksumError."""
    path = Path(path)
    try:
        got = cache.sha256_file(path)
    except OSError as exc:
        raise _read_error(path, exc) from None
    _check(path, got, sha256, name)
    return got


# ------------------------------------------------------------------------------- messages

_TORCH_ADVICE = ("weights_only", "weights only load failed", "torch.load", "documentation")


def describe_load_error(exc: BaseException | str, limit: int = 240) -> str:
    """One line saying what is wrong, from a torch loading error (or any exception).

    ``load_state_dict`` reports become ``missing keys a, b (+N more); unexpected keys …;
    size mismatch for x: …``; torch's ``weights_only`` advice is dropped.
    """
    text = str(exc)
    if isinstance(exc, KeyError):
        return f"no entry {exc.args[0]!r}" if exc.args else "a missing entry"
    parts = []
    for label, pattern in (
        ("missing keys", r"Missing key\(s\) in state_dict:([^\n]*)"),
        ("unexpected keys", r"Unexpected key\(s\) in state_dict:([^\n]*)"),
    ):
        m = re.search(pattern, text)
        if m:
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append(f"{label} {_names(keys)}")
    sizes = re.findall(r"size mismatch for ([^:]+): (copying a param with shape [^\n]*)", text)
    if sizes:
        key, detail = sizes[0]
        more = f" (+{len(sizes) - 1} more)" if len(sizes) > 1 else ""
        parts.append(f"size mismatch for {key}: {detail.strip().rstrip('.')}{more}")
    if parts:
        return _oneline("; ".join(parts), limit)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    kept = [ln for ln in lines if not any(a in ln.lower() for a in _TORCH_ADVICE)]
    reason = " ".join(kept) or type(exc).__name__
    if not isinstance(exc, str) and type(exc).__name__ not in reason:
        reason = f"{type(exc).__name__}: {reason}"
    return _oneline(reason, limit)


def _names(keys: Iterable[str], shown: int = 3) -> str:
    keys = list(keys)
    if not keys:
        return "(none)"
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _torch_load_error(path: Path, exc: BaseException, name: str | None) -> WeightsError:
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found and "Weights only load failed" in text:
        return WeightsError(
            f"{path}: not a plain weights file: it holds pickled Python objects "
            f"({found.group(1)}); refused, since loading them could run code"
        )
    return WeightsError(
        f"{path}: not a plain weights file: damaged, truncated or of another format "
        f"({describe_load_error(exc, 160)}){_fix(name)}"
    )


# -------------------------------------------------------------------------------- loaders


def load_state_dict(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    name: str | None = None,
    map_location: Any = "cpu",
) -> Loaded:
    """A weights mapping (safetensors, or ``torch.load(weights_only=True)``), hash-checked.

    ``Loaded.value`` is the mapping, ``Loaded.sha256`` the digest of the bytes it came from.
    """
    path = Path(path)
    data, got = read_verified(path, sha256, name=name)
    if path.suffix == ".safetensors":
        try:
            import safetensors.torch as st
        except ImportError:
            raise WeightsError(
                f"{path}: reading .safetensors needs the safetensors package "
                "(pip install safetensors)"
            ) from None
        try:
            if data is None:
                obj: Any = st.load_file(str(path), device=str(map_location))
            else:
                obj = st.load(data)
                if str(map_location) != "cpu":
                    obj = {k: v.to(map_location) for k, v in obj.items()}
        except Exception as exc:
            raise WeightsError(
                f"{path}: unreadable safetensors file ({describe_load_error(exc, 160)}){_fix(name)}"
            ) from None
        return Loaded(path, got, obj)
    import torch

    try:
        src: Any = str(path) if data is None else io.BytesIO(data)
        obj = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _torch_load_error(path, exc, name) from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return Loaded(path, got, obj)


def load_torchscript(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    name: str | None = None,
    map_location: Any = "cpu",
) -> Loaded:
    """A TorchScript module (``torch.jit.load``; no Python pickles run), hash-checked."""
    import warnings

    import torch

    path = Path(path)
    try:
        data, got = read_verified(path, sha256, name=name)
    except ChecksumError:
        raise
    except WeightsError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise WeightsError(f"{path}: not a loadable TorchScript model ({reason})") from None
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags torch.jit as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            src: Any = str(path) if data is None else io.BytesIO(data)
            module = torch.jit.load(src, map_location=map_location)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a loadable TorchScript model ({describe_load_error(exc, 160)})"
            f"{_fix(name)}"
        ) from None
    return Loaded(path, got, module)


def entry(state: Any, key: str, path: str | os.PathLike[str]) -> Any:
    """``state[key]``, or a one-line WeightsError naming the file and the missing entry."""
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a mapping of weights, found a {type(state).__name__}")
    if key not in state:
        found = ", ".join(sorted(map(str, state))[:5]) or "nothing"
        raise WeightsError(f"{path}: the weights file has no {key!r} entry (it holds {found})")
    return state[key]


def load_into(
    module: Any, state: Any, path: str | os.PathLike[str], what: str | None = None
) -> None:
    """``module.load_state_dict(state, strict=True)`` with every mismatch on one line.

    Missing and unexpected keys are listed (three of each), a shape mismatch names the tensor.
    """
    what = what or type(module).__name__
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{path}: the {what} weights are a {type(state).__name__}, not a state dict"
        )
    expected = list(module.state_dict().keys())
    missing = [k for k in expected if k not in state]
    known = set(expected)
    unexpected = [k for k in state if k not in known]
    if missing or unexpected:
        parts = [f"missing keys {_names(missing)}"] if missing else []
        parts += [f"unexpected keys {_names(unexpected)}"] if unexpected else []
        raise WeightsError(f"{path}: the weights do not fit the {what}: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise WeightsError(
            f"{path}: the weights do not fit the {what}: {describe_load_error(exc)}"
        ) from None
