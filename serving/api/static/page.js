// The upload page. How each task is drawn comes from the server: /v1/models/{name} gives every
// task's "view" (serving/kinds: one module per kind), and each view names a renderer below.
"use strict";

const PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
  [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
  [250, 190, 212], [0, 128, 128]];
const $ = (id) => document.getElementById(id);
let views = {};

function headers() {
  const k = $("key").value;
  return k ? { "X-API-Key": k } : {};
}

async function loadModels() {
  const r = await fetch("v1/models", { headers: headers() });
  const j = await r.json();
  if (!r.ok) { $("err").textContent = j.error; return; }
  const s = $("model");
  s.innerHTML = "";
  for (const m of j.models || []) {
    const o = document.createElement("option");
    o.textContent = m.name;
    s.appendChild(o);
  }
}

function card(title) {
  const d = document.createElement("div");
  d.className = "card";
  const h = document.createElement("b");
  h.textContent = title;
  d.appendChild(h);
  $("out").appendChild(d);
  return d;
}

function text(parent, s) {
  const p = document.createElement("div");
  p.textContent = s;
  parent.appendChild(p);
}

function decodePng(enc) {
  return new Promise((resolve, reject) => {
    const i = new Image();
    i.onload = () => resolve(i);
    i.onerror = reject;
    i.src = "data:image/png;base64," + enc.data;
  });
}

// A canvas the size of the photo with the photo drawn, and the map's box on it.
function canvasOver(photo, enc) {
  const c = document.createElement("canvas");
  c.width = enc.image.width;
  c.height = enc.image.height;
  const x = c.getContext("2d");
  x.drawImage(photo, 0, 0, c.width, c.height);
  return [c, x, enc.box];
}

// Map pixels (a PNG) recoloured by fn(value, rgba) and stretched over the box.
async function drawMap(parent, photo, enc, recolour, alpha) {
  const img = await decodePng(enc);
  const tmp = document.createElement("canvas");
  tmp.width = img.width;
  tmp.height = img.height;
  const t = tmp.getContext("2d");
  t.drawImage(img, 0, 0);
  if (recolour) {
    const p = t.getImageData(0, 0, tmp.width, tmp.height);
    for (let i = 0; i < p.data.length; i += 4) recolour(p.data, i);
    t.putImageData(p, 0, 0);
  }
  const [c, x, box] = canvasOver(photo, enc);
  x.globalAlpha = alpha;
  x.imageSmoothingEnabled = enc.dtype !== "uint8" || enc.shape.length === 3;
  x.drawImage(tmp, box.left, box.top, box.width, box.height);
  parent.appendChild(c);
}

function bars(parent, items, threshold) {
  for (const [label, p] of items) {
    const row = document.createElement("div");
    row.className = "row";
    row.textContent = "";
    const l = document.createElement("span");
    l.textContent = label;
    const v = document.createElement("span");
    v.textContent = p.toFixed(3);
    row.append(l, v);
    const b = document.createElement("div");
    b.className = "bar" + (threshold !== undefined && p <= threshold ? " under" : "");
    b.style.width = (100 * p).toFixed(1) + "%";
    parent.append(row, b);
  }
}

const RENDERERS = {
  async classes(d, t, view, photo) {
    const enc = t[view.map];
    await drawMap(d, photo, enc, (px, i) => {
      const c = PALETTE[px[i] % PALETTE.length];
      px[i] = c[0]; px[i + 1] = c[1]; px[i + 2] = c[2]; px[i + 3] = 255;
    }, 0.6);
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const c of t[view.legend]) {
      const sw = document.createElement("span");
      const col = PALETTE[c.index % PALETTE.length];
      sw.style.background = `rgb(${col[0]},${col[1]},${col[2]})`;
      legend.append(sw, document.createTextNode(`${c.label} ${(100 * c.share).toFixed(1)}%  `));
    }
    d.appendChild(legend);
  },
  async heat(d, t, view, photo) {
    await drawMap(d, photo, t[view.map], (px, i) => {
      const v = px[i] / 255;
      px[i] = 255 * Math.min(1, 2 * v); px[i + 1] = 255 * (1 - Math.abs(2 * v - 1));
      px[i + 2] = 255 * Math.min(1, 2 - 2 * v); px[i + 3] = 255;
    }, 1.0);
    text(d, view.stats.map((s) => `${s} ${t[s].toFixed(2)}`).join("  ") + " " + (t.units || ""));
  },
  async rgb(d, t, view, photo) {
    await drawMap(d, photo, t[view.map], null, 1.0);
    text(d, "normal (x, y, z) as red, green, blue");
  },
  async overlay(d, t, view, photo) {
    await drawMap(d, photo, t[view.map], (px, i) => {
      const v = px[i];
      px[i] = 255; px[i + 1] = 255; px[i + 2] = 0; px[i + 3] = v;
    }, 1.0);
    text(d, `above ${t.threshold}: ${(100 * t.fraction_above_threshold).toFixed(1)}%`);
  },
  async ranked(d, t, view) {
    bars(d, t[view.items].map((c) => [c.label, c.probability]));
  },
  async scores(d, t, view) {
    bars(d, Object.entries(t[view.items]).sort((a, b) => b[1] - a[1]), t[view.threshold]);
  },
  async values(d, t, view) {
    text(d, t[view.items].map((v) => v.toFixed(4)).join(", ") + " " + (t.units || ""));
  },
};

async function predict(file) {
  $("out").innerHTML = "";
  $("err").textContent = "";
  const model = $("model").value;
  if (!model) { $("err").textContent = "no model is serving"; return; }
  const info = await fetch("v1/models/" + encodeURIComponent(model), { headers: headers() });
  const described = await info.json();
  if (!info.ok) { $("err").textContent = described.error; return; }
  views = Object.fromEntries(described.tasks.map((t) => [t.name, t.view]));
  const photo = new Image();
  photo.src = URL.createObjectURL(file);
  await photo.decode();
  const fd = new FormData();
  fd.append("file", file);
  $("status").textContent = "predicting...";
  const started = performance.now();
  const r = await fetch("v1/models/" + encodeURIComponent(model) + "/predict?encoding=png",
    { method: "POST", body: fd, headers: headers() });
  const j = await r.json();
  $("status").textContent = r.ok ? `${(performance.now() - started).toFixed(0)} ms` : "";
  if (!r.ok) { $("err").textContent = j.error; return; }
  for (const [name, t] of Object.entries(j.predictions[0].tasks)) {
    const d = card(`${name} (${t.kind})`);
    const view = views[name] || {};
    const render = RENDERERS[view.draw];
    if (render) await render(d, t, view, photo);
    else text(d, JSON.stringify(t));
  }
}

$("file").onchange = (e) => { const f = e.target.files[0]; if (f) predict(f); };
$("key").onchange = loadModels;
loadModels();
