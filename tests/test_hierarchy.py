"""The LLM hierarchy builder with a responder-based fake server: tree invariants and every fallback path."""

import itertools
import logging
import re
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from clado.agents.hierarchy import (
    HierarchySettings,
    build_hierarchy,
    level_targets,
    neighbourhood_limits,
    neighbourhoods,
)
from clado.backends.llm import LLMSettings
from clado.taxonomy.records import Node
from tests.fakes import FakeEmbedder, FakeServer, fake_llm

SUPERS = {"battery": "Device hardware", "screen": "Device hardware", "shipping": "Orders and money",
          "refund": "Orders and money", "login": "Account access", "password": "Account access"}  # fmt: skip
THEMES = list(SUPERS)
DETAILS = ["fails early", "breaks often", "annoys buyers", "needs support", "varies widely", "comes back",
           "costs money", "seems odd"]  # fmt: skip
TYPICAL = ("Customers say the {theme} {detail} within weeks of buying the device. These reports differ from other "
           "{theme} complaints in timing, cost and how often support had to step in.")  # fmt: skip


def make_leaves(themes=THEMES, per_theme=6, description="Complaints about the {theme}.") -> list[Node]:
    leaves = []
    for theme in themes:
        for k in range(per_theme):
            members = [f"{theme}-{k}-{m}" for m in range(k + 1)]
            leaves.append(
                Node(id=Node.make_id(0, members), level=0, name=f"{theme.capitalize()} {DETAILS[k]}",
                     description=description.format(theme=theme, detail=DETAILS[k]), size=len(members), member_ids=members,
                     keywords=[theme, DETAILS[k].split()[0]])
            )  # fmt: skip
    return leaves


def assert_valid_tree(nodes: list[Node], leaves: list[Node], *, max_top: int) -> None:
    """Every child has exactly one parent one level up, parents hold exactly their children's members."""
    by_id = {n.id: n for n in nodes}
    assert len(by_id) == len(nodes), "node ids must be unique"
    assert {leaf.id for leaf in leaves} <= set(by_id)
    top_level = max(n.level for n in nodes)
    total = sum(leaf.size for leaf in leaves)
    for node in nodes:
        assert node.name.strip(), f"unnamed node {node.id}"
        if node.level == top_level:
            assert node.parent_id is None
        else:
            assert node.parent_id in by_id and by_id[node.parent_id].level == node.level + 1
        if node.level > 0:
            children = [c for c in nodes if c.parent_id == node.id]
            assert children, f"empty parent {node.name}"
            assert node.member_ids == sorted(m for c in children for m in c.member_ids)
            assert node.size == len(node.member_ids) == sum(c.size for c in children)
            assert node.id == Node.make_id(node.level, node.member_ids)
    for level in range(top_level + 1):
        row = [n for n in nodes if n.level == level]
        assert sum(n.size for n in row) == total
        assert len({n.name.casefold() for n in row}) == len(row), f"repeated names at level {level}"
    assert 1 <= sum(n.level == top_level for n in nodes) <= max_top


def prompt_of(body: dict) -> str:
    return body["messages"][1]["content"]


def blocks(prompt: str) -> list[str]:
    return re.findall(r"<data>\n(.*?)\n</data>", prompt, flags=re.S)


def themes_in(text: str) -> list[str]:
    return [t for t in THEMES if t in text.lower()]


def main_theme(text: str) -> str:
    return max(THEMES, key=lambda t: text.lower().count(t))


class Responder:
    """A well-behaved model: leaves go to theme parents, theme parents to super categories."""

    def __init__(self, **overrides):
        self.overrides = overrides
        self.kinds = Counter()

    def __call__(self, body: dict):
        prompt = prompt_of(body)
        kind = ("propose" if "Propose" in prompt.split("\n")[0] else "assign" if prompt.startswith("Assign")
                else "rename" if prompt.startswith("The categories below") else "dedupe")  # fmt: skip
        self.kinds[kind] += 1
        if kind in self.overrides:
            answer = self.overrides[kind](prompt)
            if answer is not None:
                return answer
        return getattr(self, kind)(prompt)

    def propose(self, prompt):
        lines = blocks(prompt)[0].splitlines()
        present = sorted({t for line in lines for t in themes_in(line)}, key=THEMES.index)
        if len(lines) > len(present):
            return {
                "parents": [{"name": f"{t.capitalize()} problems", "description": f"All {t} reports."} for t in present]
            }
        supers = list(dict.fromkeys(SUPERS[t] for t in present))
        return {"parents": [{"name": s, "description": f"{s} topics."} for s in supers]}

    def assign(self, prompt):
        parent_block, child_block = blocks(prompt)[:2]
        parents = [line[2:].split(":")[0] for line in parent_block.splitlines()]
        answers = []
        for line in child_block.splitlines():
            number, text = line.split(". ", 1)
            theme = main_theme(text)
            fits = [p for p in parents if theme in p.lower() or p == SUPERS[theme]] or parents
            answers.append({"child": int(number), "parent": fits[0]})
        return {"assignments": answers}

    def rename(self, prompt):
        text = blocks(prompt)[0]
        theme = main_theme(text)
        if "related issues" in text:
            return {"name": f"{SUPERS[theme]} group", "description": "Grouped."}
        return {"name": f"{theme.capitalize()} related issues", "description": f"Everything about the {theme}."}

    def dedupe(self, prompt):
        return {"same": False}


