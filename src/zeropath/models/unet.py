"""A small U-Net for nucleus segmentation, fast on a CPU.

Encoder of ``len(widths)`` levels (two 3×3 convolutions + norm + ReLU each, 2×2 max-pooling
between levels), a bilinear-upsampling decoder with skip connections, and one 1×1 head whose
output channels are ``n_classes`` segmentation logits followed by ``aux_channels`` extra maps
(e.g. a boundary or distance map). The input side must be a multiple of :meth:`UNet.multiple`
(callers pad). The default widths (16-32-64-128) hold about 0.49 M parameters.

torch is imported lazily: building the module class needs :func:`build_unet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`; JSON-serialisable through :meth:`to_dict`."""

    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128)
    n_classes: int = 2
    aux_channels: int = 0
    norm: str = "batch"  # "batch" | "group" | "none"
    groups: int = 8

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        d = dict(d)
        d["widths"] = tuple(int(w) for w in d.get("widths", cls.widths))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _classes() -> dict[str, type]:
    """Define the torch modules on first use (keeps ``import zeropath.models.unet`` cheap)."""
    global _CACHE
    if _CACHE:
        return _CACHE
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    def norm_layer(cfg: UNetConfig, ch: int) -> nn.Module:
        if cfg.norm == "batch":
            return nn.BatchNorm2d(ch)
        if cfg.norm == "group":
            return nn.GroupNorm(math.gcd(cfg.groups, ch), ch)
        if cfg.norm == "none":
            return nn.Identity()
        raise ValueError(f"unknown norm {cfg.norm!r}; use 'batch', 'group' or 'none'")

    class ConvBlock(nn.Sequential):
        def __init__(self, cfg: UNetConfig, cin: int, cout: int) -> None:
            bias = cfg.norm == "none"
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
                norm_layer(cfg, cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
                norm_layer(cfg, cout),
                nn.ReLU(inplace=True),
            )

    class UNet(nn.Module):
        """``forward(x: B×C×H×W float) -> B×(n_classes + aux_channels)×H×W`` logits."""

        def __init__(self, config: UNetConfig | None = None) -> None:
            super().__init__()
            cfg = config or UNetConfig()
            if len(cfg.widths) < 2:
                raise ValueError("a U-Net needs at least two levels")
            self.config = cfg
            w = cfg.widths
            self.down = nn.ModuleList(
                [ConvBlock(cfg, cfg.in_channels, w[0])]
                + [ConvBlock(cfg, w[i - 1], w[i]) for i in range(1, len(w))]
            )
            self.up = nn.ModuleList(
                [ConvBlock(cfg, w[i] + w[i + 1], w[i]) for i in reversed(range(len(w) - 1))]
            )
            self.head = nn.Conv2d(w[0], cfg.n_classes + cfg.aux_channels, 1)

        @property
        def multiple(self) -> int:
            """Input sides must be multiples of this (one halving per level below the top)."""
            return 2 ** (len(self.config.widths) - 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                if i > 0:
                    x = F.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            skips.pop()
            for block in self.up:
                skip = skips.pop()
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = block(torch.cat([skip, x], dim=1))
            return self.head(x)

    _CACHE.update(UNet=UNet, ConvBlock=ConvBlock)
    return _CACHE


_CACHE: dict[str, type] = {}


def build_unet(config: UNetConfig | None = None, **kwargs: Any) -> Any:
    """A new, randomly initialised :class:`UNet` (``torch.nn.Module``).

    Either pass a :class:`UNetConfig` or its fields as keyword arguments.
    """
    if config is None:
        config = UNetConfig(**kwargs)
    elif kwargs:
        raise TypeError("pass either a config or keyword arguments, not both")
    return _classes()["UNet"](config)


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def __getattr__(name: str) -> Any:
    # ``from zeropath.models.unet import UNet`` works and imports torch only then.
    if name in ("UNet", "ConvBlock"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
