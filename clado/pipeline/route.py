"""Routing: a text's vector → the leaf it most probably belongs to, a calibrated probability and a new-problem flag.

One function, `route`, serves the build's calibration, the refresh's assignment of new items, `/v1/classify` and
`clado classify`. A leaf's probability is a logistic function of the cosine to its centroid,
p = σ(slope·(cos − mean)/scale + intercept + offset[leaf]), fitted on the build's own items (`fit_calibration`):
each item against its own leaf's centroid computed without it (a member, as a new one would look) and against its
`negatives_per_item` nearest other leaves (where it would go if its own leaf did not exist: as a new problem would
look); classes weighted equally, the per-leaf offsets shrunk towards the shared intercept by the L2 penalty. τ is
the `new_rate` quantile of the best probability of the build's own items (own leaf left out), so at most that share
of them would be flagged new. (The clusterers' own memberships, e.g. HDBSCAN's, are not used: Leiden, the default,
has none, and one map for every clusterer keeps build, refresh and serve alike.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clado.taxonomy.records import Calibration, Node, Taxonomy
from clado.vectors import unit

CHUNK = 8192
UNPENALISED = 100.0  # the cosine feature is scaled up so the L2 penalty shrinks the per-leaf offsets, not the slope


class RoutingSettings(BaseModel):
    """How a build calibrates its probabilities and new-problem threshold τ."""

    model_config = ConfigDict(extra="forbid")
    new_rate: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="τ is set so that at most this share of the build's own items would be flagged new",
    )
    negatives_per_item: int = Field(
        1, ge=1, le=50, description="Nearest other leaves each item is a negative of (1 measured best on Banking77)"
    )
    calibration_sample: int = Field(20000, ge=100, description="Items (seeded sample) the calibration is fitted on")
    regularisation: float = Field(1.0, gt=0, description="Inverse L2 strength (scikit-learn C) of the logistic fit")
    alternatives: int = Field(3, ge=0, le=20, description="Next most probable leaves reported with each route")


@dataclass(frozen=True)
class Route:
    """Where one vector goes: the leaf's row in the leaf list, its probability and cosine, and the runners-up."""

    leaf: int
    probability: float
    cosine: float
    is_new: bool
    alternatives: list[tuple[int, float]]


def member_centroids(nodes: list[Node], rows: dict[str, int], X: np.ndarray) -> np.ndarray:
    """Unit mean vector of each node's members (a zero row for a node none of whose members has a vector)."""
    out = np.zeros((len(nodes), X.shape[1]), dtype=np.float32)
    for k, node in enumerate(nodes):
        idx = [rows[m] for m in node.member_ids if m in rows]
        if idx:
            out[k] = unit(X[idx].mean(axis=0))
    return out


def probabilities(calibration: Calibration, leaf_ids: list[str], sims: np.ndarray) -> np.ndarray:
    """Each leaf's probability for each row of cosines `sims` (rows × leaves in `leaf_ids` order)."""
    offsets = np.array([calibration.offsets.get(i, 0.0) for i in leaf_ids], dtype=np.float64)
    z = (sims - calibration.mean) / calibration.scale
    return 1.0 / (1.0 + np.exp(-(calibration.slope * z + calibration.intercept + offsets)))


def route(
    Q: np.ndarray,
    centroids: np.ndarray,
    leaf_ids: list[str],
    calibration: Calibration,
    *,
    min_cosine: float | None = None,
    alternatives: int = 3,
) -> list[Route]:
    """The most probable leaf of each unit row of `Q`; new when its probability is below τ (or its cosine below
    `min_cosine`). Every row is new when there is no leaf."""
    if not leaf_ids:
        return [Route(-1, 0.0, 0.0, True, []) for _ in range(len(Q))]
    out = []
    for start in range(0, len(Q), CHUNK):
        sims = Q[start : start + CHUNK] @ centroids.T
        P = probabilities(calibration, leaf_ids, sims)
        order = np.argsort(-P, axis=1, kind="stable")[:, : 1 + alternatives]
        for row, ranked in enumerate(order.tolist()):
            best = ranked[0]
            p, cos = float(P[row, best]), float(sims[row, best])
            new = p < calibration.threshold or (min_cosine is not None and cos < min_cosine)
            runners = [(k, round(float(P[row, k]), 4)) for k in ranked[1:]]
            out.append(Route(best, round(p, 4), round(cos, 4), new, runners))
    return out


