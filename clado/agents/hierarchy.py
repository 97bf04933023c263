"""Clio-style hierarchy: LLM-proposed parents per neighbourhood, deduplicated, assigned, renamed, level by level.

One level: embed the children ("name: description"); split them into neighbourhoods with seeded KMeans, sized
to the model's context (as many children as fit the proposal prompt and its reply, at most 25, at least 10); the
LLM proposes parents per neighbourhood (about its share of the level's target); near-identical proposals are
merged; every child is assigned to one parent from a shuffled shortlist of the proposals most similar to it
(answers validated with `match_label`, re-asked once, then the most similar parent by embedding, logged); empty
parents are dropped; the last level is brought to its target count (the smallest parents merged into the
nearest, or the largest split by Ward) and no level keeps a single parent; catch-all parents are split;
given the leaves' item centroids, the groups are re-cut by Ward on the centroids joined with the LLM's
grouping (a consensus: the model decides where the geometry is unclear), and catch-alls made by that re-cut
are split too; each parent is renamed from
the children it got; sibling names are made unique. Levels are added until the top has at most `max_top`
nodes. Weak-model output never stops a build: every failure has a deterministic fallback, counted in `events`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rapidfuzz import fuzz
from rapidfuzz.process import cdist
from scipy.cluster.hierarchy import cut_tree, linkage
from sklearn.cluster import KMeans

from clado.agents.labels import (
    MATCH_THRESHOLD,
    ClusterName,
    ask_or_none,
    clean_name,
    count,
    distinctive_words,
    keyword_label,
    match_label,
    normalise_label,
    resolve_clashes,
)
from clado.backends.embed import Embedder
from clado.backends.llm import LLMClient
from clado.progress import Advance, progress_bar
from clado.prompts import render
from clado.prompts.quoting import quote_data
from clado.taxonomy.records import Node
from clado.vectors import unit

log = logging.getLogger(__name__)
NEIGHBOURHOOD_MIN = 10
NEIGHBOURHOOD_AUTO = 25  # measured: larger neighbourhoods scored worse, so the context may only lower it
NEIGHBOURHOOD_MAX = 40
CHARS_PER_TOKEN = 3  # prompt-budget estimate, as for the facet inputs in pipeline/build
CHILDREN_SHOWN = 25
NAME_CHARS = 120
DESCRIPTION_CHARS = 200
RENAME_TOKENS = 150


class HierarchySettings(BaseModel):
    """How the tree above the base clusters is built."""

    model_config = ConfigDict(extra="forbid")
    max_top: int = Field(8, ge=2, description="Most nodes allowed at the top level")
    neighbourhood_size: Annotated[int, Field(ge=NEIGHBOURHOOD_MIN, le=NEIGHBOURHOOD_MAX)] | Literal["auto"] = Field(
        "auto",
        description="Children per LLM proposal call (KMeans neighbourhoods), 10..40; auto = as many as fit the proposal "
        "prompt and its reply in llm.n_ctx (at 3 characters a token), at most 25 and at least 10",
    )
    max_levels: int = Field(4, ge=1, description="Most parent levels above the leaves")
    branching: int = Field(
        10, ge=2, description="Largest average number of children per parent when level targets are derived"
    )
    level_targets: list[int] | None = Field(
        None, description="Parents wanted per level, bottom up; None = geometric from the leaf count down to max_top"
    )
    dedupe_threshold: float = Field(
        0.9, gt=0, le=1, description="Proposed parents at least this similar (cosine) are merged"
    )
    dedupe_margin: float = Field(
        0.05, ge=0, description="Pairs within this much below the threshold are checked by the LLM"
    )
    max_dedupe_checks: int = Field(10, ge=0, description="LLM same-or-not checks per level, most similar pairs first")
    assign_shortlist: int = Field(
        4,
        ge=2,
        description="Parents offered to each child in its assignment call: the proposals most similar to it, shuffled",
    )
    balance: float = Field(
        1.5,
        ge=0,
        description="A parent with more than this many times the mean number of children or of records per parent "
        "is split by Ward and the parent with fewest records merged into its nearest (catch-all parents of weak models "
        "or of the consensus); checked before and after the consensus; 0 = off",
    )
    geometry_weight: float = Field(
        0.4,
        ge=0,
        description="Consensus with the embedding geometry when the leaves' item centroids are given: a level's "
        "groups are re-cut by Ward on [unit item centroid ; w/sqrt(2) * one-hot of the LLM's group] to the same "
        "count, so the LLM's grouping decides where the geometry is unclear and a weak model's stray assignments "
        "follow the items; 0 = the LLM's groups as they are",
    )
    max_words: int = Field(10, ge=1, description="Longest parent name kept; longer names are cut")

    @model_validator(mode="after")
    def _check_targets(self) -> HierarchySettings:
        targets = self.level_targets
        if targets is not None:
            if not targets or any(t < 1 for t in targets) or any(a <= b for a, b in itertools.pairwise(targets)):
                raise ValueError("level_targets must be positive and strictly decreasing")
            if targets[-1] > self.max_top or len(targets) > self.max_levels:
                raise ValueError("level_targets must end at or below max_top and have at most max_levels entries")
        return self


class ParentProposals(BaseModel):
    parents: list[ClusterName] = Field(description="Proposed parent categories")


class SameCategory(BaseModel):
    same: bool = Field(description="Whether the two categories mean the same thing")


class Assignment(BaseModel):
    child: int = Field(description="Number of the category being assigned")
    parent: str = Field(description="Exact name of the chosen parent category")


class Assignments(BaseModel):
    assignments: list[Assignment]


def level_targets(n_leaves: int, settings: HierarchySettings) -> list[int]:
    """Parents wanted per level above `n_leaves` leaves (shared by the LLM builder and the scipy baseline).

    Explicit `settings.level_targets` below the leaf count are used as given. Otherwise the count falls
    geometrically from the leaf count to `max_top` over as few levels as keep the average branching at most
    `branching` (capped at `max_levels`). Three to `max_top` leaves get one level of 2..max_top parents; fewer get
    none (two parents of one leaf each would say nothing).
    """
    if n_leaves < 3:
        return []
    top = settings.max_top
    explicit = [t for t in settings.level_targets or [] if t < n_leaves]
    if explicit:
        return explicit
    if n_leaves <= top:
        return [min(n_leaves, max(2, round(math.sqrt(n_leaves))))]
    levels = min(settings.max_levels, max(1, math.ceil(math.log(n_leaves / top) / math.log(settings.branching))))
    targets, previous = [], n_leaves
    for level in range(1, levels + 1):
        if previous <= top:
            break
        previous = max(top, min(previous - 1, round(n_leaves * (top / n_leaves) ** (level / levels))))
        targets.append(previous)
    return targets


def ward_groups(vectors: np.ndarray, k: int) -> np.ndarray:
    """Ward-linkage cut into `k` groups (`cut_tree` gives exactly k, even with tied merge heights): labels 0..k-1."""
    if len(vectors) < 2 or k <= 1:
        return np.zeros(len(vectors), dtype=int)
    return cut_tree(linkage(vectors, method="ward"), n_clusters=min(k, len(vectors)))[:, 0]


def make_parent(level: int, children: list[Node], name: ClusterName) -> Node:
    """The parent node of `children`: id from level and membership, keywords merged by child size."""
    members = sorted({m for child in children for m in child.member_ids})
    weights: Counter = Counter()
    for child in children:
        for keyword in child.keywords:
            weights[keyword] += child.size
    largest = max(children, key=lambda c: c.size)
    return Node(
        id=Node.make_id(level, members),
        level=level,
        name=name.name,
        description=name.description,
        size=len(members),
        member_ids=members,
        keywords=[w for w, _ in weights.most_common(10)],
        medoid_id=largest.medoid_id,
    )


async def build_hierarchy(
    leaves: list[Node],
    *,
    llm: LLMClient,
    embedder: Embedder,
    settings: HierarchySettings,
    events: Counter,
    seed: int = 0,
    centroids: np.ndarray | None = None,
) -> list[Node]:
    """Every node of the tree: the leaves with `parent_id` set, then the parents of levels 1..L.

    `centroids` (row i = mean item vector of `leaves[i]`) turns on the consensus with the embedding geometry
    (`geometry_weight`); a parent's centroid is the size-weighted mean of its children's.

    Counts hierarchy_levels, hierarchy_proposals_empty, hierarchy_baseline_grouping, hierarchy_proposals_trimmed,
    hierarchy_parents_merged, hierarchy_dedupe_checks, hierarchy_assign_reask, hierarchy_assign_fallback,
    hierarchy_empty_parents_dropped, hierarchy_top_merged, hierarchy_groups_split, hierarchy_groups_rebalanced,
    hierarchy_consensus_moved, hierarchy_rename_fallback,
    hierarchy_truncated,
    hierarchy_clash_reask, hierarchy_clash_keyword_name and per call kind `hierarchy_{propose,dedupe,assign,rename}_`
    `{invalid_output,transport_error}` in `events`.
    """
    if any(leaf.level != 0 for leaf in leaves):
        raise ValueError("build_hierarchy expects level-0 leaves")
    if centroids is not None and len(centroids) != len(leaves):
        raise ValueError(f"{len(leaves)} leaves but {len(centroids)} centroid rows")
    geometry = None if centroids is None else np.asarray(centroids, dtype=np.float64)
    targets = level_targets(len(leaves), settings)
    if not targets:
        return list(leaves)
    done: list[Node] = []
    current = list(leaves)
    level = 0
    while level < settings.max_levels and (level == 0 or len(current) > settings.max_top):
        level += 1
        target = min(targets[level - 1] if level <= len(targets) else settings.max_top, len(current))
        # The last allowed level, or the last planned one when it aims at max_top: fit max_top there.
        final = level == settings.max_levels or (level >= len(targets) and target <= settings.max_top)
        builder = _LevelBuilder(
            current, level=level, target=target, final=final, geometry=geometry,
            llm=llm, embedder=embedder, settings=settings, events=events, seed=seed,
        )  # fmt: skip
        children, current = await builder.build()
        if geometry is not None:
            geometry = _parent_centroids(geometry, children, current)
        done.extend(children)
        events["hierarchy_levels"] += 1
    return done + current


@dataclass
class _Group:
    """A parent under construction: its name and the indices of its children."""

    name: ClusterName
    children: list[int]


class _LevelBuilder:
    """Builds the parents of one level over `children`."""

    def __init__(self, children: list[Node], *, level: int, target: int, final: bool, geometry: np.ndarray | None,
                 llm: LLMClient, embedder: Embedder, settings: HierarchySettings, events: Counter,
                 seed: int):  # fmt: skip
        self.children, self.level, self.target, self.final = children, level, target, final
        self.geometry = geometry
        self.llm, self.embedder, self.settings, self.events, self.seed = llm, embedder, settings, events, seed
        self.texts = [f"{c.name}: {c.description}" for c in children]
        self.vectors = _embed(embedder, self.texts)

    async def build(self) -> tuple[list[Node], list[Node]]:
        """(children with parent ids, parent nodes ordered by size); progress in three steps: propose, assign, name."""
        with progress_bar(f"hierarchy level {self.level}", total=3) as advance:
            return await self._build(advance)

    async def _build(self, advance: Advance) -> tuple[list[Node], list[Node]]:
        size, cap = neighbourhood_limits(
            self.children, self.target, settings=self.settings, n_ctx=self.llm.settings.n_ctx
        )
        hoods = neighbourhoods(self.vectors, size=size, seed=self.seed, cap=cap)
        shares = [self.target * len(h) / len(self.children) for h in hoods]
        proposals = await asyncio.gather(*(self._propose(h, s) for h, s in zip(hoods, shares)))
        advance()
        groups: list[_Group] = []
        pool: list[ClusterName] = []
        pool_hood: list[int] = []
        for j, (hood, share, props) in enumerate(zip(hoods, shares, proposals)):
            if props:
                pool += props
                pool_hood += [j] * len(props)
            else:
                self.events["hierarchy_baseline_grouping"] += 1
                groups += self._baseline_groups(hood, share)
        if pool:
            groups += await self._assign_to_pool(hoods, pool, pool_hood)
        if self.final and len(groups) > self.settings.max_top:
            groups = self._merge_smallest(groups)
        else:  # the last level gets its full count; no level puts every child under one parent
            groups = self._split_to(groups, max(2, min(self.target, self.settings.max_top)) if self.final else 2)
        # The consensus can gather what the model kept apart into one catch-all; the balance is checked again.
        groups = self._rebalance(self._consensus(self._rebalance(groups)))
        advance()
        groups = self._by_records(groups)
        renamed = await asyncio.gather(*(self._rename(g, []) for g in groups))
        names = [r or g.name for g, r in zip(groups, renamed)]
        count(self.events, "hierarchy_rename_fallback", sum(r is None for r in renamed))
        hints = distinctive_words([[self.texts[i] for i in g.children] for g in groups])
        names = await resolve_clashes(
            names,
            reask=lambda i, taken: self._rename(groups[i], taken),
            hints=hints,
            events=self.events,
            prefix="hierarchy",
        )
        advance()
        parents = [make_parent(self.level, [self.children[i] for i in g.children], n) for g, n in zip(groups, names)]
        parent_of = {i: p.id for g, p in zip(groups, parents) for i in g.children}
        linked = [c.model_copy(update={"parent_id": parent_of[i]}) for i, c in enumerate(self.children)]
        return linked, parents

    async def _propose(self, hood: list[int], share: float) -> list[ClusterName]:
        """Parent proposals for one neighbourhood (cleaned, de-duplicated by name, at most 1.5× its share)."""
        prompt, high, max_tokens = proposal_call(
            [_entry(self.children[i]) for i in hood], share, self.settings.max_words
        )
        answer = await ask_or_none(
            self.llm, prompt, ParentProposals, max_tokens=max_tokens, events=self.events, prefix="hierarchy_propose"
        )
        proposals: list[ClusterName] = []
        for proposal in answer.parents if answer else []:
            cleaned = self._clean(proposal)
            if cleaned and normalise_label(cleaned.name) not in {normalise_label(p.name) for p in proposals}:
                proposals.append(cleaned)
        if len(proposals) > high:
            self.events["hierarchy_proposals_trimmed"] += len(proposals) - high
            proposals = proposals[:high]
        if not proposals:
            self.events["hierarchy_proposals_empty"] += 1
        return proposals

    def _baseline_groups(self, hood: list[int], share: float) -> list[_Group]:
        """Ward groups of one neighbourhood, named by keywords (the fallback when no proposal is usable)."""
        labels = ward_groups(self.vectors[hood], min(len(hood), max(1, round(share))))
        members = [[hood[i] for i in np.flatnonzero(labels == g)] for g in sorted(set(labels.tolist()))]
        words = distinctive_words([[self.texts[i] for i in m] for m in members])
        return [_Group(keyword_label(w, default=self.children[m[0]].name), m) for m, w in zip(members, words)]

    async def _assign_to_pool(
        self, hoods: list[list[int]], pool: list[ClusterName], pool_hood: list[int]
    ) -> list[_Group]:
        """Merge duplicate proposals, assign the children of neighbourhoods that had proposals, drop empty parents.

        Each child chooses among a shortlist of the proposals most similar to it (shuffled), so a weak model never
        faces a long list and a catch-all proposal cannot draw children from far away.
        """
        vectors = _embed(self.embedder, [f"{p.name}: {p.description}" for p in pool])
        reps = sorted(set(await self._dedupe(pool, vectors, pool_hood)))
        proposed = set(pool_hood)
        children = [i for j, hood in enumerate(hoods) if j in proposed for i in hood]
        chosen = await asyncio.gather(
            *(self._assign(i, self._shortlist(i, reps, vectors), pool, vectors) for i in children)
        )
        members: dict[int, list[int]] = {r: [] for r in reps}
        for child, r in zip(children, chosen):
            members[r].append(child)
        count(self.events, "hierarchy_empty_parents_dropped", sum(not m for m in members.values()))
        return [_Group(pool[r], sorted(m)) for r, m in members.items() if m]

    async def _dedupe(self, pool: list[ClusterName], vectors: np.ndarray, pool_hood: list[int]) -> list[int]:
        """Representative (lowest index) of each proposal after merging duplicates.

        Same name (exact or fuzzy >= 90) or cosine >= threshold merges; cross-neighbourhood pairs just below the
        threshold are asked to the LLM (at most `max_dedupe_checks`, most similar first).
        """
        parent = list(range(len(pool)))

        def find(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        def union(i: int, j: int) -> None:
            a, b = sorted((find(i), find(j)))
            parent[b] = a

        similarity = vectors @ vectors.T
        keys = [normalise_label(p.name) for p in pool]
        same_name = cdist(keys, keys, scorer=fuzz.ratio) >= MATCH_THRESHOLD
        upper = np.triu(np.ones_like(same_name), k=1)
        for i, j in np.argwhere(upper & (same_name | (similarity >= self.settings.dedupe_threshold))).tolist():
            union(i, j)
        low = self.settings.dedupe_threshold - self.settings.dedupe_margin
        other_hood = np.not_equal.outer(pool_hood, pool_hood)
        borderline = [tuple(p) for p in np.argwhere(upper & other_hood & (similarity >= low)).tolist()]
        borderline.sort(key=lambda p: (-similarity[p], p))
        checks = [p for p in borderline if find(p[0]) != find(p[1])][: self.settings.max_dedupe_checks]
        count(self.events, "hierarchy_dedupe_checks", len(checks))
        answers = await asyncio.gather(
            *(
                ask_or_none(self.llm, render("dedupe_parents", first=_entry(pool[i]), second=_entry(pool[j])),
                            SameCategory, max_tokens=20, events=self.events, prefix="hierarchy_dedupe")
                for i, j in checks
            )
        )  # fmt: skip
        for (i, j), answer in zip(checks, answers):
            if answer is not None and answer.same:
                union(i, j)
        rep = [find(i) for i in range(len(pool))]
        count(self.events, "hierarchy_parents_merged", len(pool) - len(set(rep)))
        return rep

    def _shortlist(self, child: int, reps: list[int], vectors: np.ndarray) -> list[int]:
        """The `assign_shortlist` proposals most similar to the child, in a seeded shuffle (no position bias)."""
        near = sorted(reps, key=lambda r: -float(vectors[r] @ self.vectors[child]))[: self.settings.assign_shortlist]
        rng = np.random.default_rng([self.seed, self.level, child])
        return [near[k] for k in rng.permutation(len(near))]

    async def _assign(self, child: int, candidates: list[int], pool: list[ClusterName], vectors: np.ndarray) -> int:
        """The pool index the child goes to; an unknown or missing answer is re-asked once, then the most similar wins."""
        chosen, rejected = await self._ask_assignment(child, candidates, pool, rejected=None)
        if chosen is None:
            self.events["hierarchy_assign_reask"] += 1
            chosen, _ = await self._ask_assignment(child, candidates, pool, rejected=rejected)
        if chosen is None:
            self.events["hierarchy_assign_fallback"] += 1
            chosen = candidates[int(np.argmax(vectors[candidates] @ self.vectors[child]))]
            log.warning("level %d: no valid parent for %r after a re-ask; assigned to the most similar, %r",
                        self.level, self.children[child].name, pool[chosen].name)  # fmt: skip
        return chosen

    async def _ask_assignment(
        self, child: int, candidates: list[int], pool: list[ClusterName], *, rejected: str | None
    ) -> tuple[int | None, str]:
        """One assignment call: (the chosen pool index or None, the answer when it matched no candidate)."""
        names = [pool[r].name for r in candidates]
        prompt = render(
            "assign_parent",
            child=_entry(self.children[child]),
            parents=[_entry(pool[r]) for r in candidates],
            retry=rejected is not None,
            rejected=quote_data(rejected or "", NAME_CHARS),
        )
        answer = await ask_or_none(
            self.llm, prompt, Assignments, max_tokens=60, events=self.events, prefix="hierarchy_assign"
        )
        for item in answer.assignments if answer else []:
            if item.child == 1:
                match = match_label(item.parent, names)
                return (None, item.parent) if match is None else (candidates[names.index(match)], "")
        return None, ""

    def _split_to(self, groups: list[_Group], goal: int) -> list[_Group]:
        """While there are fewer than `goal` groups, Ward splits the one with most children (renamed later by the LLM)."""
        groups = list(groups)
        while len(groups) < goal:
            largest = max(groups, key=lambda g: (len(g.children), -min(g.children)))
            if len(largest.children) < 2:
                break
            groups = self._split_group(groups, largest)
            self.events["hierarchy_groups_split"] += 1
        return groups

    def _split_group(self, groups: list[_Group], group: _Group) -> list[_Group]:
        """`groups` with `group` replaced by its two Ward halves (same name until renamed)."""
        halves = ward_groups(self.vectors[group.children], 2)
        split = [_Group(group.name, [group.children[k] for k in np.flatnonzero(halves == h)]) for h in (0, 1)]
        return [g for g in groups if g is not group] + split

    def _records(self, group: _Group) -> int:
        """Records under a group: the sizes of its children summed."""
        return sum(self.children[i].size for i in group.children)

    def _by_records(self, groups: list[_Group]) -> list[_Group]:
        """Groups ordered by records, most first (ties: the one holding the lowest child index first)."""
        return sorted(groups, key=lambda g: (-self._records(g), min(g.children)))

    def _rebalance(self, groups: list[_Group]) -> list[_Group]:
        """Split catch-all parents: while a parent of two or more children holds more than `balance` times the mean
        number of children or of records per parent, Ward splits the one with most records in two and the parent
        with fewest records joins the parent nearest to it (the count is kept)."""
        if self.settings.balance <= 0 or len(groups) < 2:
            return groups
        groups = [_Group(g.name, list(g.children)) for g in groups]
        limit_children = self.settings.balance * len(self.children) / len(groups)
        limit_records = self.settings.balance * sum(c.size for c in self.children) / len(groups)
        for _ in range(len(groups)):
            over = [
                g
                for g in groups
                if len(g.children) >= 2 and (len(g.children) > limit_children or self._records(g) > limit_records)
            ]
            if not over:
                break
            groups = self._split_group(groups, max(over, key=lambda g: (self._records(g), -min(g.children))))
            smallest = min(groups, key=lambda g: (self._records(g), min(g.children)))
            groups.remove(smallest)
            centroids = np.stack([unit(self.vectors[g.children].mean(axis=0)) for g in groups])
            target = groups[int(np.argmax(centroids @ unit(self.vectors[smallest.children].mean(axis=0))))]
            target.children = sorted(target.children + smallest.children)
            self.events["hierarchy_groups_rebalanced"] += 1
        return groups

    def _consensus(self, groups: list[_Group]) -> list[_Group]:
        """The same number of groups re-cut by Ward on the children's unit item centroids joined with a one-hot of
        their LLM group scaled by `geometry_weight`/sqrt(2) (the distance two children of different LLM groups gain
        is the weight). A new group keeps the name of the LLM group most of its children came from."""
        if self.geometry is None or self.settings.geometry_weight <= 0 or len(groups) < 2:
            return groups
        llm_group = np.empty(len(self.children), dtype=int)
        for g, group in enumerate(groups):
            llm_group[group.children] = g
        features = np.hstack(
            [unit(self.geometry), self.settings.geometry_weight / math.sqrt(2) * np.eye(len(groups))[llm_group]]
        )
        cut = ward_groups(features, len(groups))
        out = []
        for c in sorted(set(cut.tolist()), key=lambda c: int(np.flatnonzero(cut == c)[0])):
            members = np.flatnonzero(cut == c)
            origin, kept = Counter(llm_group[members].tolist()).most_common(1)[0]
            self.events["hierarchy_consensus_moved"] += len(members) - kept
            out.append(_Group(groups[origin].name, members.tolist()))
        return out

    def _merge_smallest(self, groups: list[_Group]) -> list[_Group]:
        """At the last planned level: children of all but the `max_top` largest groups move to the most similar kept group."""
        groups = self._by_records(groups)
        kept, rest = groups[: self.settings.max_top], groups[self.settings.max_top :]
        centroids = np.stack([unit(self.vectors[g.children].mean(axis=0)) for g in kept])
        for group in rest:
            for i in group.children:
                kept[int(np.argmax(centroids @ self.vectors[i]))].children.append(i)
        self.events["hierarchy_top_merged"] += len(rest)
        return [_Group(g.name, sorted(g.children)) for g in kept]

    async def _rename(self, group: _Group, taken: list[str]) -> ClusterName | None:
        """A name for the parent from the children it actually got (None when the answer is unusable)."""
        shown = sorted(group.children, key=lambda i: (-self.children[i].size, i))[:CHILDREN_SHOWN]
        prompt = render(
            "rename_parent",
            children=[_entry(self.children[i]) for i in shown],
            max_words=self.settings.max_words,
            taken_names=[quote_data(t, NAME_CHARS) for t in taken],
        )
        answer = await ask_or_none(
            self.llm, prompt, ClusterName, max_tokens=RENAME_TOKENS, events=self.events, prefix="hierarchy_rename"
        )
        return self._clean(answer) if answer else None

    def _clean(self, answer: ClusterName) -> ClusterName | None:
        name, cut = clean_name(answer.name, max_words=self.settings.max_words)
        if not name:
            return None
        count(self.events, "hierarchy_truncated", int(cut))
        return ClusterName(name=name, description=" ".join(answer.description.split()))


def _entry(item: Node | ClusterName) -> dict[str, str]:
    """A child or parent as the prompts show it: name and description quoted as data and cut."""
    return {"name": quote_data(item.name, NAME_CHARS), "description": quote_data(item.description, DESCRIPTION_CHARS)}


def proposal_call(children: list[dict[str, str]], share: float, max_words: int) -> tuple[str, int, int]:
    """(prompt, most parents allowed, reply budget in tokens) of the proposal call for these children: about
    `share` parents, between 0.5× and 1.5× of it."""
    high = min(len(children), max(1, math.ceil(1.5 * share)))
    low = min(high, max(1, math.floor(0.5 * share)))
    target = min(high, max(low, round(share)))  # a weak model given only a range answers its lower end
    prompt = render(
        "propose_parents", children=children, min_count=low, max_count=high, target_count=target, max_words=max_words
    )
    return prompt, high, 60 * high + 30


def neighbourhood_limits(
    children: list[Node], target: int, *, settings: HierarchySettings, n_ctx: int
) -> tuple[int, int]:
    """(size, cap) of one level's neighbourhoods when `target` parents are wanted over `children`.

    An int setting is the size, with KMeans groups cut at NEIGHBOURHOOD_MAX. "auto": the same as the int
    NEIGHBOURHOOD_AUTO when that many children (or all of them) fit the proposal call in `n_ctx`, else as many as
    fit (at least NEIGHBOURHOOD_MIN), and then no neighbourhood is larger. Fitting is judged on the system turn
    and a prompt listing copies of the longest child line, at CHARS_PER_TOKEN, plus the reply budget.
    """
    if settings.neighbourhood_size != "auto":
        return settings.neighbourhood_size, NEIGHBOURHOOD_MAX
    longest = max((_entry(c) for c in children), key=lambda e: len(e["name"]) + len(e["description"]))
    system_chars = len(render("system"))

    def fits(size: int) -> bool:
        prompt, _, max_tokens = proposal_call([longest] * size, target * size / len(children), settings.max_words)
        return (system_chars + len(prompt)) / CHARS_PER_TOKEN + max_tokens <= n_ctx

    most = min(NEIGHBOURHOOD_AUTO, len(children))
    fit = next((size for size in range(most, 0, -1) if fits(size)), 0)
    if fit == most:
        return NEIGHBOURHOOD_AUTO, NEIGHBOURHOOD_MAX
    if fit < NEIGHBOURHOOD_MIN:
        log.warning("only %d children fit a proposal prompt in n_ctx %d; neighbourhoods of %d will overflow it",
                    fit, n_ctx, NEIGHBOURHOOD_MIN)  # fmt: skip
    size = max(NEIGHBOURHOOD_MIN, fit)
    return size, size


def neighbourhoods(vectors: np.ndarray, *, size: int, seed: int, cap: int = NEIGHBOURHOOD_MAX) -> list[list[int]]:
    """Seeded KMeans groups of about `size` rows (larger groups cut into parts of at most `cap`), ordered by their
    first row."""
    n = len(vectors)
    k = max(1, round(n / size))
    labels = (
        np.zeros(n, dtype=int) if k == 1 else KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
    )
    hoods = []
    for g in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == g).tolist()
        parts = math.ceil(len(rows) / cap)
        hoods += [chunk.tolist() for chunk in np.array_split(np.array(rows), parts)]
    return sorted(hoods, key=lambda h: h[0])


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return unit(np.asarray(embedder.embed(texts), dtype=np.float32))


def _parent_centroids(geometry: np.ndarray, children: list[Node], parents: list[Node]) -> np.ndarray:
    """Each parent's item centroid: its children's centroids weighted by their sizes."""
    row = {p.id: i for i, p in enumerate(parents)}
    sums = np.zeros((len(parents), geometry.shape[1]))
    for child, vector in zip(children, geometry):
        assert child.parent_id is not None, "every child has a parent here"
        sums[row[child.parent_id]] += child.size * vector
    return sums / np.array([[p.size] for p in parents], dtype=np.float64)
