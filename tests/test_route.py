"""Routing calibration on synthetic blobs: probabilities, τ's false-alarm bound, new blobs flagged, alternatives."""

import numpy as np
import pytest

from clado.pipeline.route import RoutingSettings, fit_calibration, member_centroids, member_probabilities, route
from clado.taxonomy.records import Node, Taxonomy
from clado.vectors import unit

DIM, BLOBS, PER_BLOB = 32, 8, 60


def blobs(seed, *, noise_seed=0, spread=1.4, blobs=BLOBS, per_blob=PER_BLOB):
    """Unit vectors around `blobs` random centres (drawn from `seed`); (vectors, blob of each row, centres)."""
    centres = unit(np.random.default_rng(seed).normal(size=(blobs, DIM)))
    which = np.repeat(np.arange(blobs), per_blob)
    noise = np.random.default_rng([seed, noise_seed]).normal(size=(len(which), DIM)) / np.sqrt(DIM)
    X = unit(centres[which] + spread * noise)
    return X.astype(np.float32), which, centres


def leaves_of(which, n_leaves):
    ids = [f"i{r}" for r in range(len(which))]
    leaves = [Node(id=f"leaf{k}", level=0, name=f"leaf {k}", member_ids=[ids[r] for r in np.flatnonzero(which == k)])
              for k in range(n_leaves)]  # fmt: skip
    return leaves, ids


@pytest.fixture(scope="module")
def fitted():
    X, which, _ = blobs(0)
    known = which < BLOBS - 2  # the last two blobs are never seen by the build
    leaves, ids = leaves_of(np.where(known, which, -1), BLOBS - 2)
    rows = {item_id: r for r, item_id in enumerate(ids)}
    calibration = fit_calibration(leaves, rows, X, settings=RoutingSettings())
    return X, which, leaves, rows, calibration, member_centroids(leaves, rows, X)


def test_tau_flags_at_most_the_set_share_of_the_builds_own_items(fitted):
    X, _, leaves, rows, calibration, _ = fitted
    members = sum(len(leaf.member_ids) for leaf in leaves)
    assert calibration.fitted_on == members and calibration.new_rate == 0.05
    assert 0.0 < calibration.flagged_share <= 0.05
    assert 0.0 < calibration.threshold < 1.0 and calibration.slope > 0, "probability grows with the cosine"
    strict = fit_calibration(leaves, rows, X, settings=RoutingSettings(new_rate=0.2))
    assert strict.threshold > calibration.threshold and 0.05 < strict.flagged_share <= 0.2


def test_fresh_points_of_known_blobs_route_right_and_unseen_blobs_are_new(fitted):
    _, _, leaves, _, calibration, centroids = fitted
    Q, which, _ = blobs(0, noise_seed=1, per_blob=40)  # the same centres, fresh points
    routes = route(Q, centroids, [leaf.id for leaf in leaves], calibration)
    known = which < BLOBS - 2
    leaf = np.array([r.leaf for r in routes])
    new = np.array([r.is_new for r in routes])
    assert (leaf[known] == which[known]).mean() >= 0.95
    assert new[known].mean() <= 0.12, "about new_rate of fresh known points are false alarms"
    assert new[~known].mean() >= 0.9, "points of blobs the build never saw are new problems"
    p = np.array([r.probability for r in routes])
    assert p[known].mean() > 0.8 > 0.2 > p[~known].mean()


def test_alternatives_are_the_next_most_probable_other_leaves(fitted):
    X, _, leaves, _, calibration, centroids = fitted
    (first,) = route(X[:1], centroids, [leaf.id for leaf in leaves], calibration, alternatives=3)
    ranked = [first.probability] + [p for _, p in first.alternatives]
    assert len(first.alternatives) == 3 and ranked == sorted(ranked, reverse=True)
    assert first.leaf not in [k for k, _ in first.alternatives]
    (floor,) = route(X[:1], centroids, [leaf.id for leaf in leaves], calibration, min_cosine=1.01)
    assert floor.is_new and floor.leaf == first.leaf, "a cosine floor flags, it does not re-route"


def test_member_probabilities_are_routes_to_their_own_leaf(fitted):
    X, _, leaves, rows, calibration, centroids = fitted
    ids = list(rows)
    taxonomy = Taxonomy(created_at="2026-01-01T00:00:00Z", nodes=leaves, calibration=calibration)
    confidence = member_probabilities(taxonomy, ids, X)
    assert set(confidence) == {m for leaf in leaves for m in leaf.member_ids}
    routes = route(X, centroids, [leaf.id for leaf in leaves], calibration)
    own = {m: k for k, leaf in enumerate(leaves) for m in leaf.member_ids}
    same = [i for i in confidence if routes[rows[i]].leaf == own[i]]
    assert len(same) > 0.9 * len(confidence)
    assert all(abs(confidence[i] - routes[rows[i]].probability) < 1e-3 for i in same)


def test_one_leaf_or_none_routes_everything_and_flags_nothing():
    X, which, _ = blobs(1, blobs=1)
    leaves, ids = leaves_of(which, 1)
    calibration = fit_calibration(leaves, {i: r for r, i in enumerate(ids)}, X, settings=RoutingSettings())
    assert not any(r.is_new for r in route(X, member_centroids(leaves, {i: r for r, i in enumerate(ids)}, X),
                                           ["leaf0"], calibration))  # fmt: skip
    assert all(r.is_new and r.leaf == -1 for r in route(X[:3], X[:0], [], calibration))
