"""The bundled label-free default model: its output is pinned, so that refactoring (or a
changed default in code) cannot silently change what users get from the same weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from zeropath.io.reader import bundled_sample, open_image
from zeropath.nuclei.zanet import ZANetSegmenter, bundled_model_dir

#: sha256 of the little-endian uint32 labels of `zanet-default` on the crop below (commit
#: bae647a, 2026-12-02). Change it only with a note in the issue that says why the output of
#: the shipped model changed and by how much.
PINNED_LABELS_SHA256 = "53692713ba8d12e99e3de27e75cc8efa208f64ee8eef4ea39a99fe8cff343611"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_model_output_is_pinned(one_thread):
    with open_image(bundled_sample()) as src:
        rgb = src.read_region(1400, 1000, 384, 320)
        mpp = src.mpp
    labels = ZANetSegmenter(bundled_model_dir(), name="zanet-default").segment(rgb, mpp)
    assert labels.shape == (320, 384) and labels.dtype == np.uint32
    assert labels.max() > 100  # a crowded region: the pin is not of an empty result
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype="<u4").tobytes()).hexdigest()
    assert digest == PINNED_LABELS_SHA256
