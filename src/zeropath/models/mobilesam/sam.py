"""MobileSAM assembled: TinyViT encoder + prompt encoder + mask decoder, and its loader.

:func:`load_mobilesam` builds the official ``vit_t`` configuration and loads the official
checkpoint strictly (every key and shape must match) through the model registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zeropath.models.mobilesam.mask_decoder import MaskDecoder
from zeropath.models.mobilesam.prompt_encoder import PromptEncoder
from zeropath.models.mobilesam.tiny_vit import TinyViT
from zeropath.models.mobilesam.transformer import TwoWayTransformer

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "MobileSAM",
    "MobileSAMConfig",
    "build_mobilesam",
    "load_mobilesam",
]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class MobileSAMConfig:
    """Architecture hyper-parameters; the defaults are the official MobileSAM (``vit_t``)."""

    img_size: int = 1024
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    @classmethod
    def tiny(cls, img_size: int = 64) -> MobileSAMConfig:
        """The same architecture at toy width and depth: tests and CPU smoke runs."""
        return cls(
            img_size=img_size,
            embed_dims=(8, 16, 16, 32),
            depths=(1, 1, 2, 1),
            num_heads=(1, 2, 2, 4),
            window_sizes=(3, 3, 4, 3),
            num_classes=10,
            prompt_dim=32,
            mask_in_chans=8,
            decoder_heads=2,
            decoder_mlp_dim=64,
            iou_head_hidden_dim=32,
        )

    @property
    def embedding_size(self) -> int:
        stride = 4
        for s in self.merge_strides:
            stride *= s
        return self.img_size // stride


class MobileSAM(nn.Module):
    """Segment Anything with the TinyViT encoder.

    ``encode`` turns a preprocessed batch into image embeddings; ``decode`` turns an embedding
    and prompts into low-resolution mask logits and IoU predictions; ``postprocess_masks``
    brings logits back to the original image size. :class:`~.predictor.SamPredictor` wraps it.
    """

    mask_threshold: float = 0.0

    def __init__(self, config: MobileSAMConfig | None = None) -> None:
        super().__init__()
        cfg = config or MobileSAMConfig()
        self.config = cfg
        self.img_size = cfg.img_size
        emb = cfg.embedding_size
        self.image_encoder = TinyViT(
            img_size=cfg.img_size,
            num_classes=cfg.num_classes,
            embed_dims=cfg.embed_dims,
            depths=cfg.depths,
            num_heads=cfg.num_heads,
            window_sizes=cfg.window_sizes,
            mlp_ratio=cfg.mlp_ratio,
            mbconv_expand_ratio=cfg.mbconv_expand_ratio,
            local_conv_size=cfg.local_conv_size,
            merge_strides=cfg.merge_strides,
            out_chans=cfg.prompt_dim,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=cfg.prompt_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=cfg.mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=cfg.prompt_dim,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_dim,
                num_heads=cfg.decoder_heads,
                mlp_dim=cfg.decoder_mlp_dim,
            ),
            num_multimask_outputs=cfg.num_multimask_outputs,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
        #: identifies the weights (the checkpoint's sha256 once loaded); keys embedding caches
        self.weights_id: str | None = None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, 3, h, w)`` RGB in [0, 255] and zero-pad to ``img_size`` square."""
        x = (x.float() - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, C, e, e)`` of a preprocessed batch."""
        return self.image_encoder(x)

    @torch.no_grad()
    def decode(
        self,
        embeddings: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits ``(B, M, 4e, 4e)`` and IoU predictions ``(B, M)`` for B prompts
        on one image embedding ``(1, C, e, e)``; coordinates are in the model's input frame."""
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        return self.mask_decoder(
            embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
        )

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Upscale low-res logits to the padded input, crop the padding, resize to the original."""
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings of a preprocessed batch (the encoder is the costly part)."""
        return self.image_encoder(x)


def build_mobilesam(config: MobileSAMConfig | None = None) -> MobileSAM:
    """A randomly initialised MobileSAM in eval mode."""
    return MobileSAM(config).eval()


def load_mobilesam(path: str | os.PathLike[str] | None = None) -> MobileSAM:
    """The official MobileSAM with its checkpoint loaded strictly, in eval mode on the CPU.

    Without ``path`` the weights come from the model registry (``fetch("mobilesam")``, which
    downloads into the cache when needed). The file is hashed as it is read: a cached copy whose
    SHA-256 differs from the registry's is refused, and ``weights_id`` is the digest of the bytes
    loaded. Raises :class:`~zeropath.errors.ModelError` (one line) when the file is damaged or
    not a MobileSAM state dict.
    """
    from zeropath.models import registry, weights

    if path is None:
        loaded = registry.load("mobilesam")  # hashed as read, refused unless the registry's
    else:
        loaded = weights.load_state_dict(path)
    model = MobileSAM()
    weights.load_into(model, loaded.value, loaded.path, "MobileSAM (vit_t)")
    weights_id = loaded.sha256  # the SHA-256 of the bytes actually loaded
    model.weights_id = weights_id
    return model.eval()
