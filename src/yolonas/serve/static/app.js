// The yolonas page: send one image to POST /v1/detect, draw its boxes, filter them by score and class here.
"use strict";

const FLOOR = 0.01; // the page asks for every box above this; the slider filters the rest on the page
const MAX_SIDE = 1280; // the canvas is at most this many pixels on a side; boxes scale with it

const state = { image: null, result: null, hidden: new Set(), apiKey: sessionStorage.getItem("yolonas-key") || "" };
const $ = (id) => document.getElementById(id);

function headers() {
  return state.apiKey ? { "X-API-Key": state.apiKey } : {};
}

function colour(classId) {
  return `hsl(${(classId * 47) % 360}, 85%, 50%)`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function describeModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (response.status === 401) {
    $("key-row").hidden = false;
    $("model").textContent = "this server needs an API key";
    return;
  }
  const m = await response.json();
  $("model").textContent = `${m.weights}: ${m.num_classes} classes, ${m.input_size.width}x${m.input_size.height}, ` +
    `${m.runtime} ${m.precision}`;
}

function visible() {
  if (!state.result) return [];
  const threshold = Number($("conf").value);
  // The model keeps a box when its score is above the threshold: the same rule here. At the floor, all the API
  // gave is shown (JSON rounds scores, so one just above the floor may read as equal to it).
  const passes = (d) => threshold <= FLOOR || d.score > threshold;
  return state.result.detections.filter((d) => passes(d) && !state.hidden.has(d.class_id));
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  if (!state.result) return;
  const scale = Math.min(1, MAX_SIDE / Math.max(state.result.width, state.result.height));
  canvas.width = Math.round(state.result.width * scale);
  canvas.height = Math.round(state.result.height * scale);
  if (state.image) {
    ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  } else {
    ctx.fillStyle = "#dde1e8";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  const shown = visible();
  ctx.lineWidth = Math.max(2, canvas.width / 400);
  ctx.font = `${Math.max(12, Math.round(canvas.width / 60))}px sans-serif`;
  ctx.textBaseline = "bottom";
  for (const d of shown) {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
    ctx.strokeStyle = colour(d.class_id);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const width = ctx.measureText(label).width + 6;
    const height = parseInt(ctx.font, 10) + 4;
    const top = y1 > height ? y1 : y1 + height;
    ctx.fillStyle = colour(d.class_id);
    ctx.fillRect(x1, top - height, width, height);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 3, top - 2);
  }
  $("drawn-boxes").textContent = JSON.stringify(shown);
  $("count").textContent = `${shown.length} of ${state.result.detections.length} boxes shown`;
}

function buildClassToggles() {
  // One toggle per class with a box above the slider (or switched off here), with its count of boxes there.
  const box = $("classes");
  box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Classes" }));
  const threshold = Number($("conf").value);
  const names = new Map(state.result.detections.map((d) => [d.class_id, d.class_name]));
  const counts = new Map([...state.hidden].map((id) => [id, { name: names.get(id), n: 0 }]));
  for (const d of state.result.detections) {
    if (threshold > FLOOR && d.score <= threshold) continue;
    const entry = counts.get(d.class_id) || { name: d.class_name, n: 0 };
    entry.n += 1;
    counts.set(d.class_id, entry);
  }
  const sorted = [...counts.entries()].sort((a, b) => b[1].n - a[1].n || a[0] - b[0]);
  for (const [classId, { name, n }] of sorted) {
    const label = document.createElement("label");
    label.className = "toggle";
    const input = Object.assign(document.createElement("input"), { type: "checkbox" });
    input.checked = !state.hidden.has(classId);
    input.dataset.classId = String(classId);
    input.addEventListener("change", () => {
      if (input.checked) state.hidden.delete(classId); else state.hidden.add(classId);
      draw();
    });
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = colour(classId);
    label.append(input, swatch, document.createTextNode(` ${name} (${n})`));
    box.append(label);
  }
}

async function loadImage(file) {
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  await image.decode();
  return image;
}

async function detect(file) {
  document.body.dataset.state = "busy";
  showError("");
  const form = new FormData();
  form.append("file", file, file.name);
  const started = performance.now();
  try {
    const [image, response] = await Promise.all([
      loadImage(file).catch(() => null), // a format this browser cannot show (TIFF): boxes on a blank canvas
      fetch(`/v1/detect?conf=${FLOOR}`, { method: "POST", body: form, headers: headers() }),
    ]);
    const body = await response.json();
    if (!response.ok) {
      if (response.status === 401) $("key-row").hidden = false;
      throw new Error(`${response.status}: ${body.detail}`);
    }
    const roundTrip = performance.now() - started;
    Object.assign(state, { image, result: body, hidden: new Set() });
    $("time").textContent = `server ${body.time_ms.total.toFixed(1)} ms (inference ${body.time_ms.inference.toFixed(1)}` +
      ` ms, batch of ${body.batch_size}); round trip ${roundTrip.toFixed(0)} ms`;
    buildClassToggles();
    draw();
    document.body.dataset.state = "ready";
  } catch (error) {
    showError(String(error.message || error));
    document.body.dataset.state = "error";
  }
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => e.target.files[0] && detect(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) detect(e.dataTransfer.files[0]);
  });
  $("conf").addEventListener("input", () => {
    $("conf-value").textContent = Number($("conf").value).toFixed(3);
    if (state.result) buildClassToggles();
    draw();
  });
  $("api-key").value = state.apiKey;
  $("api-key").addEventListener("change", () => {
    state.apiKey = $("api-key").value.trim();
    sessionStorage.setItem("yolonas-key", state.apiKey);
    describeModel();
  });
  describeModel().catch((error) => showError(String(error)));
}

setUp();