async def build(leaves, responder, settings=None, embedder=None, seed=0):
    events = Counter()
    server = FakeServer(responder=responder)
    settings = settings or HierarchySettings(max_top=4, branching=3)
    nodes = await build_hierarchy(
        leaves,
        llm=fake_llm(server, max_retries=0),
        embedder=embedder or FakeEmbedder(),
        settings=settings,
        events=events,
        seed=seed,
    )
    return nodes, events, server


async def test_tree_invariants_and_faithful_assignments():
    """36 leaves → 6 theme parents → 3 super categories; each parent holds only its own theme."""
    leaves = make_leaves()
    nodes, events, _ = await build(leaves, Responder(), HierarchySettings(max_top=3, branching=3))
    assert_valid_tree(nodes, leaves, max_top=3)
    level1 = [n for n in nodes if n.level == 1]
    level2 = [n for n in nodes if n.level == 2]
    assert len(level1) == 6 and len(level2) == 3 and max(n.level for n in nodes) == 2
    for parent in level1:
        assert len({m.split("-")[0] for m in parent.member_ids}) == 1
        assert parent.name == f"{parent.member_ids[0].split('-')[0].capitalize()} related issues"
    assert sorted(n.name for n in level2) == ["Account access group", "Device hardware group", "Orders and money group"]
    assert events["hierarchy_levels"] == 2
    assert not {k for k in events if "fallback" in k or "invalid" in k or "clash" in k}


async def test_ids_and_names_are_deterministic():
    leaves = make_leaves()
    first, _, _ = await build(leaves, Responder())
    second, _, _ = await build(leaves, Responder())
    assert [(n.id, n.parent_id, n.name) for n in first] == [(n.id, n.parent_id, n.name) for n in second]


async def test_three_or_more_leaves_get_one_parent_level():
    """Three to max_top leaves: one level of 2..max_top parents; one or two leaves: nothing to build, no calls."""
    for leaves in (
        make_leaves(["battery", "screen"], per_theme=2),
        make_leaves(["battery", "screen", "login"], per_theme=1),
    ):
        nodes, _events, _ = await build(leaves, Responder(), HierarchySettings())
        assert_valid_tree(nodes, leaves, max_top=8)
        assert 2 <= sum(n.level == 1 for n in nodes) <= 8 and max(n.level for n in nodes) == 1
    for few in (make_leaves(["battery"], per_theme=1), make_leaves(["battery", "screen"], per_theme=1)):
        nodes, _, server = await build(few, Responder(), HierarchySettings())
        assert nodes == few and not server.history


async def test_unknown_parent_is_reasked_then_falls_back_by_embedding(caplog):
    """An unknown name is re-asked listing the valid names; a second miss goes to the most similar parent, logged."""

    def assign(prompt):
        child = blocks(prompt)[1]
        if "Your previous answer" in prompt:  # fuzzy-matched for one screen leaf, unknown again for the other
            return {"assignments": [{"child": 1, "parent": "Screen problem" if "fails" in child else "Still unknown"}]}
        if "Battery" in child:
            return {"assignments": [{"child": 1, "parent": "Battery problems"}]}
        return {"assignments": [{"child": 1, "parent": "Totally unknown"}] if "fails" in child else []}

    leaves = make_leaves(["battery", "screen"], per_theme=2)
    responder = Responder(assign=assign)
    with caplog.at_level(logging.INFO, logger="clado.agents.hierarchy"):
        nodes, events, server = await build(leaves, responder, HierarchySettings(max_dedupe_checks=0))
    assert_valid_tree(nodes, leaves, max_top=8)
    assert events["hierarchy_assign_reask"] == 2 and events["hierarchy_assign_fallback"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "clado.agents.hierarchy"] == [
        "level 1: no valid parent for 'Screen breaks often' after a re-ask; assigned to the most similar, 'Screen problems'"
    ]
    retries = [p for p in server.user_prompts() if "Your previous answer" in p]
    assert any('"Totally unknown" is not one of the parent categories' in p for p in retries)
    assert any("did not assign this category" in p for p in retries)
    assert all("exactly one of these names:\n- " in p and "- Battery problems" in p for p in retries)
    for parent in (n for n in nodes if n.level == 1):
        assert len({m.split("-")[0] for m in parent.member_ids}) == 1  # the fallback chose the battery parent


