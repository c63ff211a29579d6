"""MobileSAM (TinyViT encoder + SAM prompt encoder and mask decoder), without timm/torchvision.

``load_mobilesam()`` builds the official ``vit_t`` model and loads the official checkpoint
strictly (from the model registry); ``SamPredictor`` runs it on numpy images with cached
embeddings, batched prompts and automatic masks. The names below are imported lazily, so
importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MobileSAM": "zeropath.models.mobilesam.sam",
    "MobileSAMConfig": "zeropath.models.mobilesam.sam",
    "build_mobilesam": "zeropath.models.mobilesam.sam",
    "load_mobilesam": "zeropath.models.mobilesam.sam",
    "MaskCrop": "zeropath.models.mobilesam.predictor",
    "SamPredictor": "zeropath.models.mobilesam.predictor",
    "box_nms": "zeropath.models.mobilesam.predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
