"""Scores of a clustering against gold labels: NMI, ARI, ACC, purity, and tree consistency.

Predicted labels may be any hashables; the value `noise` marks an item left unassigned.
NMI and ARI score every item, with all noise items counted as one cluster. ACC counts
noise items as wrong. All scores are fractions in 0..1 (printers show them x100).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _codes(values: Sequence[Hashable]) -> tuple[np.ndarray, list[Hashable]]:
    """Integer codes in order of first appearance, and the distinct values."""
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def _check_lengths(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"pred has {len(pred)} labels but gold has {len(gold)}")
    if len(gold) == 0:
        raise ValueError("cannot score an empty labelling")


def _contingency(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Dense count matrix: entry (i, j) = number of items with row code i and column code j."""
    ones = np.ones(len(rows), dtype=np.int64)
    return coo_matrix((ones, (rows, cols)), shape=(n_rows, n_cols)).toarray()


def score_labels(pred: Sequence[Hashable], gold: Sequence[Hashable], *, noise: Hashable = -1) -> dict[str, Any]:
    """NMI, ARI, ACC, purity, cluster counts and unassigned share of `pred` against `gold`.

    ACC uses the best one-to-one matching of predicted clusters to gold labels
    (Hungarian); unmatched and unassigned items count as wrong. Purity is the mean,
    over predicted clusters (noise excluded), of the share held by the cluster's
    majority gold label; it is 0.0 when every item is noise.
    """
    _check_lengths(pred, gold)
    n = len(gold)
    pred_codes, pred_values = _codes(pred)
    gold_codes, gold_values = _codes(gold)
    noise_code = pred_values.index(noise) if noise in pred_values else -1
    assigned = pred_codes != noise_code

    counts = _contingency(pred_codes, gold_codes, len(pred_values), len(gold_values))
    if noise_code >= 0:
        counts = np.delete(counts, noise_code, axis=0)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched = int(counts[rows, cols].sum())
    sizes = counts.sum(axis=1)
    purity = float(np.mean(counts.max(axis=1) / sizes)) if len(sizes) else 0.0

    return {
        "nmi": float(normalized_mutual_info_score(gold_codes, pred_codes)),
        "ari": float(adjusted_rand_score(gold_codes, pred_codes)),
        "acc": matched / n,
        "n_clusters": int(counts.shape[0]),
        "n_gold": len(gold_values),
        "unassigned_share": float(1.0 - assigned.mean()),
        "purity": purity,
    }


def _pairs(counts: np.ndarray) -> int:
    return int((counts * (counts - 1) // 2).sum())


def tree_consistency(top_pred: Sequence[Hashable], gold: Sequence[Hashable], *, noise: Hashable = -1) -> float:
    """Share of item pairs with the same gold label that sit under the same top-level node.

    Items whose top node is `noise` (unassigned) are never consistent with anything.
    Returns NaN when no two items share a gold label (there is nothing to measure).
    """
    _check_lengths(top_pred, gold)
    top_codes, top_values = _codes(top_pred)
    gold_codes, gold_values = _codes(gold)
    counts = _contingency(top_codes, gold_codes, len(top_values), len(gold_values))
    same_gold = _pairs(counts.sum(axis=0))
    if same_gold == 0:
        return float("nan")
    if noise in top_values:
        counts = np.delete(counts, top_values.index(noise), axis=0)
    return _pairs(counts) / same_gold


UNMATCHED = "(unmatched)"


def aligned_labels(pred: Sequence[Hashable], gold: Sequence[Hashable], *, noise: Hashable = -1) -> list[Hashable]:
    """Each item's predicted cluster replaced by the gold label Hungarian matching gives it (as in ACC);
    items of unmatched clusters and unassigned items get UNMATCHED."""
    _check_lengths(pred, gold)
    pred_codes, pred_values = _codes(pred)
    gold_codes, gold_values = _codes(gold)
    counts = _contingency(pred_codes, gold_codes, len(pred_values), len(gold_values))
    if noise in pred_values:
        counts[pred_values.index(noise)] = -1  # never matched
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = {pred_values[r]: gold_values[c] for r, c in zip(rows, cols) if pred_values[r] != noise}
    return [mapping.get(p, UNMATCHED) for p in pred]


def per_class_scores(pred: Sequence[Hashable], gold: Sequence[Hashable], *, noise: Hashable = -1) -> dict[str, Any]:
    """Macro-F1 over the gold classes after the Hungarian alignment, per-class precision / recall / F1 / support,
    and the confusion matrix (rows: gold classes; columns: the same classes, then UNMATCHED)."""
    aligned = aligned_labels(pred, gold, noise=noise)
    classes = sorted({str(g) for g in gold})
    columns = classes + [UNMATCHED]
    col = {c: j for j, c in enumerate(columns)}
    matrix = np.zeros((len(classes), len(columns)), dtype=np.int64)
    for g, a in zip(gold, aligned):
        matrix[col[str(g)], col[str(a)]] += 1
    hits = np.diag(matrix[:, : len(classes)])
    predicted = matrix[:, : len(classes)].sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(len(classes)), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(classes)), where=total > 0)
    per_class = {
        c: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4), "support": int(n)}
        for c, p, r, f, n in zip(classes, precision, recall, f1, support)
    }
    return {
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion": {"rows": classes, "columns": columns, "matrix": matrix.tolist()},
    }