@pytest.mark.parametrize("proposal", [{"parents": []}, "not json", {"parents": [{"name": " ", "description": ""}]}])
async def test_unusable_proposals_fall_back_to_baseline_grouping(proposal):
    """No usable proposal: the neighbourhood is grouped by Ward on embeddings, then renamed by the LLM."""
    leaves = make_leaves(["battery", "screen"], per_theme=3)
    responder = Responder(propose=lambda prompt: proposal)
    nodes, events, _ = await build(leaves, responder, HierarchySettings())
    assert_valid_tree(nodes, leaves, max_top=8)
    assert events["hierarchy_baseline_grouping"] == 1 and events["hierarchy_proposals_empty"] == 1
    assert responder.kinds["assign"] == 0
    parents = [n for n in nodes if n.level == 1]
    assert sorted(n.name for n in parents) == ["Battery related issues", "Screen related issues"]
    if proposal == "not json":
        assert events["hierarchy_propose_invalid_output"] == 1


async def test_failed_renames_keep_the_proposed_names():
    leaves = make_leaves(["battery", "screen"], per_theme=3)
    nodes, events, _ = await build(leaves, Responder(rename=lambda prompt: "{broken"), HierarchySettings())
    assert sorted(n.name for n in nodes if n.level == 1) == ["Battery problems", "Screen problems"]
    assert events["hierarchy_rename_fallback"] == 2 and events["hierarchy_rename_invalid_output"] == 2


async def test_duplicate_sibling_names_are_reasked_then_named_from_keywords():
    leaves = make_leaves(["battery", "screen", "login"], per_theme=3)
    responder = Responder(rename=lambda prompt: {"name": "Same name", "description": "d"})
    nodes, events, server = await build(leaves, responder, HierarchySettings(max_top=3))
    assert_valid_tree(nodes, leaves, max_top=8)
    names = [n.name for n in nodes if n.level == 1]
    assert names[0] == "Same name" and len(set(names)) == len(names) == 3
    assert not any("(" in n or "same name" in n.lower() for n in names[1:])
    assert events["hierarchy_clash_reask"] == 2 and events["hierarchy_clash_keyword_name"] == 2
    assert sum("already used by other parent categories" in p for p in server.user_prompts()) == 2


async def test_clash_reask_can_resolve_the_name():
    def rename(prompt):
        if "already used" in prompt:
            return {"name": f"Other {main_theme(blocks(prompt)[0])}", "description": "d"}
        return {"name": "Same name", "description": "d"}

    leaves = make_leaves(["battery", "screen"], per_theme=3)
    nodes, events, _ = await build(leaves, Responder(rename=rename), HierarchySettings())
    assert sorted(n.name for n in nodes if n.level == 1) == ["Other screen", "Same name"]
    assert events["hierarchy_clash_reask"] == 1 and "hierarchy_clash_keyword_name" not in events


async def test_near_identical_proposals_are_merged():
    """Fuzzy-equal proposal names become one parent; the duplicate never reaches the candidate list."""

    def propose(prompt):
        return {"parents": [{"name": "Battery problems", "description": "a"}, {"name": "Battery problem", "description": "b"},
                            {"name": "Screen problems", "description": "c"}]}  # fmt: skip

    leaves = make_leaves(["battery", "screen"], per_theme=3)
    _nodes, events, server = await build(leaves, Responder(propose=propose), HierarchySettings())
    assert events["hierarchy_parents_merged"] == 1
    assign = next(p for p in server.user_prompts() if p.startswith("Assign"))
    assert "- Battery problem:" not in assign and "- Battery problems:" in assign


class TableEmbedder:
    """FakeEmbedder with two spare dimensions; texts starting with a key of `table` get that vector instead."""

    model_id = "table"

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table
        self.inner = FakeEmbedder()

    def embed(self, texts):
        out = np.hstack([self.inner.embed(texts), np.zeros((len(texts), 2), dtype=np.float32)])
        for i, text in enumerate(texts):
            for key, vector in self.table.items():
                if text.startswith(key):
                    out[i] = vector
        return out


async def power_and_charging(cosine: float, dedupe):
    """16 leaves in two neighbourhoods: the battery one proposes "Power supply issues", the screen one "Charging faults"
    (embedded at `cosine` to it) and "Screen problems"; `dedupe(prompt)` answers the LLM same-or-not checks."""
    a = np.zeros(66, dtype=np.float32)
    a[64] = 1.0
    b = np.zeros(66, dtype=np.float32)
    b[64], b[65] = cosine, np.sqrt(1 - cosine**2)
    embedder = TableEmbedder({"Power supply issues:": a, "Charging faults:": b})

    def propose(prompt):
        if "battery" in blocks(prompt)[0].lower():
            return {"parents": [{"name": "Power supply issues", "description": "x"}]}
        return {
            "parents": [
                {"name": "Charging faults", "description": "y"},
                {"name": "Screen problems", "description": "z"},
            ]
        }

    def assign(prompt):
        parents = [line[2:].split(":")[0] for line in blocks(prompt)[0].splitlines()]
        children = blocks(prompt)[1].splitlines()
        pick = {"battery": "Power supply issues", "screen": "Screen problems"}
        return {"assignments": [{"child": k, "parent": pick[main_theme(line)]} for k, line in enumerate(children, 1)
                                if pick[main_theme(line)] in parents]}  # fmt: skip

    leaves = make_leaves(["battery", "screen"], per_theme=8)
    responder = Responder(propose=propose, assign=assign, dedupe=dedupe)
    settings = HierarchySettings(neighbourhood_size=10, dedupe_margin=0.05, level_targets=[2])
    nodes, events, server = await build(leaves, responder, settings, embedder)
    assert_valid_tree(nodes, leaves, max_top=8)
    return nodes, events, server


