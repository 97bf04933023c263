"""Settings of `clado refresh` (kept apart from refresh.py so clado.config can import them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RefreshSettings(BaseModel):
    """How new records join an existing taxonomy, when a rebuild is recommended and how IDs survive one."""

    model_config = ConfigDict(extra="forbid")
    assign_threshold: float | None = Field(
        None,
        description="A new item joins its most probable leaf unless it is a new problem (probability below the "
        "taxonomy's calibrated threshold); a number here also requires at least this cosine to the leaf's centroid",
    )
    min_new_cluster_size: int = Field(5, ge=2, description="Smallest cluster of pooled items kept as a new leaf")
    duplicate_threshold: float | None = Field(
        None,
        description="A new cluster whose centroid has at least this cosine to a leaf's joins that leaf "
        "(None = cluster.refine.merge_threshold)",
    )
    rebuild_pool_share: float = Field(
        0.3, ge=0, le=1, description="Recommend a rebuild when more than this share of new items fits no leaf"
    )
    max_centroid_drift: float = Field(
        0.1, ge=0, description="Recommend a rebuild when a leaf centroid moves more than this (1 - cosine)"
    )
    id_match_jaccard: float = Field(
        0.5,
        gt=0,
        le=1,
        description="On --rebuild a new node takes an old node's ID when their member Jaccard is at least this",
    )
