"""CONCH (CoCa with a timm ViT, Mahmood Lab), wrapped through the optional ``conch`` package
only; its code is not vendored."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.models.encoders.base import Encoder, EncoderError, l2_normalise
from zeropath.models.encoders.hf import env_var, offline, oneline, unavailable
from zeropath.models.encoders.local import file_sha256
from zeropath.models.encoders.preprocess import as_uint8_batch, clip_preprocess

if TYPE_CHECKING:
    from zeropath.models.spec import ModelSpec

__all__ = ["ConchEncoder", "conch_encoder"]


def _conch_missing(hub_id: str) -> EncoderError:
    return EncoderError(
        "encoder 'conch' needs the CONCH package and its gated weights: accept the licence at "
        f"https://huggingface.co/{hub_id}, "
        "pip install git+https://github.com/Mahmoodlab/CONCH, "
        f"and set HF_TOKEN, or pass a local checkpoint (--encoder DIR or {env_var('conch')}=DIR "
        "holding pytorch_model.bin)"
    )


class ConchEncoder(Encoder):
    """CONCH (ViT-B/16 CoCa, 448 px) through the ``conch`` package's model object.

    Images use :func:`clip_preprocess` at 448 px with the OpenAI mean/std (what CONCH's own
    transform does, without torchvision); embeddings are CONCH's contrastive projections.
    CONCH pools with an attentional pooler, so there are no projected patch tokens:
    :meth:`encode_patches` returns ``None``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tokenize: Callable[..., Any],
        *,
        provenance: Mapping[str, Any],
        device: str = "cpu",
        batch_size: int = 32,
        mpp: float = 0.5,
        input_size: int = 448,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.tokenizer = tokenizer
        self._tokenize = tokenize
        self.name = "conch"
        size = getattr(getattr(model, "visual", None), "image_size", input_size)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mpp = float(mpp)
        self.embed_dim = int(getattr(model, "embed_dim", 512))
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = 100.0 if scale is None else float(scale.detach().exp().cpu())
        self.batch_size = int(batch_size)
        self.provenance = dict(provenance)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = as_uint8_batch(images)
        out = np.empty((len(images), self.embed_dim), np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = torch.from_numpy(clip_preprocess(batch, self.input_size)).to(self.device)
            with torch.inference_mode():
                emb = self.model.encode_image(pixels, proj_contrast=True, normalize=True)
            out[start : start + len(batch)] = emb.float().cpu().numpy()
        return l2_normalise(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = list(texts)
        out = np.empty((len(texts), self.embed_dim), np.float32)
        for start in range(0, len(texts), 64):
            chunk = texts[start : start + 64]
            tokens = self._tokenize(tokenizer=self.tokenizer, texts=chunk).to(self.device)
            with torch.inference_mode():
                emb = self.model.encode_text(tokens)
            out[start : start + len(chunk)] = emb.float().cpu().numpy()
        return l2_normalise(out)


def conch_encoder(spec: ModelSpec | None, path: str | None, device: str = "cpu") -> Encoder:
    """CONCH from a local checkpoint (a directory with ``pytorch_model.bin`` or the file itself)
    or from the gated hub repo of its registry row with ``HF_TOKEN``; needs the ``conch``
    package. ``spec`` None: the registry's ``conch`` row."""
    if spec is None:
        from zeropath.models.registry import get_encoder_info

        spec = get_encoder_info("conch")
    hub_id = str(spec.hub_id)
    try:
        from conch.open_clip_custom import create_model_from_pretrained, get_tokenizer, tokenize
    except ImportError:
        raise _conch_missing(hub_id) from None
    provenance: dict[str, Any] = {"name": "conch", "licence": spec.licence}
    if path:
        checkpoint = Path(path).expanduser()
        if checkpoint.is_dir():
            checkpoint = checkpoint / "pytorch_model.bin"
        if not checkpoint.is_file():
            raise EncoderError(f"{checkpoint}: no CONCH checkpoint (pytorch_model.bin) there")
        source = str(checkpoint)
        provenance.update(source=source, sha256=file_sha256(checkpoint))
    else:
        if offline():
            raise unavailable("conch", hub_id)
        source = f"hf_hub:{hub_id}"
        provenance.update(source=source)
    try:
        model, _ = create_model_from_pretrained(
            "conch_ViT-B-16", source, device=device, hf_auth_token=os.environ.get("HF_TOKEN")
        )
    except (OSError, ValueError, RuntimeError) as exc:
        if source.startswith("hf_hub:"):
            raise EncoderError(f"{_conch_missing(hub_id)} ({oneline(exc)})") from None
        raise EncoderError(f"{source}: cannot load CONCH ({oneline(exc)})") from None
    return ConchEncoder(
        model,
        get_tokenizer(),
        tokenize,
        provenance=provenance,
        device=device,
        mpp=spec.mpp or 0.5,
        input_size=spec.input_size or 448,
    )