def dedupe_prompts(server: FakeServer) -> list[str]:
    return [p for p in server.user_prompts() if p.startswith("Do these two")]


@pytest.mark.parametrize("same", [True, False])
async def test_borderline_pairs_across_neighbourhoods_are_checked_by_the_llm(same):
    """Cosine just below the threshold: the LLM decides; a parent left without children is dropped."""
    nodes, events, server = await power_and_charging(0.87, lambda prompt: {"same": same})
    dedupe = dedupe_prompts(server)
    assert len(dedupe) == 1 and "Power supply issues" in dedupe[0] and "Charging faults" in dedupe[0]
    assert events["hierarchy_dedupe_checks"] == 1
    assert events["hierarchy_parents_merged"] == int(same)
    assert events["hierarchy_empty_parents_dropped"] == int(not same)
    assert sum(n.level == 1 for n in nodes) == 2


async def test_proposals_above_the_threshold_are_merged_without_asking_the_llm():
    """Cosine 0.95 >= 0.9: merged by the embeddings alone (an LLM asked would have said "not the same"); the
    merged proposal is never offered to a child."""
    _, events, server = await power_and_charging(0.95, lambda prompt: {"same": False})
    assert events["hierarchy_parents_merged"] == 1
    assert "hierarchy_dedupe_checks" not in events and not dedupe_prompts(server)
    assigns = [p for p in server.user_prompts() if p.startswith("Assign")]
    assert assigns and not any("Charging faults" in p for p in assigns)


async def test_an_invalid_dedupe_answer_is_counted_and_keeps_the_pair_apart():
    """A dedupe check answered with garbage (re-asked, garbage again) counts as "not the same": the same tree as
    an explicit no."""
    nodes, events, server = await power_and_charging(0.87, lambda prompt: "not json")
    assert len(dedupe_prompts(server)) == 2, "the check and its re-ask"
    assert events["hierarchy_dedupe_checks"] == 1 and events["hierarchy_dedupe_invalid_output"] == 1
    assert "hierarchy_parents_merged" not in events
    apart, _, _ = await power_and_charging(0.87, lambda prompt: {"same": False})
    assert [(n.id, n.parent_id, n.name) for n in nodes] == [(n.id, n.parent_id, n.name) for n in apart]


async def test_proposals_above_one_and_a_half_times_the_share_are_trimmed():
    """Six leaves, two parents wanted: a neighbourhood may propose at most 3; the two extra proposals are dropped
    before any child sees them."""
    extra = ["Warranty claims", "Colour choices"]

    def propose(prompt):
        names = ["Battery problems", "Screen problems", "Charging and power", *extra]
        return {"parents": [{"name": n, "description": f"About {n.lower()}."} for n in names]}

    leaves = make_leaves(["battery", "screen"], per_theme=3)
    nodes, events, server = await build(leaves, Responder(propose=propose), HierarchySettings())
    assert_valid_tree(nodes, leaves, max_top=8)
    [ask] = [p for p in server.user_prompts() if "Propose" in p.split("\n")[0]]
    assert "(between 1 and 3)" in ask
    assert events["hierarchy_proposals_trimmed"] == 2
    assigns = [p for p in server.user_prompts() if p.startswith("Assign")]
    assert len(assigns) == len(leaves) and not any(name in p for p in assigns for name in extra)


def shown_parents(server: FakeServer) -> dict[str, list[str]]:
    """Per child ("name: description"), the parents ("name: description") its assignment prompt listed, in order."""
    prompts = [p for p in server.user_prompts() if p.startswith("Assign")]
    return {blocks(p)[1][3:]: [line[2:] for line in blocks(p)[0].splitlines()] for p in prompts}


async def test_the_shortlist_is_shown_in_a_seeded_shuffle():
    """The four proposals nearest a child are listed in a seeded order: not the similarity order for some child,
    the same order for the same seed, another order for another seed."""
    leaves = make_leaves()
    runs = []
    for seed in (0, 0, 1):
        settings = HierarchySettings(max_top=6, level_targets=[6], assign_shortlist=4)
        _, _, server = await build(leaves, Responder(), settings, seed=seed)
        runs.append(shown_parents(server))
    first, again, other = runs
    assert len(first) == len(leaves) and all(len(parents) == 4 for parents in first.values())
    assert first == again and first != other
    assert {c: sorted(p) for c, p in first.items()} == {c: sorted(p) for c, p in other.items()}, "same shortlists"
    embedder = FakeEmbedder()

    def unsorted(child: str, parents: list[str]) -> bool:
        vectors = embedder.embed([child, *parents])
        similarity = vectors[1:] @ vectors[0]
        return any(later > earlier + 1e-6 for earlier, later in itertools.pairwise(similarity))

    assert any(unsorted(child, parents) for child, parents in first.items())


