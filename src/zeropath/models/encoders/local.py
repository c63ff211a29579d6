"""Encoders from a local directory (``--encoder DIR`` or ``ZEROPATH_ENCODER_<NAME>=DIR``),
recognised by the files in it; see :func:`load_directory`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zeropath.models.encoders.base import Encoder, EncoderError
from zeropath.models.encoders.clip import ClipEncoder
from zeropath.models.encoders.hf import HF_WEIGHTS, oneline, require_transformers
from zeropath.models.encoders.openclip import OPENCLIP_WEIGHTS, openclip_encoder
from zeropath.models.encoders.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from zeropath.models.encoders.tokenizers import (
    ByteTokenizer,
    Tokenizer,
    clip_bpe_tokenizer,
    has_hf_tokenizer,
)

__all__ = ["DEFAULT_MPP", "META_FILE", "file_sha256", "load_directory", "read_meta"]

#: Small marker file zeropath writes next to weights it saves (tokenizer kind, µm/px, licence).
META_FILE = "zeropath-encoder.json"
DEFAULT_MPP = 0.5


def weights_file(directory: Path, candidates: Sequence[str]) -> Path | None:
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    from zeropath.models.cache import sha256_file

    return sha256_file(path)


def read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{path}: unreadable ({oneline(exc)})") from None
    if not isinstance(meta, dict):
        raise EncoderError(f"{path}: expected a JSON object")
    return meta


def load_hf_dir(
    directory: Path, device: str, meta: Mapping[str, Any], name: str, mpp: float, licence: str
) -> ClipEncoder:
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EncoderError(f"{directory}: cannot load the CLIP model ({oneline(exc)})") from None
    ctx = int(model.config.text_config.max_position_embeddings)
    if meta.get("tokenizer") == "bytes":
        tokenizer: Tokenizer = ByteTokenizer(ctx)
    elif has_hf_tokenizer(directory) or model.config.text_config.vocab_size == 49408:
        tokenizer = clip_bpe_tokenizer(name, ctx, directory)
    else:
        raise EncoderError(f"{directory}: no tokenizer files (tokenizer.json or vocab.json)")
    weights = weights_file(directory, HF_WEIGHTS)
    provenance = {
        "name": name,
        "licence": licence,
        "source": str(directory),
        "sha256": file_sha256(weights),
        "weights": None if weights is None else weights.name,
    }
    where = {"name": name, "mpp": mpp, "provenance": provenance, "device": device}
    return ClipEncoder(model, tokenizer, **where, **mean_std(directory))


def mean_std(directory: Path) -> dict[str, tuple[float, ...]]:
    """``image_mean``/``image_std`` from ``preprocessor_config.json`` when present."""
    path = directory / "preprocessor_config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
            return {"mean": tuple(cfg["image_mean"]), "std": tuple(cfg["image_std"])}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}


def load_directory(
    path: str | os.PathLike[str],
    device: str = "cpu",
    *,
    name: str | None = None,
    mpp: float | None = None,
    licence: str | None = None,
) -> Encoder:
    """Build the encoder stored in a local directory, recognising its layout by its files.

    - ``zeropath-encoder.json`` with ``"kind": "synthetic"`` → :class:`SyntheticEncoder`;
    - ``config.json`` with ``model_type`` ``clip`` → transformers CLIP (OpenAI CLIP, PLIP,
      a saved ``test-tiny``), tokenizer from the directory;
    - ``open_clip_config.json`` / ``open_clip_*model*`` → open_clip CLIP (QuiltNet), converted;
    - ``pytorch_model.bin`` + ``meta.yaml`` (the CONCH hub layout) → CONCH via its package.

    ``name`` and ``licence`` come from the registry when a registered encoder is pointed at the
    directory, else from ``zeropath-encoder.json``, else the path and "unknown"; ``mpp`` from
    ``zeropath-encoder.json``, else the registry, else 0.5. The weights' SHA-256 goes into the
    provenance.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise EncoderError(f"{directory}: not a directory holding an encoder")
    meta = read_meta(directory)
    if meta.get("kind") == "synthetic":
        from zeropath.testing.synthetic import SyntheticEncoder

        return SyntheticEncoder.from_config(meta, name=name or str(directory))
    name = name or str(meta.get("name") or directory)
    mpp = float(meta.get("mpp", mpp if mpp is not None else DEFAULT_MPP))
    licence = licence or str(meta.get("licence", "unknown (local directory)"))

    config_json = directory / "config.json"
    if config_json.is_file():
        try:
            model_type = json.loads(config_json.read_text()).get("model_type")
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{config_json}: unreadable ({oneline(exc)})") from None
        if model_type != "clip":
            raise EncoderError(
                f"{directory}: config.json has model_type {model_type!r}; only 'clip' models "
                "load from a transformers directory"
            )
        require_transformers(name)
        return load_hf_dir(directory, device, meta, name, mpp, licence)

    openclip_weights = weights_file(directory, OPENCLIP_WEIGHTS)
    openclip_config = directory / "open_clip_config.json"
    if openclip_weights is not None or openclip_config.is_file():
        if openclip_weights is None:
            raise EncoderError(f"{directory}: open_clip_config.json but no {OPENCLIP_WEIGHTS[1]}")
        require_transformers(name)
        return openclip_encoder(
            openclip_config if openclip_config.is_file() else None,
            openclip_weights,
            name=name,
            mpp=mpp,
            licence=licence,
            source=str(directory),
            device=device,
            tokenizer_dir=directory,
        )

    if (directory / "pytorch_model.bin").is_file() and (directory / "meta.yaml").is_file():
        from zeropath.models.encoders.conch import conch_encoder

        return conch_encoder(None, str(directory), device)

    raise EncoderError(
        f"{directory}: no encoder recognised (expected config.json of a CLIP model, "
        f"open_clip_config.json + {OPENCLIP_WEIGHTS[1]}, or {META_FILE})"
    )
