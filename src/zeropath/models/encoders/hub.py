"""Factories of the CLIP models on the Hugging Face hub (OpenAI CLIP, PLIP, QuiltNet).

Everything a factory needs comes from the encoder's registry row (:mod:`zeropath.models.
catalog`): ``hub_id``, the pinned ``revision`` (None: the hub's main branch), ``mpp`` and
``licence``. The commit actually loaded and the SHA-256 of its weights file (checked against the
Git LFS digest its hub-cache blob is named by; for open_clip weights, the row's
``meta["sha256"]`` when it pins one) go into
the provenance. Without network (or with ``HF_HUB_OFFLINE=1``) a missing model is an
:class:`~zeropath.models.encoders.base.EncoderError` with one line saying how to fetch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zeropath.models.encoders.base import Encoder, EncoderError
from zeropath.models.encoders.clip import ClipEncoder
from zeropath.models.encoders.hf import (
    blob_sha256,
    hub_fix,
    hub_weights,
    offline,
    require_transformers,
    snapshot_revision,
    unavailable,
)
from zeropath.models.encoders.local import DEFAULT_MPP, load_directory
from zeropath.models.encoders.openclip import OPENCLIP_WEIGHTS, openclip_encoder
from zeropath.models.encoders.tokenizers import HFTokenizer

if TYPE_CHECKING:
    from zeropath.models.spec import ModelSpec

__all__ = ["hub_clip", "hub_openclip"]


def _local(spec: ModelSpec, path: str, device: str) -> Encoder:
    mpp = spec.mpp if spec.mpp is not None else DEFAULT_MPP
    return load_directory(path, device, name=spec.name, mpp=mpp, licence=spec.licence)


def hub_clip(spec: ModelSpec, path: str | None, device: str = "cpu") -> Encoder:
    """A CLIP model on the hub in transformers format (or its local copy at ``path``)."""
    if path:
        return _local(spec, path, device)
    require_transformers(spec.name)
    from transformers import AutoTokenizer, CLIPModel

    from zeropath.errors import ChecksumError
    from zeropath.models.weights import verify_file

    hub_id, revision, local_only = str(spec.hub_id), spec.revision, offline()
    try:
        model = CLIPModel.from_pretrained(hub_id, revision=revision, local_files_only=local_only)
        tok = AutoTokenizer.from_pretrained(hub_id, revision=revision, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise unavailable(spec.name, hub_id, exc) from None
    commit = getattr(model.config, "_commit_hash", None)
    weights = hub_weights(hub_id, commit)
    sha256 = None
    if weights is not None:
        try:
            sha256 = verify_file(weights, blob_sha256(weights))
        except ChecksumError as exc:
            raise EncoderError(f"{exc}{hub_fix(hub_id)}") from None
    provenance = {
        "name": spec.name,
        "licence": spec.licence,
        "source": f"hf:{hub_id}",
        "revision": commit or revision,
        "requested_revision": revision,
        "sha256": sha256,
        "weights": None if weights is None else weights.name,
    }
    return ClipEncoder(
        model,
        HFTokenizer(tok, int(model.config.text_config.max_position_embeddings)),
        name=spec.name,
        mpp=spec.mpp if spec.mpp is not None else DEFAULT_MPP,
        provenance=provenance,
        device=device,
    )


def hub_openclip(spec: ModelSpec, path: str | None, device: str = "cpu") -> Encoder:
    """A CLIP model on the hub in open_clip format, converted on load (or its local copy)."""
    if path:
        return _local(spec, path, device)
    require_transformers(spec.name)
    from huggingface_hub import hf_hub_download

    hub_id, revision, local_only = str(spec.hub_id), spec.revision, offline()
    try:
        config, weights = (
            Path(hf_hub_download(hub_id, f, revision=revision, local_files_only=local_only))
            for f in ("open_clip_config.json", OPENCLIP_WEIGHTS[1])
        )
    except (OSError, ValueError) as exc:
        raise unavailable(spec.name, hub_id, exc) from None
    return openclip_encoder(
        config,
        weights,
        name=spec.name,
        mpp=spec.mpp if spec.mpp is not None else DEFAULT_MPP,
        licence=spec.licence,
        source=f"hf:{hub_id}",
        device=device,
        tokenizer_dir=None,
        revision=snapshot_revision(weights) or revision,
        sha256=spec.meta.get("sha256") or blob_sha256(weights),
        hub_id=hub_id,
    )
