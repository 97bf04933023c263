(() => {
  "use strict";
  // Every string from the data goes in through textContent or createTextNode, never as HTML.
  const data = JSON.parse(document.getElementById("clado-data").textContent);
  const nodes = data.nodes;
  const total = data.totals.items;
  const byId = new Map(nodes.map((n, i) => [n.id, i]));
  const number = new Intl.NumberFormat("en-US");
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
    "#9c755f", "#2f6fde", "#8cd17d", "#d37295", "#b6992d", "#499894", "#86bcb6", "#f1ce63"];
  const GREY = "#a3acb9";
  const UNASSIGNED = "unassigned";
  const $ = (id) => document.getElementById(id);
  // A large taxonomy keeps its examples in one script file per top-level topic (data.site), loaded when opened.
  const site = data.site;
  const examples = site ? new Array(site.examples) : data.examples;
  const chunks = new Map();
  window.cladoChunk = (k, entries) => {
    for (const [index, example] of entries) examples[index] = example;
    haystacks = null;
  };
  function loadChunk(k) {
    if (!site || k === undefined) return Promise.resolve();
    if (!chunks.has(k)) {
      chunks.set(k, new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = `${site.folder}/chunk-${k}.js`;
        script.onload = resolve;
        script.onerror = () => { chunks.delete(k); reject(new Error(`Could not load ${script.src}.`)); };
        document.head.append(script);
      }));
    }
    return chunks.get(k);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attributes) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    return node;
  }
  const share = (count, of = total) => (of ? `${(100 * count / of).toFixed(1)}%` : "–");
  const PLURALS = { leaf: "leaves", match: "matches", child: "children" };
  const plural = (count, word) => `${number.format(count)} ${count === 1 ? word : PLURALS[word] || `${word}s`}`;

  const rootOf = nodes.map((_, i) => { let j = i; while (nodes[j].parent >= 0) j = nodes[j].parent; return j; });
  const OTHER = "#b8c0cc";
  const rootColour = new Map(data.roots.map((r, k) => [r, nodes[r].hidden ? OTHER : PALETTE[k % PALETTE.length]]));
  const colourOf = (i) => (i < 0 ? GREY : rootColour.get(rootOf[i]) || GREY);
  const leafOfExample = new Map();
  nodes.forEach((n, i) => { if (!n.children.length) n.examples.forEach((k) => leafOfExample.set(k, i)); });

  function swatch(i, big) {
    const s = el("span", big ? "swatch big" : "swatch");
    s.style.background = colourOf(i);
    return s;
  }
  function sizeCells(count, colour, of = total) {
    const bar = el("span", "bar");
    const fill = el("span");
    fill.style.width = `${of ? Math.max(2, Math.round(100 * count / of)) : 0}%`;
    fill.style.background = colour;
    bar.append(fill);
    return [el("span", "count", number.format(count)), bar, el("span", "share", share(count, of))];
  }
  function go(target) {
    const hash = `#${target}`;
    if (location.hash === hash) route(); else location.hash = hash;
  }
  const goNode = (i) => go(i === UNASSIGNED ? UNASSIGNED : `node=${encodeURIComponent(nodes[i].id)}`);

  // ---- header ----
  function renderHeader() {
    $("page-title").textContent = data.title;
    const t = data.totals;
    const stats = [["Items", number.format(t.items)], ["Records", number.format(t.records)],
      ["Leaves", number.format(t.leaves)], ["Levels", number.format(t.levels)], ["Unassigned", share(t.unassigned)]];
    for (const [label, value] of stats) {
      const stat = el("div", "stat");
      stat.append(el("dd", null, value), el("dt", null, label));
      $("stats").append(stat);
    }
    const parts = [`version ${data.version}`, `built ${data.created_at.slice(0, 16).replace("T", " ")}`];
    const digest = /^[0-9a-f]{32,}$/;  // config hashes: the first 12 hex digits are enough to tell runs apart
    for (const [key, value] of data.fingerprint) parts.push(`${key}: ${digest.test(value) ? value.slice(0, 12) : value}`);
    if (data.privacy && data.privacy.enabled) {
      parts.push(`privacy: topics with fewer than ${data.privacy.threshold} ${data.privacy.unit} are folded into "Other" and show no examples`);
    }
    $("fingerprint").textContent = parts.join(" · ");
  }

  // ---- tree (children are rendered on first expand) ----
  const tree = $("tree");
  const treeItems = new Map();
  function treeItem(i) {
    const n = nodes[i];
    const li = el("li", "tree-item");
    li.setAttribute("role", "treeitem");
    li.dataset.nodeId = n.id;
    const row = el("div", "row");
    const toggle = el("button", "toggle");
    if (n.children.length) {
      toggle.setAttribute("aria-expanded", "false");
      toggle.setAttribute("aria-label", `Expand ${n.name}`);
      toggle.addEventListener("click", () => setExpanded(i, toggle.getAttribute("aria-expanded") !== "true"));
    } else {
      toggle.disabled = true;
    }
    const main = el("button", "row-main");
    const parentSize = n.parent >= 0 ? nodes[n.parent].size : total;
    const [count, bar, shareText] = sizeCells(n.size, colourOf(i), parentSize);
    shareText.textContent = share(n.size);
    bar.title = `${share(n.size, parentSize)} of ${n.parent >= 0 ? nodes[n.parent].name : "all items"}`;
    main.append(swatch(i), el("span", "level", `L${n.level}`), el("span", "name", n.name), count, bar, shareText);
    main.title = n.name;
    main.addEventListener("click", () => goNode(i));
    row.append(toggle, main);
    li.append(row);
    treeItems.set(i, li);
    return li;
  }
  function setExpanded(i, open) {
    const li = treeItems.get(i);
    const toggle = li.querySelector(":scope > .row > .toggle");
    if (!nodes[i].children.length) return;
    let group = li.querySelector(":scope > ul");
    if (open && !group) {
      group = el("ul");
      group.setAttribute("role", "group");
      for (const child of nodes[i].children) group.append(treeItem(child));
      li.append(group);
    }
    if (group) group.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    li.setAttribute("aria-expanded", String(open));
  }
  function reveal(i) {
    const path = [];
    for (let j = nodes[i].parent; j >= 0; j = nodes[j].parent) path.unshift(j);
    for (const j of path) setExpanded(j, true);
  }
  function renderTree() {
    for (const r of data.roots) tree.append(treeItem(r));
    const li = el("li", "tree-item unassigned-row");
    li.dataset.nodeId = UNASSIGNED;
    const row = el("div", "row");
    const main = el("button", "row-main");
    main.append(swatch(-1), el("span", "name", "Unassigned"), ...sizeCells(data.unassigned.size, GREY));
    main.addEventListener("click", () => goNode(UNASSIGNED));
    const spacer = el("button", "toggle");
    spacer.disabled = true;
    row.append(spacer, main);
    li.append(row);
    tree.append(li);
    treeItems.set(UNASSIGNED, li);
  }

  // ---- detail pane ----
  const detail = $("detail");
  function section(title, ...content) {
    const s = el("section", "section");
    s.append(el("h3", null, title), ...content);
    return s;
  }
  function timeChart(counts, colour, labels = data.time.labels, unit = data.time.unit) {
    const max = Math.max(1, ...counts);
    const W = counts.length * 10, H = 100;
    const figure = el("figure", "chart");
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `Items per ${unit}` });
    counts.forEach((count, k) => {
      const h = count ? Math.max(1.5, H * count / max) : 0;
      const bar = svg("rect", { x: k * 10 + 1, y: H - h, width: 8, height: h, fill: colour });
      const tip = svg("title");
      tip.textContent = `${labels[k]}: ${number.format(count)}`;
      bar.append(tip);
      chart.append(bar);
    });
    const axis = el("figcaption", "chart-axis");
    axis.append(el("span", null, labels[0]), el("span", null, `max ${number.format(max)} per ${unit}`),
      el("span", null, labels[labels.length - 1]));
    figure.append(chart, axis);
    return figure;
  }
  function subtopicList(indices, of) {
    const list = el("ul", "subtopics");
    for (const c of indices) {
      const li = el("li");
      const button = el("button");
      button.append(swatch(c), el("span", "name", nodes[c].name), ...sizeCells(nodes[c].size, colourOf(c), of));
      button.addEventListener("click", () => goNode(c));
      li.append(button);
      list.append(li);
    }
    return list;
  }
  function exampleList(indices, showLeaf) {
    const list = el("ol", "examples");
    for (const k of indices) {
      const example = examples[k];
      const li = el("li", "example");
      const text = el("p", "example-text", example.text);
      text.title = "Click to show all";
      text.addEventListener("click", () => li.classList.toggle("open"));
      const meta = el("div", "example-meta");
      meta.append(el("span", null, `record ${example.record}`));
      for (const [key, value] of example.facets) {
        const facet = el("span", "facet");
        facet.append(el("b", null, key), document.createTextNode(`: ${value}`));
        meta.append(facet);
      }
      const leaf = leafOfExample.get(k);
      if (showLeaf && leaf !== undefined) {
        const link = el("button", "leaf-link", `→ ${nodes[leaf].name}`);
        link.addEventListener("click", () => goNode(leaf));
        meta.append(link);
      }
      li.append(text, meta);
      list.append(li);
    }
    return list;
  }
  function examplesSection(group, isParent) {
    if (group.hidden) {
      return section("Examples", el("p", "notice", "Examples are hidden: this group is below the privacy threshold."));
    }
    if (!group.examples.length) return section("Examples", el("p", "hint", "No examples."));
    if (group.examples.some((k) => examples[k] === undefined)) {
      return section("Examples", el("p", "hint", group.loadError || "Loading examples…"));
    }
    return section(`Examples · ${number.format(group.examples.length)} of ${number.format(group.size)}`,
      exampleList(group.examples, isParent));
  }
  function crumbs(i) {
    const nav = el("nav", "crumbs");
    nav.setAttribute("aria-label", "Breadcrumb");
    const all = el("button", null, "All topics");
    all.addEventListener("click", () => go(""));
    nav.append(all);
    const path = [];
    for (let j = i === null ? -1 : nodes[i].parent; j >= 0; j = nodes[j].parent) path.unshift(j);
    for (const j of path) {
      const link = el("button", null, nodes[j].name);
      link.addEventListener("click", () => goNode(j));
      nav.append(el("span", "sep", "/"), link);
    }
    return nav;
  }
  function showNode(i) {
    const n = nodes[i];
    const parent = n.parent >= 0 ? nodes[n.parent] : null;
    const head = el("div", "detail-head");
    head.append(swatch(i, true), el("h2", null, n.name));
    const meta = [`Level ${n.level}`, plural(n.size, "item"), `${share(n.size)} of all items`];
    if (parent) meta.push(`${share(n.size, parent.size)} of ${parent.name}`);
    const parts = [crumbs(i), head, el("p", "meta", meta.join(" · "))];
    if (n.description) parts.push(el("p", "description", n.description));
    if (n.keywords.length) {
      const chips = el("div", "chips");
      for (const word of n.keywords) chips.append(el("span", "chip", word));
      parts.push(chips);
    }
    if (data.time && n.time) parts.push(section("Over time", timeChart(n.time, colourOf(i))));
    if (data.versions && n.trend) parts.push(section("Across versions", timeChart(n.trend, colourOf(i), data.versions, "version")));
    if (n.children.length) parts.push(section(`Subtopics · ${n.children.length}`, subtopicList(n.children, n.size)));
    parts.push(examplesSection(n, n.children.length > 0));
    parts.push(el("p", "fine", `id ${n.id}`));
    detail.dataset.nodeId = n.id;
    detail.replaceChildren(...parts);
  }
  function showUnassigned() {
    const group = data.unassigned;
    const head = el("div", "detail-head");
    head.append(swatch(-1, true), el("h2", null, "Unassigned"));
    const parts = [crumbs(null), head, el("p", "meta", `${plural(group.size, "item")} · ${share(group.size)} of all items`),
      el("p", "description", "Items that fit no topic closely enough. They are kept apart rather than forced into a topic.")];
    if (data.time && group.time) parts.push(section("Over time", timeChart(group.time, GREY)));
    parts.push(examplesSection(group, false));
    detail.dataset.nodeId = UNASSIGNED;
    detail.replaceChildren(...parts);
  }
  function showOverview() {
    const t = data.totals;
    const head = el("div", "detail-head");
    head.append(el("h2", null, "All topics"));
    const parts = [head, el("p", "meta", `${plural(t.items, "item")} from ${plural(t.records, "record")} · ` +
      `${plural(data.roots.length, "top-level topic")} · ${plural(t.leaves, "leaf")} · ${plural(t.unassigned, "unassigned item")}`)];
    if (data.time && data.time.all) parts.push(section("Over time", timeChart(data.time.all, "#4e79a7")));
    parts.push(section("Top-level topics", subtopicList(data.roots, total)));
    parts.push(el("p", "hint", "Select a topic in the tree, search, or click a point on the map. Links to a topic can be shared: they open that topic."));
    detail.dataset.nodeId = "";
    detail.replaceChildren(...parts);
  }

  // ---- routing: #node=<id>, #unassigned, or the overview ----
  let selected = null;
  function markSelected(target) {
    for (const row of document.querySelectorAll(".row.selected, .result.selected")) row.classList.remove("selected");
    const li = treeItems.get(target);
    if (li) {
      const row = li.querySelector(":scope > .row");
      row.classList.add("selected");
      row.scrollIntoView({ block: "nearest" });
    }
    for (const result of document.querySelectorAll(".result")) {
      if (result.dataset.target === String(target)) result.classList.add("selected");
    }
  }
  function route() {
    let hash = "";
    try { hash = decodeURIComponent(location.hash.slice(1)); } catch (error) { hash = ""; }
    let show = showOverview;
    let group = null;
    if (hash.startsWith("node=") && byId.has(hash.slice(5))) {
      const i = byId.get(hash.slice(5));
      selected = i;
      reveal(i);
      group = nodes[i];
      show = () => showNode(i);
    } else if (hash === UNASSIGNED) {
      selected = UNASSIGNED;
      group = data.unassigned;
      show = showUnassigned;
    } else {
      selected = null;
    }
    show();
    markSelected(selected);
    drawMap();
    if (group && group.chunk !== undefined && group.examples.some((k) => examples[k] === undefined)) {
      const target = selected;
      loadChunk(group.chunk).catch((error) => { group.loadError = error.message; }).then(() => {
        if (selected === target) show();
      });
    }
  }

  // ---- search (debounced) over names, descriptions, keywords and example texts ----
  const input = $("search");
  const results = $("results");
  let haystacks = null;
  function marked(text, query, around) {
    const lower = text.toLowerCase();
    let at = lower.length === text.length ? lower.indexOf(query) : -1;
    let start = 0;
    if (around && at > around) start = at - around;
    const fragment = document.createDocumentFragment();
    if (start > 0) fragment.append(document.createTextNode("…"));
    let cursor = start;
    while (at >= 0) {
      fragment.append(document.createTextNode(text.slice(cursor, at)), el("mark", null, text.slice(at, at + query.length)));
      cursor = at + query.length;
      at = lower.indexOf(query, cursor);
    }
    fragment.append(document.createTextNode(text.slice(cursor)));
    return fragment;
  }
  function resultItem(target, name, level, size, snippet, query) {
    const li = el("li", "result");
    li.dataset.target = String(target);
    const button = el("button");
    const headLine = el("span", "result-head");
    const label = el("span", "name");
    label.append(marked(name, query));
    headLine.append(swatch(target === UNASSIGNED ? -1 : target));
    if (level !== null) headLine.append(el("span", "level", `L${level}`));
    headLine.append(label, el("span", "count", number.format(size)));
    button.append(headLine);
    if (snippet) {
      const line = el("span", "snippet");
      line.append(marked(snippet, query, 40));
      button.append(line);
    }
    button.addEventListener("click", () => goNode(target));
    li.append(button);
    return li;
  }
  function runSearch() {
    const query = input.value.trim().toLowerCase();
    if (!query) {
      results.hidden = true;
      tree.hidden = false;
      $("search-status").textContent = "";
      markSelected(selected);
      return;
    }
    haystacks = haystacks || {
      names: nodes.map((n) => n.name.toLowerCase()),
      texts: nodes.map((n) => `${n.description}\n${n.keywords.join(", ")}`.toLowerCase()),
      examples: Array.from(examples, (e) => (e ? e.text.toLowerCase() : "")),
    };
    const hits = [];
    nodes.forEach((n, i) => {
      const rank = haystacks.names[i].includes(query) ? 0 : haystacks.texts[i].includes(query) ? 1 : 2;
      const example = n.children.length ? undefined : n.examples.find((k) => haystacks.examples[k].includes(query));
      if (rank < 2 || example !== undefined) hits.push({ target: i, rank, example });
    });
    const loose = data.unassigned.examples.find((k) => haystacks.examples[k].includes(query));
    if (loose !== undefined) hits.push({ target: UNASSIGNED, rank: 3, example: loose });
    const size = (hit) => (hit.target === UNASSIGNED ? data.unassigned.size : nodes[hit.target].size);
    hits.sort((a, b) => a.rank - b.rank || size(b) - size(a));
    const shown = hits.slice(0, 200).map((hit) => {
      if (hit.target === UNASSIGNED) return resultItem(UNASSIGNED, "Unassigned", null, size(hit), examples[hit.example].text, query);
      const n = nodes[hit.target];
      const snippet = hit.rank === 1 ? `${n.description} ${n.keywords.join(", ")}` : hit.example !== undefined ? examples[hit.example].text : n.description;
      return resultItem(hit.target, n.name, n.level, n.size, snippet, query);
    });
    results.replaceChildren(...shown);
    results.hidden = false;
    tree.hidden = true;
    const partly = site && chunks.size < site.chunks ? " · examples searched in opened topics only" : "";
    $("search-status").textContent = (hits.length ? `${plural(hits.length, "match")}${hits.length > 200 ? ", first 200 shown" : ""}` : "No matches") + `${partly} · Esc to clear`;
    markSelected(selected);
  }
  let searchTimer = 0;
  input.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(runSearch, 150); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { input.value = ""; runSearch(); }
  });

  // ---- map: points from x/y coloured by top-level topic; the selection is highlighted ----
  const points = data.map;
  const canvas = $("map");
  let pixels = null;
  function focusMask() {
    if (selected === null) return null;
    const mask = new Uint8Array(nodes.length + 1);
    if (selected === UNASSIGNED) { mask[nodes.length] = 1; return mask; }
    const stack = [selected];
    while (stack.length) { const j = stack.pop(); mask[j] = 1; stack.push(...nodes[j].children); }
    return mask;
  }
  function drawMap() {
    if (!points) return;
    const width = canvas.parentElement.clientWidth - 28;
    if (width <= 0) return;
    const height = Math.round(Math.min(width * 0.8, 620));
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const count = points.x.length;
    const spanX = points.width, spanY = points.height;
    const pad = 14, scale = Math.min((width - 2 * pad) / spanX, (height - 2 * pad) / spanY);
    const offsetX = (width - scale * spanX) / 2, offsetY = (height - scale * spanY) / 2;
    pixels = new Float32Array(2 * count);
    for (let k = 0; k < count; k++) {
      pixels[2 * k] = offsetX + scale * points.x[k];
      pixels[2 * k + 1] = height - (offsetY + scale * points.y[k]);
    }
    const radius = count < 3000 ? 3 : count < 20000 ? 2 : 1.4;
    const mask = focusMask();
    const inFocus = (k) => mask !== null && mask[points.node[k] < 0 ? nodes.length : points.node[k]] === 1;
    const dot = (k) => {
      if (count < 3000) { ctx.beginPath(); ctx.arc(pixels[2 * k], pixels[2 * k + 1], radius, 0, 2 * Math.PI); ctx.fill(); }
      else ctx.fillRect(pixels[2 * k] - radius, pixels[2 * k + 1] - radius, 2 * radius, 2 * radius);
    };
    ctx.globalAlpha = mask ? 0.6 : 0.75;
    for (let k = 0; k < count; k++) {
      if (inFocus(k)) continue;
      ctx.fillStyle = mask ? "#cfd5de" : colourOf(points.node[k]);
      dot(k);
    }
    if (mask) {
      ctx.globalAlpha = 0.9;
      for (let k = 0; k < count; k++) if (inFocus(k)) { ctx.fillStyle = colourOf(points.node[k]); dot(k); }
    }
    ctx.globalAlpha = 1;
  }
  function nearestPoint(event) {
    if (!pixels) return -1;
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    let best = -1, bestDistance = 64;
    for (let k = 0; k < points.x.length; k++) {
      const dx = pixels[2 * k] - x, dy = pixels[2 * k + 1] - y, distance = dx * dx + dy * dy;
      if (distance < bestDistance) { best = k; bestDistance = distance; }
    }
    return best;
  }
  function setupMap() {
    const note = $("map-note");
    if (!points && !data.png) { $("map-panel").hidden = true; return; }
    if (!points) {
      const image = el("img");
      image.alt = "2-D map of the items";
      image.src = `data:image/png;base64,${data.png}`;
      canvas.replaceWith(image);
      note.textContent = "static image";
      return;
    }
    note.textContent = `${plural(points.x.length, "point")} · click a point to open its topic`;
    const tip = $("map-tip");
    let pending = false;
    canvas.addEventListener("mousemove", (event) => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        const k = nearestPoint(event);
        if (k < 0) { tip.hidden = true; canvas.style.cursor = ""; return; }
        const node = points.node[k];
        tip.textContent = node < 0 ? "Unassigned" : nodes[node].name;
        tip.style.left = `${pixels[2 * k] + 24}px`;
        tip.style.top = `${pixels[2 * k + 1] - 8}px`;
        tip.hidden = false;
        canvas.style.cursor = "pointer";
      });
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("click", (event) => {
      const k = nearestPoint(event);
      if (k >= 0) goNode(points.node[k] < 0 ? UNASSIGNED : points.node[k]);
    });
    const legend = $("legend");
    for (const r of data.roots.slice(0, 24)) {
      const li = el("li");
      const button = el("button");
      button.append(swatch(r), el("span", "name", nodes[r].name));
      button.addEventListener("click", () => goNode(r));
      li.append(button);
      legend.append(li);
    }
    if (data.roots.length > 24) legend.append(el("li", "fine", `and ${data.roots.length - 24} more`));
    if (points.node.includes(-1)) {
      const li = el("li");
      const button = el("button");
      button.append(swatch(-1), el("span", "name", "Unassigned"));
      button.addEventListener("click", () => goNode(UNASSIGNED));
      li.append(button);
      legend.append(li);
    }
    let resizeTimer = 0;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawMap, 100); });
  }

  renderHeader();
  renderTree();
  setupMap();
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
})();
