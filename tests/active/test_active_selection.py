"""Selection rules on small hand-made feature sets whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.active.selection import (
    Candidates,
    badge_select,
    choose_delta,
    combined_select,
    coverage_graph,
    coverage_select,
    kcenter_greedy,
    random_select,
    region_uncertainty,
    select,
    top_k,
)
from zeropath.errors import ConfigError


def _cands(x, **kw):
    return Candidates(
        ids=[f"r{i}" for i in range(len(x))], features=np.asarray(x, np.float32), **kw
    )


def test_kcenter_picks_the_far_cluster():
    near = np.array([[0.0, 0.1], [0.1, 0.0], [0.1, 0.1], [-0.1, 0.0]])
    far = np.array([[10.0, 10.0], [10.1, 10.0]])
    x = np.concatenate([near, far])
    labelled = np.array([[0.0, 0.0]])
    assert kcenter_greedy(x, labelled, 1)[0] in (4, 5)
    picks = select("coreset", _cands(x, labelled=labelled), 2, np.random.default_rng(0))
    assert picks[0] in ("r4", "r5")
    assert picks[1] not in ("r4", "r5")  # the other far point is now close to a centre


def test_kcenter_without_centres_starts_far_from_the_mean():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0]])
    assert kcenter_greedy(x, np.zeros((0, 2)), 1).tolist() == [3]


def test_entropy_picks_the_uncertain_region():
    # three regions of two cells each: confident, uncertain, half-uncertain
    proba = np.array([[0.99, 0.01], [0.98, 0.02], [0.5, 0.5], [0.55, 0.45], [0.9, 0.1], [0.5, 0.5]])
    unc = region_uncertainty(proba, np.array([0, 2, 4]))
    assert np.argmax(unc) == 1
    picks = select("entropy", _cands(np.eye(3), uncertainty=unc), 2, np.random.default_rng(0))
    assert picks == ["r1", "r2"]
    margin = region_uncertainty(proba, np.array([0, 2, 4]), kind="margin")
    assert np.argmax(margin) == 1


def test_coverage_picks_the_region_covering_most_uncovered_points():
    a = np.zeros((10, 2))  # covered by the prototype at the origin
    b = np.tile([1.0, 0.0], (3, 1))
    c = np.tile([0.0, 3.0], (5, 1))
    points = np.concatenate([a, b, c]).astype(np.float32)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    proto = np.zeros((1, 2), np.float32)
    delta = choose_delta(points, proto, 0.6)
    assert delta == pytest.approx(1.0)
    cands = _cands(x, prototypes=proto, points=points)
    picks = select("coverage", cands, 1, np.random.default_rng(0), delta_quantile=0.6)
    assert picks == ["r2"]  # covers the 5 uncovered points of c
    graph = coverage_graph(x, points, delta)
    assert graph.shape == (3, 18)
    order = coverage_select(graph, np.zeros(18, bool), 3)
    assert order[0] == 0  # with nothing covered, the origin covers a and b (13 points)


def test_badge_is_deterministic_and_starts_with_the_largest_gradient():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(50, 8))
    g[17] *= 10
    first = badge_select(g, 6, np.random.default_rng(1))
    second = badge_select(g, 6, np.random.default_rng(1))
    assert first.tolist() == second.tolist()
    assert first[0] == 17
    assert len(set(first.tolist())) == 6


def test_badge_with_identical_gradients_still_fills_the_batch():
    g = np.zeros((5, 3))
    picks = badge_select(g, 5, np.random.default_rng(0))
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_random_is_seeded_and_distinct():
    a = random_select(100, 10, np.random.default_rng(5))
    b = random_select(100, 10, np.random.default_rng(5))
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 10


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labelled = rng.normal(size=(4, 5)).astype(np.float32)
    return x, labelled, rng.uniform(size=60), rng.normal(size=(2, 5)).astype(np.float32)


def test_combined_with_one_part_equals_that_rule(toy):
    x, labelled, unc, protos = toy
    cands = _cands(x, labelled=labelled, uncertainty=unc, prototypes=protos)
    only = lambda part: {k: float(k == part) for k in ("uncertainty", "diversity", "coverage")}  # noqa: E731
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    u = combined_select(cands, 8, rng(), only("uncertainty"))
    assert u.tolist() == top_k(unc, 8).tolist()
    d = combined_select(cands, 8, rng(), only("diversity"))
    assert d.tolist() == kcenter_greedy(x, labelled, 8).tolist()
    c = combined_select(cands, 8, rng(), only("coverage"))
    assert [f"r{i}" for i in c] == select("coverage", cands, 8, rng())


def test_combined_default_is_deterministic_and_distinct(toy):
    x, labelled, unc, protos = toy
    text = np.linspace(0, 1, 60)
    cands = _cands(x, labelled=labelled, uncertainty=unc, prototypes=protos, text_term=text)
    a = select("combined", cands, 10, np.random.default_rng(1))
    b = select("combined", cands, 10, np.random.default_rng(1))
    assert a == b and len(set(a)) == 10


def test_bad_rules_and_weights_are_config_errors(toy):
    x, _, unc, _ = toy
    with pytest.raises(ConfigError):
        select("nope", _cands(x), 2, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        select("combined", _cands(x, uncertainty=unc), 2, np.random.default_rng(0), {"bogus": 1})
    with pytest.raises(ConfigError):
        select("badge", _cands(x), 2, np.random.default_rng(0))
