"""taxonomy.html in headless Chromium: tree, search, deep links, counts, hostile texts and a 50,000-item page."""

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from clado.taxonomy.export_html import write_html
from clado.taxonomy.privacy import OTHER_NAME, PrivacySettings, apply_privacy
from clado.taxonomy.records import Item, Node, Taxonomy
from tests.test_exports import IMG_ONERROR, SCRIPT_BREAKOUT, sample_taxonomy

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "browser tests need Debian's Chromium: apt-get install -y chromium (or deselect with -m 'not browser')",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Session:
    """One page with its console errors and every URL it requested."""

    def __init__(self, browser: Browser) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1440, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def open(self, path: Path, fragment: str = "") -> Page:
        self.page.goto(path.resolve().as_uri() + fragment)
        self.page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        return self.page


def tree_row(page: Page, node_id: str):
    return page.locator(f'li.tree-item[data-node-id="{node_id}"] > .row')


def test_tree_search_deep_link_and_hostile_texts(browser, tmp_path):
    """Counts shown match the data; expand, search and deep links work; hostile texts run nothing."""
    taxonomy, items = sample_taxonomy()
    config_hash = "0123456789ab" + "f" * 52
    taxonomy = taxonomy.model_copy(update={"fingerprint": {**taxonomy.fingerprint, "config": config_hash}})
    path = write_html(
        taxonomy,
        items,
        tmp_path / "taxonomy.html",
        title="Support <b>tickets</b></title><script>window.pwned=1</script>",
    )
    session = Session(browser)
    page = session.open(path)
    data = page.evaluate("JSON.parse(document.getElementById('clado-data').textContent)")
    ids = {n.name: n.id for n in taxonomy.nodes}

    assert page.locator("#page-title").inner_text() == "Support <b>tickets</b></title><script>window.pwned=1</script>"
    header = page.locator("#fingerprint").inner_text()
    assert header.endswith("config: 0123456789ab") and config_hash not in header, header
    stats = dict(zip(page.locator(".stat dt").all_inner_texts(), page.locator(".stat dd").all_inner_texts()))
    assert stats == {"ITEMS": "10", "RECORDS": "10", "LEAVES": "4", "LEVELS": "2", "UNASSIGNED": "10.0%"}
    for root in data["roots"]:
        assert tree_row(page, data["nodes"][root]["id"]).locator(".count").inner_text() == str(
            data["nodes"][root]["size"]
        )

    assert tree_row(page, ids["Refund requests"]).count() == 0  # children render lazily
    tree_row(page, ids["Billing"]).locator(".toggle").click()
    assert tree_row(page, ids["Refund requests"]).locator(".count").inner_text() == "3"
    assert tree_row(page, ids["Declined cards"]).locator(".count").inner_text() == "2"
    tree_row(page, ids["Refund requests"]).locator(".row-main").click()
    page.wait_for_function("() => location.hash.startsWith('#node=')")
    assert page.evaluate("decodeURIComponent(location.hash)") == f"#node={ids['Refund requests']}"
    assert page.locator("#detail h2").inner_text() == "Refund requests"
    assert SCRIPT_BREAKOUT in page.locator("#detail .example-text").all_inner_texts()
    assert "3 items" in page.locator("#detail .meta").inner_text()

    page.fill("#search", "pwned")
    page.wait_for_selector("#results:not([hidden]) .result")
    found = page.locator("#results .result .name").all_inner_texts()
    assert found == ["Refund requests", "Declined cards"]
    assert set(page.locator("#results mark").all_inner_texts()) == {"pwned"}
    page.fill("#search", "flight")
    page.wait_for_function("() => document.querySelector('#results .name')?.textContent === 'Flight changes'")
    page.press("#search", "Escape")
    assert page.locator("#tree").is_visible() and not page.locator("#results").is_visible()

    session = Session(browser)  # a fresh page, so the deep link is a real first load
    page = session.open(path, f"#node={ids['Declined cards']}")
    assert page.locator("#detail").get_attribute("data-node-id") == ids["Declined cards"]
    assert page.locator("#detail .crumbs").inner_text().endswith("Billing")
    assert tree_row(page, ids["Declined cards"]).is_visible()
    assert "selected" in tree_row(page, ids["Declined cards"]).get_attribute("class")
    assert IMG_ONERROR in page.locator("#detail .example-text").all_inner_texts()
    assert page.locator("#detail img, #detail script").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "taxonomy.png"), full_page=True)

    tree_row(page, "unassigned").locator(".row-main").click()
    page.wait_for_function("() => location.hash === '#unassigned'")
    assert page.locator("#detail .example-text").all_inner_texts() == ["before\u2028after"]
    painted = page.evaluate("""() => { const c = document.getElementById('map');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let k = 3; k < d.length; k += 4) if (d[k] > 0) n++; return n; }""")
    assert painted > 10
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert session.errors == []
    assert all(url.startswith(("file://", "data:")) for url in session.requests)


