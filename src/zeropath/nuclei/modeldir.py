"""The one model-directory format of zeropath's nucleus models (ZA-Net and points).

A model directory holds two files:

* ``model.json`` — ``{"format": "zeropath.<method>/<version>", ...}``: the method's complete,
  nested configuration (every setting the model runs with, so that a loaded model never takes
  a default from code), the tile spec and the fit provenance;
* ``weights.pt`` — plain tensors, loaded with ``torch.load(weights_only=True)`` through
  :mod:`zeropath.models.weights` (hashed as read).

Both are written atomically (weights first, ``model.json`` last: a directory with a
``model.json`` is complete). A model's **sha256** is one rule for every method
(:func:`combined_sha256`): the SHA-256 of ``"model.json\\0<sha256 of model.json>\\n"`` followed
by ``"weights.pt\\0<sha256 of weights.pt>\\n"``. Other files in the directory (a README) do not
change a model's identity; a base model named by ``model.json`` (points: MobileSAM, by its
sha256) is covered through ``model.json``. Loaders compute it from the bytes they actually
loaded (:func:`read_model_json` + :class:`zeropath.models.weights.Loaded`), so the digest in
``run.json`` is that of what ran.

A ``model.json`` that lacks a setting is refused, unless its format has an explicit migration
(:func:`complete_config`): a documented table of the values the code assumed when that setting
did not exist yet; what a migration filled is reported by the segmenter's ``describe()``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError

__all__ = [
    "MODEL_JSON",
    "WEIGHTS",
    "combined_sha256",
    "complete_config",
    "json_default",
    "model_sha256",
    "read_model_json",
    "save_model_dir",
]

MODEL_JSON = "model.json"
WEIGHTS = "weights.pt"


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars, arrays and paths in configs and provenance."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def combined_sha256(json_sha256: str, weights_sha256: str | None) -> str:
    """A model's sha256 from the digests of its ``model.json`` and ``weights.pt`` bytes."""
    h = hashlib.sha256()
    h.update(f"{MODEL_JSON}\0{json_sha256}\n".encode())
    if weights_sha256 is not None:
        h.update(f"{WEIGHTS}\0{weights_sha256}\n".encode())
    return h.hexdigest()


def model_sha256(model_dir: str | os.PathLike[str]) -> str:
    """The sha256 of a model directory as stored on disk (see the module doc for the rule)."""
    from zeropath.io.reader import sha256

    d = Path(model_dir)
    weights = d / WEIGHTS
    return combined_sha256(sha256(d / MODEL_JSON), sha256(weights) if weights.is_file() else None)


def save_model_dir(
    model_dir: str | os.PathLike[str], meta: Mapping[str, Any], state: Mapping[str, Any]
) -> Path:
    """Write ``weights.pt`` (``state``, plain tensors) then ``model.json`` (``meta``), each
    atomically; returns the directory."""
    import torch

    from zeropath.io.writers import atomic_write

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / WEIGHTS) as tmp:
        torch.save(dict(state), tmp)
    text = json.dumps(dict(meta), indent=2, default=json_default)
    with atomic_write(out / MODEL_JSON) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return out


def read_model_json(
    model_dir: str | os.PathLike[str], formats: str | tuple[str, ...], what: str = "nucleus"
) -> tuple[dict[str, Any], str]:
    """``(meta, sha256 of the bytes read)`` of ``model_dir/model.json``; a missing or
    unreadable file, or a format not in ``formats``, is a :class:`ModelError`."""
    d = Path(model_dir)
    known = (formats,) if isinstance(formats, str) else formats
    try:
        raw = (d / MODEL_JSON).read_bytes()
        meta = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{d}: not a zeropath {what} model directory ({exc})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt not in known:
        raise ModelError(f"{d}: unknown model format {fmt!r} (expected {' or '.join(known)})")
    return meta, hashlib.sha256(raw).hexdigest()


def complete_config(
    cls: type,
    found: Mapping[str, Any] | None,
    where: str,
    migration: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(cls(**settings), filled)``: a config dataclass from ``model.json``, complete.

    Every field of ``cls`` must be in ``found``; a missing one is taken from ``migration``
    (the explicit, documented values an older format implied) and listed in ``filled``, or,
    without a migration value, refused with a :class:`ModelError` naming the setting. Unknown
    settings (from a newer version) are refused too: the model would not run as it was made.
    """
    found = dict(found or {})
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ModelError(f"{where}: unknown setting(s) {', '.join(unknown)} (a newer zeropath?)")
    filled = {k: migration[k] for k in names if k not in found and migration and k in migration}
    missing = [k for k in names if k not in found and k not in filled]
    if missing:
        raise ModelError(
            f"{where}: model.json lacks {', '.join(missing)}; a model must record every "
            "setting it runs with (refit it, or add the settings to model.json)"
        )
    values = {**filled, **found}
    return cls(**{k: values[k] for k in names}), filled
