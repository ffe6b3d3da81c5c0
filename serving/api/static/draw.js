// Drawing helpers of the page (page.js holds the renderers, one per kind's "draw"): colours,
// maps decoded from PNG, maps laid over the image by the box they cover, bars, legends, keys.
"use strict";

// Class colours; index 0 (often "background") is a quiet grey rather than black.
const PALETTE = [[150, 150, 150], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
  [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
  [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40], [128, 0, 0], [0, 0, 128]];

// Perceptually uniform colour maps as a few stops, interpolated into 256-entry tables.
const COLORMAP_STOPS = {
  viridis: ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
    "#addc30", "#fde725"],
};

function hexRgb(h) {
  return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
}

function colormap(name) {
  const stops = (COLORMAP_STOPS[name] || COLORMAP_STOPS.viridis).map(hexRgb);
  const lut = new Uint8ClampedArray(256 * 3);
  for (let v = 0; v < 256; v++) {
    const f = (v / 255) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(f));
    const w = f - i;
    for (let c = 0; c < 3; c++) lut[3 * v + c] = stops[i][c] * (1 - w) + stops[i + 1][c] * w;
  }
  return lut;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function rgb(c) {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function fmt(x, digits = 3) {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)).toString() : String(x);
}

function percent(x) {
  return `${(100 * x).toFixed(x >= 0.1 ? 0 : 1)}%`;
}

// A map sent as PNG, decoded into its pixels (a 16-bit PNG reads back as its top 8 bits).
async function mapPixels(enc) {
  if (!enc || enc.encoding !== "png") throw new Error("the page asks for PNG maps");
  const bytes = Uint8Array.from(atob(enc.data), (ch) => ch.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  const c = el("canvas");
  c.width = bitmap.width;
  c.height = bitmap.height;
  const x = c.getContext("2d", { willReadFrequently: true });
  x.drawImage(bitmap, 0, 0);
  return x.getImageData(0, 0, c.width, c.height);
}

// A canvas of ``pixels`` recoloured by fn(data, i) for each pixel's RGBA at i.
function recoloured(pixels, fn) {
  const out = new ImageData(pixels.width, pixels.height);
  const src = pixels.data;
  const dst = out.data;
  for (let i = 0; i < src.length; i += 4) fn(src, dst, i);
  const c = el("canvas");
  c.width = pixels.width;
  c.height = pixels.height;
  c.getContext("2d").putImageData(out, 0, 0);
  return c;
}

// The image a card draws on: the upload as the model saw it (transparent pixels on black),
// or black at the image's size when the browser cannot decode the file itself.
function backdrop(source, enc) {
  const image = enc.image || { width: enc.shape[1], height: enc.shape[0] };
  const long = Math.max(image.width, image.height);
  // drawn at 384 to 640 pixels on the long side: small inputs crisp, large ones cheap
  const s = long < 384 ? 384 / long : Math.min(1, 640 / long);
  const c = el("canvas");
  c.width = Math.max(1, Math.round(image.width * s));
  c.height = Math.max(1, Math.round(image.height * s));
  return { canvas: c, scale: c.width / image.width, source };
}

// A map laid over the image by its box, with an opacity slider; returns the figure.
function layered(card, id, source, enc, layer, opacity, smooth) {
  const base = backdrop(source, enc);
  const out = base.canvas;
  out.setAttribute("role", "img");
  out.setAttribute("aria-label", `${id} laid over the image`);
  const ctx = out.getContext("2d");
  const box = enc.box || { left: 0, top: 0, width: out.width / base.scale,
    height: out.height / base.scale };
  const draw = (alpha) => {
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.imageSmoothingEnabled = true;
    if (source) ctx.drawImage(source, 0, 0, out.width, out.height);
    ctx.globalAlpha = alpha;
    ctx.imageSmoothingEnabled = smooth;
    ctx.drawImage(layer, box.left * base.scale, box.top * base.scale,
      box.width * base.scale, box.height * base.scale);
  };
  const slider = el("input", { type: "range", min: "0", max: "100", id: `${id}-opacity`,
    value: String(Math.round(100 * opacity)) });
  slider.addEventListener("input", () => draw(slider.value / 100));
  draw(opacity);
  const control = el("label", { class: "opacity", for: slider.id }, "Opacity ", slider);
  card.append(el("div", { class: "figure" }, out), control);
  return out;
}

// Labelled bars, most probable first; ``threshold`` draws a line and marks the bars over it.
function bars(card, items, threshold, name) {
  const list = el("ul", { class: "bars", "aria-label": `${name} probabilities` });
  for (const [label, p] of items) {
    const over = threshold !== undefined && p > threshold;
    const track = el("div", { class: "track", "aria-hidden": "true" },
      el("div", { class: "fill" + (threshold !== undefined && !over ? " under" : "") }));
    track.firstChild.style.width = `${(100 * p).toFixed(1)}%`;
    if (threshold !== undefined) {
      const mark = el("div", { class: "threshold", title: `threshold ${threshold}` });
      mark.style.left = `${100 * threshold}%`;
      track.append(mark);
    }
    const text = el("div", { class: "bar-text" },
      el("span", { class: "bar-label", text: label + (over ? " \u2713" : "") }),
      el("span", { class: "bar-value", text: percent(p) }));
    list.append(el("li", { class: over ? "over" : "" }, text, track));
  }
  card.append(list);
  if (threshold !== undefined) {
    card.append(el("p", { class: "note", text: `The line marks the threshold, ${percent(threshold)}; ` +
      "\u2713 labels are over it." }));
  }
}

// A colour bar from lo to hi in ``units`` with three ticks.
function scaleBar(card, lut, lo, hi, units) {
  const c = el("canvas", { class: "scale", "aria-hidden": "true" });
  c.width = 256;
  c.height = 12;
  const x = c.getContext("2d");
  for (let v = 0; v < 256; v++) {
    x.fillStyle = `rgb(${lut[3 * v]},${lut[3 * v + 1]},${lut[3 * v + 2]})`;
    x.fillRect(v, 0, 1, 12);
  }
  const u = units ? ` ${units}` : "";
  const ticks = el("div", { class: "ticks" }, ...[lo, (lo + hi) / 2, hi].map(
    (v) => el("span", { text: `${fmt(v)}${u}` })));
  card.append(el("div", { class: "scalebar", role: "img",
    "aria-label": `colour scale from ${fmt(lo)}${u} to ${fmt(hi)}${u}` }, c, ticks));
}

// The key of a normal map: a ball facing the camera, each point coloured by its normal.
function normalsBall(size) {
  const c = el("canvas", { class: "ball", role: "img",
    "aria-label": "a ball facing the camera, coloured by the direction of its surface" });
  c.width = size;
  c.height = size;
  const x = c.getContext("2d");
  const img = x.createImageData(size, size);
  for (let j = 0; j < size; j++) {
    for (let i = 0; i < size; i++) {
      const u = (2 * i + 1) / size - 1;
      const v = (2 * j + 1) / size - 1; // y down, as the image's rows
      const r2 = u * u + v * v;
      if (r2 > 1) continue;
      const n = [u, v, -Math.sqrt(1 - r2)]; // facing the camera: z toward it is negative
      const k = 4 * (j * size + i);
      for (let ch = 0; ch < 3; ch++) img.data[k + ch] = Math.round((n[ch] + 1) * 127.5);
      img.data[k + 3] = 255;
    }
  }
  x.putImageData(img, 0, 0);
  return c;
}
