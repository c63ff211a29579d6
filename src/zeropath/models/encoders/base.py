"""The vision-language encoder interface and its registry.

Every encoder — CONCH, PLIP, QuiltNet, OpenAI CLIP, the random ``test-tiny`` and the
deterministic ``synthetic`` one — is an :class:`Encoder`: RGB uint8 tiles in, L2-normalised
image embeddings out; texts in, L2-normalised text embeddings out, in the same space. It states
its native input size and µm/px so that pipelines (ZEUS tissue maps, active-learning
prototypes) tile slides at the resolution the model was trained on.

Encoders are added with the :func:`register_encoder` decorator on a factory; the record carries
licence, gating and checksum metadata (LazySlide / timm style) so that ``zeropath models list``
can show them and a gated or non-commercial model is never fetched by surprise. Importing this
module is cheap: factories import torch / transformers inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderInfo",
    "get_encoder",
    "get_encoder_info",
    "l2_normalise",
    "list_encoders",
    "register_encoder",
]


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


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is, where it comes from and under which terms.

    ``factory(path, device)`` builds the :class:`Encoder`; ``path`` is a local directory the
    user gave (``--encoder PATH`` or ``ZEROPATH_ENCODER_<NAME>``) or ``None`` to use
    ``hub_id``. ``sha256`` pins the weights file where it is known; ``revision`` pins a hub
    commit. ``extra`` is the pip extra that provides the libraries it needs.
    """

    name: str
    factory: Callable[[str | None, str], Encoder]
    licence: str
    gated: bool = False
    commercial_use: bool = True
    hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    extra: str | None = None
    mpp: float | None = None
    input_size: int | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, EncoderInfo] = {}

#: Modules that register encoders when imported (imported lazily on first lookup).
ENCODER_MODULES: tuple[str, ...] = (
    "zeropath.models.encoders.synthetic",
    "zeropath.models.encoders.clip_family",
)


def register_encoder(
    name: str, **meta: Any
) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator: register ``factory(path, device) -> Encoder`` under ``name`` with ``meta``
    (the :class:`EncoderInfo` fields other than ``name`` and ``factory``)."""

    def wrap(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _REGISTRY[name] = EncoderInfo(name=name, factory=factory, **meta)
        return factory

    return wrap


def _load_modules() -> None:
    import importlib

    for module in ENCODER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a module whose optional deps are missing registers nothing
            if not str(getattr(exc, "name", "") or "").startswith("zeropath"):
                continue
            raise


def list_encoders() -> list[EncoderInfo]:
    """Every registered encoder, sorted by name."""
    _load_modules()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_encoder_info(name: str) -> EncoderInfo:
    """The registry record of ``name``; :class:`EncoderError` listing the known names if absent."""
    _load_modules()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise EncoderError(f"unknown encoder {name!r}; known: {known}; or pass a local directory")
    return _REGISTRY[name]


def get_encoder(name_or_path: str, device: str = "cpu") -> Encoder:
    """Build the encoder a user named: a registered name, or a local model directory.

    A directory is recognised by the files in it (implemented by the loaders module); anything
    missing is an :class:`EncoderError` with a one-line message saying how to get it.
    """
    _load_modules()
    if name_or_path in _REGISTRY:
        info = _REGISTRY[name_or_path]
        return info.factory(None, device)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from zeropath.models.encoders.clip_family import load_directory

        return load_directory(path, device)
    return get_encoder_info(name_or_path).factory(None, device)  # raises the unknown-name error
