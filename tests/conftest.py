"""Shared pytest fixtures: the ``../shared/data`` location and small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zeropath.testing import ThresholdSegmenter, render_nuclei  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("ZEROPATH_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it skip cleanly when it is absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data is not available")
    return path


@pytest.fixture
def synthetic_tile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 256×256 synthetic H&E tile with 20 nuclei: ``(rgb, labels, centres)``."""
    return render_nuclei()


def _tiny_sam(base: dict):
    """A tiny random MobileSAM in place of the real base model of a points model."""
    import torch

    from zeropath.models.mobilesam.sam import MobileSAMConfig, build_mobilesam

    assert base["name"] == "mobilesam"
    torch.manual_seed(0)
    sam = build_mobilesam(MobileSAMConfig.tiny(img_size=128))
    with torch.no_grad():  # confident random masks, so that some pixels get labels
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(50.0)
    return sam


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Two synthetic images with a click per nucleus, for points models built on a tiny random
    MobileSAM (patched in as the base model; embeddings cached under ``tmp_path/home``)."""
    import torch
    from PIL import Image

    from zeropath.points import model as pm

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(pm, "load_base", _tiny_sam)
    monkeypatch.setenv("ZEROPATH_HOME", str(tmp_path / "home"))
    images, pts = tmp_path / "images", tmp_path / "points"
    images.mkdir()
    pts.mkdir()
    for i in range(2):
        rgb, _, centres = render_nuclei((160, 144), n=12, seed=i)
        Image.fromarray(rgb).save(images / f"img{i}.png")
        rows = ["x,y"] + [f"{c:.2f},{r:.2f}" for r, c in centres]
        (pts / f"img{i}.csv").write_text("\n".join(rows) + "\n")
    yield images, pts
    torch.set_num_threads(before)
