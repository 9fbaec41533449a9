// zest playground: plain JavaScript, no framework and no build step (the package ships this file as it is).
// Every call goes to this server's own API; with API keys on, the key lives in sessionStorage (this tab only).
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "zest.apiKey";
const LISTS_STORE = "zest.classLists";
const LAST_LABELS = "zest.lastLabels";
const state = { info: null, files: [], templateSets: [], heads: [], collections: [], recNew: null };

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

async function api(path, { method = "GET", json, form, raw = false } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, "the server did not answer (" + e.message + ")");
  }
  if (resp.status === 401) { needKey(key ? "That key was not accepted: enter another." : ""); }
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { const data = await resp.json(); if (data && data.error) message = data.error; } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return raw ? resp : resp.json();
}

// ---------------------------------------------------------------- small DOM helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fieldError(id, message) {
  const box = document.getElementById(id + "-error");
  if (box) box.textContent = message || "";
  const input = document.getElementById(id);
  if (input) {
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

function clearErrors(...ids) { ids.forEach((id) => fieldError(id, "")); }

function appError(message) {
  const box = $("#app-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function pct(p) { return (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%"; }

function busy(button, on) { button.disabled = on; button.setAttribute("aria-busy", on ? "true" : "false"); }

// Which field an API message is about: the first rule that matches names it (else `fallback`).
function routeError(message, rules, fallback) {
  const text = message.toLowerCase();
  for (const [pattern, id] of rules) if (pattern.test(text)) return fieldError(id, message);
  fieldError(fallback, message);
}

// ---------------------------------------------------------------- API keys
function needKey(message) {
  $("#key-panel").hidden = false;
  document.querySelectorAll(".panel").forEach((p) => { p.dataset.locked = "1"; p.hidden = true; });
  clearData();
  $("#key-error").textContent = message || "";
  $("#key-input").focus();
}

const PLACEHOLDERS = {};
function clearData() {
  for (const id of ["#cls-results", "#srch-results", "#rec-results", "#status-grid", "#cls-meta", "#srch-meta", "#rec-meta"])
    $(id).innerHTML = PLACEHOLDERS[id] || "";
  delete $("#status-grid").dataset.loaded;
  $("#server-line").textContent = "";
  $("#col-select").replaceChildren();
  $("#cls-templates").replaceChildren();
  $("#cls-head").replaceChildren();
}

async function useKey(event) {
  event.preventDefault();
  const key = $("#key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("#key-error").textContent = "";
  try {
    await api("/info");
  } catch (e) {
    if (e.status === 401) return;  // needKey() said so
    $("#key-error").textContent = e.message;
    return;
  }
  $("#key-panel").hidden = true;
  $("#key-input").value = "";
  $("#key-change").hidden = false;
  document.querySelectorAll(".panel").forEach((p) => delete p.dataset.locked);
  showTab(currentTab());
  await start();
}

// ---------------------------------------------------------------- tabs
const TABS = ["classify", "search", "recommend", "status"];
function currentTab() { return (location.hash || "#classify").slice(1).split("?")[0]; }

function showTab(name) {
  if (!TABS.includes(name)) name = "classify";
  for (const t of TABS) {
    const tab = $("#tab-" + t);
    const on = t === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    const panel = $("#panel-" + t);
    panel.hidden = !on || panel.dataset.locked === "1";
  }
  if (name === "status" && state.info) loadStatus();
  if (name === "search" && state.info && !state.collections.length) loadCollections();
}

function setupTabs() {
  const tabs = TABS.map((t) => $("#tab-" + t));
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => { history.replaceState(null, "", "#" + TABS[i]); showTab(TABS[i]); });
    tab.addEventListener("keydown", (e) => {
      let j = null;
      if (e.key === "ArrowRight") j = (i + 1) % tabs.length;
      if (e.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
      if (e.key === "Home") j = 0;
      if (e.key === "End") j = tabs.length - 1;
      if (j !== null) { e.preventDefault(); tabs[j].focus(); tabs[j].click(); }
    });
  });
}

// ---------------------------------------------------------------- drop zones
function setupDrop(zone, input, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
    if (files.length) onFiles(files);
  });
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); });
}

// ---------------------------------------------------------------- classify
function splitLabels(text) {
  const parts = text.includes("\n") ? text.split("\n") : text.split(",");
  return parts.map((s) => s.trim()).filter((s) => s.length);
}

