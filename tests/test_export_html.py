"""taxonomy.html without a browser: escaping, the embedded data, the CSP and the time bins."""

import base64
import hashlib
import json
import re
from datetime import date

import pytest

from clado.taxonomy.export_html import embed_json, time_bins, write_html
from clado.taxonomy.privacy import OTHER_NAME, PrivacySettings
from tests.test_exports import IMG_ONERROR, SCRIPT_BREAKOUT, sample_taxonomy

DATA_SCRIPT = re.compile(r'<script type="application/json" id="clado-data">(.*?)</script>', re.S)
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000005f6bd2f0000000049454e44ae426082"
    )
).decode()


def page_and_data(tmp_path, **options):
    taxonomy, items = sample_taxonomy()
    page = write_html(taxonomy, items, tmp_path / "taxonomy.html", title=options.pop("title", "Tickets"), **options)
    text = page.read_text(encoding="utf-8")
    blocks = DATA_SCRIPT.findall(text)
    assert len(blocks) == 1
    return text, json.loads(blocks[0]), taxonomy


def test_embed_json_cannot_break_out_of_a_script():
    """`<`, `>`, `&`, U+2028 and U+2029 are \\u-escaped, and the value still parses back unchanged."""
    value = {"t": "</script><!-- & \u2028\u2029 <script>"}
    text = embed_json(value)
    assert not re.search("[<>&\u2028\u2029]", text)
    assert json.loads(text) == value


def test_page_is_self_contained_and_hostile_text_stays_inside_the_json(tmp_path):
    """No external resource, one inline script guarded by a CSP hash, hostile strings only in escaped form."""
    text, _, _ = page_and_data(tmp_path, title="</title><script>window.pwned=1</script>")
    assert SCRIPT_BREAKOUT not in text and IMG_ONERROR not in text and "window.pwned=1</script>" not in text
    assert "&lt;/title&gt;&lt;script&gt;" in text
    markup = DATA_SCRIPT.sub("", text)
    assert not re.search(r"<(link|iframe|object|embed|img)\b|\bsrc=|https?://(?!www\.w3\.org/2000/svg)", markup)
    assert not re.search(r"\son[a-z]+=", markup)
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    styles = re.findall(r"<style>(.*?)</style>", text, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    for source, directive in ((scripts[0], "script-src"), (styles[0], "style-src")):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp


def test_embedded_data_matches_the_taxonomy(tmp_path):
    """Sizes, tree links, totals, examples, time counts and map points agree with the input."""
    _, data, taxonomy = page_and_data(tmp_path, examples_per_node=2)
    assert data["totals"] == {"items": 10, "records": 10, "leaves": 4, "levels": 2, "unassigned": 1}
    nodes = data["nodes"]
    assert {n["id"]: n["size"] for n in nodes} == {n.id: len(n.member_ids) for n in taxonomy.nodes}
    assert sorted(nodes[r]["name"] for r in data["roots"]) == ["Billing", "Luggage", "Travel"]
    for node in nodes:
        assert all(nodes[c]["parent"] == nodes.index(node) for c in node["children"])
        assert len(node["examples"]) <= 2
        assert sum(node["time"]) == node["size"]
    refunds = next(n for n in nodes if n["name"] == "Refund requests")
    assert data["examples"][refunds["examples"][0]]["text"] == SCRIPT_BREAKOUT
    assert data["examples"][data["unassigned"]["examples"][0]]["text"] == "before\u2028after"
    assert len(data["map"]["x"]) == 10 and data["map"]["node"].count(-1) == 1
    assert data["time"]["unit"] == "week" and sum(data["time"]["all"]) == 9
    assert data["png"] is None and data["privacy"] is None


def test_privacy_hides_examples_of_folded_groups(tmp_path):
    """With privacy on, "Other" nodes and a small unassigned group carry no examples at all."""
    _, data, _ = page_and_data(tmp_path, privacy=PrivacySettings(enabled=True, min_users=2))
    others = [n for n in data["nodes"] if n["name"] == OTHER_NAME]
    assert others and all(n["hidden"] and n["examples"] == [] for n in others)
    assert data["unassigned"]["hidden"] and data["unassigned"]["examples"] == []
    texts = {e["text"] for e in data["examples"]}
    assert not texts & {"My bag never arrived", "Card declined at checkout", IMG_ONERROR, "before\u2028after"}


def test_png_fallback_is_checked(tmp_path):
    """A real PNG is embedded when given; anything else is refused."""
    _, data, _ = page_and_data(tmp_path, map_png_b64=PNG_1PX)
    assert data["png"] == PNG_1PX
    with pytest.raises(ValueError, match="PNG"):
        page_and_data(tmp_path, map_png_b64=base64.b64encode(b"<svg onload=alert(1)>").decode())
    with pytest.raises(ValueError, match="base64"):
        page_and_data(tmp_path, map_png_b64="not base64!")


@pytest.mark.parametrize(
    ("first", "last", "unit", "count"),
    [
        (date(2024, 1, 1), date(2024, 1, 20), "day", 20),
        (date(2024, 1, 1), date(2024, 6, 30), "week", 26),
        (date(2023, 1, 15), date(2024, 6, 2), "month", 18),
        (date(2015, 3, 1), date(2024, 6, 2), "quarter", 38),
        (date(1950, 1, 1), date(2024, 6, 2), "year", 75),
    ],
)
def test_time_bins_pick_the_finest_unit_that_fits(first, last, unit, count):
    """At most 40 bins with the finest unit; years are never capped."""
    chosen, starts = time_bins([last, first])
    assert (chosen, len(starts)) == (unit, count)
    assert starts[0] <= first and starts[-1] <= last and starts == sorted(starts)
