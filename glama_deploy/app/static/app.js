"use strict";
// glama-deploy app: paint a mask over a photo, send photo + mask to the server, compare and download.
//
// The photo is sent as it was opened (the original file's bytes, or a previous result's PNG), so the
// server decodes exactly what the user chose. The mask lives in `maskCanvas` at the photo's full
// resolution (white = hole); the page shows the photo scaled to fit. Strokes are kept as lists of
// points in full-resolution pixels: undo and clear replay them, whatever the view's scale.

const $ = (id) => document.getElementById(id);

const state = {
  blob: null, // the input as it will be sent
  name: "image.png",
  image: null, // decoded <img>
  width: 0, // full resolution
  height: 0,
  scale: 1, // view pixels per image pixel
  strokes: [], // {erase, size, points: [[x, y], ...]} in image pixels
  current: null, // the stroke being drawn
  tool: "paint",
  busy: false,
  inputUrl: null,
  resultBlob: null,
  resultUrl: null,
};
const maskCanvas = document.createElement("canvas");

// ---------------------------------------------------------------- status line and buttons

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + kind;
}

function setState(name) {
  document.body.dataset.state = name;
}

function updateButtons() {
  const ready = state.image !== null && !state.busy;
  $("run").disabled = !ready;
  $("undo").disabled = !ready || state.strokes.length === 0;
  $("clear").disabled = !ready || state.strokes.length === 0;
  $("again").disabled = state.busy || !state.resultBlob;
  $("paint").classList.toggle("active", state.tool === "paint");
  $("erase").classList.toggle("active", state.tool === "erase");
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "") || "image";
}

// ---------------------------------------------------------------- opening images

// Browsers turn a JPEG by its EXIF orientation; the server, like the CLI, reads the pixels as
// stored. Set the tag to 1 ("as stored") in a copy, so page, mask and server agree on the size.
async function withoutExifRotation(blob) {
  try {
    const head = new Uint8Array(await blob.slice(0, 1 << 17).arrayBuffer());
    const dv = new DataView(head.buffer);
    if (dv.getUint16(0) !== 0xffd8) return [blob, false];
    for (let i = 2; i + 4 <= head.length && head[i] === 0xff; i += 2 + dv.getUint16(i + 2)) {
      const marker = head[i + 1];
      if (marker === 0xda || marker === 0xd9) break; // image data: no EXIF before it
      if (marker !== 0xe1 || dv.getUint32(i + 4) !== 0x45786966) continue; // APP1 "Exif"
      const tiff = i + 10;
      const le = head[tiff] === 0x49; // "II": little-endian
      const ifd = tiff + dv.getUint32(tiff + 4, le);
      for (let k = 0, n = dv.getUint16(ifd, le); k < n; k++) {
        const entry = ifd + 2 + 12 * k;
        if (dv.getUint16(entry, le) !== 0x0112) continue; // Orientation
        if (dv.getUint16(entry + 8, le) === 1) return [blob, false];
        const bytes = new Uint8Array(await blob.arrayBuffer());
        new DataView(bytes.buffer).setUint16(entry + 8, 1, le);
        return [new Blob([bytes], { type: blob.type || "image/jpeg" }), true];
      }
      break;
    }
  } catch {
    /* not a JPEG we can read: the browser and the server decide */
  }
  return [blob, false];
}

async function openBlob(original, name) {
  if (state.busy) return;
  const [blob, unturned] = await withoutExifRotation(original);
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.style.imageOrientation = "none"; // pixels as stored, as the server reads them
  $("decoder").replaceChildren(img);
  try {
    await new Promise((ok, bad) => {
      img.onload = ok;
      img.onerror = bad;
      img.src = url;
    });
  } catch {
    URL.revokeObjectURL(url);
    setStatus(`${name}: not an image this browser can open (use PNG, JPEG, WebP or BMP).`, "error");
    return;
  }
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  Object.assign(state, {
    blob, name, image: img, inputUrl: url, width: img.naturalWidth, height: img.naturalHeight,
    strokes: [], current: null,
  });
  maskCanvas.width = state.width;
  maskCanvas.height = state.height;
  $("input-info").textContent = `${name}, ${state.width}x${state.height}`;
  fit();
  setState("ready");
  const note = unturned ? " (Its EXIF rotation is ignored: shown as stored, as the CLI reads it.)" : "";
  setStatus(`Paint over what should go, then press Run.${note}`);
  updateButtons();
}

async function openSample(name) {
  try {
    const res = await fetch(`/samples/${encodeURIComponent(name)}`);
    if (!res.ok) throw new Error(res.statusText);
    await openBlob(await res.blob(), name);
  } catch (e) {
    setStatus(`${name}: could not load the sample (${e.message}).`, "error");
  }
}