function setFiles(files) {
  state.files = files;
  clearErrors("cls-files");
  const chips = files.map((f) => el("span", { class: "chip" }, el("img", { src: URL.createObjectURL(f), alt: "" }),
    el("span", { text: f.name })));
  $("#cls-picked").replaceChildren(...chips);
}

function classLists() {
  try { return JSON.parse(localStorage.getItem(LISTS_STORE) || "{}"); } catch (_) { return {}; }
}

function renderLists() {
  const lists = classLists();
  const select = $("#cls-lists");
  select.replaceChildren(el("option", { value: "", text: "Saved class lists…" }),
    ...Object.keys(lists).sort().map((n) => el("option", { value: n, text: n + " (" + lists[n].length + ")" })));
}

function saveList() {
  const labels = splitLabels($("#cls-labels").value);
  if (!labels.length) return fieldError("cls-labels", "type some labels first, then save them as a list");
  const name = (window.prompt("Name this class list", labels.slice(0, 3).join(", ")) || "").trim();
  if (!name) return;
  const lists = classLists();
  lists[name] = labels;
  localStorage.setItem(LISTS_STORE, JSON.stringify(lists));
  renderLists();
  $("#cls-lists").value = name;
}

function deleteList() {
  const name = $("#cls-lists").value;
  if (!name) return;
  const lists = classLists();
  delete lists[name];
  localStorage.setItem(LISTS_STORE, JSON.stringify(lists));
  renderLists();
}

function renderTemplates() {
  const select = $("#cls-templates");
  const sets = state.templateSets.map((s) => el("option", { value: s.name, text: s.name + " (" + s.templates.length + ")" }));
  select.replaceChildren(...sets, el("option", { value: "__custom", text: "Custom templates…" }));
  const preferred = state.templateSets.find((s) => s.name === "photo") ? "photo" : (state.templateSets[0] || {}).name;
  if (preferred) select.value = preferred;
  templateChanged();
}

function templateChanged() {
  const value = $("#cls-templates").value;
  const custom = value === "__custom";
  $("#cls-custom").hidden = !custom;
  const set = state.templateSets.find((s) => s.name === value);
  $("#cls-templates-desc").textContent = custom ? "One template per line, each with one {} for the label."
    : set ? set.description + " e.g. “" + set.templates[0] + "”" : "";
}

function renderHeads() {
  const usable = state.heads.filter((h) => h.usable);
  $("#cls-head").replaceChildren(...(usable.length ? usable.map((h) => el("option", { value: h.name,
    text: h.name + " — " + h.classes.length + " classes" })) : [el("option", { value: "", text: "no heads loaded (ZEST_HEADS)" })]));
  $("#cls-mode-head").disabled = !usable.length;
}

function modeChanged() {
  const head = $("#cls-mode-head").checked;
  $("#cls-labels-box").hidden = head;
  $("#cls-head-box").hidden = !head;
}

