"""The InstanSeg peer wrapper (needs the cached model; heavy because TorchScript is slow here)."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.nuclei.instanseg import percentile_normalise
from zeropath.testing import render_nuclei


def test_percentile_normalise_is_per_channel_and_pure():
    rgb, _, _ = render_nuclei((64, 64), n=4)
    before = rgb.copy()
    x = percentile_normalise(rgb)
    np.testing.assert_array_equal(rgb, before)
    assert x.dtype == np.float32 and x.shape == rgb.shape
    lo, hi = np.percentile(x, [0.1, 99.9], axis=(0, 1))
    np.testing.assert_allclose(lo, 0, atol=1e-3)
    np.testing.assert_allclose(hi, 1, atol=1e-3)


@pytest.mark.heavy
def test_instanseg_segments_rendered_nuclei():
    from zeropath.metrics import evaluate_pair
    from zeropath.models import cached_path

    if cached_path("instanseg-brightfield-nuclei") is None:
        pytest.skip("InstanSeg is not cached: zeropath models fetch instanseg-brightfield-nuclei")
    from zeropath.nuclei.instanseg import InstanSegSegmenter

    rgb, gt, _ = render_nuclei((200, 200), n=12, radius=(5, 8), seed=3)
    labels = InstanSegSegmenter().segment(rgb, 0.5)
    assert labels.dtype == np.uint32 and labels.shape == gt.shape
    assert evaluate_pair(gt, labels)["det_f1"] > 0.7
