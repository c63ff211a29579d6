"""ProZS: k-means prototypes, temperature calibration, the head, and text prototypes."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.active.features import EncoderFeatures
from zeropath.active.prototypes import (
    ProZS,
    ProZSConfig,
    class_prototypes,
    fit_temperature,
    kmeans,
    nll,
    train_head,
)
from zeropath.testing.synthetic import SyntheticEncoder

FAST = ProZSConfig(head_steps=80)


def test_kmeans_finds_well_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.1, (30, 2)) for c in centres])
    found, assign = kmeans(x, 3, np.random.default_rng(1))
    assert len(found) == 3
    assert np.sort(np.linalg.norm(found[:, None] - centres[None], axis=2).min(0)).max() < 0.2
    assert len(np.unique(assign)) == 3


def test_class_prototypes_are_per_class_and_unit_length():
    rng = np.random.default_rng(0)
    dirs = np.array([[1, 0, 0], [0.9, 0.4, 0], [0, 0, 1], [0, 0.4, 0.9]], np.float64)
    x = np.concatenate([d + rng.normal(0, 0.02, (20, 3)) for d in dirs])
    y = np.repeat([0, 0, 1, 1], 20)
    protos = class_prototypes(x, y, per_class=2, seed=0)
    assert sorted(protos) == [0, 1]
    for c in (0, 1):
        assert protos[c].shape == (2, 3)
        np.testing.assert_allclose(np.linalg.norm(protos[c], axis=1), 1.0, atol=1e-5)
    # every class-0 prototype is nearer the class-0 directions than any class-1 one
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    assert (protos[0] @ unit[:2].T).max(1).min() > 0.99


def test_temperature_calibration_lowers_nll():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    sims = rng.normal(0, 0.05, (400, 3))
    sims[np.arange(400), y] += 0.08  # weak but real signal, cosine scale
    tau = fit_temperature(sims, y)
    best = nll(tau * sims, y)
    for other in (1.0, 10.0, 200.0):
        assert best <= nll(other * sims, y) + 1e-9
    assert 1.0 < tau < 200.0


def test_head_learns_a_nonlinear_separable_toy_set():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (600, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)  # XOR: no linear rule separates it
    head = train_head(x, np.eye(2)[y], hidden=32, steps=300, lr=2e-2, seed=0)
    assert (head.proba(x).argmax(1) == y).mean() > 0.93
    again = train_head(x, np.eye(2)[y], hidden=32, steps=300, lr=2e-2, seed=0)
    np.testing.assert_array_equal(head.w1, again.w1)  # seeded: reproducible


def test_prozs_combines_prototypes_and_head():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([2, 0, 0], 0.3, (100, 3)), rng.normal([0, 2, 0], 0.3, (100, 3))])
    y = np.repeat([0, 1], 100)
    model = ProZS(2, FAST).fit(x, y, seed=0)
    p = model.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert (p.argmax(1) == y).mean() > 0.97
    assert model.head is not None and 0 < model.alpha < 1
    assert model.gradient_embedding(x).shape == (200, 2 * FAST.head_hidden)
    # one seen class only: no head, that class everywhere
    single = ProZS(2, FAST).fit(x[:100], y[:100], seed=0)
    assert single.head is None
    assert (single.predict_proba(x).argmax(1) == 0).all()


def _block_image(encoder: SyntheticEncoder, names: list[str], side: int = 64) -> np.ndarray:
    return np.concatenate([encoder.tile(n, side) for n in names], axis=1)


def test_unseen_class_is_recognised_from_its_text_prototype():
    enc = SyntheticEncoder()
    ext = EncoderFeatures(enc, cell=16)
    img = _block_image(enc, ["stroma", "tumor", "fat"])  # 64 × 192: 4 × 12 cells
    feats = ext.features(img)
    assert feats.shape == (4, 12, enc.embed_dim)
    x = feats.reshape(-1, enc.embed_dim)
    cls = np.repeat([[0, 1, 2]], 4, axis=0).repeat(4, axis=1).ravel()  # block of each cell
    prompts = {
        0: ["an H&E image of stroma."],
        1: ["an H&E image of tumor."],
        2: ["an H&E image of adipose tissue."],  # alias of fat: the class has no labels
    }
    text = {c: ext.encode_texts(t).mean(0) for c, t in prompts.items()}
    seen = cls < 2
    model = ProZS(3, FAST, text_prototypes=text).fit(x[seen], cls[seen], seed=0)
    assert model.seen == [0, 1] and model.unseen_text == [2]
    assert abs(model.text_offset) < 0.05  # text and visual similarities agree on seen classes
    pred = model.predict_proba(x).argmax(1)
    assert (pred[cls == 2] == 2).all()
    assert (pred[seen] == cls[seen]).mean() > 0.95
    # without the text prototype the unseen class can never be predicted
    blind = ProZS(3, FAST).fit(x[seen], cls[seen], seed=0)
    assert (blind.predict_proba(x).argmax(1) != 2).all()


def test_fit_rejects_mismatched_targets():
    with pytest.raises(ValueError):
        ProZS(2, FAST).fit(np.zeros((3, 2)), np.zeros((4,), int))
