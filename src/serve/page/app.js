// lecr's curator page: browse a channel's topic tree, review the recommendations of a topic,
// accept or reject them (each decision is stored by the service), undo, and ask for
// recommendations for a free text. Plain DOM code; the service's /api endpoints do the work.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  channel: null,
  tree: [],          // flat, parent before child
  open: new Set(),   // expanded topic ids
  topic: null,       // the selected topic's details
  recs: [],          // its recommendations (all kinds)
  selected: 0,       // how many are above the threshold
  decisions: {},     // content id -> "accept" | "reject"
  undo: [],          // decisions made on this page, latest last
  active: 0,         // keyboard focus in the visible list
  languages: [],
};

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function status(text) {
  $("status").textContent = text;
}

// The server's --api-key, as the curator typed it; kept for this browser tab only.
const KEY = "lecr-api-key";

// fetch + JSON; a non-2xx answer becomes an error carrying the service's message. A 401 asks
// for the API key.
async function api(path, options) {
  const opts = { ...(options || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) opts.headers = { ...(opts.headers || {}), Authorization: `Bearer ${key}` };
  const res = await fetch(path, opts);
  if (res.status === 401) {
    $("key-form").hidden = false;
    $("key").focus();
    throw new Error(key ? "the service refused this API key" : "the service needs its API key");
  }
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  if (!res.ok) {
    const why = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new Error(`${why}${body && body.field ? ` (${body.field})` : ""}`);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

function excerpt(s, n) {
  if (!s) return "";
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

// ---- channels and tree ----

async function loadChannels() {
  const { channels, languages } = await api("/api/channels");
  state.languages = languages;
  const sel = $("channel");
  sel.replaceChildren(el("option", { value: "" }, "choose a channel"));
  for (const c of channels) {
    sel.append(el("option", { value: c.id }, `${c.title} (${c.language}, ${c.topics} topics)`));
  }
  const lang = $("free-lang");
  lang.replaceChildren(...languages.map((l) => el("option", { value: l }, l)));
  const wanted = new URLSearchParams(location.search).get("channel");
  if (wanted && channels.some((c) => c.id === wanted)) {
    sel.value = wanted;
    await pickChannel(wanted);
  }
}

async function pickChannel(id) {
  state.channel = id || null;
  state.tree = [];
  state.open.clear();
  renderTree();
  if (!id) return;
  status("loading the tree…");
  const { topics } = await api(`/api/channels/${encodeURIComponent(id)}/tree`);
  state.tree = topics;
  for (const t of topics) if (t.level === 0) state.open.add(t.id);
  status(`${topics.length} topics`);
  renderTree();
  const wanted = new URLSearchParams(location.search).get("topic");
  if (wanted && topics.some((t) => t.id === wanted)) await pickTopic(wanted);
}

function renderTree() {
  const q = $("search").value.trim().toLowerCase();
  const byParent = new Map();
  for (const t of state.tree) {
    const p = t.parent || "";
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(t);
  }
  const known = new Set(state.tree.map((t) => t.id));
  // With a search: the matches and their ancestors, expanded.
  let visible = null;
  if (q) {
    visible = new Set();
    const parentOf = new Map(state.tree.map((t) => [t.id, t.parent]));
    for (const t of state.tree) {
      if (t.title.toLowerCase().includes(q)) {
        let id = t.id;
        while (id && !visible.has(id)) {
          visible.add(id);
          id = parentOf.get(id);
        }
      }
    }
  }
  const build = (parent) => {
    const items = (byParent.get(parent) || []).filter((t) => !visible || visible.has(t.id));
    if (!items.length) return null;
    const ul = el("ul", { role: parent ? "group" : null });
    for (const t of items) {
      const hasKids = (byParent.get(t.id) || []).length > 0;
      const open = visible ? true : state.open.has(t.id);
      const li = el("li", { role: "treeitem", "aria-expanded": hasKids ? String(open) : null });
      li.append(
        el("button", {
          class: "toggle", type: "button", "aria-label": `${open ? "Collapse" : "Expand"} ${t.title}`,
          disabled: hasKids ? null : "disabled",
          onclick: () => { open ? state.open.delete(t.id) : state.open.add(t.id); renderTree(); },
        }, hasKids ? (open ? "▾" : "▸") : "·"),
        el("button", {
          class: "title", type: "button", "data-topic": t.id,
          "aria-current": state.topic && state.topic.id === t.id ? "true" : null,
          onclick: () => pickTopic(t.id).catch((e) => showError(e.message)),
        }, t.title),
        el("span", { class: "count", title: "linked contents" }, `${t.linked}`),
      );
      if (hasKids && open) {
        const sub = build(t.id);
        if (sub) li.append(sub);
      }
      ul.append(li);
    }
    return ul;
  };
  // Roots: topics whose parent is not in this channel's list.
  const roots = state.tree.filter((t) => !t.parent || !known.has(t.parent));
  const tree = $("tree");
  tree.replaceChildren();
  const rootParents = new Set(roots.map((t) => t.parent || ""));
  for (const p of rootParents) {
    const ul = build(p);
    if (ul) tree.append(...ul.children);
  }
}

// ---- a topic and its recommendations ----

function placeholders(list, n) {
  list.replaceChildren(...Array.from({ length: n }, () => el("li", { class: "placeholder", "aria-hidden": "true" })));
}

async function pickTopic(id) {
  clearError();
  placeholders($("recs"), 6);
  status("loading recommendations…");
  const topic = await api(`/api/topics/${encodeURIComponent(id)}`);
  state.topic = topic;
  for (const b of topic.breadcrumb) state.open.add(b.id);
  state.decisions = topic.decisions || {};
  state.undo = [];
  state.active = 0;
  renderTopic();
  renderTree();
  await loadRecommendations();
}

function renderTopic() {
  const t = state.topic;
  const box = $("topic");
  box.replaceChildren(
    el("p", { class: "breadcrumb" }, t.breadcrumb.map((b) => b.title).join(" › ")),
    el("h2", { id: "topic-title" }, t.title),
    el("p", {}, t.description || ""),
    el("p", { class: "linked" },
      t.linked.length
        ? `Already linked (${t.linked.length}): ${t.linked.map((c) => c.title).join("; ")}`
        : "No content linked yet."),
  );
}

async function loadRecommendations() {
  const t = state.topic;
  if (!t) return;
  const params = new URLSearchParams({ top_k: $("topk").value || "30" });
  if ($("margin").value !== "") params.set("margin", $("margin").value);
  const r = await api(`/api/topics/${encodeURIComponent(t.id)}/recommendations?${params}`);
  state.recs = r.recommendations;
  state.selected = r.selected;
  if ($("margin").value === "") $("margin").value = String(Math.round(r.margin * 1000) / 1000);
  status(`${r.selected} above the threshold (${r.rule}); model ${r.model}`);
  renderRecs();
}

function visibleRecs() {
  const kind = $("kind").value;
  return state.recs.filter((r) => !kind || r.kind === kind);
}

function recItem(r, withActions) {
  const decision = state.decisions[r.id];
  const score = r.probability !== undefined ? r.probability : r.similarity;
  const li = el("li", { class: `rec${decision ? " " + decision : ""}`, "data-content": r.id },
    el("span", { class: "rank" }, `#${r.rank}`),
    el("div", {},
      el("div", { class: "title" }, r.title),
      el("div", { class: "meta" },
        `${r.kind || "unknown kind"} · ${r.language} · similarity ${r.similarity.toFixed(3)}` +
        (r.probability !== undefined ? ` · probability ${r.probability.toFixed(3)}` : "") +
        (decision ? ` · ${decision === "accept" ? "accepted" : "rejected"}` : "")),
      el("div", { class: "desc" }, excerpt(r.description, 160)),
      el("div", { class: "bar-wrap", role: "img", "aria-label": `score ${score.toFixed(2)}` },
        el("div", { class: "bar-fill", style: `width:${Math.max(0, Math.min(1, score)) * 100}%` }))),
  );
  if (withActions) {
    li.append(el("div", { class: "actions" },
      el("button", { type: "button", class: "accept-btn", "aria-label": `Accept ${r.title}`,
        onclick: () => decide(r.id, "accept") }, "Accept"),
      el("button", { type: "button", class: "reject-btn", "aria-label": `Reject ${r.title}`,
        onclick: () => decide(r.id, "reject") }, "Reject")));
  }
  return li;
}

function renderRecs() {
  const list = $("recs");
  const items = [];
  const recs = visibleRecs();
  let cutShown = false;
  recs.forEach((r, i) => {
    if (!cutShown && r.rank > state.selected) {
      items.push(el("li", { class: "cut", "aria-label": "threshold" }, `threshold: ${state.selected} selected above this line`));
      cutShown = true;
    }
    const li = recItem(r, true);
    if (i === state.active) li.classList.add("active");
    items.push(li);
  });
  if (!recs.length) items.push(el("li", { class: "hint" }, "No recommendations of this kind."));
  list.replaceChildren(...items);
  $("undo").disabled = state.undo.length === 0;
}

// The margin the curator is looking at (recorded with each decision).
function marginShown() {
  const m = parseFloat($("margin").value);
  return Number.isFinite(m) ? m : null;
}

async function decide(contentId, decision) {
  clearError();
  const t = state.topic;
  try {
    await api("/api/feedback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ topic_id: t.id, content_id: contentId, decision, margin: marginShown() }),
    });
  } catch (e) {
    showError(`Could not save the decision: ${e.message}`);
    return;
  }
  state.undo.push({ contentId, before: state.decisions[contentId] || null });
  state.decisions[contentId] = decision;
  status(`${decision === "accept" ? "accepted" : "rejected"}; saved`);
  renderRecs();
}

async function undo() {
  const last = state.undo.pop();
  if (!last) return;
  try {
    await api("/api/feedback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ topic_id: state.topic.id, content_id: last.contentId, decision: last.before || "undo" }),
    });
  } catch (e) {
    state.undo.push(last);
    showError(`Could not undo: ${e.message}`);
    return;
  }
  if (last.before) state.decisions[last.contentId] = last.before;
  else delete state.decisions[last.contentId];
  status("undone");
  renderRecs();
}

// ---- free text ----

async function recommendText(ev) {
  ev.preventDefault();
  clearError();
  const list = $("free-recs");
  placeholders(list, 3);
  try {
    const r = await api("/api/recommend-text", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: $("free-text").value, language: $("free-lang").value, top_k: 10 }),
    });
    list.replaceChildren(...r.recommendations.map((x) => recItem(x, false)));
    if (!r.recommendations.length) list.replaceChildren(el("li", { class: "hint" }, "Nothing in this language."));
  } catch (e) {
    list.replaceChildren();
    showError(e.message);
  }
}

