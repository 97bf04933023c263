"""Row normalisation: the one helper every stage uses to put vectors on the unit sphere."""

from __future__ import annotations

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length along the last axis; zero rows stay zero."""
    v = np.asarray(v)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)