async def test_last_level_merges_the_smallest_parents_to_fit_max_top():
    leaves = make_leaves()
    nodes, events, _ = await build(leaves, Responder(), HierarchySettings(max_top=4, max_levels=1))
    assert_valid_tree(nodes, leaves, max_top=4)
    assert sum(n.level == 1 for n in nodes) == 4 and events["hierarchy_top_merged"] == 2


async def test_the_last_planned_level_fits_max_top_instead_of_adding_a_level():
    """36 leaves with branching 10 plan one level of 4; the model proposes 6 parents: they are merged to 4 on
    that level rather than a near-copy level of 6 → 4 being stacked on top."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=4, branching=10)
    assert level_targets(len(leaves), settings) == [4]
    nodes, events, _ = await build(leaves, Responder(), settings)
    assert_valid_tree(nodes, leaves, max_top=4)
    assert max(n.level for n in nodes) == 1 and events["hierarchy_levels"] == 1
    assert sum(n.level == 1 for n in nodes) == 4 and events["hierarchy_top_merged"] == 2


@pytest.mark.parametrize("shortlist", [2, 4])
async def test_each_child_chooses_from_a_shortlist_of_the_nearest_parents(shortlist):
    """One call per child; it lists `assign_shortlist` of the six theme parents, its own theme's among them."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=3, branching=3, assign_shortlist=shortlist)
    nodes, events, server = await build(leaves, Responder(), settings)
    first_level = [p for p in server.user_prompts() if p.startswith("Assign") and "related issues" not in p]
    assert sorted(blocks(p)[1] for p in first_level) == sorted(f"1. {leaf.name}: {leaf.description}" for leaf in leaves)
    for prompt in first_level:
        parents = blocks(prompt)[0].splitlines()
        assert len(parents) == shortlist
        assert any(main_theme(blocks(prompt)[1]) in line.lower() for line in parents)
    assert_valid_tree(nodes, leaves, max_top=3)
    assert "hierarchy_assign_fallback" not in events


