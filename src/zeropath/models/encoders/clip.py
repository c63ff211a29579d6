"""CLIP on transformers: the architecture (:class:`ClipArch`) and :class:`ClipEncoder`, through
which every CLIP-architecture model runs (OpenAI CLIP, PLIP, QuiltNet, the random ``test-tiny``).

- images are preprocessed exactly as CLIP was trained (:func:`~zeropath.models.encoders.
  preprocess.clip_preprocess`: shortest side to ``input_size`` with PIL bicubic, centre crop,
  OpenAI mean/std), in numpy + PIL, no torchvision;
- ``encode_patches`` projects the vision tower's last-layer patch tokens through
  ``post_layernorm`` and ``visual_projection`` into the shared space. This is the common
  MaskCLIP-style approximation (the tokens were never trained against text, so their similarities
  are coarser than the pooled embedding's, but they localise).

Importing this module is cheap: torch and transformers load inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.models.encoders.base import Encoder, l2_normalise
from zeropath.models.encoders.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    as_uint8_batch,
    clip_preprocess,
)
from zeropath.models.encoders.tokenizers import Tokenizer

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPModel

__all__ = ["QUILTNET_B_32", "VIT_B_16", "VIT_B_32", "ClipArch", "ClipEncoder"]


@dataclass(frozen=True)
class ClipArch:
    """The hyperparameters that fix a CLIP ViT's architecture (open_clip naming).

    ``quick_gelu`` is True for OpenAI-trained weights (and PLIP, fine-tuned from them) and False
    for open_clip's plain ``ViT-B-32`` config (QuiltNet), which uses ``nn.GELU``.
    """

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def hf_config(self) -> CLIPConfig:
        """The equivalent transformers ``CLIPConfig`` (EOS pooling by first EOS token)."""
        from transformers import CLIPConfig

        act = "quick_gelu" if self.quick_gelu else "gelu"
        return CLIPConfig(
            projection_dim=self.embed_dim,
            text_config={
                "vocab_size": self.vocab_size,
                "hidden_size": self.text_width,
                "intermediate_size": int(self.text_width * self.mlp_ratio),
                "num_hidden_layers": self.text_layers,
                "num_attention_heads": self.text_heads,
                "max_position_embeddings": self.context_length,
                "hidden_act": act,
                "projection_dim": self.embed_dim,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": self.eos_token_id,
                "pad_token_id": self.eos_token_id,
            },
            vision_config={
                "hidden_size": self.vision_width,
                "intermediate_size": int(self.vision_width * self.mlp_ratio),
                "num_hidden_layers": self.vision_layers,
                "num_attention_heads": self.vision_heads,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_act": act,
                "projection_dim": self.embed_dim,
            },
        )


#: OpenAI CLIP ViT-B/16 (``openai/clip-vit-base-patch16``).
VIT_B_16 = ClipArch(patch_size=16)
#: OpenAI CLIP ViT-B/32, the architecture of PLIP (``vinid/plip``).
VIT_B_32 = ClipArch(patch_size=32)
#: open_clip ``ViT-B-32`` (plain GELU), the architecture of QuiltNet (``wisdomik/QuiltNet-B-32``).
QUILTNET_B_32 = ClipArch(patch_size=32, quick_gelu=False)
#: The random ``test-tiny`` model: 64-px input, 4×4 patch grid, byte-level text.


class ClipEncoder(Encoder):
    """A transformers ``CLIPModel`` behind the :class:`Encoder` interface (float32, eval mode).

    Images go through :func:`clip_preprocess` in batches of ``batch_size`` under
    ``torch.inference_mode``; the thread count is left to the caller (``torch.set_num_threads``).
    """

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: Tokenizer,
        *,
        name: str,
        mpp: float,
        provenance: Mapping[str, Any],
        device: str = "cpu",
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        batch_size: int = 32,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.mpp = float(mpp)
        self.input_size = int(model.config.vision_config.image_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        self.embed_dim = int(model.config.projection_dim)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.batch_size = int(batch_size)
        self.logit_scale = float(model.logit_scale.detach().exp().cpu())
        self.provenance = dict(provenance)

    def _vision(self, images: np.ndarray, patches: bool) -> np.ndarray:
        import torch

        images = as_uint8_batch(images)
        grid = self.input_size // self.patch_size
        shape = (
            (len(images), grid, grid, self.embed_dim) if patches else (len(images), self.embed_dim)
        )
        out = np.empty(shape, np.float32)
        vision = self.model.vision_model
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = torch.from_numpy(clip_preprocess(batch, self.input_size, self.mean, self.std))
            pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                hidden = vision(pixel_values=pixels).last_hidden_state  # (b, 1 + g*g, width)
                tokens = hidden[:, 1:] if patches else hidden[:, 0]
                emb = self.model.visual_projection(vision.post_layernorm(tokens))
            emb_np = emb.float().cpu().numpy()
            if patches:
                emb_np = emb_np.reshape(len(batch), grid, grid, self.embed_dim)
            out[start : start + len(batch)] = emb_np
        return l2_normalise(out)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, D)`` unit image embeddings (pooled CLS, projected)."""
        return self._vision(images, patches=False)

    def encode_patches(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, g, g, D)`` unit patch embeddings (MaskCLIP-style)."""
        return self._vision(images, patches=True)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``T`` strings → ``(T, D)`` unit text embeddings (EOS token, projected)."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = list(texts)
        out = np.empty((len(texts), self.embed_dim), np.float32)
        step = max(self.batch_size, 64)
        for start in range(0, len(texts), step):
            ids, mask = self.tokenizer(texts[start : start + step])
            with torch.inference_mode():
                result = self.model.text_model(
                    input_ids=torch.from_numpy(ids).to(self.device),
                    attention_mask=torch.from_numpy(mask).to(self.device),
                )
                emb = self.model.text_projection(result.pooler_output)
            out[start : start + len(ids)] = emb.float().cpu().numpy()
        return l2_normalise(out)
