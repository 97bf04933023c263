"""Golden texts of the naming and hierarchy prompts: each template rendered with fixed variables, compared in full."""

import pytest
from jinja2 import UndefinedError

from clado.prompts import render

CHILDREN = [
    {"number": 1, "name": "Battery drains fast", "description": "Batteries that empty within hours."},
    {"number": 2, "name": "Screen cracks", "description": "Screens that crack in normal use."},
]
PARENTS = [
    {"name": "Device hardware", "description": "Physical parts of the device."},
    {"name": "Orders", "description": "Buying and delivery."},
]


def test_name_cluster_with_contrast_and_taken_names():
    text = render(
        "name_cluster",
        examples=["battery dies fast", "battery will not charge"],
        contrast=["screen cracked"],
        max_words=10,
        taken_names=["Battery problems"],
    )
    assert text == """Below are texts from one group of a larger collection. Give the group a name and a description.

Texts from the group:
<data>
- battery dies fast
- battery will not charge
</data>

Texts from nearby groups, which do NOT belong to this group:
<data>
- screen cracked
</data>

These names are already used by other groups, so choose a different name:
<data>
- Battery problems
</data>

Write:
- "name": at most 10 words saying what the texts of the group have in common, specific rather than generic (never just "Problems", "Questions" or "Other").
- "description": two sentences saying what the group's texts are about and what sets them apart from the nearby groups.
Do not include names of people, order numbers or other personal details.

Answer with JSON: {"name": "...", "description": "..."}"""


def test_name_cluster_without_contrast():
    text = render("name_cluster", examples=["battery dies fast"], contrast=[], max_words=6, taken_names=[])
    assert text == """Below are texts from one group of a larger collection. Give the group a name and a description.

Texts from the group:
<data>
- battery dies fast
</data>

Write:
- "name": at most 6 words saying what the texts of the group have in common, specific rather than generic (never just "Problems", "Questions" or "Other").
- "description": two sentences saying what the group's texts are about.
Do not include names of people, order numbers or other personal details.

Answer with JSON: {"name": "...", "description": "..."}"""


def test_propose_parents_with_a_range():
    text = render("propose_parents", children=CHILDREN, min_count=1, max_count=3, target_count=2, max_words=8)
    assert text == """Below are 2 categories from a taxonomy. Propose broader parent categories that group them.

Categories:
<data>
- Battery drains fast: Batteries that empty within hours.
- Screen cracks: Screens that crack in normal use.
</data>

Propose about 2 (between 1 and 3) parent categories. Together the parents must cover every category above, and they should not overlap.
For each parent write:
- "name": at most 8 words, broader than the categories it covers but still specific (never just "Issues" or "Other").
- "description": one short sentence saying which kinds of categories belong in it.

Answer with JSON: {"parents": [{"name": "...", "description": "..."}]}"""


def test_propose_parents_exact_counts():
    one = render("propose_parents", children=CHILDREN[:1], min_count=1, max_count=1, target_count=1, max_words=8)
    assert one.splitlines()[0] == "Below is 1 category from a taxonomy. Propose broader parent categories that group them."
    assert one.splitlines()[7] == "Propose exactly 1 parent category that covers every category above."
    two = render("propose_parents", children=CHILDREN, min_count=2, max_count=2, target_count=2, max_words=8)
    assert two.splitlines()[8] == (
        "Propose exactly 2 parent categories. Together the parents must cover every category above, and they should not overlap."
    )


def test_dedupe_parents():
    text = render("dedupe_parents", first=PARENTS[0], second=PARENTS[1])
    assert text == """Do these two categories mean the same thing, so that they should be merged into one?

First category:
<data>
Device hardware: Physical parts of the device.
</data>

Second category:
<data>
Orders: Buying and delivery.
</data>

Answer true only if almost everything that belongs in one also belongs in the other.

Answer with JSON: {"same": true} or {"same": false}"""


def test_assign_parent_one_child():
    text = render("assign_parent", child=CHILDREN[0], parents=PARENTS, retry=False, rejected="")
    assert text == """Assign the category below to the one parent category that fits it best.

Parent categories:
<data>
- Device hardware: Physical parts of the device.
- Orders: Buying and delivery.
</data>

Category to assign:
<data>
1. Battery drains fast: Batteries that empty within hours.
</data>

Use the parent names exactly as written above (the part before the colon). Answer with JSON: {"assignments": [{"child": 1, "parent": "..."}]}."""


def test_assign_parent_retry_after_an_unknown_name():
    text = render("assign_parent", child=CHILDREN[0], parents=PARENTS, retry=True, rejected="Hardware stuff")
    assert text == """Assign the category below to the one parent category that fits it best.

Parent categories:
<data>
- Device hardware: Physical parts of the device.
- Orders: Buying and delivery.
</data>

Category to assign:
<data>
1. Battery drains fast: Batteries that empty within hours.
</data>

Your previous answer "Hardware stuff" is not one of the parent categories. The parent must be exactly one of these names:
- Device hardware
- Orders

Use the parent names exactly as written above (the part before the colon). Answer with JSON: {"assignments": [{"child": 1, "parent": "..."}]}."""


def test_assign_parent_retry_after_a_missing_answer():
    text = render("assign_parent", child=CHILDREN[0], parents=PARENTS, retry=True, rejected="")
    assert "\n\nYour previous answer did not assign this category. The parent must be exactly one of these names:\n" in text


def test_rename_parent_with_taken_names():
    text = render("rename_parent", children=CHILDREN, max_words=10, taken_names=["Hardware"])
    assert text == """The categories below were grouped under one parent category. Write a name and a description for the parent.

Categories in the group:
<data>
- Battery drains fast: Batteries that empty within hours.
- Screen cracks: Screens that crack in normal use.
</data>

These names are already used by other parent categories, so choose a different name:
<data>
- Hardware
</data>

Write:
- "name": at most 10 words, broad enough to cover every category in the group and specific enough to tell it apart from other parents (never just "Issues" or "Other").
- "description": one or two short sentences saying what the categories in the group have in common.

Answer with JSON: {"name": "...", "description": "..."}"""


def test_rename_parent_without_taken_names_has_no_taken_block():
    text = render("rename_parent", children=CHILDREN, max_words=10, taken_names=[])
    assert "already used" not in text and text.count("<data>") == 1


@pytest.mark.parametrize("name", ["name_cluster", "propose_parents", "dedupe_parents", "assign_parent", "rename_parent"])
def test_missing_variables_raise(name):
    with pytest.raises(UndefinedError):
        render(name)
