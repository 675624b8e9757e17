// dermafake's page: plain JavaScript on the public API only (detect, generate, v1/models).
// URLs are relative, so the page works behind a path prefix too.
"use strict";

const KEY_STORAGE = "dermafake-api-key";
const $ = (id) => document.getElementById(id);

// ---- API --------------------------------------------------------------------------------------

function headers() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiError extends Error {
  constructor(status, detail, retryAfter, requestId) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

function describeDetail(detail) {
  if (Array.isArray(detail)) {  // FastAPI validation errors
    return detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return String(detail ?? "");
}

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  } catch (err) {
    throw new ApiError(0, "the server could not be reached", null, null);
  }
  if (response.ok) return response.json();
  let body = {};
  try { body = await response.json(); } catch (err) { /* not JSON */ }
  throw new ApiError(
    response.status,
    describeDetail(body.detail) || response.statusText,
    response.headers.get("Retry-After"),
    body.request_id || response.headers.get("X-Request-ID"),
  );
}

function explainError(err) {
  const why = {
    0: "No answer from the server.",
    401: "This server needs an API key: open \u201cAPI key\u201d above and paste it.",
    404: "Not found.",
    413: "Too large for this server.",
    415: "Not an image this service accepts (JPEG, PNG, WebP, BMP or TIFF).",
    422: "The server could not use this input.",
    429: "Too many requests from you just now.",
    503: "The server is busy or not ready.",
    504: "The server took too long.",
  }[err.status] || `Error ${err.status}.`;
  const retry = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : "";
  const id = err.requestId ? ` (request ${err.requestId})` : "";
  return `${why}${retry} ${err.message}${id}`.trim();
}

// ---- tabs and key -----------------------------------------------------------------------------

const tabs = ["check", "generate", "models"];