async def test_the_last_level_is_split_up_to_its_target():
    """36 leaves plan 12 → 4 parents; the model finds only 3 super categories, so Ward splits the largest."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=4, branching=3)
    assert level_targets(len(leaves), settings) == [12, 4]
    nodes, events, _ = await build(leaves, Responder(), settings)
    assert_valid_tree(nodes, leaves, max_top=4)
    top = [n for n in nodes if n.level == 2]
    assert len(top) == 4 and events["hierarchy_groups_split"] == 1
    for node in top:  # a split never mixes super categories
        assert len({SUPERS[m.split("-")[0]] for m in node.member_ids}) == 1


def test_level_targets_fall_geometrically_to_max_top():
    settings = HierarchySettings()
    assert level_targets(1, settings) == []
    assert level_targets(2, settings) == []
    assert level_targets(3, settings) == [2]
    assert level_targets(8, settings) == [3]
    assert level_targets(12, settings) == [8]
    assert level_targets(100, settings) == [28, 8]
    assert level_targets(1000, settings) == [200, 40, 8]
    assert len(level_targets(10**6, settings)) == settings.max_levels
    assert level_targets(100, HierarchySettings(level_targets=[30, 6])) == [30, 6]
    assert level_targets(20, HierarchySettings(level_targets=[30, 6])) == [6]


@pytest.mark.parametrize("targets", [[5, 10], [20, 9], [0], [40, 30, 20, 10, 5]])
def test_bad_level_targets_are_rejected(targets):
    with pytest.raises(ValidationError, match="level_targets"):
        HierarchySettings(level_targets=targets)


def test_neighbourhoods_cover_rows_once_and_respect_the_cap():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(130, 8))
    hoods = neighbourhoods(vectors, size=25, seed=0)
    assert sorted(i for h in hoods for i in h) == list(range(130))
    assert all(len(h) <= 40 for h in hoods) and len(hoods) >= 5
    assert hoods == neighbourhoods(vectors, size=25, seed=0)
    capped = neighbourhoods(vectors, size=15, seed=0, cap=15)
    assert sorted(i for h in capped for i in h) == list(range(130)) and max(len(h) for h in capped) <= 15


def test_auto_neighbourhoods_are_25_in_the_default_context_and_shrink_in_a_small_one(caplog):
    """The default n_ctx keeps the measured 25 (cap 40), even for lines at the prompts' cut lengths; 2048 tokens
    fit fewer typical children (and no neighbourhood is larger); below 10 the floor holds, with a warning."""
    leaves = make_leaves(per_theme=8, description=TYPICAL)
    settings = HierarchySettings()
    [target] = level_targets(len(leaves), settings)
    default_ctx = LLMSettings().n_ctx
    assert neighbourhood_limits(leaves, target, settings=settings, n_ctx=default_ctx) == (25, 40)
    longest = [leaf.model_copy(update={"name": "n" * 300, "description": "d" * 500}) for leaf in leaves * 3]
    [longest_target, _] = level_targets(len(longest), settings)
    assert neighbourhood_limits(longest, longest_target, settings=settings, n_ctx=default_ctx) == (25, 40)
    size, cap = neighbourhood_limits(leaves, target, settings=settings, n_ctx=2048)
    assert 10 <= size == cap < 25
    with caplog.at_level(logging.WARNING, logger="clado.agents.hierarchy"):
        assert neighbourhood_limits(leaves, target, settings=settings, n_ctx=1024) == (10, 10)
    assert "neighbourhoods of 10 will overflow it" in caplog.text


def test_an_int_neighbourhood_size_is_used_as_is():
    leaves = make_leaves(per_theme=8, description=TYPICAL)
    for n_ctx in (1024, 4096):
        assert neighbourhood_limits(leaves, 8, settings=HierarchySettings(neighbourhood_size=12), n_ctx=n_ctx) == (
            12,
            40,
        )


@pytest.mark.parametrize("size", [9, 41, "big", 2.5])
def test_bad_neighbourhood_sizes_are_rejected(size):
    with pytest.raises(ValidationError, match="neighbourhood_size"):
        HierarchySettings(neighbourhood_size=size)


def proposal_prompts(server: FakeServer) -> list[dict]:
    return [b for b in server.history if "Propose" in prompt_of(b).split("\n")[0]]


async def test_a_small_context_gives_smaller_neighbourhoods_and_every_proposal_fits_it():
    """48 typical leaves at n_ctx 2048: every proposal call (system turn and prompt at 3 characters a token, plus its
    reply budget) fits, and lists no more children than the context allows; at the default context some lists more."""
    leaves = make_leaves(per_theme=8, description=TYPICAL)
    settings = HierarchySettings(max_top=4)
    size, _ = neighbourhood_limits(leaves, level_targets(len(leaves), settings)[0], settings=settings, n_ctx=2048)
    listed = {}
    for n_ctx in (2048, LLMSettings().n_ctx):
        server = FakeServer(responder=Responder())
        nodes = await build_hierarchy(leaves, llm=fake_llm(server, max_retries=0, n_ctx=n_ctx), embedder=FakeEmbedder(),
                                      settings=settings, events=Counter())  # fmt: skip
        assert_valid_tree(nodes, leaves, max_top=4)
        asks = proposal_prompts(server)
        listed[n_ctx] = [len(blocks(prompt_of(b))[0].splitlines()) for b in asks]
        if n_ctx == 2048:
            assert all(sum(len(m["content"]) for m in b["messages"]) / 3 + b["max_tokens"] <= n_ctx for b in asks)
    assert max(listed[2048]) <= size < max(listed[LLMSettings().n_ctx])


async def test_a_single_parent_is_split_in_two():
    """A level that would put every child under one parent is split by Ward into two parents."""
    propose = lambda prompt: {"parents": [{"name": "Everything", "description": "All reports."}]}  # noqa: E731
    leaves = make_leaves(["battery", "screen"], per_theme=3)
    nodes, events, _ = await build(leaves, Responder(propose=propose), HierarchySettings())
    assert_valid_tree(nodes, leaves, max_top=8)
    assert events["hierarchy_groups_split"] == 1
    parents = [n for n in nodes if n.level == 1]
    assert sorted(n.name for n in parents) == ["Battery related issues", "Screen related issues"]


async def test_a_single_parent_below_the_last_level_is_split_in_two():
    """Level 1 of a planned 12 → 4: one proposal for all 36 leaves; the level gets two parents and the tree stops."""
    propose = lambda prompt: {"parents": [{"name": "Everything", "description": "All reports."}]}  # noqa: E731
    leaves = make_leaves()
    nodes, events, _ = await build(leaves, Responder(propose=propose), HierarchySettings(max_top=4, branching=3))
    assert_valid_tree(nodes, leaves, max_top=4)
    assert max(n.level for n in nodes) == 1 and sum(n.level == 1 for n in nodes) == 2
    assert events["hierarchy_groups_split"] == 1


async def test_proposal_prompts_name_the_neighbourhoods_share_of_the_target():
    leaves = make_leaves()
    settings = HierarchySettings(max_top=4, branching=10)
    _, _, server = await build(leaves, Responder(), settings)
    asks = [re.search(r"Propose about (\d+) \(between (\d+) and (\d+)\)", prompt_of(b)) for b in server.history]
    asks = [m for m in asks if m]
    assert asks, "every proposal prompt states its target"
    target, low, high = (sum(int(m.group(k)) for m in asks) for k in (1, 2, 3))
    assert low <= target <= high and target == 4, "the neighbourhoods' targets add up to the level's"


def catch_all_responder() -> Responder:
    """A model that proposes a vague "Support desk" and sends most children there (battery and shipping
    leaves past their first two, and every refund leaf), while the count of parents is already right."""

    def propose(prompt):
        themes = ["screen", "login", "password", "battery", "shipping"]
        parents = [{"name": f"{t.capitalize()} problems", "description": f"All {t} reports."} for t in themes]
        return {"parents": [{"name": "Support desk", "description": "Everything."}, *parents]}

    def assign(prompt):
        parent_block, child_block = blocks(prompt)[:2]
        parents = [line[2:].split(":")[0] for line in parent_block.splitlines()]
        text = child_block.split(". ", 1)[1]
        theme = main_theme(text)
        early = any(detail in text for detail in DETAILS[:2])
        vague = theme == "refund" or (theme in ("battery", "shipping") and not early)
        wanted = "Support desk" if vague else f"{theme.capitalize()} problems"
        return {"assignments": [{"child": 1, "parent": wanted if wanted in parents else parents[0]}]}

    return Responder(propose=propose, assign=assign)


@pytest.mark.parametrize("balance", [0.0, 2.0])
async def test_a_catch_all_parent_is_split_and_the_count_kept(balance):
    """36 leaves, 6 parents wanted: "Support desk" gets 14 children (mean 6). With balance 2 it is split by Ward
    and the smallest parent joins its nearest, so no parent keeps more than twice the mean; 0 leaves it."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=6, level_targets=[6], assign_shortlist=6, balance=balance)
    nodes, events, _ = await build(leaves, catch_all_responder(), settings)
    assert_valid_tree(nodes, leaves, max_top=6)
    top = [n for n in nodes if n.level == 1]
    children = [sum(c.parent_id == p.id for c in nodes) for p in top]
    assert len(top) == 6
    if balance:
        assert events["hierarchy_groups_rebalanced"] >= 1
        assert max(children) <= 2.0 * len(leaves) / 6
        for node in top:  # the split follows the embeddings: no parent mixes refund with battery leaves
            assert not {"refund", "battery"} <= {m.split("-")[0] for m in node.member_ids}
    else:
        assert events["hierarchy_groups_rebalanced"] == 0 and max(children) == 14


