"""Hugging Face hub access shared by the encoders: offline mode, the local-directory variable,
one-line "not available" errors, and the hub cache's commits and Git LFS digests."""

from __future__ import annotations

import os
from pathlib import Path

from zeropath.models.encoders.base import EncoderError

__all__ = [
    "HF_WEIGHTS",
    "blob_sha256",
    "env_var",
    "hub_fix",
    "hub_weights",
    "offline",
    "oneline",
    "require_transformers",
    "snapshot_revision",
    "unavailable",
]

#: Weights files of a transformers model directory, in order of preference.
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def require_transformers(name: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise EncoderError(
            f"encoder {name!r} needs transformers: pip install 'zeropath[vlm]'"
        ) from None


def offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def env_var(name: str) -> str:
    """``ZEROPATH_ENCODER_<NAME>``: the variable that points encoder ``name`` at a local dir."""
    return "ZEROPATH_ENCODER_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def oneline(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unavailable(name: str, hub_id: str, exc: BaseException | None = None) -> EncoderError:
    why = f" ({oneline(exc)})" if exc is not None else ""
    return EncoderError(
        f"encoder {name!r} is not available offline: download it on a machine with internet "
        f"(hf download {hub_id} --local-dir DIR) and pass --encoder DIR, "
        f"or set {env_var(name)}=DIR{why}"
    )


def hub_fix(hub_id: str | None) -> str:
    if not hub_id:
        return ""
    return (
        f"; delete it from the Hugging Face cache or run "
        f"`hf download {hub_id} --force-download` (then retry)"
    )


def blob_sha256(path: Path) -> str | None:
    """The SHA-256 a hub-cache file must have: Git LFS blobs are stored under their digest
    (``.../blobs/<sha256>``, linked from ``snapshots/<commit>/<file>``); None otherwise."""
    import re

    try:
        name = path.resolve().name
    except OSError:
        return None
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def hub_weights(hub_id: str, commit: str | None) -> Path | None:
    """The cached weights file of ``hub_id`` at ``commit`` (transformers layout), if any."""
    if not commit:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in HF_WEIGHTS:
        found = try_to_load_from_cache(hub_id, filename, revision=commit)
        if isinstance(found, str):
            return Path(found)
    return None


def snapshot_revision(path: Path) -> str | None:
    """The commit hash in a hub-cache path ``.../snapshots/<commit>/<file>``, if it is one."""
    parts = path.parts
    if len(parts) >= 3 and parts[-3] == "snapshots":
        return parts[-2]
    return None