function showTab(name, focus = false) {
  for (const t of tabs) {
    const tab = $(`tab-${t}`);
    const selected = t === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`view-${t}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  if (name === "models") loadModels();
}

for (const t of tabs) {
  $(`tab-${t}`).addEventListener("click", () => showTab(t));
  $(`tab-${t}`).addEventListener("keydown", (e) => {
    const i = tabs.indexOf(t);
    if (e.key === "ArrowRight") showTab(tabs[(i + 1) % tabs.length], true);
    if (e.key === "ArrowLeft") showTab(tabs[(i + tabs.length - 1) % tabs.length], true);
  });
}

$("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
$("api-key").addEventListener("input", (e) => {
  const key = e.target.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
});

// ---- check images -----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const pct = (p) => `${(100 * p).toFixed(1)}%`;

function scoreBar(score) {
  const bar = el("div", { class: "bar", role: "img",
    "aria-label": `P(synthetic) ${pct(score.probability_synthetic)}, threshold ${pct(score.threshold)}` });
  if (score.inconclusive_below < score.threshold) {
    const band = el("div", { class: "band" });
    band.style.left = pct(score.inconclusive_below);
    band.style.width = pct(score.threshold - score.inconclusive_below);
    bar.append(band);
  }
  const fill = el("div", { class: "fill" });
  fill.style.width = pct(score.probability_synthetic);
  const mark = el("div", { class: "mark", title: `threshold ${pct(score.threshold)}` });
  mark.style.left = pct(score.threshold);
  bar.append(fill, mark);
  return bar;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = src;
  });
}

// Heat colours: transparent black -> red -> yellow -> white, alpha rising with the evidence and
// scaled by how much the model believes it (strength, 0..1).
function heatColour(v, strength) {
  return [255, Math.min(255, 510 * Math.max(0, v - 0.5)), Math.min(255, 510 * Math.max(0, v - 0.8)), 200 * v * strength];
}

// A map is normalised to its own maximum, so its brightness says where, never how much: weak
// evidence would look as hot as strong. The overlay's strength follows the model's own verdict
// and score instead, and the caption says in words what the map does and does not show.
function evidence(score) {
  if (score.explanation.empty) {
    return { strength: 0, caption: score.verdict === "synthetic"
      ? "no localized evidence: the score rests on the image as a whole, not one region"
      : "no localized evidence for synthetic" };
  }
  if (score.verdict === "synthetic") {
    return { strength: 1, caption: "evidence for synthetic, brightest where strongest" };
  }
  const strength = Math.max(0.15, Math.min(0.6, score.probability_synthetic / score.threshold));
  return { strength, caption: score.verdict === "real"
    ? "weak: this model scores the image real (map faded)"
    : "uncertain: this model is inconclusive (map faded)" };
}

async function drawExplanation(canvas, explanation, withHeat, strength) {
  const [view, heat] = await Promise.all([
    loadImage(`data:image/png;base64,${explanation.input}`),
    loadImage(`data:image/png;base64,${explanation.heatmap}`),
  ]);
  const size = explanation.size;
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(view, 0, 0, size, size);
  if (!withHeat || strength === 0) return;
  const scratch = document.createElement("canvas");
  scratch.width = size;
  scratch.height = size;
  const sctx = scratch.getContext("2d");
  sctx.drawImage(heat, 0, 0, size, size);
  const pixels = sctx.getImageData(0, 0, size, size);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const [r, g, b, a] = heatColour(pixels.data[i] / 255, strength);
    pixels.data.set([r, g, b, a], i);
  }
  sctx.putImageData(pixels, 0, 0);
  ctx.drawImage(scratch, 0, 0);
}

function renderResult(card, result) {
  const body = el("div", { class: "result" });
  body.append(el("p", {}, el("span", { class: `label ${result.label}`, text: result.label })),
    el("p", { class: "reason", text: result.reason }));
  const heatToggle = el("input", { type: "checkbox", checked: "", class: "heat-toggle" });
  const canvases = [];
  for (const score of result.scores) {
    const block = el("div", { class: "score", "data-model": score.model });
    block.append(
      el("div", { class: "name" },
        el("span", { text: score.model }),
        el("span", { class: "verdict", text: `${score.verdict} \u00b7 ${pct(score.probability_synthetic)}` })),
      scoreBar(score),
      el("p", { class: "reason", text: score.reason }),
    );
    if (score.explanation) {
      const e = score.explanation;
      const { strength, caption } = evidence(score);
      const canvas = el("canvas", { "aria-label": `${score.model}: ${caption}`,
        "data-strength": strength.toFixed(2), "data-empty": String(e.empty) });
      canvases.push([canvas, e, strength]);
      block.append(el("div", { class: "explain" },
        el("figure", {}, canvas,
          el("figcaption", {},
            el("span", { class: "evidence", text: caption }),
            el("span", { class: "method", text: `what ${score.model} saw; ${e.method} on ${e.layer}, peak ${e.peak.toPrecision(3)}` })))));
    }
    body.append(block);
  }
  if (canvases.length) {
    const redraw = () => canvases.forEach(([c, e, s]) => drawExplanation(c, e, heatToggle.checked, s));
    heatToggle.addEventListener("change", redraw);
    body.append(el("label", { class: "option" }, heatToggle, " heatmap"));
    redraw();
  }
  card.querySelector(".pending")?.remove();
  card.append(body);
}

async function checkFile(file) {
  const card = el("article", { class: "card", "data-file": file.name });
  const thumb = el("img", { class: "thumb", alt: file.name });
  const url = URL.createObjectURL(file);
  const release = () => URL.revokeObjectURL(url);  // the decoded image stays on screen
  thumb.addEventListener("load", release, { once: true });
  thumb.addEventListener("error", release, { once: true });
  thumb.src = url;
  card.append(el("h2", { text: file.name }), thumb, el("p", { class: "pending", text: "checking\u2026" }));
  $("results").prepend(card);
  const form = new FormData();
  form.append("file", file, file.name);
  const query = $("explain").checked ? "?explain=true" : "";
  try {
    const answer = await call(`detect${query}`, { method: "POST", body: form });
    renderResult(card, answer.results[0]);
  } catch (err) {
    card.classList.add("error");
    card.querySelector(".pending")?.remove();
    card.append(el("p", { class: "error-text", role: "alert", text: explainError(err) }));
  }
}

async function checkFiles(files) {
  const list = Array.from(files);
  if (!list.length) return;
  $("check-status").textContent = `Checking ${list.length} image${list.length > 1 ? "s" : ""}\u2026`;
  for (const file of list) await checkFile(file);  // one at a time: the server batches others
  $("check-status").textContent = "Done.";
}

const drop = $("drop");
drop.addEventListener("click", () => $("files").click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); }
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  checkFiles(e.dataTransfer.files);
});
$("files").addEventListener("change", (e) => { checkFiles(e.target.files); e.target.value = ""; });

// ---- generate ---------------------------------------------------------------------------------

async function generate(n, seed) {
  const status = $("generate-status");
  status.className = "status";
  status.textContent = "Generating\u2026";
  const params = new URLSearchParams({ n: String(n) });
  if (seed !== "") params.set("seed", String(seed));
  try {
    const answer = await call(`generate?${params}`);
    const gallery = $("gallery");
    gallery.replaceChildren();
    for (const image of answer.images) {
      const src = `data:${image.media_type};base64,${image.data}`;
      const link = el("a", { href: src, download: `lesion-${image.seed}.png`, text: "download" });
      gallery.append(el("figure", { "data-seed": String(image.seed) },
        el("img", { src, alt: `generated lesion, seed ${image.seed}` }),
        el("figcaption", {}, el("span", { text: `seed ${image.seed}` }), link)));
    }
    const first = answer.images[0].seed;
    const again = el("button", { type: "button", class: "primary", text: `Again with seed ${first}` });
    again.addEventListener("click", () => { $("gen-seed").value = String(first); generate(n, first); });
    status.replaceChildren(`${answer.images.length} image(s) from model ${answer.model_version}. `, again);
  } catch (err) {
    status.className = "status error";
    status.textContent = explainError(err);
  }
}

// The server's own limit on n (DERMAFAKE_MAX_GENERATE_N), as its OpenAPI schema states it, so
// the form refuses what the server would.
async function limitN() {
  try {
    const schema = await call("openapi.json");
    const n = schema.paths["/generate"].get.parameters.find((p) => p.name === "n");
    if (Number.isInteger(n?.schema?.maximum)) $("gen-n").max = String(n.schema.maximum);
  } catch (err) { /* the form still works; the server says 422 past its limit */ }
}
limitN();

$("generate-form").addEventListener("submit", (e) => {
  e.preventDefault();
  generate($("gen-n").value, $("gen-seed").value.trim());
});

// ---- models -----------------------------------------------------------------------------------

function fmt(value) {
  if (value === null || value === undefined) return "\u2013";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function heldOut(card) {
  const rows = [];
  const evaluation = card.evaluation || {};
  if (evaluation.test) {
    rows.push(["test accuracy", pct(evaluation.test.accuracy)]);
    if (evaluation.test.roc_auc !== undefined) rows.push(["test ROC-AUC", fmt(evaluation.test.roc_auc)]);
  } else if (card.metrics?.validation?.roc_auc !== undefined) {
    rows.push(["validation ROC-AUC", fmt(card.metrics.validation.roc_auc)]);
  }
  for (const [name, set] of Object.entries(evaluation.real_photos || {})) {
    if (set.flagged_synthetic !== undefined) rows.push([`real photos ${name} called synthetic`, pct(set.flagged_synthetic)]);
  }
  for (const [name, source] of Object.entries(evaluation.per_source || {})) {
    if (source.role && source.role !== "trained" && source.flagged_synthetic !== undefined) {
      rows.push([`${name} (${source.role}) flagged`, pct(source.flagged_synthetic)]);
    }
  }
  for (const [name, set] of Object.entries(evaluation.foreign || {})) {
    if (set.flagged_synthetic !== undefined) rows.push([`foreign ${name} flagged`, pct(set.flagged_synthetic)]);
  }
  return rows;
}

async function loadModels() {
  const status = $("models-status");
  status.className = "status";
  status.textContent = "Loading\u2026";
  try {
    const { models } = await call("v1/models");
    const container = $("models");
    container.replaceChildren();
    for (const card of models) {
      const rows = [
        ["kind", `${card.kind} (${card.architecture})`],
        ["version", card.version],
        ["input", `${card.preprocessing.image_size} px, ${card.preprocessing.crop || "center_square"}`],
        ["served", `${card.device}, ${card.dtype}${card.compile ? ", compiled" : ""}`],
      ];
      if (card.threshold !== null && card.threshold !== undefined) {
        rows.push(["threshold", fmt(card.threshold)], ["inconclusive below", fmt(card.inconclusive_below)]);
        rows.push(["target false positives", card.target_fpr === null ? "not set" : pct(card.target_fpr)]);
      }
      if (card.sources && Object.keys(card.sources).length) {
        for (const [role, names] of Object.entries(card.sources)) rows.push([`sources (${role})`, names.join(", ")]);
      }
      rows.push(...heldOut(card));
      if (card.quality) {
        const q = card.quality;
        rows.push(["lesion FD (lower is better)", fmt(q.fd)], ["precision / recall", `${fmt(q.precision)} / ${fmt(q.recall)}`]);
      }
      const dl = el("dl");
      for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: v }));
      container.append(el("article", { class: "card", "data-model": card.name }, el("h3", { text: card.name }), dl));
    }
    status.textContent = `${models.length} models served.`;
  } catch (err) {
    status.className = "status error";
    status.textContent = explainError(err);
  }
}
