"""A reranker applied to item rows under a pair budget, and the calibration of its agreement threshold."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np


class PairScorer(Protocol):
    """A reranker: one relevance score in [0, 1] per (query, document) text pair."""

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]: ...


class PairJudge:
    """Scores pairs of item rows with a reranker: each pair once, at most `budget` pairs in all.

    `scores` returns None for pairs left unscored because the budget ran out; callers then
    decide by the embedding alone. A score at or above `threshold` counts as agreement.
    """

    def __init__(self, reranker: PairScorer, texts: list[str], *, threshold: float = 0.5, budget: int = 2000):
        self.reranker = reranker
        self.texts = texts
        self.threshold = threshold
        self.budget = budget
        self.cache: dict[tuple[int, int], float] = {}
        self.over_budget = 0

    @property
    def remaining(self) -> int:
        return max(0, self.budget - len(self.cache))

    def scores(self, pairs: list[tuple[int, int]]) -> list[float | None]:
        """Scores of row pairs (query row, document row), scoring new pairs in order while budget remains."""
        new = [p for p in dict.fromkeys(pairs) if p not in self.cache]
        allowed, refused = new[: self.remaining], new[self.remaining :]
        self.over_budget += len(refused)
        if allowed:
            got = self.reranker.score_pairs([(self.texts[a], self.texts[b]) for a, b in allowed])
            if len(got) != len(allowed):
                raise RuntimeError(f"reranker returned {len(got)} scores for {len(allowed)} pairs")
            self.cache.update(zip(allowed, (float(s) for s in got)))
        return [self.cache.get(p) for p in pairs]

    def agree(self, pairs: list[tuple[int, int]]) -> list[bool | None]:
        """Whether the reranker confirms each pair (None = not scored)."""
        return [None if s is None else s >= self.threshold for s in self.scores(pairs)]

    def stats(self) -> dict[str, int | float]:
        return {"pairs_scored": len(self.cache), "pairs_over_budget": self.over_budget, "threshold": self.threshold}

    def on_rows(self, rows: np.ndarray | list[int]) -> PairJudge:
        """A judge over a subset of the rows (pairs given in subset positions) sharing this one's cache and budget."""
        return RowSubsetJudge(self, rows)


class RowSubsetJudge(PairJudge):
    """`PairJudge.on_rows`: positions in `rows` are mapped to the parent's rows before scoring."""

    def __init__(self, parent: PairJudge, rows: np.ndarray | list[int]):
        self.parent = parent
        self.rows = [int(r) for r in rows]
        self.reranker = parent.reranker
        self.texts = [parent.texts[r] for r in self.rows]
        self.threshold = parent.threshold

    @property
    def remaining(self) -> int:
        return self.parent.remaining

    def scores(self, pairs: list[tuple[int, int]]) -> list[float | None]:
        return self.parent.scores([(self.rows[a], self.rows[b]) for a, b in pairs])

    def stats(self) -> dict[str, int | float]:
        return self.parent.stats()


def calibrate_threshold(
    scores: list[float] | np.ndarray, same: list[bool] | np.ndarray, *, criterion: Literal["f1", "youden"] = "f1"
) -> float:
    """The threshold t (a score value seen) that best separates same-label pairs (score >= t) from the rest.

    `criterion` "f1" maximises F1 of the "same" class, "youden" maximises TPR - FPR. Ties go to the
    higher t. For evaluation on labelled samples only: gold labels never enter a build.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if len(s) != len(y) or len(s) == 0:
        raise ValueError(f"need as many labels as scores (got {len(s)} scores, {len(y)} labels), at least one")
    if y.all() or not y.any():
        raise ValueError("calibration needs both same-label and different-label pairs")
    candidates = np.unique(s)
    predicted = s[None, :] >= candidates[:, None]  # one row per candidate threshold
    tp = (predicted & y).sum(axis=1)
    fp = (predicted & ~y).sum(axis=1)
    if criterion == "f1":
        fn = y.sum() - tp
        value = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    elif criterion == "youden":
        value = tp / y.sum() - fp / (~y).sum()
    else:
        raise ValueError(f"unknown criterion {criterion!r}")
    best = np.flatnonzero(value >= value.max() - 1e-12)[-1]
    return float(candidates[best])
