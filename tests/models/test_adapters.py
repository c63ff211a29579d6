"""Encoder adapters on a tiny random MobileSAM: exact identity at init, frozen base, save/load."""

from __future__ import annotations

import pytest
import torch

from zeropath.errors import ModelError
from zeropath.models.mobilesam.adapters import (
    adapter_parameters,
    adapter_state_dict,
    add_adapters,
    freeze_base,
    has_adapters,
    load_adapters,
    remove_adapters,
    save_adapters,
)
from zeropath.models.mobilesam.sam import MobileSAM, MobileSAMConfig, build_mobilesam

TINY = MobileSAMConfig.tiny()


def _tiny(seed: int = 0) -> MobileSAM:
    torch.manual_seed(seed)
    model = build_mobilesam(TINY)
    model.weights_id = "base"
    return model


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


def _perturb(model: MobileSAM) -> None:
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.normal_(0.0, 0.2)


def test_fresh_adapters_are_an_exact_identity(image: torch.Tensor) -> None:
    torch.set_num_threads(1)
    model = _tiny()
    base_keys = set(model.state_dict())
    ref = model.encode(image)
    names = add_adapters(model)
    assert names == [
        "image_encoder.layers.1.blocks.0",
        "image_encoder.layers.2.blocks.0",
        "image_encoder.layers.2.blocks.1",
        "image_encoder.layers.3.blocks.0",
    ]
    assert has_adapters(model) and model.weights_id is None
    assert torch.equal(model.encode(image), ref)
    # base keys unchanged, adapters only add keys
    keys = set(model.state_dict())
    assert base_keys < keys and all("adapter_" in k for k in keys - base_keys)
    with pytest.raises(ValueError, match="already"):
        add_adapters(model)
    remove_adapters(model)
    assert set(model.state_dict()) == base_keys and not has_adapters(model)
    assert add_adapters(model, stages=[3]) == ["image_encoder.layers.3.blocks.0"]


def test_only_adapters_train(image: torch.Tensor) -> None:
    model = _tiny()
    add_adapters(model, ratio=0.5, min_hidden=4)
    n = freeze_base(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_" in name for name in trainable)
    assert n == sum(p.numel() for p in adapter_parameters(model))
    hidden = model.image_encoder.layers[3].blocks[0].adapter_mlp.down.out_features
    assert hidden == 16  # 32 · 0.5
    out = model.image_encoder(image)  # encode() runs without grad; training calls the encoder
    out.square().mean().backward()
    ups = [p for name, p in model.named_parameters() if name.endswith("up.weight")]
    assert all(p.grad is not None for p in ups) and any(p.grad.abs().sum() > 0 for p in ups)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_save_load_round_trip(image: torch.Tensor, tmp_path) -> None:
    model = _tiny()
    add_adapters(model, ratio=0.25)
    _perturb(model)
    adapted = model.encode(image)
    assert not torch.equal(adapted, _tiny().encode(image))
    path = tmp_path / "adapters.pt"
    save_adapters(model, path)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(adapter_state_dict(model)) and all(".adapter_" in k for k in saved)

    fresh = _tiny()
    load_adapters(fresh, path)
    assert torch.equal(fresh.encode(image), adapted)
    assert fresh.weights_id.startswith("base+adapters:")
    first_id = fresh.weights_id
    load_adapters(fresh, path)  # reloading replaces, and names the same weights alike
    assert fresh.weights_id == first_id

    bad = tmp_path / "bad.pt"
    torch.save({"image_encoder.neck.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="adapter"):
        load_adapters(_tiny(), bad)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        load_adapters(_tiny(), tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no adapters"):
        save_adapters(_tiny(), tmp_path / "none.pt")


def test_base_checkpoint_still_loads_strictly() -> None:
    donor = _tiny(seed=3)
    model = _tiny()
    add_adapters(model)
    remove_adapters(model)
    model.load_state_dict(donor.state_dict(), strict=True)
