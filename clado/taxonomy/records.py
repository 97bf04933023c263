"""Typed records shared by every stage: input records, facets, clusters, nodes and taxonomies."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NODE_NAMESPACE = uuid.UUID("6f1c0a52-3d55-4c8e-9a51-0c1ad0c1ad00")


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


class Message(BaseModel):
    role: str
    content: str


class Occurrence(BaseModel):
    """One more input row with exactly the content of a record (an exact duplicate): who sent it, when, where."""

    id: str
    created_at: datetime | None = None
    user_id: str | None = None
    source_file: str = ""
    source_line: int = 0


class Record(BaseModel):
    """One input item: a review, a query or a conversation. `repeats` are its exact duplicates, each counted."""

    id: str
    text: str | None = None
    messages: list[Message] | None = None
    created_at: datetime | None = None
    user_id: str | None = None
    source_file: str = ""
    source_line: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    repeats: list[Occurrence] = Field(default_factory=list)

    @property
    def kind(self) -> Literal["text", "conversation"]:
        return "conversation" if self.messages else "text"

    def as_text(self) -> str:
        """The record as plain text: the text itself, or the transcript of a conversation."""
        if self.messages:
            return "\n".join(f"{m.role}: {m.content}" for m in self.messages)
        return self.text or ""

    @property
    def content_hash(self) -> str:
        """Hash of the content only (not id or source), used for duplicate detection and refresh."""
        if self.messages:
            return sha256_text(stable_json([[m.role, m.content] for m in self.messages]))
        return sha256_text(self.text or "")


class FacetSpec(BaseModel):
    """A question asked of every record; its answer is validated against `schema_name`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    question: str
    prompt: str = Field(description="Jinja template name in clado/prompts, without .j2")
    schema_name: str = Field(description="Key of the pydantic answer model in clado.agents.facets.SCHEMAS")
    prefill: str | None = None
    cluster_on: bool = Field(default=True, description="Whether this facet's values are clustered")


class FacetValue(BaseModel):
    """One clusterable item extracted from a record (a review can yield several)."""

    record_id: str
    facet: str
    index: int = 0
    value: dict[str, Any]
    text: str = Field(description="The text that is embedded and clustered")
    aspect: str | None = None

    @property
    def item_id(self) -> str:
        return f"{self.record_id}#{self.facet}#{self.index}"


class Cluster(BaseModel):
    """A base cluster. `label` is the algorithm's number and is never used as an identity."""

    label: int
    member_ids: list[str]
    medoid_id: str | None = None
    keywords: list[str] = Field(default_factory=list)
    coherence: float | None = None


class Node(BaseModel):
    """A node of the taxonomy tree. Level 0 is the leaf level; the top has the highest level."""

    id: str
    parent_id: str | None = None
    level: int
    name: str
    description: str = ""
    size: int = 0
    member_ids: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    medoid_id: str | None = None

    @staticmethod
    def make_id(level: int, member_ids: list[str]) -> str:
        """Deterministic UUID from level and membership, so equal builds give equal IDs."""
        digest = sha256_text(stable_json([level, sorted(member_ids)]))
        return str(uuid.uuid5(NODE_NAMESPACE, digest))


class Item(BaseModel):
    """A clustered item as shown in exports: its text, source record and facet values."""

    id: str
    record_id: str
    text: str
    source: str = ""
    created_at: datetime | None = None
    user_id: str | None = None
    facets: dict[str, Any] = Field(default_factory=dict)
    repeats: list[Occurrence] = Field(default_factory=list, description="The record's exact duplicates")
    x: float | None = None
    y: float | None = None

    @property
    def count(self) -> int:
        """How many input rows this item stands for (the record and its exact duplicates)."""
        return 1 + len(self.repeats)

    def user_ids(self) -> set[str]:
        """The distinct users of every occurrence."""
        return {u for u in [self.user_id, *(o.user_id for o in self.repeats)] if u}

    def times(self) -> list[datetime]:
        """The time of every occurrence that has one."""
        return [t for t in [self.created_at, *(o.created_at for o in self.repeats)] if t is not None]


class Calibration(BaseModel):
    """A taxonomy's routing calibration (clado/pipeline/route.py): leaf probability
    p = σ(slope·(cosine − mean)/scale + intercept + offsets[leaf]); a text is new when its best p is below
    `threshold` (τ), set so that `flagged_share` (at most `new_rate`) of the `fitted_on` build items would be."""

    mean: float
    scale: float
    slope: float
    intercept: float
    offsets: dict[str, float] = Field(default_factory=dict)
    threshold: float
    new_rate: float
    fitted_on: int = 0
    flagged_share: float = 0.0


class Taxonomy(BaseModel):
    """A versioned tree of nodes plus the items that were left unassigned."""

    version: int = 1
    created_at: datetime
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    nodes: list[Node]
    unassigned_ids: list[str] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration | None = None

    @property
    def depth(self) -> int:
        return 1 + max((n.level for n in self.nodes), default=-1)

    def by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    def children(self, node_id: str | None) -> list[Node]:
        return [n for n in self.nodes if n.parent_id == node_id]

    def roots(self) -> list[Node]:
        return self.children(None)

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.level == 0]

    def leaf_of(self) -> dict[str, str]:
        """Map item id → leaf node id."""
        return {m: n.id for n in self.leaves() for m in n.member_ids}

    def ancestor_at(self, node_id: str, level: int) -> Node:
        """The ancestor of `node_id` (or the node itself) at `level`."""
        index = self.by_id()
        node = index[node_id]
        while node.level < level and node.parent_id is not None:
            node = index[node.parent_id]
        return node