// ---------------------------------------------------------------- view and mask

function fit() {
  if (!state.image) return;
  const stage = $("stage");
  const maxW = Math.max(100, stage.clientWidth - 4);
  const maxH = Math.max(240, window.innerHeight * 0.72);
  const s = Math.min(1, maxW / state.width, maxH / state.height);
  const w = Math.max(1, Math.round(state.width * s));
  const h = Math.max(1, Math.round(state.height * s));
  state.scale = w / state.width;
  for (const c of [$("view"), $("overlay")]) {
    c.width = w;
    c.height = h;
    c.style.width = `${w}px`;
    c.style.height = `${h}px`;
  }
  const view = $("view").getContext("2d");
  view.imageSmoothingQuality = "high";
  view.drawImage(state.image, 0, 0, w, h);
  redraw();
}

// draw `stroke` (from point `from` on) on the full-resolution mask or on the scaled overlay
function paint(ctx, stroke, forMask, from = 0) {
  const pts = stroke.points;
  const scale = forMask ? 1 : state.scale;
  ctx.save();
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  if (forMask) {
    ctx.globalCompositeOperation = "source-over";
    ctx.strokeStyle = ctx.fillStyle = stroke.erase ? "#000" : "#fff";
  } else {
    ctx.globalCompositeOperation = stroke.erase ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#ff2d55";
  }
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = stroke.size;
  ctx.beginPath();
  if (pts.length === 1) {
    ctx.arc(pts[0][0], pts[0][1], stroke.size / 2, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    const start = Math.max(0, from - 1);
    ctx.moveTo(pts[start][0], pts[start][1]);
    for (let i = start + 1; i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.stroke();
  }
  ctx.restore();
}

function redraw() {
  const m = maskCanvas.getContext("2d");
  m.fillStyle = "#000";
  m.fillRect(0, 0, maskCanvas.width, maskCanvas.height);
  const o = $("overlay").getContext("2d");
  o.clearRect(0, 0, o.canvas.width, o.canvas.height);
  for (const s of state.strokes) {
    paint(m, s, true);
    paint(o, s, false);
  }
}

function brushSize() {
  return Number($("size").value);
}

function toImage(ev) {
  const r = $("overlay").getBoundingClientRect();
  return [(ev.clientX - r.left) / state.scale, (ev.clientY - r.top) / state.scale];
}

function moveCursor(ev) {
  const c = $("cursor");
  const overlay = $("overlay");
  const d = brushSize();
  const r = overlay.getBoundingClientRect();
  const sr = $("stage").getBoundingClientRect();
  c.style.width = c.style.height = `${d}px`;
  c.style.left = `${ev.clientX - sr.left - d / 2}px`;
  c.style.top = `${ev.clientY - sr.top - d / 2}px`;
  const inside = ev.clientX >= r.left && ev.clientX <= r.right && ev.clientY >= r.top && ev.clientY <= r.bottom;
  c.style.display = inside && state.image ? "block" : "none";
}

function pointerDown(ev) {
  if (!state.image || state.busy || ev.button !== 0) return;
  $("overlay").setPointerCapture(ev.pointerId);
  state.current = { erase: state.tool === "erase", size: brushSize() / state.scale, points: [toImage(ev)] };
  state.strokes.push(state.current);
  paint(maskCanvas.getContext("2d"), state.current, true);
  paint($("overlay").getContext("2d"), state.current, false);
  updateButtons();
}

function pointerMove(ev) {
  moveCursor(ev);
  if (!state.current) return;
  const pts = state.current.points;
  pts.push(toImage(ev));
  paint(maskCanvas.getContext("2d"), state.current, true, pts.length - 1);
  paint($("overlay").getContext("2d"), state.current, false, pts.length - 1);
}

function pointerUp() {
  state.current = null;
}

function undo() {
  if (state.busy || !state.strokes.length) return;
  state.strokes.pop();
  redraw();
  updateButtons();
}

function clearMask() {
  if (state.busy) return;
  state.strokes = [];
  redraw();
  updateButtons();
}

// ---------------------------------------------------------------- running

async function run() {
  if (!state.image || state.busy) return;
  if (!state.strokes.some((s) => !s.erase)) {
    setStatus("Paint over what should be removed first.", "error");
    return;
  }
  state.busy = true;
  setState("working");
  updateButtons();
  const t0 = performance.now();
  let ahead = 0;
  const tick = () => {
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    const queue = ahead > 0 ? ` (the server has ${ahead} other request${ahead > 1 ? "s" : ""} in its queue)` : "";
    setStatus(`Working… ${secs} s${queue}`, "working");
  };
  tick();
  const timer = setInterval(tick, 200);
  const poll = setInterval(async () => {
    try {
      ahead = Math.max(0, (await (await fetch("/api/status")).json()).pending - 1);
    } catch {
      /* the answer to the run reports problems */
    }
  }, 1000);
  try {
    const maskBlob = await new Promise((ok) => maskCanvas.toBlob(ok, "image/png"));
    const form = new FormData();
    form.append("image", state.blob, state.name);
    form.append("mask", maskBlob, "mask.png");
    form.append("mode", $("mode").value);
    let res;
    try {
      res = await fetch("/api/inpaint", { method: "POST", body: form });
    } catch {
      throw new Error("the server did not answer (is it still running?)");
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try {
        msg = (await res.json()).error || msg;
      } catch {
        /* not JSON: keep the status line */
      }
      throw new Error(msg);
    }
    const blob = await res.blob();
    const total = (performance.now() - t0) / 1000;
    showResult(blob, res.headers.get("X-Glama-Mode"), Number(res.headers.get("X-Glama-Seconds")),
      res.headers.get("X-Glama-Size"), total);
  } catch (e) {
    setState("ready");
    setStatus(`Error: ${e.message}`, "error");
  } finally {
    clearInterval(timer);
    clearInterval(poll);
    state.busy = false;
    updateButtons();
  }
}

function showResult(blob, mode, modelSeconds, size, total) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultBlob = blob;
  state.resultUrl = URL.createObjectURL(blob);
  $("after").src = state.resultUrl;
  $("before").src = state.inputUrl;
  const link = $("download");
  link.href = state.resultUrl;
  link.download = `${stem(state.name)}-inpainted.png`;
  $("result-info").textContent = `${size}, ${mode} mode`;
  $("result").hidden = false;
  setSplit();
  fit();
  setState("done");
  setStatus(`Done in ${total.toFixed(2)} s: ${mode} mode, ${size} (model ${modelSeconds.toFixed(2)} s). ` +
    "Drag the slider to compare; download, or use the result as the new input.");
  document.body.dataset.mode = mode;
}

function setSplit() {
  const v = Number($("split").value);
  $("before").style.clipPath = `inset(0 ${100 - v}% 0 0)`;
  $("split-line").style.left = `${v}%`;
}

function again() {
  if (!state.resultBlob || state.busy) return;
  $("result").hidden = true;
  openBlob(state.resultBlob, `${stem(state.name)}-inpainted.png`);
}

// ---------------------------------------------------------------- wiring

async function loadSamples() {
  try {
    const info = await (await fetch("/api/status")).json();
    for (const name of info.samples) {
      const b = document.createElement("button");
      b.textContent = stem(name);
      b.title = `Open the sample photo ${name}`;
      b.addEventListener("click", () => openSample(name));
      $("samples").append(b);
    }
    document.title += ` (${info.engine.engine})`;
  } catch {
    setStatus("The server did not answer.", "error");
  }
}

function setTool(tool) {
  state.tool = tool;
  updateButtons();
}

function init() {
  const hidden = document.createElement("div"); // decoded images live here, so CSS applies to them
  hidden.id = "decoder";
  hidden.style.cssText = "position:absolute;width:0;height:0;overflow:hidden";
  document.body.append(hidden);

  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (f) openBlob(f, f.name);
    ev.target.value = "";
  });
  const stage = $("stage");
  document.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    stage.classList.add("dragover");
  });
  document.addEventListener("dragleave", () => stage.classList.remove("dragover"));
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("dragover");
    const f = ev.dataTransfer.files[0];
    if (f) openBlob(f, f.name);
  });
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", pointerDown);
  overlay.addEventListener("pointermove", pointerMove);
  overlay.addEventListener("pointerup", pointerUp);
  overlay.addEventListener("pointercancel", pointerUp);
  overlay.addEventListener("pointerleave", () => ($("cursor").style.display = "none"));
  $("paint").addEventListener("click", () => setTool("paint"));
  $("erase").addEventListener("click", () => setTool("erase"));
  $("size").addEventListener("input", () => ($("size-out").value = $("size").value));
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearMask);
  $("run").addEventListener("click", run);
  $("split").addEventListener("input", setSplit);
  $("again").addEventListener("click", again);
  window.addEventListener("resize", fit);
  document.addEventListener("keydown", (ev) => {
    const tag = ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT") return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") {
      ev.preventDefault();
      undo();
    } else if (ev.key === "[" || ev.key === "]") {
      const s = $("size");
      s.value = Number(s.value) + (ev.key === "]" ? 5 : -5);
      $("size-out").value = s.value;
    } else if (ev.key === "b") setTool("paint");
    else if (ev.key === "e") setTool("erase");
    else if (ev.key === "Enter" && tag !== "BUTTON" && tag !== "A") run(); // a focused button takes its own Enter
  });
  updateButtons();
  loadSamples();
}

init();