def _members(leaves: list[Node], rows: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(item rows, their leaf index) of every leaf member that has a vector."""
    pairs = [(rows[m], k) for k, leaf in enumerate(leaves) for m in leaf.member_ids if m in rows]
    array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def _leave_one_out(X: np.ndarray, item_rows: np.ndarray, own: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Cosine of each unit item to its own leaf's mean without it (0 for a leaf of one)."""
    x = X[item_rows].astype(np.float64)
    rest = sums[own] - x
    norms = np.linalg.norm(rest, axis=1)
    return np.divide((rest * x).sum(axis=1), norms, out=np.zeros(len(x)), where=norms > 1e-9)


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_calibration(
    leaves: list[Node], rows: dict[str, int], X: np.ndarray, *, settings: RoutingSettings, seed: int = 0
) -> Calibration:
    """The per-leaf similarity → probability map and τ, fitted on the leaves' members (unit rows of `X`)."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    item_rows, own = _members(leaves, rows)
    keep = _sample(len(item_rows), settings.calibration_sample, seed)
    item_rows, own = item_rows[keep], own[keep]
    n, L = len(item_rows), len(leaves)
    if n == 0 or L < 2:  # nothing to tell members from near misses with: every item is routed, none is new
        return Calibration(mean=0.0, scale=1.0, slope=0.0, intercept=0.0, threshold=0.0, new_rate=settings.new_rate)
    sums = np.zeros((L, X.shape[1]), dtype=np.float64)
    np.add.at(sums, own, X[item_rows].astype(np.float64))
    centroids = unit(sums).astype(np.float32)
    sims = X[item_rows] @ centroids.T
    loo = _leave_one_out(X, item_rows, own, sums)
    sims[np.arange(n), own] = -np.inf
    k = min(settings.negatives_per_item, L - 1)
    near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    neg = np.take_along_axis(sims, near, axis=1)
    values = np.concatenate([loo, neg.ravel()])
    leaf_of = np.concatenate([own, near.ravel()])
    y = np.concatenate([np.ones(n), np.zeros(n * k)])
    mean, scale = float(values.mean()), float(values.std()) or 1.0
    design = sparse.hstack(
        [sparse.csr_matrix(((values - mean) / scale * UNPENALISED)[:, None]),
         sparse.csr_matrix((np.ones(len(values)), (np.arange(len(values)), leaf_of)), shape=(len(values), L))],
        format="csr",
    )  # fmt: skip
    model = LogisticRegression(C=settings.regularisation, class_weight="balanced", max_iter=1000)
    model.fit(design, y)
    coef = model.coef_[0]
    calibration = Calibration(
        mean=mean, scale=scale, slope=float(coef[0]) * UNPENALISED, intercept=float(model.intercept_[0]),
        offsets={leaf.id: float(c) for leaf, c in zip(leaves, coef[1:])}, threshold=0.0, new_rate=settings.new_rate,
    )  # fmt: skip
    sims[np.arange(n), own] = loo
    best = probabilities(calibration, [leaf.id for leaf in leaves], sims).max(axis=1)
    threshold = float(np.sort(best)[int(settings.new_rate * n)])
    return calibration.model_copy(
        update={"threshold": threshold, "fitted_on": n, "flagged_share": round(float((best < threshold).mean()), 4)}
    )


def calibrated(
    taxonomy: Taxonomy, item_ids: list[str], X: np.ndarray, *, settings: RoutingSettings, seed: int = 0
) -> Taxonomy:
    """`taxonomy` with its calibration fitted on its leaves' members (`item_ids` name the rows of `X`)."""
    rows = {item_id: i for i, item_id in enumerate(item_ids)}
    fitted = fit_calibration(taxonomy.leaves(), rows, X, settings=settings, seed=seed)
    return taxonomy.model_copy(update={"calibration": fitted})


def member_probabilities(taxonomy: Taxonomy, item_ids: list[str], X: np.ndarray) -> dict[str, float]:
    """Each leaf member's probability of its own leaf, by the taxonomy's calibration (assignments.csv)."""
    calibration = taxonomy.calibration
    if calibration is None:
        return {}
    rows = {item_id: i for i, item_id in enumerate(item_ids)}
    leaves = taxonomy.leaves()
    centroids = member_centroids(leaves, rows, X)
    out: dict[str, float] = {}
    for k, leaf in enumerate(leaves):
        idx = [rows[m] for m in leaf.member_ids if m in rows]
        if idx:
            sims = X[idx] @ centroids[k]
            p = probabilities(calibration, [leaf.id], sims[:, None])[:, 0]
            out.update((item_ids[i], round(float(v), 4)) for i, v in zip(idx, p))
    return out