def theme_centroids(leaves: list[Node], *, informative: bool = True) -> np.ndarray:
    """Per theme its super category's direction plus a smaller own one (tiny seeded jitter per leaf), or the same
    vector for every leaf."""
    if not informative:
        return np.ones((len(leaves), 3))
    supers = list(dict.fromkeys(SUPERS.values()))
    rng = np.random.default_rng(0)
    rows = []
    for leaf in leaves:
        theme = leaf.member_ids[0].split("-")[0]
        rows.append(
            np.r_[np.eye(len(supers))[supers.index(SUPERS[theme])], 0.5 * np.eye(len(THEMES))[THEMES.index(theme)]]
        )
    return np.stack(rows) + 0.01 * rng.standard_normal((len(leaves), len(supers) + len(THEMES)))


def stray_responder() -> Responder:
    """A weak model that files two battery leaves under "Refund problems" and the screen parent under accounts."""

    def assign(prompt):
        child = blocks(prompt)[1]
        if "Battery fails early" in child or "Battery breaks often" in child:
            return {"assignments": [{"child": 1, "parent": "Refund problems"}]}
        if "Screen related issues" in child:
            return {"assignments": [{"child": 1, "parent": "Account access"}]}
        return None

    return Responder(assign=assign)


def mixed_parents(nodes: list[Node]) -> list[set[str]]:
    return [themes for n in nodes if n.level == 1 and len(themes := {m.split("-")[0] for m in n.member_ids}) > 1]


@pytest.mark.parametrize("weight", [0.0, 0.4])
async def test_the_consensus_with_item_centroids_moves_stray_children(weight):
    """Two battery leaves sent to the refund parent follow their items' geometry back to the battery parent; at
    weight 0 (or without centroids) the LLM's grouping stands."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=6, level_targets=[6], assign_shortlist=6, balance=0, geometry_weight=weight)
    server = FakeServer(responder=stray_responder())
    events = Counter()
    nodes = await build_hierarchy(
        leaves, llm=fake_llm(server, max_retries=0), embedder=FakeEmbedder(), settings=settings, events=events,
        centroids=theme_centroids(leaves),
    )  # fmt: skip
    assert_valid_tree(nodes, leaves, max_top=6)
    assert sum(n.level == 1 for n in nodes) == 6
    if weight:
        assert mixed_parents(nodes) == [] and events["hierarchy_consensus_moved"] == 2
    else:
        assert mixed_parents(nodes) == [{"battery", "refund"}] and events["hierarchy_consensus_moved"] == 0
    plain, _, _ = await build(leaves, stray_responder(), settings)
    assert mixed_parents(plain) == [{"battery", "refund"}]


async def test_parent_centroids_carry_the_consensus_to_the_next_level():
    """On the second level the screen parent, sent to "Account access" by the model, rejoins the battery parent:
    the parents' centroids (size-weighted means of their children's) still point at device hardware."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=3, level_targets=[6, 3], assign_shortlist=3, balance=0, geometry_weight=0.4)
    tops = {}
    for centroids in (None, theme_centroids(leaves)):
        events = Counter()
        nodes = await build_hierarchy(
            leaves, llm=fake_llm(FakeServer(responder=stray_responder()), max_retries=0), embedder=FakeEmbedder(),
            settings=settings, events=events, centroids=centroids,
        )  # fmt: skip
        assert_valid_tree(nodes, leaves, max_top=3)
        tops[centroids is None] = sorted(sorted({m.split("-")[0] for m in n.member_ids}) for n in nodes if n.level == 2)
    assert ["login", "password", "screen"] in tops[True]
    assert tops[False] == [["battery", "screen"], ["login", "password"], ["refund", "shipping"]]


