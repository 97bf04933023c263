"""The confusion matrix of `clado eval` as a PNG heat map (rows: gold classes; columns: aligned predictions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

LABEL_CHARS = 28


def render_confusion_png(confusion: dict[str, Any], path: Path | str, *, title: str) -> Path:
    """Row-normalised counts (each gold class's share per column), labelled with the class names."""
    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    rows, cols = matrix.shape
    size = min(40.0, max(6.0, 0.16 * cols + 3))
    font = max(3.0, min(9.0, 400 / max(rows, cols)))
    fig, ax = plt.subplots(figsize=(size, size * rows / cols + 1))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), [c[:LABEL_CHARS] for c in confusion["columns"]], rotation=90, fontsize=font)
    ax.set_yticks(range(rows), [r[:LABEL_CHARS] for r in confusion["rows"]], fontsize=font)
    ax.set_xlabel("predicted (cluster aligned to a gold class)")
    ax.set_ylabel("gold class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the gold class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
