"""Regression check of the classical baseline on MoNuSeg (heavy: run with ``pytest -m heavy``)."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.io.datasets import load_labels, monuseg_samples
from zeropath.io.reader import open_image
from zeropath.metrics import evaluate_pair
from zeropath.nuclei.classical import segment_classical

pytestmark = [pytest.mark.heavy, pytest.mark.shared_data]


def test_classical_on_official_test_set(shared_data):
    scores = []
    for sample in monuseg_samples(shared_data / "monuseg", "test"):
        with open_image(sample.image_path, mpp=0.25) as src:
            rgb = src.read_level(0)
        gt = load_labels(sample)
        scores.append(evaluate_pair(gt, segment_classical(rgb, 0.25)))
    mean = {k: float(np.mean([s[k] for s in scores])) for k in ("dice", "aji", "pq")}
    # BENCHMARKS.md: Dice 0.775, AJI 0.520, PQ 0.490; fail on a clear regression only
    assert mean["dice"] > 0.76 and mean["aji"] > 0.50 and mean["pq"] > 0.47, mean
