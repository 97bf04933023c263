"""Cluster labels in one canonical numbering, shared by base clustering and refinement."""

from __future__ import annotations

import numpy as np


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by size (descending), ties by smallest member index; -1 stays noise."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, dtype=np.int64)
    keys = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        keys.append((-len(members), int(members[0]), members))
    for new, (_, _, members) in enumerate(sorted(keys, key=lambda t: (t[0], t[1]))):
        out[members] = new
    return out
