"""The vision-language encoder interface.

Every encoder — CONCH, PLIP, QuiltNet, OpenAI CLIP, the random ``test-tiny`` and the
deterministic ``synthetic`` one — is an :class:`Encoder`: RGB uint8 tiles in, L2-normalised
image embeddings out; texts in, L2-normalised text embeddings out, in the same space. It states
its native input size and µm/px so that pipelines (ZEUS tissue maps, active-learning
prototypes) tile slides at the resolution the model was trained on.

Encoders are rows of the model registry (:mod:`zeropath.models.catalog`, kind ``encoder``),
built by :func:`zeropath.models.registry.get_encoder`; the row carries licence, gating and
revision so that ``zeropath models list`` can show them and a gated or non-commercial model is
never fetched by surprise. This module imports numpy only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from zeropath.errors import ModelError

__all__ = ["Encoder", "EncoderError", "l2_normalise"]


class EncoderError(ModelError):
    """An encoder is unknown, missing, gated without a token, or fails to load."""


def l2_normalise(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x`` divided by its L2 norm along ``axis`` (float32; zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


class Encoder(ABC):
    """A frozen image/text encoder with one shared embedding space.

    Attributes every implementation sets:

    - ``name``: registry name (or the local path it was loaded from);
    - ``input_size``: native square input side in pixels (e.g. 224);
    - ``mpp``: µm/px the model saw in training (the tile resolution pipelines should use);
    - ``embed_dim``: dimension of the shared embedding space;
    - ``provenance``: ``{"name", "licence", "source", "revision"/"sha256"}`` for ``run.json``;
    - ``logit_scale``: the trained softmax temperature of image·text cosines (CLIP's learned
      ``exp(logit_scale)``, 100 for OpenAI CLIP); a class default of 100 serves encoders
      without one.
    """

    name: str
    input_size: int
    mpp: float
    embed_dim: int
    provenance: dict[str, Any]
    logit_scale: float = 100.0

    @abstractmethod
    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB → ``(N, embed_dim)`` float32, each row unit length.

        Tiles of any size are resized / normalised exactly as the model was trained.
        """

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """A list of ``T`` strings → ``(T, embed_dim)`` float32, each row unit length."""

    def encode_patches(self, images: np.ndarray) -> np.ndarray | None:
        """``(N, H, W, 3)`` uint8 → ``(N, h, w, embed_dim)`` unit-length patch embeddings
        projected into the shared space, or ``None`` when the model has no usable patch tokens.
        """
        return None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size}, "
            f"mpp={self.mpp}, embed_dim={self.embed_dim})"
        )
