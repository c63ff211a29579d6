"""Bottleneck adapters in MobileSAM's TinyViT encoder, trained while the base stays frozen.

An :class:`Adapter` is ``up(GELU(down(y)))`` with ``up`` initialised to zero. It sits *in
series* on each residual branch of a TinyViT attention block: the attention branch ``a`` becomes
``a + adapter_attn(a)`` and the MLP branch ``m`` becomes ``m + adapter_mlp(m)`` (the hooks are
``TinyViTBlock.adapter_attn``/``adapter_mlp``, ``None`` by default). With fresh adapters the
added term is exactly zero, so the adapted model computes bit-for-bit what the base does.

Adapter parameters are named ``...blocks.{j}.adapter_{attn,mlp}.{down,up}.{weight,bias}``; the
base keys are untouched, so :func:`adapter_state_dict` / :func:`load_adapters` move adapters
alone (small files) on top of the official checkpoint.

Training note: :meth:`~.sam.MobileSAM.encode` runs under ``no_grad``; to train adapters call
``model.image_encoder(x)`` directly, with the model in ``eval()`` mode so the frozen batch norms
keep their running statistics (the adapters have no train-only behaviour).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import torch
from torch import nn

from zeropath.models.mobilesam.tiny_vit import BasicLayer, TinyViTBlock

__all__ = [
    "Adapter",
    "adapter_blocks",
    "adapter_fingerprint",
    "adapter_parameters",
    "adapter_state_dict",
    "add_adapters",
    "freeze_base",
    "has_adapters",
    "load_adapter_state_dict",
    "load_adapters",
    "remove_adapters",
    "save_adapters",
]

_SLOTS = ("adapter_attn", "adapter_mlp")


class Adapter(nn.Module):
    """``dim → hidden → dim`` bottleneck with GELU; ``up`` starts at zero (an exact no-op)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def adapter_blocks(
    model: nn.Module, stages: Iterable[int] | None = None
) -> list[tuple[str, TinyViTBlock]]:
    """``(name, block)`` of the TinyViT attention blocks of ``model`` (a MobileSAM or its
    encoder), optionally only those of the given stage indices (stage 0 is convolutional)."""
    encoder = getattr(model, "image_encoder", model)
    prefix = "image_encoder." if encoder is not model else ""
    wanted = None if stages is None else set(stages)
    out = []
    for i, layer in enumerate(encoder.layers):
        if not isinstance(layer, BasicLayer) or (wanted is not None and i not in wanted):
            continue
        for j, blk in enumerate(layer.blocks):
            out.append((f"{prefix}layers.{i}.blocks.{j}", blk))
    return out


def has_adapters(model: nn.Module) -> bool:
    """Whether any TinyViT block of ``model`` carries an adapter."""
    return any(getattr(b, s) is not None for _, b in adapter_blocks(model) for s in _SLOTS)


def add_adapters(
    model: nn.Module,
    ratio: float = 0.25,
    min_hidden: int = 8,
    stages: Iterable[int] | None = None,
) -> list[str]:
    """Put fresh adapters (hidden width ``max(min_hidden, round(dim·ratio))``) on both branches
    of every attention block (of ``stages`` if given). Returns the adapted block names.

    The model's ``weights_id`` is cleared (its embeddings change once adapters train), so
    predictors fingerprint the parameters instead of reusing the base model's cache keys.
    """
    if has_adapters(model):
        raise ValueError("the model already has adapters; call remove_adapters() first")
    ref = next(iter(model.parameters()))
    names = []
    for name, blk in adapter_blocks(model, stages):
        dim = blk.mlp.fc2.out_features
        hidden = max(int(min_hidden), round(dim * ratio))
        for slot in _SLOTS:
            setattr(blk, slot, Adapter(dim, hidden).to(device=ref.device, dtype=ref.dtype))
        names.append(name)
    if not names:
        raise ValueError("no TinyViT attention block to adapt")
    if hasattr(model, "weights_id"):
        model.weights_id = None
    return names


def remove_adapters(model: nn.Module) -> None:
    """Drop every adapter (the model is the base model again)."""
    for _, blk in adapter_blocks(model):
        for slot in _SLOTS:
            setattr(blk, slot, None)


def _is_adapter_key(name: str) -> bool:
    return any(f".{s}." in f".{name}" for s in _SLOTS)


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters only (what the optimiser gets)."""
    return [p for n, p in model.named_parameters() if _is_adapter_key(n)]


def freeze_base(model: nn.Module) -> int:
    """``requires_grad`` off for every non-adapter parameter, on for adapter ones. Returns the
    number of trainable parameters."""
    n = 0
    for name, p in model.named_parameters():
        trainable = _is_adapter_key(name)
        p.requires_grad_(trainable)
        n += p.numel() if trainable else 0
    return n


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``model.state_dict()`` (detached CPU copies)."""
    return {
        k: v.detach().cpu().clone() for k, v in model.state_dict().items() if _is_adapter_key(k)
    }


def adapter_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of an adapter state dict (a cache-key ingredient)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Install adapters shaped as in ``state`` (replacing any present) and load it strictly."""
    if not state or not all(_is_adapter_key(k) for k in state):
        raise ValueError("not an adapter state dict (no or non-adapter keys)")
    base_id = getattr(model, "weights_id", None)
    remove_adapters(model)
    blocks = dict(adapter_blocks(model))
    ref = next(iter(model.parameters()))
    for key, tensor in state.items():
        if not key.endswith("down.weight"):
            continue
        block_name, slot = key.rsplit(".", 3)[:2]
        blk = blocks.get(block_name)
        if blk is None or slot not in _SLOTS:
            raise ValueError(f"adapter key {key} does not match the model")
        hidden, dim = tensor.shape
        setattr(blk, slot, Adapter(dim, hidden).to(device=ref.device, dtype=ref.dtype))
    expected = set(adapter_state_dict(model))
    if expected != set(state):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter keys mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
    model.load_state_dict(state, strict=False)
    if base_id is not None:  # named base weights: name the adapted ones after them
        base_id = base_id.split("+adapters:")[0]
        model.weights_id = f"{base_id}+adapters:{adapter_fingerprint(state)[:16]}"


def save_adapters(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the adapter-only state dict to ``path`` (``torch.save``, atomically)."""
    state = adapter_state_dict(model)
    if not state:
        raise ValueError("the model has no adapters to save")
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_adapters(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load adapters saved by :func:`save_adapters` into ``model`` (a base MobileSAM)."""
    from zeropath.errors import WeightsError
    from zeropath.models.weights import describe_load_error
    from zeropath.models.weights import load_state_dict as load_weights

    state = load_weights(path).value  # hashed, weights_only, errors on one line
    try:
        load_adapter_state_dict(model, dict(state))
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise WeightsError(f"{path}: {describe_load_error(exc)}") from None
