"""ConfNet: a small fully-convolutional network regressing nucleus confidence maps.

RGB at 0.5 µm/px in, one logit channel out (``sigmoid`` gives a confidence map whose peaks
are nucleus centres), same height and width as the input. Three levels (full, 1/2, 1/4
resolution; 16-32-64 channels by default, about 0.1 M parameters): one convolution at full
resolution, a strided convolution down, a U-Net style skip at 1/2, and a bilinear upsampling
of the 1/2-resolution head — so most of the work runs at 1 µm/px and a 500×500 tile takes a
few tenths of a second on two CPU cores. This module imports torch at its top: import it
lazily.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConfNet", "rgb_to_tensor"]

# Fixed input normalisation (uint8 RGB → roughly zero-mean, unit-range); BatchNorm does the rest.
_MEAN = 127.5
_SCALE = 1.0 / 63.75


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ConfNet(nn.Module):
    """``(B, 3, H, W)`` normalised RGB → ``(B, 1, H, W)`` confidence logits."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        a, b, c = (int(x) for x in channels)
        self.channels = (a, b, c)
        self.stem = _cbr(3, a)
        self.down = nn.Sequential(_cbr(a, b, stride=2), _cbr(b, b))
        self.bottom = nn.Sequential(_cbr(b, c), _cbr(c, c))
        self.up = nn.Sequential(_cbr(b + c, b), _cbr(b, b))
        self.head = nn.Conv2d(b, 1, 1)
        # Start from a low confidence everywhere: the maps are sparse.
        nn.init.constant_(self.head.bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.stem(x)
        x2 = self.down(x1)
        x3 = self.bottom(F.max_pool2d(x2, 2, ceil_mode=True))
        y = F.interpolate(x3, size=x2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(self.up(torch.cat([y, x2], dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 RGB → normalised float32 NCHW (channels-last)."""
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy((arr - _MEAN) * _SCALE).permute(0, 3, 1, 2)
    return t.contiguous(memory_format=torch.channels_last)
