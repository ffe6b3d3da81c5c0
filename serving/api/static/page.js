// The upload page. How each task is drawn comes from the server: /v1/models/{name} gives every
// task's "view" (serving/kinds: one module per kind), and each view names a renderer below;
// the view's other keys name the prediction's fields to read, or are literals (caption...).
// Helpers (colours, maps, bars, keys) are in draw.js.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "polyhead.apiKey";
const state = { described: null, hidden: new Set(), busy: false, last: null };

// ---- talking to the gateway: the API key goes with every call -----------------------------

function headers() {
  const k = $("key").value.trim();
  return k ? { "X-API-Key": k } : {};
}

async function call(path, options = {}) {
  let r;
  try {
    r = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  } catch (e) {
    throw new Error(`could not reach the server (${e.message})`);
  }
  const json = (r.headers.get("content-type") || "").includes("json");
  const body = json ? await r.json().catch(() => null) : null;
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function showError(message) {
  $("err").textContent = message;
}

function status(message, busy = false) {
  const s = $("status");
  s.textContent = message;
  s.classList.toggle("busy", busy);
}

// ---- models, versions and the task toggles -------------------------------------------------

function fill(select, options, chosen) {
  select.replaceChildren(...options.map(([value, label]) => {
    const o = el("option", { value, text: label });
    if (value === chosen) o.selected = true;
    return o;
  }));
  select.disabled = options.length === 0;
}

async function loadModels() {
  showError("");
  state.described = null;
  let models = [];
  try {
    models = (await call("v1/models")).models || [];
  } catch (e) {
    fill($("model"), [], null);
    fill($("version"), [], null);
    $("toggles").hidden = true;
    showError(`Could not list the models: ${e.message}`);
    status("No model to predict with.");
    return;
  }
  state.models = models;
  if (models.length === 0) {
    fill($("model"), [], null);
    fill($("version"), [], null);
    showError("No model is serving: the server's model repository has no loaded version.");
    return;
  }
  const current = $("model").value;
  fill($("model"), models.map((m) => [m.name, m.name]),
    models.some((m) => m.name === current) ? current : models[0].name);
  fillVersions();
  await describeModel();
}

function fillVersions() {
  const m = (state.models || []).find((x) => x.name === $("model").value);
  const versions = m ? [...m.versions].sort((a, b) => b - a) : [];
  fill($("version"), [["", `latest (${m ? m.latest : "?"})`],
    ...versions.map((v) => [String(v), `version ${v}`])], "");
}

async function describeModel() {
  const name = $("model").value;
  const version = $("version").value;
  state.described = null;
  if (!name) return;
  try {
    state.described = await call(`v1/models/${encodeURIComponent(name)}` +
      (version ? `?version=${version}` : ""));
  } catch (e) {
    showError(`Could not describe model ${name}: ${e.message}`);
    return;
  }
  showError("");
  buildToggles(state.described.tasks);
  const d = state.described;
  if (!state.last) {
    status(`${d.name} version ${d.version}: ${d.tasks.length} tasks, input ` +
      `${d.input.width}\u00d7${d.input.height}. Choose an image to begin.`);
  }
}

function buildToggles(tasks) {
  const box = $("toggles");
  box.replaceChildren(el("legend", { text: "Show tasks" }));
  for (const t of tasks) {
    const id = `show-${t.name}`;
    const input = el("input", { type: "checkbox", id });
    input.checked = !state.hidden.has(t.name);
    input.addEventListener("change", () => {
      if (input.checked) state.hidden.delete(t.name);
      else state.hidden.add(t.name);
      for (const c of document.querySelectorAll(".card[data-task]")) {
        c.hidden = state.hidden.has(c.dataset.task);
      }
    });
    box.append(el("label", { for: id }, input, ` ${t.name} `, el("span", { class: "kind",
      text: t.kind })));
  }
  box.hidden = tasks.length === 0;
}

// ---- an image in, every task out -----------------------------------------------------------

// The upload as the model sees it: transparent pixels composited on black (serving/preprocess).
async function asTheModelSees(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null; // the browser cannot draw it; the server may still read it
  }
  const c = el("canvas");
  c.width = bitmap.width;
  c.height = bitmap.height;
  const x = c.getContext("2d");
  x.fillStyle = "#000";
  x.fillRect(0, 0, c.width, c.height);
  x.drawImage(bitmap, 0, 0);
  return c;
}

function setBusy(busy) {
  state.busy = busy;
  $("out").setAttribute("aria-busy", String(busy));
  $("drop").classList.toggle("disabled", busy);
  $("drop").setAttribute("aria-disabled", String(busy));
  for (const b of document.querySelectorAll("#samples button")) b.disabled = busy;
}

