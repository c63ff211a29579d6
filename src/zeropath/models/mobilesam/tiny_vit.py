"""TinyViT image encoder of MobileSAM (TinyViT-5M with a SAM neck), without timm.

Module and parameter names follow the official MobileSAM checkpoint so that it loads strictly:
``patch_embed.seq.{0,2}``, ``layers.{i}.blocks.{j}`` (MBConv in stage 0, attention blocks after),
``layers.{i}.downsample`` (patch merging), ``norm_head``/``head`` (the unused ImageNet classifier,
kept only so the checkpoint loads strictly) and ``neck``.

Tensors between the attention stages are tokens ``(B, H*W, C)``; the spatial size travels with
them, so any input size divisible by the total stride works (the tests use tiny ones).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dBN", "DropPath", "LayerNorm2d", "TinyViT"]


def _tokens_to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``(B, H*W, C)`` tokens → ``(B, C, H, W)`` map in channels-last memory (a view)."""
    b, _, c = x.shape
    return x.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map → ``(B, H*W, C)`` tokens (a view for channels-last maps)."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


class DropPath(nn.Module):
    """Stochastic depth: drops whole residual branches per sample while training, else identity."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (SAM's neck and decoder)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Conv2dBN(nn.Sequential):
    """Bias-free convolution followed by batch norm (children ``c`` and ``bn``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False)
        )
        bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        # Inference: fold the batch norm into the convolution (same result, one pass).
        c, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = c.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3×3 convolutions: image → tokens at 1/4 resolution."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1×1 expand, 3×3 depthwise, 1×1 project) of the first stage."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1×1 conv, strided 3×3 depthwise conv, 1×1 conv: changes width and (usually) halves size."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.ndim == 3:
            x = _tokens_to_map(x, hw)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return _map_to_tokens(x), (x.shape[2], x.shape[3])


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on NCHW maps, then patch merging to tokens."""

    def __init__(
        self,
        dim: int,
        depth: int,
        expand_ratio: float,
        drop_path: Sequence[float],
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio, drop_path[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            return self.downsample(x, hw)
        return _map_to_tokens(x), hw


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


def _relative_offsets(window: int) -> tuple[int, torch.Tensor]:
    """Index of the (|dy|, |dx|) offset of every token pair in a window, numbered in first-seen
    order (the order of the checkpoint's ``attention_biases`` columns)."""
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(seen.setdefault(off, len(seen)))
    n = len(points)
    return len(seen), torch.tensor(idxs, dtype=torch.long).view(n, n)


class Attention(nn.Module):
    """Window self-attention with a learnt bias per head and relative (|dy|, |dx|) offset.

    ``qkv`` is laid out per head: for each head ``[q (key_dim), k (key_dim), v (key_dim)]``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        inner = key_dim * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)
        n_offsets, idxs = _relative_offsets(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, kd = self.num_heads, self.key_dim
        qkv = self.qkv(self.norm(x)).view(b, n, h, 3 * kd).permute(0, 2, 1, 3)
        q, k, v = qkv.split(kd, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        # softmax(q k^T * scale + bias) v, written out: faster on CPU than SDPA with a float mask
        attn = torch.matmul(q, k.transpose(-2, -1)).mul_(self.scale).add_(bias).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2)
        return self.proj(out.reshape(b, n, h * kd))


class TinyViTBlock(nn.Module):
    """Window attention (zero-padded windows), depthwise 3×3 conv, MLP; residual around both."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # optional bottleneck adapters on the two residual branches (see ``adapters.py``);
        # absent by default, so they add no state-dict keys and the checkpoint loads strictly
        self.adapter_attn: nn.Module | None
        self.adapter_mlp: nn.Module | None
        self.register_module("adapter_attn", None)
        self.register_module("adapter_mlp", None)

    def _window_attention(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            return self.attn(x)
        x = x.view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:  # zero tokens join the border windows, as in the reference
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        if pad_b or pad_r:
            x = x[:, :h, :w]
        return x.reshape(b, n, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self._window_attention(x, hw)
        if self.adapter_attn is not None:
            y = y + self.adapter_attn(y)
        x = x + self.drop_path(y)
        x = _map_to_tokens(self.local_conv(_tokens_to_map(x, hw)))
        y = self.mlp(x)
        if self.adapter_mlp is not None:
            y = y + self.adapter_mlp(y)
        return x + self.drop_path(y)


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks, then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: Sequence[float],
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size
            )
            for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for blk in self.blocks:
            x = blk(x, hw)
        if self.downsample is not None:
            return self.downsample(x, hw)
        return x, hw


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck: ``(B, 3, S, S)`` normalised image → ``(B, out_chans, S/16,
    S/16)`` embedding (with the default merge strides ``(2, 2, 1)``)."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        merge_strides: Sequence[int] = (2, 2, 1),
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        n_stages = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n_stages):
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes must have one entry per stage"
            )
        if len(merge_strides) != n_stages - 1:
            raise ValueError("merge_strides needs one entry per stage boundary")
        self.img_size = img_size
        self.out_chans = out_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n_stages):
            paths = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            down = (
                PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i])
                if i < n_stages - 1
                else None
            )
            if i == 0:
                layer: nn.Module = ConvLayer(
                    embed_dims[0], depths[0], mbconv_expand_ratio, paths, down
                )
            else:
                layer = BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    drop_rate,
                    paths,
                    local_conv_size,
                    down,
                )
            self.layers.append(layer)
        # The ImageNet classifier is unused by SAM; it is kept so the checkpoint loads strictly.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.stride = 4
        for s in merge_strides:
            self.stride *= s

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last maps: about twice as fast for these convolutions on CPU, and the
        # token ↔ map conversions become views
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        hw = (x.shape[2], x.shape[3])
        for layer in self.layers:
            x, hw = layer(x, hw)
        x = self.neck(_tokens_to_map(x, hw))
        return x.contiguous()
