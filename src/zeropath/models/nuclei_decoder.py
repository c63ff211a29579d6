"""Prompt-free nuclei decoder on SAM image embeddings: binary logits B and offset maps D.

``(B, 256, e, e)`` embeddings (``e = 64`` for MobileSAM) go through a 3×3 convolution, then two
×2 upsampling stages (transposed 2×2 convolution, 3×3 convolution, channel LayerNorm, GELU) to
SAM's mask resolution ``4e`` (256), where two 1×1 heads give the foreground logit (1 channel)
and the HoVer-style x/y offsets (2 channels, ``tanh`` so they lie in [-1, 1]). About 0.3 M
parameters with the defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from zeropath.models.mobilesam.tiny_vit import LayerNorm2d

__all__ = ["NucleiDecoder"]


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), LayerNorm2d(cout), nn.GELU())


class NucleiDecoder(nn.Module):
    """Embedding ``(B, in_chans, e, e)`` → ``(b_logits (B, 1, 4e, 4e), d (B, 2, 4e, 4e))``.

    ``forward(x, return_features=True)`` also returns the ``(B, widths[0], e, e)`` map after the
    first convolution (an input for the contrastive projection head).
    """

    def __init__(self, in_chans: int = 256, widths: tuple[int, int, int] = (96, 48, 24)) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.in_chans = in_chans
        self.widths = tuple(widths)
        self.stem = _conv_block(in_chans, w0)
        self.up1 = nn.ConvTranspose2d(w0, w1, 2, stride=2)
        self.block1 = _conv_block(w1, w1)
        self.up2 = nn.ConvTranspose2d(w1, w2, 2, stride=2)
        self.block2 = _conv_block(w2, w2)
        self.binary_head = nn.Conv2d(w2, 1, 1)
        self.offset_head = nn.Conv2d(w2, 2, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> tuple[torch.Tensor, ...]:
        feats = self.stem(x)
        y = self.block1(self.up1(feats))
        y = self.block2(self.up2(y))
        b_logits = self.binary_head(y)
        d = torch.tanh(self.offset_head(y))
        if return_features:
            return b_logits, d, feats
        return b_logits, d
