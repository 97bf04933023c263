"""A 2-D map of the items: projection of their embeddings and a PNG scatter coloured by top-level group."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA

UMAP_MIN_ITEMS = 15
LEGEND_NAME_CHARS = 32
LEGEND_MAX_GROUPS = 30
UNASSIGNED_COLOUR = "#d3d3d3"


def project_2d(X: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D coordinates (n, 2): UMAP with cosine distance, or PCA below 15 items."""
    n = len(X)
    if n < UMAP_MIN_ITEMS:
        xy = np.zeros((n, 2), dtype=np.float32)
        dims = min(2, n, X.shape[1])
        if n > 1:
            xy[:, :dims] = PCA(n_components=dims, random_state=seed).fit_transform(X)
        return xy
    import umap  # slow import (numba); only needed here

    return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(X).astype(np.float32)


def _colours(count: int) -> list:
    """Distinct colours: tab20 (greys left for unassigned), tab20b and tab20c, then evenly spaced hues."""
    palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    palette = [c for c in palette if max(c[:3]) - min(c[:3]) > 0.05]
    if count <= len(palette):
        return palette[:count]
    return [plt.get_cmap("hsv")(i / count) for i in range(count)]


def _short(name: str) -> str:
    return name if len(name) <= LEGEND_NAME_CHARS else name[: LEGEND_NAME_CHARS - 1] + "…"


def render_map_png(xy: np.ndarray, groups: list[str | None], path: str | Path, *, title: str) -> Path:
    """Scatter `xy` into a 1000x700 px PNG, one colour per group (largest first), unassigned (None) in grey."""
    if len(xy) != len(groups):
        raise ValueError(f"xy has {len(xy)} points but groups has {len(groups)} entries")
    xy = np.asarray(xy, dtype=np.float32).reshape(len(groups), 2)
    path = Path(path)
    order = [name for name, _ in Counter(g for g in groups if g is not None).most_common()]
    marker = float(np.clip(20000 / max(len(groups), 1), 3, 30))

    names = np.array(groups, dtype=object)
    fig, ax = plt.subplots(figsize=(10, 7), dpi=100)
    try:
        unassigned = np.array([g is None for g in groups], dtype=bool)
        if unassigned.any():
            ax.scatter(
                xy[unassigned, 0],
                xy[unassigned, 1],
                s=marker,
                c=UNASSIGNED_COLOUR,
                linewidths=0,
                label=f"unassigned ({unassigned.sum()})",
            )
        for rank, (name, colour) in enumerate(zip(order, _colours(len(order)))):
            members = names == name
            label = f"{_short(name)} ({members.sum()})" if rank < LEGEND_MAX_GROUPS else None
            ax.scatter(xy[members, 0], xy[members, 1], s=marker, color=colour, linewidths=0, label=label)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(groups):
            hidden = len(order) - LEGEND_MAX_GROUPS
            ax.legend(
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                fontsize=7,
                frameon=False,
                markerscale=8 / np.sqrt(marker),
                title=f"+{hidden} smaller groups not listed" if hidden > 0 else None,
                title_fontsize=7,
            )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def map_png_base64(path: str | Path) -> str:
    """The PNG file as base64 text, for `<img src="data:image/png;base64,...">`."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")