async function predict(file) {
  if (state.busy) return;
  showError("");
  const d = state.described;
  if (!d) {
    showError("No model to send the image to: see the message above, or set the API key.");
    return;
  }
  setBusy(true);
  status(`Predicting ${file.name || "the image"} with ${d.name} version ${d.version}\u2026`, true);
  const body = new FormData();
  body.append("file", file, file.name || "image");
  const version = $("version").value ? `&version=${$("version").value}` : "";
  const started = performance.now();
  let result;
  let source;
  try {
    [result, source] = await Promise.all([
      call(`v1/models/${encodeURIComponent(d.name)}/predict?encoding=png${version}`,
        { method: "POST", body }),
      asTheModelSees(file),
    ]);
  } catch (e) {
    showError(`The server could not predict ${file.name || "the image"}: ${e.message}`);
    status("No prediction.");
    setBusy(false);
    return;
  }
  const ms = performance.now() - started;
  state.last = file;
  try {
    await render(result, source, file);
    status(`${result.model} version ${result.version}: ${result.tasks.length} tasks from one ` +
      `forward pass in ${ms.toFixed(0)} ms (round trip).`);
  } finally {
    setBusy(false);
  }
}

function card(name, kind, caption) {
  const id = `card-${name}`;
  const c = el("article", { class: "card", "data-task": name, "aria-labelledby": id },
    el("h2", { id }, name, " ", el("span", { class: "kind", text: kind })));
  if (caption) c.append(el("p", { class: "note", text: caption }));
  c.hidden = state.hidden.has(name);
  return c;
}

async function render(result, source, file) {
  const out = $("out");
  out.replaceChildren();
  const views = Object.fromEntries(state.described.tasks.map((t) => [t.name, t.view]));
  const prediction = result.predictions[0];
  const input = el("article", { class: "card input", "aria-labelledby": "card-input" },
    el("h2", { id: "card-input", text: "input" }));
  if (source) {
    const shown = el("canvas", { role: "img", "aria-label": "the image as the model sees it" });
    const s = Math.min(1, 640 / Math.max(source.width, source.height));
    shown.width = Math.round(source.width * s);
    shown.height = Math.round(source.height * s);
    shown.getContext("2d").drawImage(source, 0, 0, shown.width, shown.height);
    input.append(el("div", { class: "figure" }, shown));
  }
  const i = state.described.input;
  input.append(el("p", { class: "note", text: `${file.name || "image"}` +
    (source ? `, ${source.width}\u00d7${source.height}` : "") +
    ` (${(file.size / 1024).toFixed(1)} KB). The model sees it resized to ` +
    `${i.width}\u00d7${i.height} (${i.resize}); transparent pixels are black.` }));
  out.append(input);
  for (const [name, t] of Object.entries(prediction.tasks)) {
    const view = views[name] || {};
    const c = card(name, t.kind || (state.described.tasks.find((x) => x.name === name) || {})
      .kind || "", view.caption);
    out.append(c);
    const draw = RENDERERS[view.draw];
    try {
      if (draw) await draw(c, t, view, source, name);
      else c.append(el("pre", { text: JSON.stringify(t, null, 1).slice(0, 2000) }));
    } catch (e) {
      c.append(el("p", { class: "err", role: "alert", text: `Could not draw ${name}: ${e.message}` }));
    }
  }
}

