"""Self-refining targets: schedule, EMA, entropy, prompt and consensus labels, offset maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zeropath.points.targets import (
    IGNORE,
    REASON_AGREE,
    REASON_DISAGREE,
    REASON_ENTROPY,
    REASON_OVERLAP,
    REASON_UNDECIDED,
    alpha_schedule,
    binary_entropy,
    consensus_labels,
    consensus_reasons,
    distance_targets,
    ema_target,
    hard_negative_mask,
    instance_map,
    prompt_labels,
)


def test_alpha_schedule_and_ema() -> None:
    assert alpha_schedule(0, 10) == 1.0
    assert alpha_schedule(5, 10) == 0.5
    assert alpha_schedule(10, 10) == 0.0
    assert alpha_schedule(15, 10) == 0.0
    assert alpha_schedule(3, 0) == 0.0
    base, adapt = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(ema_target(base, adapt, 0.25), [0.25, 0.75])
    t = ema_target(torch.tensor([1.0]), torch.tensor([0.2]), alpha_schedule(5, 10))
    assert torch.allclose(t, torch.tensor([0.6]))


def test_binary_entropy_in_bits() -> None:
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 0.811278
    np.testing.assert_allclose(
        binary_entropy(np.array([0.5, 0.25, 0.0, 1.0])), [1, h, 0, 0], atol=1e-5
    )
    assert torch.allclose(binary_entropy(torch.tensor([0.5, 0.75])), torch.tensor([1.0, h]))
    # the 0.3-bit threshold sits at p ≈ 0.053
    assert binary_entropy(0.05) < 0.3 < binary_entropy(0.06)


def test_prompt_labels_entropy_and_coverage() -> None:
    m = np.array([[[0.99, 0.99, 0.6, 0.01]], [[0.01, 0.99, 0.01, 0.01]]], np.float32)
    s_p, m_p = prompt_labels(m)
    assert s_p.dtype == np.float32 and m_p.dtype == bool and s_p.shape == m.shape
    np.testing.assert_array_equal(s_p[:, 0], [[1, 1, 1, 0], [0, 1, 0, 0]])
    # pixel 1: covered by both masks (ignored for both); pixel 2: uncertain for instance 0 only
    np.testing.assert_array_equal(m_p[:, 0], [[0, 1, 1, 0], [0, 1, 0, 0]])
    s1, _ = prompt_labels(m[0, 0][None])  # a 2-D map is one instance
    assert s1.shape == (1, 1, 4)


# one pixel per rule branch: (m_u of instance 0, m_u of instance 1, B, S_I, reason)
CASES = [
    (0.99, 0.00, 0.9, 1, REASON_AGREE),  # both foreground
    (0.60, 0.00, 0.9, 1, REASON_AGREE),  # H(0.6) > 0.3, but agreement overrides
    (0.00, 0.00, 0.1, 0, REASON_AGREE),  # both background
    (0.15, 0.00, 0.1, 0, REASON_AGREE),  # H(0.15) > 0.3, agreement overrides
    (0.99, 0.99, 0.9, IGNORE, REASON_OVERLAP),  # covered by two prompt masks
    (0.99, 0.00, 0.1, IGNORE, REASON_DISAGREE),  # prompt fg, decoder bg
    (0.00, 0.00, 0.9, IGNORE, REASON_DISAGREE),  # prompt bg, decoder fg (unclicked nucleus?)
    (0.99, 0.99, 0.1, IGNORE, REASON_DISAGREE),  # overlap and disagreement: disagreement first
    (0.35, 0.00, 0.5, IGNORE, REASON_ENTROPY),  # uncertain prompt map, decoder abstains
    (0.35, 0.00, 0.9, IGNORE, REASON_ENTROPY),  # uncertain prompt map, decoder fg
    (0.99, 0.00, 0.5, IGNORE, REASON_UNDECIDED),  # confident prompt, decoder abstains
    (0.00, 0.00, 0.5, IGNORE, REASON_UNDECIDED),
    (0.50, 0.00, 0.9, IGNORE, REASON_ENTROPY),  # mx = 0.5 is not > 0.5
    (0.00, 0.00, 0.3, IGNORE, REASON_UNDECIDED),  # B = 0.3 is not < 0.3
]


def test_consensus_labels_every_branch() -> None:
    arr = np.array(CASES, np.float64)
    m = arr[:, :2].T.reshape(2, 1, -1).astype(np.float32)
    b = arr[:, 2].reshape(1, -1).astype(np.float32)
    labels, reason = consensus_reasons(m, b)
    assert labels.dtype == np.uint8 and labels.shape == (1, len(CASES))
    np.testing.assert_array_equal(labels[0], arr[:, 3].astype(np.uint8))
    np.testing.assert_array_equal(reason[0], arr[:, 4].astype(np.uint8))
    np.testing.assert_array_equal(consensus_labels(m, b), labels)


def test_consensus_without_prompts_and_shape_check() -> None:
    b = np.array([[0.1, 0.5, 0.9]], np.float32)
    empty = np.zeros((0, 1, 3), np.float32)
    np.testing.assert_array_equal(consensus_labels(empty, b), [[0, IGNORE, IGNORE]])
    np.testing.assert_array_equal(hard_negative_mask(empty, b), [[False, False, True]])
    with pytest.raises(ValueError, match="shape"):
        consensus_labels(np.zeros((1, 2, 3), np.float32), b)


def test_hard_negatives_and_instance_map() -> None:
    m = np.array([[[0.9, 0.1, 0.1, 0.3]], [[0.1, 0.8, 0.1, 0.1]]], np.float32)
    b = np.array([[0.9, 0.9, 0.9, 0.9]], np.float32)
    np.testing.assert_array_equal(hard_negative_mask(m, b), [[False, False, True, False]])
    s_i = consensus_labels(m, b)
    np.testing.assert_array_equal(s_i, [[1, 1, IGNORE, IGNORE]])
    np.testing.assert_array_equal(instance_map(m, s_i), [[1, 2, 0, 0]])
    assert instance_map(m, s_i).dtype == np.uint32


def test_distance_targets_by_hand() -> None:
    lab = np.zeros((4, 7), np.uint32)
    lab[0, 0:4] = 1  # a 1×4 bar: centroid col 1.5 → offsets −1.5, −.5, .5, 1.5
    lab[1:4, 4:7] = 3  # a 3×3 square (label 2 absent)
    d = distance_targets(lab)
    assert d.shape == (2, 4, 7) and d.dtype == np.float32
    np.testing.assert_allclose(d[0, 0, :4], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
    np.testing.assert_array_equal(d[1, 0, :4], 0)  # one row: no vertical extent
    np.testing.assert_array_equal(d[0, 1:4, 4:7], [[-1, 0, 1]] * 3)
    np.testing.assert_array_equal(d[1, 1:4, 4:7], [[-1] * 3, [0] * 3, [1] * 3])
    assert not d[:, lab == 0].any()
    # asymmetric shape: negative and positive sides are scaled separately
    tri = np.zeros((1, 5), np.uint8)
    tri[0, :] = 1
    tri[0, 4] = 0
    np.testing.assert_allclose(distance_targets(tri)[0, 0], [-1, -1 / 3, 1 / 3, 1, 0], atol=1e-6)
