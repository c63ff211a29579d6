"""``test-tiny``: a randomly initialised tiny CLIP (64-px input, 4×4 patch grid, byte-level text)
that runs through the real :class:`~zeropath.models.encoders.clip.ClipEncoder` path offline.
Its registry row (kind ``encoder``, ``test_only``) holds its licence and µm/px."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from zeropath.models.encoders.base import Encoder
from zeropath.models.encoders.clip import ClipArch, ClipEncoder
from zeropath.models.encoders.hf import require_transformers
from zeropath.models.encoders.local import META_FILE, load_directory
from zeropath.models.encoders.tokenizers import ByteTokenizer

if TYPE_CHECKING:
    from transformers import CLIPModel

    from zeropath.models.spec import ModelSpec

__all__ = ["TEST_TINY", "build_test_tiny", "save_test_tiny", "tiny_clip_encoder"]

NAME = "test-tiny"

#: The architecture of ``test-tiny``.
TEST_TINY = ClipArch(
    embed_dim=16,
    image_size=64,
    patch_size=16,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    text_width=32,
    text_layers=2,
    text_heads=2,
    context_length=32,
    vocab_size=258,
    bos_token_id=256,
    eos_token_id=257,
)


def _row() -> ModelSpec:
    from zeropath.models.registry import get_encoder_info

    return get_encoder_info(NAME)


def build_test_tiny(seed: int = 0) -> CLIPModel:
    """The randomly initialised :data:`TEST_TINY` ``CLIPModel``, identical for the same ``seed``
    (the global torch RNG is forked, so callers' random state is untouched)."""
    import torch
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(TEST_TINY.hf_config())
    return model.eval()


def save_test_tiny(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save the ``test-tiny`` model as a transformers directory (+ ``zeropath-encoder.json``), so
    that :func:`~zeropath.models.encoders.local.load_directory` exercises the real
    local-directory path offline."""
    directory = Path(directory)
    build_test_tiny(seed).save_pretrained(directory)
    row = _row()
    meta = {
        "kind": "clip",
        "name": NAME,
        "tokenizer": "bytes",
        "mpp": row.mpp,
        "licence": row.licence,
        "seed": seed,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def tiny_clip_encoder(spec: ModelSpec, path: str | None, device: str = "cpu") -> Encoder:
    """The registry factory: seed 0, or the copy saved in ``path``."""
    if path is not None:
        return load_directory(path, device)
    require_transformers(NAME)
    provenance = {
        "name": NAME,
        "licence": spec.licence,
        "source": "builtin",
        "revision": "seed-0",
        "seed": 0,
    }
    return ClipEncoder(
        build_test_tiny(0),
        ByteTokenizer(TEST_TINY.context_length),
        name=NAME,
        mpp=float(spec.mpp or 1.0),
        provenance=provenance,
        device=device,
    )
