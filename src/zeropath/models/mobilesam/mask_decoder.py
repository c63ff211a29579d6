"""SAM's mask decoder: output tokens through the two-way transformer, hypernetwork mask heads,
upscaled image features and an IoU prediction head.

Names follow the official checkpoint (``transformer``, ``iou_token``, ``mask_tokens``,
``output_upscaling``, ``output_hypernetworks_mlps.{i}.layers``, ``iou_prediction_head.layers``).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from zeropath.models.mobilesam.tiny_vit import LayerNorm2d
from zeropath.models.mobilesam.transformer import TwoWayTransformer

__all__ = ["MLP", "MaskDecoder"]


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (none after the last)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predict ``1 + num_multimask_outputs`` masks at 4× the embedding size, and their IoUs."""

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: TwoWayTransformer | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer()
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        d = transformer_dim
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(d, d, d // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(d, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(B, M, 4h, 4w)`` logits and IoU predictions ``(B, M)``; ``M`` is 3 with
        ``multimask_output`` (masks 1..3), else 1 (mask 0).

        ``image_embeddings`` is ``(1, C, h, w)`` (one image shared by all B prompts) or
        ``(B, C, h, w)``; ``dense_prompt_embeddings`` is ``(1 or B, C, h, w)``.
        """
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou[:, sel]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        window_origin: torch.Tensor | None = None,
        window_cells: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` mask logits and IoU predictions.

        With ``window_origin`` (``(B, 2)`` long, top-left (row, col) embedding cell per
        prompt) only a ``window_cells``² window of each prompt's image tokens is upscaled:
        the masks are ``(B, M, 4 * window_cells, 4 * window_cells)``, exactly the full masks'
        values inside the window (upscaling is per pixel), at a fraction of the cost.
        """
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1
        )
        src = image_embeddings + dense_prompt_embeddings  # batch 1 when both are shared
        _, c, h, w = src.shape
        hs, keys = self.transformer(src, image_pe, tokens)
        iou_pred = self.iou_prediction_head(hs[:, 0])
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, M, C/8)

        grid = keys.view(b, h, w, c)
        if window_origin is not None:
            ar = torch.arange(window_cells, device=grid.device)
            rows = (window_origin[:, 0, None] + ar)[:, :, None]
            cols = (window_origin[:, 1, None] + ar)[:, None, :]
            grid = grid[torch.arange(b, device=grid.device)[:, None, None], rows, cols]
        masks = [self._masks(grid[i : i + 16], hyper[i : i + 16]) for i in range(0, b, 16)]
        return torch.cat(masks, dim=0), iou_pred

    def _masks(self, grid: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Channels-last upscaling of ``(B, h, w, C)`` tokens and the hypernetwork product.

        Each 2×2 stride-2 transposed convolution is a per-pixel linear map to a 2×2 block, so
        both run as matrix products on channels-last data (same result as the modules).
        """
        b, h, w, _ = grid.shape
        conv1, norm, act, conv2 = self.output_upscaling[:4]
        x = _deconv2x2(grid, conv1)  # (B, h, w, 2, 2, C/4)
        x = act(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
        x = act(_deconv2x2(x, conv2))  # (B, h, w, 2, 2, 2, 2, C/8)
        m = hyper.shape[1]
        masks = torch.matmul(x.reshape(b, -1, x.shape[-1]), hyper.transpose(1, 2))
        masks = masks.view(b, h, w, 2, 2, 2, 2, m)  # y, x, i, j, k, l: pixel (4y+2i+k, 4x+2j+l)
        return masks.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, m, 4 * h, 4 * w)


def _deconv2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2 stride-2 transposed convolution on channels-last ``(..., C_in)`` data:
    returns ``(..., 2, 2, C_out)`` with the 2×2 output block of every input pixel."""
    w = conv.weight  # (C_in, C_out, 2, 2)
    c_out = w.shape[1]
    weight = w.permute(0, 2, 3, 1).reshape(w.shape[0], 4 * c_out)
    y = torch.matmul(x, weight).view(*x.shape[:-1], 2, 2, c_out)
    return y + conv.bias