// One renderer per view "draw"; each gets (card, the task's prediction, its view, the image as
// the model sees it or null, the task's name).
const RENDERERS = {
  async classes(c, t, view, source, name) {
    const enc = t[view.map];
    const layer = recoloured(await mapPixels(enc), (s, d, i) => {
      const col = PALETTE[s[i] % PALETTE.length];
      d[i] = col[0]; d[i + 1] = col[1]; d[i + 2] = col[2]; d[i + 3] = 255;
    });
    layered(c, name, source, enc, layer, view.opacity ?? 0.6, false);
    const legend = el("ul", { class: "legend", "aria-label": `${name} classes` });
    for (const k of t[view.legend] || []) {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = rgb(PALETTE[k.index % PALETTE.length]);
      legend.append(el("li", {}, swatch, el("span", { text: k.label }),
        el("span", { class: "share", text: percent(k.share) })));
    }
    c.append(legend);
  },
  async heat(c, t, view, source, name) {
    const enc = t[view.map];
    const lut = colormap(view.colormap);
    const layer = recoloured(await mapPixels(enc), (s, d, i) => {
      const v = 3 * s[i];
      d[i] = lut[v]; d[i + 1] = lut[v + 1]; d[i + 2] = lut[v + 2]; d[i + 3] = 255;
    });
    layered(c, name, source, enc, layer, view.opacity ?? 1, true);
    const units = (view.units && t[view.units]) || "";
    scaleBar(c, lut, enc.value_min ?? t.min, enc.value_max ?? t.max, units);
    const stats = (view.stats || []).map((s) => `${s} ${fmt(t[s])}${units ? " " + units : ""}`);
    if (stats.length) c.append(el("p", { class: "stats", text: stats.join(" \u00b7 ") }));
  },
  async rgb(c, t, view, source, name) {
    const enc = t[view.map];
    const layer = recoloured(await mapPixels(enc), (s, d, i) => {
      d[i] = s[i]; d[i + 1] = s[i + 1]; d[i + 2] = s[i + 2]; d[i + 3] = 255;
    });
    layered(c, name, source, enc, layer, view.opacity ?? 1, true);
    const axes = Object.entries(view.axes || {}).map(([colour, axis]) =>
      el("li", { text: `${colour}: ${axis}` }));
    c.append(el("div", { class: "key" }, normalsBall(64), el("ul", {}, ...axes)));
  },
  async overlay(c, t, view, source, name) {
    const enc = t[view.map];
    const colour = view.colour || [255, 214, 0];
    const layer = recoloured(await mapPixels(enc), (s, d, i) => {
      d[i] = colour[0]; d[i + 1] = colour[1]; d[i + 2] = colour[2]; d[i + 3] = s[i];
    });
    layered(c, name, source, enc, layer, view.opacity ?? 1, true);
    const swatch = el("span", { class: "ramp", "aria-hidden": "true" });
    swatch.style.background = `linear-gradient(to right, transparent, ${rgb(colour)})`;
    const key = el("p", { class: "stats" }, "probability 0 ", swatch, " 1");
    if (view.threshold && view.share && t[view.share] !== undefined) {
      key.append(el("br"), `${percent(t[view.share])} of pixels over the threshold ` +
        `${fmt(t[view.threshold])}`);
    }
    c.append(key);
  },
  async ranked(c, t, view, source, name) {
    const items = t[view.items] || [];
    const top = items[0];
    if (top) {
      c.append(el("p", { class: "answer" }, el("strong", { text: t[view.label] ?? top.label }),
        ` ${percent(top.probability)}`));
    }
    bars(c, items.map((x) => [x.label, x.probability]), undefined, name);
  },
  async scores(c, t, view, source, name) {
    const threshold = t[view.threshold];
    const present = (t[view.present] || []).map((x) => x.label);
    c.append(el("p", { class: "answer" }, present.length
      ? el("strong", { text: present.join(", ") }) : "No label over the threshold"));
    const items = Object.entries(t[view.items] || {}).sort((a, b) => b[1] - a[1]);
    bars(c, items, threshold, name);
  },
  async values(c, t, view, source, name) {
    const units = (view.units && t[view.units]) || "";
    c.append(el("ul", { class: "values", "aria-label": `${name} values` },
      ...(t[view.items] || []).map((v, i) => el("li", { text: `${i}: ${fmt(v, 4)} ${units}` }))));
  },
};

// ---- input: drop zone, file picker, samples, key -------------------------------------------

async function loadSamples() {
  let index;
  try {
    index = await call("static/samples/index.json");
  } catch {
    return; // no samples shipped: the group stays empty
  }
  for (const s of index.samples || []) {
    const src = `static/samples/${s.file}`;
    const b = el("button", { type: "button", class: "sample", title: s.title,
      "aria-label": `Sample ${s.file}: ${s.title}` },
      el("img", { src, alt: "", width: "64", height: "64" }));
    b.addEventListener("click", async () => {
      try {
        const r = await fetch(src, { headers: headers() });
        if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
        const blob = await r.blob();
        await predict(new File([blob], s.file, { type: blob.type || "image/png" }));
      } catch (e) {
        showError(`Could not load sample ${s.file}: ${e.message}`);
      }
    });
    $("samples").append(b);
  }
}

function wireInput() {
  const drop = $("drop");
  const file = $("file");
  const choose = () => { if (!state.busy) file.click(); };
  drop.addEventListener("click", choose);
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) predict(f);
  });
  file.addEventListener("change", () => {
    const f = file.files[0];
    file.value = "";
    if (f) predict(f);
  });
  const key = $("key");
  try { key.value = sessionStorage.getItem(KEY_STORE) || ""; } catch { /* storage off */ }
  key.addEventListener("change", () => {
    try {
      if (key.value.trim()) sessionStorage.setItem(KEY_STORE, key.value.trim());
      else sessionStorage.removeItem(KEY_STORE);
    } catch { /* storage off: the key lives in the field */ }
    loadModels();
  });
  $("model").addEventListener("change", () => { fillVersions(); describeModel(); });
  $("version").addEventListener("change", describeModel);
}

wireInput();
loadModels();
loadSamples();
