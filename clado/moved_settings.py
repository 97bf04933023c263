"""Settings that moved: their old dotted keys still read, each answered with its new key.

[cluster] once held 43 flat settings; they now live in sections beside the code that reads them
([cluster.graph], [cluster.resolution], [cluster.hdbscan], [cluster.refine], [cluster.rerank] and the
top-level [aspects]). The per-section seeds gave way to the one top-level `seed`.
"""

from __future__ import annotations

import copy
from typing import Any

_SECTIONS: dict[str, tuple[str, ...]] = {
    "cluster.graph": (
        "knn_k", "knn", "lexical_weight", "lexical_dims", "lexical_fit_max", "token_match_weight",
        "token_match_candidates", "token_match_max_tokens", "token_match_max_items",
    ),
    "cluster.resolution": (
        "leiden_resolution", "leiden_items_per_resolution", "search_near_cosine", "search_max_near_share",
        "search_twin_edge_share", "search_max_twin_share", "search_min_median_size", "search_min_resolution",
        "search_max_resolution", "search_patience", "search_step_back", "search_sample", "large_leiden_iterations",
    ),
    "cluster.hdbscan": ("umap_dims", "umap_neighbors", "umap_min_dist", "min_cluster_size", "min_samples",
                        "cluster_selection"),
    "cluster.refine": ("absorb_threshold", "merge_threshold", "small_cluster_size", "small_cluster_coherence",
                       "boundary_margin", "boundary_candidates"),
    "cluster.rerank": ("reranker", "reranker_model", "reranker_url", "rerank_threshold", "rerank_budget",
                       "rerank_knn_k", "rerank_top_m"),
    "aspects": ("aspect_buckets", "aspect_threshold", "min_bucket_size"),
}  # fmt: skip
MOVED: dict[str, str] = {
    f"cluster.{name}": f"{section}.{name}" for section, names in _SECTIONS.items() for name in names
}
MOVED |= {f"{section}.seed": "seed" for section in ("cluster", "llm", "naming", "hierarchy")}


class MovedSettingWarning(FutureWarning):
    """A config file uses a setting's old key; it still works, under its new name."""


class MovedSettingConflict(ValueError):
    """A setting is given under its old and its new key with different values."""


def move_settings(data: dict[str, Any], *, prefer_new: bool = False) -> tuple[dict[str, Any], list[str]]:
    """`data` with every old key moved to its new place, and one line per move ("old is now new").

    A key given under both names must agree, else MovedSettingConflict; with `prefer_new` (stored configs,
    which hold every key) the new one wins.
    """
    data = copy.deepcopy(data)
    moves: list[str] = []
    for old, new in MOVED.items():
        *old_path, old_key = old.split(".")
        parent = _table(data, old_path, create=False)
        if parent is None or old_key not in parent:
            continue
        *new_path, new_key = new.split(".")
        target = _table(data, new_path, create=True)
        if target is None:  # the new place is not a table: validation names the key
            continue
        value = parent.pop(old_key)
        if new_key in target and target[new_key] != value and not prefer_new:
            raise MovedSettingConflict(f"{old} = {value!r} and {new} = {target[new_key]!r}: {old} is now {new}")
        target.setdefault(new_key, value)
        moves.append(f"{old} is now {new}")
    return data, moves


def _table(data: dict[str, Any], path: list[str], *, create: bool) -> dict[str, Any] | None:
    for name in path:
        inner = data.get(name)
        if not isinstance(inner, dict):
            if not create or inner is not None:
                return None
            inner = data[name] = {}
        data = inner
    return data