async function classify(event) {
  event.preventDefault();
  const button = $("#cls-run");
  clearErrors("cls-files", "cls-labels", "cls-templates", "cls-custom", "cls-head", "cls-topk", "cls");
  if (!state.files.length) return fieldError("cls-files", "add at least one image: drop, choose or paste one");
  const form = new FormData();
  state.files.forEach((f) => form.append("images", f, f.name));
  const head = $("#cls-mode-head").checked;
  if (head) {
    form.append("head", $("#cls-head").value);
  } else {
    const raw = $("#cls-labels").value;
    localStorage.setItem(LAST_LABELS, raw);
    form.append("labels", JSON.stringify(splitLabels(raw)));
    const t = $("#cls-templates").value;
    if (t === "__custom") form.append("templates", JSON.stringify($("#cls-custom").value.split("\n").map((s) => s.trim()).filter(Boolean)));
    else if (t) form.append("templates", t);
  }
  form.append("top_k", $("#cls-topk").value || "5");
  busy(button, true);
  const t0 = performance.now();
  try {
    const out = await api("/classify", { method: "POST", form });
    renderClassify(out, performance.now() - t0);
  } catch (e) {
    if (e.status === 401) return;
    const templatesField = $("#cls-templates").value === "__custom" ? "cls-custom" : "cls-templates";
    routeError(e.message, [[/^top_k|top_k/, "cls-topk"], [/template/, templatesField], [/\bhead\b/, "cls-head"],
      [/^labels?\b|\blabel \d|\blabel '|labels is/, "cls-labels"], [/image|\.png|\.jpe?g|\bbytes\b|pixels/, "cls-files"]],
    head ? "cls-head" : "cls-labels");
  } finally { busy(button, false); }
}

function fill(p) {  // width set through the CSSOM: the page's CSP allows no inline style attribute
  const node = el("span", { class: "fill" });
  node.style.width = Math.max(0, Math.min(100, 100 * p)).toFixed(1) + "%";
  return node;
}

function renderClassify(out, ms) {
  const tags = [el("span", { class: "tag" }, "model ", el("b", { text: out.model }))];
  if (out.head) tags.push(el("span", { class: "tag" }, "head ", el("b", { text: out.head })));
  if (out.templates) tags.push(el("span", { class: "tag" }, "templates ", el("b", { text: out.templates.name + " ×" + out.templates.count })));
  if (out.scoring) tags.push(el("span", { class: "tag", id: "cls-scoring" }, "scoring ", el("b", { text: out.scoring })));
  if (out.threshold !== undefined && out.threshold !== null) tags.push(el("span", { class: "tag" }, "threshold ", el("b", { text: String(out.threshold) })));
  tags.push(el("span", { class: "tag", id: "cls-latency" }, "latency ", el("b", { text: Math.round(ms) + " ms" })));
  $("#cls-meta").replaceChildren(...tags);
  const cards = out.results.map((r, i) => {
    const file = state.files[i];
    const bars = r.predictions.map((p, j) => el("li", { class: "bar" + (j === 0 ? " top" : ""), "data-label": p.label,
      "data-probability": String(p.probability) },
      el("span", { class: "name", text: p.label, title: p.label }), el("span", { class: "pct", text: pct(p.probability) }),
      el("span", { class: "track", role: "img", "aria-label": p.label + " " + pct(p.probability) },
        fill(p.probability))));
    return el("article", { class: "result-card", "data-image": r.image },
      el("img", { src: file ? URL.createObjectURL(file) : "", alt: r.image }),
      el("div", {}, el("h3", { text: r.image, title: r.image }), el("ul", { class: "bars" }, bars)));
  });
  $("#cls-results").replaceChildren(...cards);
}

// ---------------------------------------------------------------- search
async function loadCollections(select) {
  clearErrors("col-select");
  try {
    const out = await api("/collections");
    state.collections = out.collections;
  } catch (e) {
    if (e.status !== 401) fieldError("col-select", e.message);
    return;
  }
  const box = $("#col-select");
  const keep = select || box.value;
  box.replaceChildren(...(state.collections.length ? state.collections.map((c) => el("option", { value: c.name,
    text: c.name + " (" + c.count + ")" })) : [el("option", { value: "", text: "no collections yet: create one below" })]));
  if (keep && state.collections.some((c) => c.name === keep)) box.value = keep;
  collectionChanged();
}

function selectedCollection() { return state.collections.find((c) => c.name === $("#col-select").value); }

function collectionChanged() {
  const c = selectedCollection();
  $("#col-info").textContent = c ? c.count + " items · " + c.model + " · " + (c.thumbnails ? "thumbnails kept" : "no thumbnails") : "";
  if (!state.collections.length) $("#col-manage").open = true;
}

async function createCollection(event) {
  event.preventDefault();
  clearErrors("col-new-name");
  const name = $("#col-new-name").value.trim();
  try {
    await api("/collections", { method: "POST", json: { name, thumbnails: $("#col-new-thumbs").checked } });
  } catch (e) { if (e.status !== 401) fieldError("col-new-name", e.message); return; }
  $("#col-new-name").value = "";
  await loadCollections(name);
}

async function addImages(event) {
  event.preventDefault();
  clearErrors("col-files");
  $("#col-add-ok").textContent = "";
  const c = selectedCollection();
  const files = [...$("#col-files").files];
  if (!c) return fieldError("col-files", "create or pick a collection first");
  if (!files.length) return fieldError("col-files", "choose one or more image files");
  const button = $("#col-add");
  busy(button, true);
  try {
    const max = state.maxImages || 16;
    let out;
    for (let a = 0; a < files.length; a += max) {
      const form = new FormData();
      const part = files.slice(a, a + max);
      part.forEach((f) => form.append("images", f, f.name));
      form.append("ids", JSON.stringify(part.map((f) => f.name)));
      out = await api("/collections/" + encodeURIComponent(c.name) + "/items", { method: "POST", form });
    }
    $("#col-add-ok").textContent = "added " + files.length + " image(s); " + out.count + " items in " + c.name;
    $("#col-files").value = "";
    await loadCollections(c.name);
  } catch (e) {
    if (e.status === 401) return;
    const m = /limit is (\d+)/.exec(e.message);
    if (e.status === 413 && m && /images/.test(e.message) && !state.maxImages) { state.maxImages = +m[1]; busy(button, false); return addImages(event); }
    fieldError("col-files", e.message);
  } finally { busy(button, false); }
}

async function search(query, label) {
  clearErrors("srch-text", "srch-file", "srch-k", "col-select");
  const c = selectedCollection();
  if (!c) return fieldError("col-select", "pick a collection (or create one)");
  const k = parseInt($("#srch-k").value || "12", 10);
  const path = "/collections/" + encodeURIComponent(c.name) + "/search";
  const t0 = performance.now();
  let out;
  try {
    if (query.file) {
      const form = new FormData();
      form.append("images", query.file, query.file.name);
      form.append("k", String(k));
      out = await api(path, { method: "POST", form });
    } else {
      out = await api(path, { method: "POST", json: { ...query, k } });
    }
  } catch (e) {
    if (e.status === 401) return;
    const field = query.file ? "srch-file" : "srch-text";
    routeError(e.message, [[/^k\b|\bk=/, "srch-k"], [/collection/, "col-select"]], field);
    return;
  }
  const ms = performance.now() - t0;
  $("#srch-meta").replaceChildren(el("span", { class: "tag" }, "query ", el("b", { text: label })),
    el("span", { class: "tag" }, "collection ", el("b", { text: c.name })),
    el("span", { class: "tag" }, el("b", { text: String(out.results.length) }), " results"),
    el("span", { class: "tag" }, "latency ", el("b", { text: Math.round(ms) + " ms" })));
  renderHits(c.name, out.results);
}

function linkOf(md) {
  for (const key of ["url", "path"]) {
    const v = md && md[key];
    if (typeof v === "string" && v) return { key, value: v };
  }
  return null;
}

function renderHits(collection, hits) {
  if (!hits.length) { $("#srch-results").replaceChildren(el("p", { class: "empty", text: "No results." })); return; }
  const nodes = hits.map((h, i) => {
    const link = linkOf(h.metadata);
    const md = Object.entries(h.metadata || {}).filter(([k]) => !link || k !== link.key)
      .map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join(" · ");
    const pic = h.thumbnail ? el("img", { class: "pic", alt: h.id, "data-thumb": "1" })
      : el("div", { class: "nopic", text: h.text || h.name || h.kind || "" });
    const linkNode = link ? el("span", { class: "md" }, el("a", { href: /^https?:\/\//.test(link.value) ? link.value : null,
      text: link.value, title: link.value, onclick: (e) => e.stopPropagation(), target: "_blank", rel: "noopener" })) : null;
    const card = el("button", { type: "button", class: "hit" + (i === 0 ? " first" : ""), "data-id": h.id,
      title: "More like this: search by " + h.id, onclick: () => moreLikeThis(collection, h) },
    pic, el("span", { class: "body" }, el("span", { class: "id", text: h.id }),
      el("span", { class: "score", text: "score " + (h.score ?? 0).toFixed(3) }),
      linkNode, md ? el("span", { class: "md", text: md, title: md }) : null));
    if (h.thumbnail) loadThumb(collection, h.id, pic);
    return card;
  });
  $("#srch-results").replaceChildren(...nodes);
}

async function loadThumb(collection, id, img) {
  // fetched with the key (an <img src> cannot send a header), shown from a blob: URL
  try {
    const resp = await api("/collections/" + encodeURIComponent(collection) + "/items/" + encodeURIComponent(id) + "/thumbnail", { raw: true });
    img.src = URL.createObjectURL(await resp.blob());
    img.addEventListener("load", () => { img.dataset.loaded = "1"; }, { once: true });
  } catch (_) { img.replaceWith(el("div", { class: "nopic", text: id })); }
}

function moreLikeThis(collection, hit) {
  // the item's own stored embedding is the query ("like": its id); the item itself is left out
  return search({ like: hit.id }, "more like " + hit.id);
}

// ---------------------------------------------------------------- recommend
function historyIds() { return $("#rec-history").value.split(",").map((s) => s.trim()).filter(Boolean); }

async function recommend(event) {
  if (event) event.preventDefault();
  clearErrors("rec-history", "rec-texts", "rec");
  const body = { history: historyIds(), history_texts: $("#rec-texts").value.split("\n").map((s) => s.trim()).filter(Boolean),
    k: parseInt($("#rec-k").value || "10", 10) };
  if (!body.history.length && !body.history_texts.length)
    return fieldError("rec-history", "like something first: item ids here, or a description below");
  const button = $("#rec-run");
  busy(button, true);
  const t0 = performance.now();
  try {
    const out = await api("/recommend", { method: "POST", json: body });
    const ms = performance.now() - t0;
    $("#rec-meta").replaceChildren(el("span", { class: "tag" }, "model ", el("b", { text: out.model })),
      el("span", { class: "tag" }, "latency ", el("b", { text: Math.round(ms) + " ms" })));
    await renderRecs(out.items);
  } catch (e) {
    if (e.status === 401) return;
    routeError(e.message, [[/history_texts|description/, "rec-texts"], [/history|item id|unknown/, "rec-history"]], "rec");
  } finally { busy(button, false); }
}

async function renderRecs(items) {
  if (!items.length) { $("#rec-results").replaceChildren(el("li", { class: "empty", text: "No items to recommend yet: add some." })); return; }
  const texts = await Promise.all(items.map((it) => api("/items/" + encodeURIComponent(it.id)).then((r) => r.text).catch(() => "")));
  const liked = new Set(historyIds());
  $("#rec-results").replaceChildren(...items.map((it, i) => el("li", { class: "rec" + (it.id === state.recNew ? " new" : ""), "data-id": it.id },
    el("span", { class: "rank", text: String(i + 1) }),
    el("div", {}, el("div", { class: "id" }, it.id, it.id === state.recNew ? el("span", { class: "badge", text: "just added" }) : null),
      el("div", { class: "text", text: texts[i] })),
    el("div", { class: "side" }, el("span", { class: "score", text: it.score.toFixed(3) }),
      el("button", { type: "button", class: "small", disabled: liked.has(it.id), "aria-label": "Like " + it.id,
        onclick: () => { $("#rec-history").value = [...historyIds(), it.id].join(", "); recommend(); } }, liked.has(it.id) ? "Liked" : "Like")))));
}

async function addItem(event) {
  event.preventDefault();
  clearErrors("rec-new-id", "rec-new-text");
  $("#rec-add-ok").textContent = "";
  const id = $("#rec-new-id").value.trim();
  const text = $("#rec-new-text").value.trim();
  try {
    const out = await api("/items", { method: "POST", json: { items: [{ id, text }] } });
    state.recNew = id;
    $("#rec-add-ok").textContent = (out.created ? "added " : "updated ") + id + "; " + out.total + " items in the catalogue";
  } catch (e) {
    if (e.status !== 401) routeError(e.message, [[/\btext\b/, "rec-new-text"]], "rec-new-id");
    return;
  }
  if (historyIds().length || $("#rec-texts").value.trim()) await recommend();
  else { $("#rec-texts").value = text; await recommend(); }
}

// ---------------------------------------------------------------- status
function metric(text, name) {
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ") || line.startsWith(name + "{")) total += parseFloat(line.split(" ").pop()) || 0;
  }
  return total;
}

async function loadStatus() {
  $("#st-error").textContent = "";
  let info, metrics = "";
  try {
    info = state.info = await api("/info");
  } catch (e) { if (e.status !== 401) $("#st-error").textContent = e.message; return; }
  try { metrics = await (await api("/metrics", { raw: true })).text(); } catch (_) { /* shown as unknown */ }
  let ready = null;
  try { ready = (await api("/readyz", { raw: true })).ok; } catch (_) { ready = false; }
  const hits = metric(metrics, "zest_class_cache_hits_total"), misses = metric(metrics, "zest_class_cache_misses_total");
  const entries = metric(metrics, "zest_class_cache_entries");
  const rate = hits + misses ? pct(hits / (hits + misses)) : "no lookups yet";
  const item = (label, ...value) => el("div", {}, el("dt", { text: label }), el("dd", {}, ...value));
  const small = (t) => el("span", { class: "small", text: t });
  const services = Object.entries(info.services).map(([name, ok]) => el("div", {}, el("span", { class: "dot" + (ok ? " up" : "") }),
    name + (ok ? " ready" : " not ready")));
  $("#status-grid").replaceChildren(
    item("Model", info.model || "not loaded yet"), item("Dimension", String(info.dim ?? "–")),
    item("Runtime", info.runtime || "–"), item("Device", info.device || "–"),
    item("Readiness", el("div", {}, el("span", { class: "dot" + (ready ? " up" : "") }), ready ? "ready" : "not ready"), ...services),
    item("Class-cache hit rate", rate, el("br"), small(hits + " hits · " + misses + " misses · " + entries + " cached")),
    item("Heads", info.heads.length ? info.heads.join(", ") : small("none loaded (ZEST_HEADS)")),
    item("Template sets", info.template_sets.join(", ")),
    item("Recommender", info.recommender ? "on" : small("off: no ZEST_REC_MODEL")),
    item("Version", "zest " + info.version));
  $("#status-grid").dataset.loaded = "1";
}

// ---------------------------------------------------------------- start
function serverLine() {
  const i = state.info;
  $("#server-line").textContent = i.model ? i.model + " · dim " + i.dim + " · " + (i.runtime || "") + " on " + (i.device || "?") : "model loading…";
}

async function start() {
  appError("");
  try {
    state.info = await api("/info");
  } catch (e) {
    if (e.status !== 401) appError("Cannot reach the API: " + e.message);
    return;
  }
  if (apiKey()) $("#key-change").hidden = false;
  serverLine();
  const [templates, heads] = await Promise.all([api("/templates").catch(() => ({ template_sets: [] })),
    api("/heads").catch(() => ({ heads: [] }))]);
  state.templateSets = templates.template_sets;
  state.heads = heads.heads;
  renderTemplates();
  renderHeads();
  const tab = currentTab();
  if (tab === "search") loadCollections();
  if (tab === "status") loadStatus();
  document.body.dataset.ready = "1";
}

function init() {
  for (const id of ["#cls-results", "#srch-results", "#rec-results"]) PLACEHOLDERS[id] = $(id).innerHTML;
  setupTabs();
  showTab(currentTab());
  window.addEventListener("hashchange", () => showTab(currentTab()));
  $("#key-form").addEventListener("submit", useKey);
  $("#key-change").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); needKey(""); });
  setupDrop($("#cls-drop"), $("#cls-files"), setFiles);
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData || {}).files || []].filter((f) => f.type.startsWith("image/"));
    if (files.length && currentTab() === "classify") { e.preventDefault(); setFiles(files); }
  });
  $("#cls-form").addEventListener("submit", classify);
  $("#cls-templates").addEventListener("change", templateChanged);
  document.querySelectorAll("input[name=cls-mode]").forEach((r) => r.addEventListener("change", modeChanged));
  $("#cls-lists").addEventListener("change", () => {
    const list = classLists()[$("#cls-lists").value];
    if (list) $("#cls-labels").value = list.join("\n");
  });
  $("#cls-save-list").addEventListener("click", saveList);
  $("#cls-delete-list").addEventListener("click", deleteList);
  $("#cls-labels").value = localStorage.getItem(LAST_LABELS) || "";
  renderLists();
  $("#col-refresh").addEventListener("click", () => loadCollections());
  $("#col-select").addEventListener("change", collectionChanged);
  $("#col-create-form").addEventListener("submit", createCollection);
  $("#col-add-form").addEventListener("submit", addImages);
  $("#srch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("#srch-text").value.trim();
    if (!text) return fieldError("srch-text", "type what to look for, or drop an image below");
    search({ text }, "“" + text + "”");
  });
  setupDrop($("#srch-drop"), $("#srch-file"), (files) => search({ file: files[0] }, files[0].name));
  $("#rec-form").addEventListener("submit", recommend);
  $("#rec-add-form").addEventListener("submit", addItem);
  $("#st-refresh").addEventListener("click", loadStatus);
  start();
}

document.addEventListener("DOMContentLoaded", init);