async def test_where_the_geometry_is_unclear_the_llm_grouping_decides():
    """Identical centroids carry no signal: on both levels the consensus keeps the LLM's groups exactly, strays
    included (the stray battery leaves ride with refunds, the screen parent with accounts)."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=3, level_targets=[6, 3], assign_shortlist=6, balance=0, geometry_weight=0.4)
    server = FakeServer(responder=stray_responder())
    events = Counter()
    nodes = await build_hierarchy(
        leaves, llm=fake_llm(server, max_retries=0), embedder=FakeEmbedder(), settings=settings, events=events,
        centroids=theme_centroids(leaves, informative=False),
    )  # fmt: skip
    assert_valid_tree(nodes, leaves, max_top=3)
    assert mixed_parents(nodes) == [{"battery", "refund"}] and events["hierarchy_consensus_moved"] == 0
    tops = sorted(sorted({m.split("-")[0] for m in n.member_ids}) for n in nodes if n.level == 2)
    assert tops == [["battery"], ["battery", "refund", "shipping"], ["login", "password", "screen"]]
    with pytest.raises(ValueError, match="36 leaves but 2 centroid rows"):
        await build_hierarchy(
            leaves, llm=fake_llm(server), embedder=FakeEmbedder(), settings=settings, events=events,
            centroids=np.ones((2, 3)),
        )  # fmt: skip


def blob_centroids(leaves: list[Node]) -> np.ndarray:
    """Device and order leaves share one direction; every account leaf points its own way. Ward re-cutting 6 groups
    then spends them on the scattered account leaves and puts all 24 device and order leaves in one group."""
    rows = []
    for i, leaf in enumerate(leaves):
        theme = leaf.member_ids[0].split("-")[0]
        rows.append(np.eye(len(leaves) + 1)[0 if SUPERS[theme] != "Account access" else i + 1])
    return np.stack(rows) + 0.01 * np.random.default_rng(0).standard_normal((len(leaves), len(leaves) + 1))


@pytest.mark.parametrize("balance", [0.0, 1.5])
async def test_a_catch_all_made_by_the_consensus_is_split_too(balance):
    """The model groups by theme (6 parents of 6); the consensus merges the 24 device and order leaves into one
    parent. With balance 1.5 that parent is split again, so no parent ends with more than 1.5x the mean."""
    leaves = make_leaves()
    settings = HierarchySettings(max_top=6, level_targets=[6], assign_shortlist=6, balance=balance, geometry_weight=0.4)
    events = Counter()
    nodes = await build_hierarchy(
        leaves, llm=fake_llm(FakeServer(responder=Responder()), max_retries=0), embedder=FakeEmbedder(),
        settings=settings, events=events, centroids=blob_centroids(leaves),
    )  # fmt: skip
    assert_valid_tree(nodes, leaves, max_top=6)
    top = [n for n in nodes if n.level == 1]
    children = [sum(c.parent_id == p.id for c in nodes) for p in top]
    assert len(top) == 6 and events["hierarchy_consensus_moved"] > 0
    if balance:
        assert events["hierarchy_groups_rebalanced"] >= 1 and max(children) <= 1.5 * len(leaves) / 6
    else:
        assert max(children) == 24


@pytest.mark.parametrize("balance", [0.0, 1.5])
async def test_a_parent_with_too_many_records_is_split_even_with_few_children(balance):
    """Every theme parent gets its 6 leaves (the mean), but the battery leaves hold 60 records each: 360 of 465.
    With balance 1.5 that parent is split by records; its leaves end under several parents."""
    leaves = []
    for leaf in make_leaves():
        if leaf.member_ids[0].startswith("battery"):
            members = [f"{leaf.member_ids[0]}-{m}" for m in range(60)]
            leaf = leaf.model_copy(update={"member_ids": members, "size": 60, "id": Node.make_id(0, members)})
        leaves.append(leaf)
    settings = HierarchySettings(max_top=6, level_targets=[6], assign_shortlist=6, balance=balance)
    nodes, events, _ = await build(leaves, Responder(), settings)
    assert_valid_tree(nodes, leaves, max_top=6)
    battery_parents = {c.parent_id for c in nodes if c.level == 0 and c.member_ids[0].startswith("battery")}
    if balance:
        assert events["hierarchy_groups_rebalanced"] >= 1 and len(battery_parents) >= 2
    else:
        assert events["hierarchy_groups_rebalanced"] == 0 and len(battery_parents) == 1