def test_privacy_page_hides_examples_of_other(browser, tmp_path):
    """A folded group opens with a notice instead of examples."""
    taxonomy, items = sample_taxonomy()
    settings = PrivacySettings(enabled=True, min_users=2)
    path = write_html(taxonomy, items, tmp_path / "private.html", title="Private", privacy=settings)
    session = Session(browser)
    other_id = next(n.id for n in apply_privacy(taxonomy, items, settings).roots() if n.name == OTHER_NAME)
    page = session.open(path, f"#node={other_id}")
    assert page.locator("#detail h2").inner_text() == OTHER_NAME
    assert "below the privacy threshold" in page.locator("#detail .notice").inner_text()
    assert page.locator("#detail .example").count() == 0
    assert session.errors == []


def synthetic_taxonomy(n_items: int, *, seed: int = 0) -> tuple[Taxonomy, dict[str, Item]]:
    """`n_items` items over 10 × 10 × 10 nodes in three levels, 2 % unassigned, with times, users and x/y."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    items = {
        f"i{k}": Item(
            id=f"i{k}",
            record_id=f"r{k // 2}",
            text=f"Item {k} about topic {k % 1000} and word{rng.randint(0, 9999)}",
            user_id=f"u{rng.randint(0, 5000)}",
            created_at=start + timedelta(days=rng.randint(0, 700)),
            facets={"topic": k % 1000},
            x=rng.gauss(k % 10, 0.6),
            y=rng.gauss(k % 1000 // 100, 0.6),
        )
        for k in range(n_items)
    }
    ids = list(items)
    unassigned = ids[: n_items // 50]
    leaves_members: dict[int, list[str]] = {}
    for item_id in ids[n_items // 50 :]:
        leaves_members.setdefault(int(item_id[1:]) % 1000, []).append(item_id)
    nodes: list[Node] = []

    def build(level: int, prefix: int) -> Node:
        if level == 0:
            members = leaves_members[prefix]
            return Node(
                id=Node.make_id(0, members),
                level=0,
                name=f"Leaf topic {prefix}",
                member_ids=members,
                size=len(members),
                description=f"Requests of kind {prefix}",
            )
        children = [build(level - 1, prefix * 10 + d) for d in range(10)]
        members = [m for c in children for m in c.member_ids]
        node = Node(
            id=Node.make_id(level, members),
            level=level,
            name=f"Group {level}-{prefix}",
            member_ids=members,
            size=len(members),
            description=f"Level {level} group {prefix}",
        )
        for child in children:
            child.parent_id = node.id
        nodes.extend(children)
        return node

    nodes.extend(build(2, top) for top in range(10))
    return Taxonomy(created_at=start, nodes=nodes, unassigned_ids=unassigned), items


@pytest.mark.slow
def test_fifty_thousand_items_load_and_search(browser, tmp_path):
    """A 50,000-item page loads, draws its map and answers a search within a generous 10 s each."""
    taxonomy, items = synthetic_taxonomy(50_000)
    path = write_html(taxonomy, items, tmp_path / "big.html", title="Big")
    session = Session(browser)
    began = time.monotonic()
    page = session.open(path)
    loaded = time.monotonic() - began
    assert page.locator(".stat dd").first.inner_text() == "50,000"
    began = time.monotonic()
    page.fill("#search", "word12")
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('match')", timeout=10_000
    )
    searched = time.monotonic() - began
    assert page.locator("#results .result").count() > 0
    assert loaded < 10 and searched < 10, (loaded, searched)
    assert session.errors == []


@pytest.mark.slow
def test_a_two_hundred_thousand_item_site_opens_loads_a_topic_on_demand_and_searches(browser, tmp_path):
    """A 200,000-item taxonomy written as a page plus per-topic example files: the page opens and a search over
    names answers within a generous 10 s; a deep link loads only its topic's file and shows its examples."""
    taxonomy, items = synthetic_taxonomy(200_000)
    for k, item in enumerate(items.values()):  # as in a build: the map shows a sample of map_max_items
        if k % 10:
            item.x = item.y = None
    folder = tmp_path / "taxonomy_files" / "v1"
    folder.mkdir(parents=True)
    path = write_html(taxonomy, items, tmp_path / "taxonomy.html", title="Site", chunks_in=folder)
    assert path.stat().st_size < 4_000_000
    session = Session(browser)
    began = time.monotonic()
    page = session.open(path)
    loaded = time.monotonic() - began
    assert page.locator(".stat dd").first.inner_text() == "200,000"
    assert not [url for url in session.requests if "chunk-" in url]  # nothing loaded before a topic is opened
    began = time.monotonic()
    page.fill("#search", "leaf topic 123")
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('match')", timeout=10_000
    )
    searched = time.monotonic() - began
    assert "examples searched in opened topics only" in page.locator("#search-status").inner_text()
    assert page.locator("#results .result .name").first.inner_text() == "Leaf topic 123"
    assert loaded < 10 and searched < 10, (loaded, searched)
    page.fill("#search", "")
    leaf = next(n for n in taxonomy.nodes if n.name == "Leaf topic 123")
    page.evaluate(f"location.hash = 'node=' + encodeURIComponent({leaf.id!r})")
    page.wait_for_selector("#detail .example", timeout=10_000)
    shown = page.locator("#detail .example .example-text").all_inner_texts()
    assert shown and all(
        text.startswith("Item ") and text in {items[m].text for m in leaf.member_ids} for text in shown
    )
    chunk_files = [url.rsplit("/", 1)[1] for url in session.requests if "chunk-" in url]
    assert len(chunk_files) == 1  # the leaf's top-level topic only
    assert session.errors == []