// ---- keys ----

function onKey(ev) {
  if (ev.target.closest("input, textarea, select")) return;
  const recs = visibleRecs();
  if (!recs.length) return;
  const r = recs[state.active];
  if (ev.key === "j") state.active = Math.min(recs.length - 1, state.active + 1);
  else if (ev.key === "k") state.active = Math.max(0, state.active - 1);
  else if (ev.key === "a" && r) return void decide(r.id, "accept");
  else if (ev.key === "r" && r) return void decide(r.id, "reject");
  else if (ev.key === "u") return void undo();
  else return;
  renderRecs();
}

function guard(fn) {
  return (...args) => Promise.resolve(fn(...args)).catch((e) => { status(""); showError(e.message); });
}

$("channel").addEventListener("change", guard((ev) => pickChannel(ev.target.value)));
$("search").addEventListener("input", () => renderTree());
$("kind").addEventListener("change", () => { state.active = 0; renderRecs(); });
$("margin").addEventListener("change", guard(loadRecommendations));
$("topk").addEventListener("change", guard(loadRecommendations));
$("more").addEventListener("click", guard(() => {
  $("topk").value = String(Number($("topk").value || "30") + 20);
  return loadRecommendations();
}));
$("undo").addEventListener("click", guard(undo));
$("free").addEventListener("submit", guard(recommendText));
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  location.reload(); // the same channel and topic, now with the key
});
document.addEventListener("keydown", onKey);
guard(loadChannels)();
