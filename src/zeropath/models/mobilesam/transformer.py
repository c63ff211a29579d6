"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Names follow the official checkpoint (``layers.{i}.self_attn``, ``cross_attn_token_to_image``,
``mlp.lin1/lin2``, ``cross_attn_image_to_token``, ``norm1..4``, ``final_attn_token_to_image``,
``norm_final_attn``).

The image tokens may have batch size 1 while the prompt tokens have batch size B: everything
computed from the image alone (the first layer's key/value projections) is then computed once
and broadcast, which is exact and saves a good part of the per-prompt cost on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class MLPBlock(nn.Module):
    """``lin2(act(lin1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.internal_dim = dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal dimension")
        self.q_proj = nn.Linear(dim, self.internal_dim)
        self.k_proj = nn.Linear(dim, self.internal_dim)
        self.v_proj = nn.Linear(dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _head_weights(self, linear: nn.Linear) -> torch.Tensor:
        """``(heads, d, C)`` blocks of a projection's weight, one per head."""
        return linear.weight.view(self.num_heads, -1, linear.weight.shape[1])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(q))  # (B, h, T, d)
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        b, h, t, d = q.shape
        stacked = k.shape[0] == 1 and b > 1
        if stacked:  # keys shared by the batch: every prompt's queries against one key set
            q = q.transpose(0, 1).reshape(1, h, b * t, d)
        attn = torch.matmul(q, k.transpose(-2, -1)).mul_(d**-0.5).softmax(dim=-1)
        out = torch.matmul(attn, v)  # broadcasts when only q has batch 1
        if stacked:
            out = out.view(h, b, t, d).transpose(0, 1)
        b = out.shape[0]
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.internal_dim))

    def attend_to_many(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same result as ``forward`` for few queries ``(B, T, C)`` over many keys
        ``(B, N, C)``, without projecting the N keys and values.

        ``(W_k x + b_k) · q_h`` is ``x · (W_k,hᵀ q_h)`` plus a per-query constant that the
        softmax ignores, and the softmax weights sum to one, so the value projection can be
        applied after the weighted sum. It saves most of the work when N ≫ T.
        """
        if k.shape[0] == 1 and q.shape[0] > 1:  # shared keys: project them once instead
            return self.forward(q, k, v)
        b, t, _ = q.shape
        h = self.num_heads
        qp = self._heads(self.q_proj(q))  # (B, h, T, d)
        d = qp.shape[-1]
        q_in = torch.einsum("bhtd,hdc->bhtc", qp, self._head_weights(self.k_proj))
        scores = torch.matmul(q_in.reshape(b, h * t, -1), k.transpose(1, 2))  # (B, hT, N)
        attn = scores.mul_(d**-0.5).softmax(dim=-1)
        pooled = torch.matmul(attn, v).view(b, h, t, -1)  # (B, h, T, C)
        out = torch.einsum("bhtc,hdc->bhtd", pooled, self._head_weights(self.v_proj))
        out = out + self.v_proj.bias.view(1, h, 1, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.internal_dim))

    def attend_from_many(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same result as ``forward`` (plus ``residual``, added in the same pass) for many
        queries ``(B|1, N, C)`` over few keys ``(B, T, C)``, without projecting the N queries:
        the query projection is moved onto the keys and the output projection onto the values
        (both linear)."""
        b, t, _ = k.shape
        h = self.num_heads
        kp = self._heads(self.k_proj(k))  # (B, h, T, d)
        d = kp.shape[-1]
        k_in = torch.einsum("bhtd,hdc->bhtc", kp, self._head_weights(self.q_proj))
        const = torch.einsum("bhtd,hd->bht", kp, self.q_proj.bias.view(h, d))
        n = q.shape[1]
        # (B, hT, N) layout: the softmax over the T keys then runs along a strided axis, which
        # PyTorch vectorises far better than a softmax over a last axis of length T
        if q.shape[0] == 1:  # queries shared by the batch: one matrix product, no broadcast copy
            scores = torch.matmul(k_in.reshape(b * h * t, -1), q[0].T).view(b, h * t, n)
        else:
            scores = torch.matmul(k_in.reshape(b, h * t, -1), q.transpose(1, 2))
        scores = scores.add_(const.reshape(b, h * t, 1)).mul_(d**-0.5)
        attn = scores.view(b, h, t, n).softmax(dim=2).view(b, h * t, n)
        vp = self._heads(self.v_proj(v))  # (B, h, T, d)
        w_out = self.out_proj.weight.view(-1, h, d)  # (C, h, d)
        v_out = torch.einsum("bhtd,chd->bhtc", vp, w_out).reshape(b, h * t, -1)
        base = self.out_proj.bias.view(1, 1, -1)
        if residual is not None:
            base = (
                residual + base if residual.shape[0] == b else (residual + base).expand(b, -1, -1)
            )
        return torch.baddbmm(base, attn.transpose(1, 2), v_out)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token→image attention, token MLP, image→token attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        attn_out = self.cross_attn_token_to_image.attend_to_many(queries + query_pe, k, keys)
        queries = self.norm2(queries + attn_out)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(
            self.cross_attn_image_to_token.attend_from_many(k, q, queries, residual=keys)
        )
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token→image attention."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B|1, C, h, w)`` image, ``(1, C, h, w)`` encoding, ``(B, T, C)`` tokens →
        ``(tokens (B, T, C), image tokens (B, h*w, C))``."""
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        out = self.final_attn_token_to_image.attend_to_many(
            queries + point_embedding, keys + key_pe, keys
        )
        queries = self.norm_final_attn(queries + out)
        if keys.shape[0] != queries.shape[0]:  # depth 0: keys never met the tokens
            keys = keys.expand(queries.shape[0], -1, -1)
        return queries, keys
