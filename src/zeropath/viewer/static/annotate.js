// zeropath annotate: label the regions an active-learning run queued.
//
// The image is shown with OpenSeadragon (the server's Deep Zoom pyramid of the whole image),
// zoomed to the region's box with some context. The labels live in `state.labels`, one byte
// per pixel of the box (class index, or `region.empty`); brush strokes and polygons are
// rasterised straight into it, in box pixel coordinates, so what is saved is exactly what was
// painted whatever the zoom. An offscreen canvas of the box's size holds its colours, and a
// canvas over the viewer redraws it with OpenSeadragon's current image → screen transform.
// Save posts the labels as run lengths; the server validates them and writes ID.mask.png.
// Unpainted pixels hold `region.empty` (255). Unless the queue names an `unlabelled` value
// (partial masks allowed), the loop needs a class for every pixel and Save says how many
// are left; "Fill unlabelled" (F) gives them the current class.
// Writes carry the server's token, which `zeropath view` put in this page's URL (?token=);
// the server refuses writes without it (other web pages cannot know it).
// `window.zp` exposes the state (and `idle()`, `maskToClient()`) for tests.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TOKEN = new URLSearchParams(location.search).get("token") || "";
  const state = {
    queue: null, // /api/annotate/queue
    region: null, // /api/annotate/regions/<id>
    viewer: null,
    item: null,
    dzi: null,
    canvas: null,
    W: 0,
    H: 0,
    labels: null, // Uint8Array(W * H)
    display: null, // offscreen canvas W×H with the class colours
    displayCtx: null,
    pixels: null, // ImageData(W, H) behind `display`
    lut: new Uint8ClampedArray(256 * 4),
    keys: new Map(), // shortcut key → class value
    value: null, // the class painted now (region.empty = eraser)
    tool: "brush",
    spacePan: false,
    brush: 12, // brush diameter in image pixels
    opacity: 0.5,
    undo: [],
    dirty: false,
    stroke: null, // last brush point of the stroke being painted
    polygon: [], // vertices (box pixel coordinates) of the polygon being drawn
    pointer: null, // pointer position in viewer element pixels
    lastClick: null, // {position, time} of the last polygon click
    pending: 0,
    opening: false,
    animating: false,
    saving: false,
    drawQueued: false,
  };

  // ---------------------------------------------------------------- helpers

  const rgb = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;
  const regionUrl = (id, tail) => `api/annotate/regions/${encodeURIComponent(id)}${tail || ""}`;

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function showError(message) {
    const box = $("errors");
    box.textContent = (box.textContent ? box.textContent + "\n" : "") + message;
  }

  function setStatus(text, kind) {
    const status = $("save-status");
    status.textContent = text;
    status.className = kind || "";
  }

  const activeTool = () => (state.spacePan ? "pan" : state.tool);
  const ready = () => Boolean(state.labels && state.item && !state.opening);

  // ---------------------------------------------------------------- start-up

  async function init() {
    try {
      state.queue = await getJSON("api/annotate/queue");
    } catch (e) {
      showError(`cannot read the queue: ${e.message}`);
      return;
    }
    for (const w of state.queue.warnings || []) showError(w);
    wireControls();
    renderQueue();
    const regions = state.queue.regions;
    if (!regions.length) {
      $("region-info").textContent = "The queue is empty: nothing to label.";
      return;
    }
    const wanted = new URLSearchParams(location.search).get("id");
    const first =
      regions.find((r) => r.id === wanted) || regions.find((r) => !r.done) || regions[0];
    await openRegion(first.id);
  }

  function wireControls() {
    for (const button of document.querySelectorAll("[data-tool]")) {
      button.addEventListener("click", () => setTool(button.dataset.tool));
    }
    $("brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
    $("mask-opacity").addEventListener("input", (e) => {
      state.opacity = Number(e.target.value) / 100;
      scheduleDraw();
    });
    state.opacity = Number($("mask-opacity").value) / 100;
    $("undo").addEventListener("click", undo);
    $("fill").addEventListener("click", fillUnlabelled);
    $("clear").addEventListener("click", clearAll);
    $("save").addEventListener("click", () => save());
    $("prev").addEventListener("click", () => step(-1));
    $("next").addEventListener("click", () => step(1));
    window.addEventListener("keydown", onKeyDown, true);
    window.addEventListener("keyup", onKeyUp, true);
    window.addEventListener("blur", () => setSpacePan(false));
    window.addEventListener("beforeunload", (e) => {
      if (state.dirty) {
        e.preventDefault();
        e.returnValue = "";
      }
    });
    setTool("brush");
  }

  // ---------------------------------------------------------------- queue and regions

  function renderQueue() {
    const q = state.queue;
    const list = $("queue-list");
    list.replaceChildren();
    for (const r of q.regions) {
      const label = r.round === undefined ? r.id : `${r.id} (round ${r.round})`;
      const item = el("li", { "data-id": r.id }, label);
      if (r.done) item.classList.add("done");
      if (state.region && r.id === state.region.id) item.classList.add("current");
      item.addEventListener("click", () => goTo(r.id));
      list.append(item);
    }
    q.done = q.regions.filter((r) => r.done).length;
    $("progress").textContent = `${q.done} / ${q.regions.length} done`;
  }

  async function refreshQueue() {
    try {
      state.queue = await getJSON("api/annotate/queue");
      renderQueue();
    } catch (e) {
      showError(`cannot read the queue: ${e.message}`);
    }
  }

  function step(delta) {
    const r = state.region;
    if (!r) return;
    const id = delta < 0 ? r.previous : r.next;
    if (id) goTo(id);
  }

  function goTo(id) {
    if (state.region && id === state.region.id) return;
    if (state.dirty && !confirm("This region has unsaved labels. Leave it without saving?")) return;
    openRegion(id);
  }

  async function openRegion(id) {
    state.opening = true;
    state.pending++;
    try {
      const [region, mask] = await Promise.all([
        getJSON(regionUrl(id)),
        getJSON(regionUrl(id, "/mask")),
      ]);
      state.region = region;
      setupLabels(region, mask);
      buildPicker(region);
      describeRegion(region);
      renderQueue();
      const search = new URLSearchParams(TOKEN ? { token: TOKEN, id } : { id });
      history.replaceState(null, "", "?" + search.toString());
      await showImage(region.dzi);
      fitRegion(true);
      if (region.done) setStatus("saved earlier", "saved");
      else setStatus(partial() ? "not saved yet" : "not saved yet — every pixel needs a class", "");
    } catch (e) {
      showError(`cannot open region ${id}: ${e.message}`);
    } finally {
      state.opening = false;
      state.pending--;
      scheduleDraw();
    }
  }

  function describeRegion(r) {
    const [x0, y0, x1, y1] = r.box;
    $("region-title").textContent = `${r.id} — ${r.image_name}`;
    const round = r.round === null || r.round === undefined ? "" : `, round ${r.round}`;
    $("region-info").textContent =
      `${r.position + 1} of ${r.total}: ${r.image_name}, box (${x0}, ${y0})–(${x1}, ${y1}), ` +
      `${r.width}×${r.height} px${round}` +
      (r.inside ? "" : " — partly outside the image");
    $("prev").disabled = !r.previous;
    $("next").disabled = !r.next;
    document.title = `${r.id} — zeropath annotate`;
  }

  function setupLabels(region, mask) {
    const W = region.width;
    const H = region.height;
    state.W = W;
    state.H = H;
    const labels = new Uint8Array(W * H);
    const rle = mask.rle;
    let at = 0;
    for (let i = 0; i < rle.length; i += 2) {
      labels.fill(rle[i], at, at + rle[i + 1]);
      at += rle[i + 1];
    }
    if (at !== W * H) throw new Error("the saved mask does not cover the region");
    state.labels = labels;
    state.undo = [];
    state.dirty = false;
    state.stroke = null;
    state.polygon = [];
    // colours: class colours opaque (the canvas is drawn with the opacity), unlabelled clear
    state.lut.fill(0);
    for (let v = 0; v < 256; v++) state.lut.set([255, 0, 255, 255], v * 4); // not a class
    state.lut.set([0, 0, 0, 0], region.empty * 4);
    for (const c of region.classes) state.lut.set([c.color[0], c.color[1], c.color[2], 255], c.index * 4);
    const display = document.createElement("canvas");
    display.width = W;
    display.height = H;
    state.display = display;
    state.displayCtx = display.getContext("2d");
    state.pixels = state.displayCtx.createImageData(W, H);
    refreshDisplay(0, 0, W, H);
    const slider = $("brush-size");
    slider.max = String(Math.max(20, Math.ceil(Math.max(W, H) / 2)));
    setBrush(Math.min(state.brush, Number(slider.max)));
    $("undo").disabled = true;
  }

  function buildPicker(region) {
    const picker = $("class-picker");
    picker.replaceChildren();
    state.keys.clear();
    const byIndex = region.classes.every((c) => c.index <= 9);
    region.classes.forEach((c, pos) => {
      const key = byIndex ? String(c.index) : pos < 9 ? String(pos + 1) : "";
      if (key) state.keys.set(key, c.index);
      picker.append(pickerItem(c.index, c.name, key, rgb(c.color)));
    });
    picker.append(pickerItem(region.empty, partial() ? "eraser (unlabelled)" : "eraser", "E", null));
    const still = region.classes.some((c) => c.index === state.value);
    const first = region.classes.find((c) => c.index !== 0) || region.classes[0];
    selectValue(still ? state.value : first.index);
  }

  function pickerItem(value, name, key, color) {
    const swatch = color
      ? el("span", { class: "swatch", style: `background:${color}` })
      : el("span", { class: "swatch eraser" });
    const item = el(
      "li",
      { "data-value": String(value), title: key ? `key ${key}` : "" },
      el("span", { class: "key" }, key || "·"),
      swatch,
      el("span", { class: "name" }, name),
    );
    item.addEventListener("click", () => selectValue(value));
    return item;
  }

  function selectValue(value) {
    state.value = value;
    for (const item of $("class-picker").children) {
      item.classList.toggle("active", Number(item.dataset.value) === value);
    }
  }

  function setTool(tool) {
    if (tool !== "polygon") state.polygon = [];
    state.tool = tool;
    for (const button of document.querySelectorAll("[data-tool]")) {
      button.classList.toggle("active", button.dataset.tool === tool);
    }
    updateCursor();
    scheduleDraw();
  }

  function setSpacePan(on) {
    if (state.spacePan === on) return;
    state.spacePan = on;
    updateCursor();
    scheduleDraw();
  }

  function updateCursor() {
    const box = $("viewer");
    for (const t of ["brush", "polygon", "pan"]) box.classList.toggle(`tool-${t}`, activeTool() === t);
  }

  function setBrush(size) {
    const slider = $("brush-size");
    size = Math.max(1, Math.min(Number(slider.max), Math.round(size)));
    state.brush = size;
    slider.value = String(size);
    $("brush-size-value").textContent = `${size} px`;
    scheduleDraw();
  }

  // ---------------------------------------------------------------- the image

  function showImage(dzi) {
    if (state.viewer && state.dzi === dzi && state.item) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (!state.viewer) createViewer(dzi);
      else state.viewer.open(dzi);
      state.dzi = dzi;
      state.item = null;
      state.viewer.addOnceHandler("open", () => {
        state.item = state.viewer.world.getItemAt(0);
        resolve();
      });
      state.viewer.addOnceHandler("open-failed", (e) => reject(new Error(e.message || "open failed")));
    });
  }

  function createViewer(dzi) {
    const viewer = OpenSeadragon({
      element: $("viewer"),
      prefixUrl: "static/vendor/openseadragon/images/",
      tileSources: dzi,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: false,
      maxZoomPixelRatio: 16,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.2,
      animationTime: 0.3,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: false, flickEnabled: false },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: false, flickEnabled: false },
    });
    state.viewer = viewer;
    // "home" goes back to the region, not the whole image
    viewer.viewport.goHome = (immediately) => fitRegion(immediately);
    const canvas = el("canvas", {
      id: "mask-canvas",
      style: "position:absolute;left:0;top:0;pointer-events:none;",
    });
    viewer.canvas.appendChild(canvas);
    state.canvas = canvas;
    resizeCanvas();
    viewer.addHandler("animation-start", () => (state.animating = true));
    viewer.addHandler("animation-finish", () => (state.animating = false));
    viewer.addHandler("update-viewport", draw);
    viewer.addHandler("resize", () => {
      resizeCanvas();
      draw();
    });
    viewer.addHandler("canvas-press", onPress);
    viewer.addHandler("canvas-drag", onDrag);
    viewer.addHandler("canvas-release", onRelease);
    viewer.addHandler("canvas-click", onClick);
    viewer.addHandler("canvas-double-click", onDoubleClick);
    viewer.addHandler("canvas-exit", () => {
      state.pointer = null;
      scheduleDraw();
    });
    viewer.canvas.addEventListener("pointermove", (e) => {
      const r = viewer.canvas.getBoundingClientRect();
      state.pointer = new OpenSeadragon.Point(e.clientX - r.left, e.clientY - r.top);
      if (activeTool() !== "pan") scheduleDraw();
    });
  }

  function fitRegion(immediately) {
    const r = state.region;
    if (!r || !state.item) return;
    const [x0, y0, x1, y1] = r.box;
    const m = Math.max(16, 0.2 * Math.max(x1 - x0, y1 - y0));
    const rect = state.item.imageToViewportRectangle(
      new OpenSeadragon.Rect(x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m),
    );
    state.viewer.viewport.fitBounds(rect, Boolean(immediately));
  }

  function resizeCanvas() {
    const canvas = state.canvas;
    if (!canvas) return;
    const dpr = window.devicePixelRatio || 1;
    const box = state.viewer.container;
    canvas.width = Math.round(box.clientWidth * dpr);
    canvas.height = Math.round(box.clientHeight * dpr);
    canvas.style.width = `${box.clientWidth}px`;
    canvas.style.height = `${box.clientHeight}px`;
  }

  // image level-0 pixel → viewer element pixel is x * scale + offset (no rotation or flip)
  function imageTransform() {
    const item = state.item;
    const p0 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const p1 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1024, 0));
    return { scale: (p1.x - p0.x) / 1024, x: p0.x, y: p0.y };
  }

  // viewer element pixel → box pixel coordinates (continuous: pixel i covers [i, i + 1))
  function toMask(position) {
    const p = state.item.viewerElementToImageCoordinates(position);
    return { x: p.x - state.region.box[0], y: p.y - state.region.box[1] };
  }

  // ---------------------------------------------------------------- drawing on screen

  function scheduleDraw() {
    if (state.drawQueued) return;
    state.drawQueued = true;
    requestAnimationFrame(() => {
      state.drawQueued = false;
      draw();
    });
  }

  function draw() {
    const canvas = state.canvas;
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.item || !state.region || !state.display) return;
    const dpr = window.devicePixelRatio || 1;
    const t = imageTransform();
    const [bx, by] = state.region.box;
    const sx = t.x + bx * t.scale; // the box's top-left corner on screen
    const sy = t.y + by * t.scale;
    // the labels, one box pixel per image pixel, without smoothing
    ctx.save();
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = state.opacity;
    ctx.setTransform(t.scale * dpr, 0, 0, t.scale * dpr, sx * dpr, sy * dpr);
    ctx.drawImage(state.display, 0, 0);
    ctx.restore();
    // the box outline, in screen pixels
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const w = state.W * t.scale;
    const h = state.H * t.scale;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.9)";
    ctx.strokeRect(sx - 1.5, sy - 1.5, w + 3, h + 3);
    ctx.lineWidth = 1.5;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "rgb(20,20,20)";
    ctx.strokeRect(sx - 1.5, sy - 1.5, w + 3, h + 3);
    ctx.setLineDash([]);
    const colour = valueColour(state.value);
    // the polygon being drawn, with a rubber band to the pointer
    if (state.polygon.length) {
      const pts = state.polygon.map((v) => [sx + v.x * t.scale, sy + v.y * t.scale]);
      ctx.beginPath();
      ctx.moveTo(pts[0][0], pts[0][1]);
      for (const [x, y] of pts.slice(1)) ctx.lineTo(x, y);
      if (state.pointer && activeTool() === "polygon") ctx.lineTo(state.pointer.x, state.pointer.y);
      ctx.lineWidth = 2;
      ctx.strokeStyle = colour;
      ctx.stroke();
      ctx.fillStyle = "#fff";
      for (const [x, y] of pts) {
        ctx.fillRect(x - 3, y - 3, 6, 6);
        ctx.strokeRect(x - 3, y - 3, 6, 6);
      }
    }
    // the brush outline under the pointer
    if (state.pointer && activeTool() === "brush") {
      ctx.beginPath();
      ctx.arc(state.pointer.x, state.pointer.y, Math.max(1, (state.brush / 2) * t.scale), 0, 2 * Math.PI);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = colour;
      ctx.stroke();
    }
  }

  function valueColour(value) {
    const c = state.region && state.region.classes.find((k) => k.index === value);
    return c ? rgb(c.color) : "rgb(80,80,80)";
  }

  // ---------------------------------------------------------------- painting the labels

  // recolour the offscreen canvas inside [x0, x1) × [y0, y1)
  function refreshDisplay(x0, y0, x1, y1) {
    x0 = Math.max(0, Math.floor(x0));
    y0 = Math.max(0, Math.floor(y0));
    x1 = Math.min(state.W, Math.ceil(x1));
    y1 = Math.min(state.H, Math.ceil(y1));
    if (x1 <= x0 || y1 <= y0) return;
    const data = state.pixels.data;
    const lut = state.lut;
    const labels = state.labels;
    for (let y = y0; y < y1; y++) {
      for (let x = x0, i = y * state.W + x0; x < x1; x++, i++) {
        const j = 4 * i;
        const k = 4 * labels[i];
        data[j] = lut[k];
        data[j + 1] = lut[k + 1];
        data[j + 2] = lut[k + 2];
        data[j + 3] = lut[k + 3];
      }
    }
    state.displayCtx.putImageData(state.pixels, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  // every pixel whose centre lies within the brush radius of the segment a–b
  function paintSegment(a, b) {
    const r = Math.max(state.brush / 2, Math.SQRT1_2);
    const value = state.value;
    const W = state.W;
    const labels = state.labels;
    const x0 = Math.max(0, Math.floor(Math.min(a.x, b.x) - r));
    const y0 = Math.max(0, Math.floor(Math.min(a.y, b.y) - r));
    const x1 = Math.min(W, Math.ceil(Math.max(a.x, b.x) + r) + 1);
    const y1 = Math.min(state.H, Math.ceil(Math.max(a.y, b.y) + r) + 1);
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len2 = dx * dx + dy * dy;
    const r2 = r * r;
    for (let y = y0; y < y1; y++) {
      const py = y + 0.5;
      for (let x = x0; x < x1; x++) {
        const px = x + 0.5;
        let u = len2 > 0 ? ((px - a.x) * dx + (py - a.y) * dy) / len2 : 0;
        u = u < 0 ? 0 : u > 1 ? 1 : u;
        const ex = a.x + u * dx - px;
        const ey = a.y + u * dy - py;
        if (ex * ex + ey * ey <= r2) labels[y * W + x] = value;
      }
    }
    refreshDisplay(x0, y0, x1, y1);
  }

  // every pixel whose centre lies inside the polygon (even-odd rule)
  function fillPolygon(vertices) {
    const value = state.value;
    const W = state.W;
    const labels = state.labels;
    const ys = vertices.map((v) => v.y);
    const yFrom = Math.max(0, Math.floor(Math.min(...ys)));
    const yTo = Math.min(state.H, Math.ceil(Math.max(...ys)) + 1);
    let xMin = W;
    let xMax = 0;
    for (let y = yFrom; y < yTo; y++) {
      const py = y + 0.5;
      const xs = [];
      for (let i = 0, j = vertices.length - 1; i < vertices.length; j = i++) {
        const a = vertices[j];
        const b = vertices[i];
        if (a.y <= py !== b.y <= py) xs.push(a.x + ((py - a.y) * (b.x - a.x)) / (b.y - a.y));
      }
      xs.sort((p, q) => p - q);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        // pixel x is inside when its centre x + 0.5 lies in [xs[k], xs[k + 1])
        const from = Math.max(0, Math.ceil(xs[k] - 0.5));
        const to = Math.min(W, Math.ceil(xs[k + 1] - 0.5));
        if (to > from) {
          labels.fill(value, y * W + from, y * W + to);
          xMin = Math.min(xMin, from);
          xMax = Math.max(xMax, to);
        }
      }
    }
    refreshDisplay(xMin, yFrom, xMax, yTo);
  }

  function maxUndo() {
    return Math.max(3, Math.min(50, Math.floor(64e6 / Math.max(1, state.W * state.H))));
  }

  function beginEdit() {
    state.undo.push(state.labels.slice());
    if (state.undo.length > maxUndo()) state.undo.shift();
    $("undo").disabled = false;
  }

  function changed() {
    state.dirty = true;
    const left = partial() ? 0 : unpainted();
    setStatus(
      left ? `unsaved changes — ${left.toLocaleString()} pixels still unlabelled` : "unsaved changes",
      "unsaved",
    );
    scheduleDraw();
  }

  // may pixels stay unlabelled? (only if the queue names a value for them)
  const partial = () => Boolean(state.region) && state.region.unlabelled !== null;

  function unpainted() {
    const e = state.region.empty;
    let n = 0;
    for (const v of state.labels) if (v === e) n++;
    return n;
  }

  function undo() {
    if (state.polygon.length) {
      state.polygon.pop();
      scheduleDraw();
      return;
    }
    if (!state.undo.length || !state.labels) return;
    state.labels = state.undo.pop();
    refreshDisplay(0, 0, state.W, state.H);
    $("undo").disabled = state.undo.length === 0;
    changed();
  }

  function fillUnlabelled() {
    if (!ready() || state.value === state.region.empty) return;
    beginEdit();
    const u = state.region.empty;
    const labels = state.labels;
    for (let i = 0; i < labels.length; i++) if (labels[i] === u) labels[i] = state.value;
    refreshDisplay(0, 0, state.W, state.H);
    changed();
  }

  function clearAll() {
    if (!ready()) return;
    beginEdit();
    state.labels.fill(state.region.empty);
    refreshDisplay(0, 0, state.W, state.H);
    changed();
  }

  // ---------------------------------------------------------------- pointer and polygon

  function onPress(e) {
    if (!ready() || activeTool() !== "brush") return;
    beginEdit();
    const p = toMask(e.position);
    state.stroke = p;
    paintSegment(p, p);
    changed();
  }

  function onDrag(e) {
    if (!ready() || activeTool() === "pan") return;
    e.preventDefaultAction = true; // paint, do not pan
    state.pointer = e.position;
    if (activeTool() === "brush" && state.stroke) {
      const p = toMask(e.position);
      paintSegment(state.stroke, p);
      state.stroke = p;
    }
    scheduleDraw();
  }

  function onRelease() {
    state.stroke = null;
  }

  function onClick(e) {
    if (activeTool() === "pan") return;
    e.preventDefaultAction = true;
    if (!ready() || activeTool() !== "polygon" || !e.quick) return;
    const p = toMask(e.position);
    const poly = state.polygon;
    const scale = imageTransform().scale;
    // a second click on the same spot (a double-click), or a click on the first vertex,
    // closes the polygon; OpenSeadragon's own double-click pairs clicks up two by two, so
    // quick clicks on different vertices would hide a double-click from it
    const now = performance.now();
    const last = state.lastClick;
    state.lastClick = { position: e.position, time: now };
    const again = last && now - last.time < 500 && last.position.distanceTo(e.position) < 6;
    const onFirst = poly.length >= 3 && Math.hypot(p.x - poly[0].x, p.y - poly[0].y) * scale < 6;
    if (poly.length && (again || onFirst)) {
      state.lastClick = null;
      closePolygon();
      return;
    }
    poly.push(p);
    scheduleDraw();
  }

  function onDoubleClick(e) {
    if (activeTool() === "pan") return;
    e.preventDefaultAction = true; // no zoom; the clicks themselves closed the polygon
  }

  function closePolygon() {
    if (!ready() || !state.polygon.length) return;
    // a double-click adds the same vertex twice: drop vertices on top of the previous one
    const scale = imageTransform().scale;
    const poly = [];
    for (const v of state.polygon) {
      const last = poly[poly.length - 1];
      if (!last || Math.hypot(v.x - last.x, v.y - last.y) * scale >= 4) poly.push(v);
    }
    state.polygon = [];
    if (poly.length < 3) {
      setStatus("a polygon needs at least three vertices", state.dirty ? "unsaved" : "");
      scheduleDraw();
      return;
    }
    beginEdit();
    fillPolygon(poly);
    changed();
  }

  // ---------------------------------------------------------------- saving

  function rleEncode(a) {
    const out = [];
    if (!a.length) return out;
    let v = a[0];
    let n = 0;
    for (let i = 0; i < a.length; i++) {
      if (a[i] === v) n++;
      else {
        out.push(v, n);
        v = a[i];
        n = 1;
      }
    }
    out.push(v, n);
    return out;
  }

  async function save() {
    if (!ready() || state.saving) return false;
    const region = state.region;
    const left = unpainted();
    if (!partial() && left) {
      // the run reads complete masks: every pixel needs a class
      const name = region.classes.find((c) => c.index === state.value);
      const hint = name ? ` (F fills them with “${name.name}”)` : "";
      setStatus(`not saved: ${left.toLocaleString()} pixels are still unlabelled${hint}`, "unsaved");
      return false;
    }
    if (left === state.labels.length && !confirm("Nothing is labelled here. Save anyway?"))
      return false;
    state.saving = true;
    state.pending++;
    setStatus("saving…", "");
    try {
      const body = JSON.stringify({ width: state.W, height: state.H, rle: rleEncode(state.labels) });
      const res = await getJSON(regionUrl(region.id, "/mask"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Zeropath-Token": TOKEN },
        body,
      });
      if (state.region === region) {
        state.dirty = false;
        region.done = true;
        setStatus(`saved — ${res.labelled.toLocaleString()} labelled pixels`, "saved");
      }
      await refreshQueue();
      return true;
    } catch (e) {
      setStatus(`not saved: ${e.message}`, "unsaved");
      return false;
    } finally {
      state.saving = false;
      state.pending--;
    }
  }

  // ---------------------------------------------------------------- keyboard

  function onKeyDown(e) {
    const target = e.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT")) return;
    if (target && target.tagName === "INPUT" && target.type !== "range") return;
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key;
    let handled = true;
    if (mod && (key === "z" || key === "Z")) undo();
    else if (mod && (key === "s" || key === "S")) save();
    else if (mod || e.altKey) handled = false;
    else if (state.keys.has(key)) selectValue(state.keys.get(key));
    else if (key === "e" || key === "E") state.region && selectValue(state.region.empty);
    else if (key === "b" || key === "B") setTool("brush");
    else if (key === "p" || key === "P") setTool("polygon");
    else if (key === "h" || key === "H") setTool("pan");
    else if (key === " ") {
      if (!e.repeat) setSpacePan(true);
    } else if (key === "s" || key === "S") save();
    else if (key === "z" || key === "Z") undo();
    else if (key === "f" || key === "F") fillUnlabelled();
    else if (key === "n") step(1);
    else if (key === "N") step(-1);
    else if (key === "[") setBrush(Math.min(state.brush - 1, state.brush / 1.25));
    else if (key === "]") setBrush(Math.max(state.brush + 1, state.brush * 1.25));
    else if (key === "Enter" && state.polygon.length) closePolygon();
    else if (key === "Escape" && state.polygon.length) {
      state.polygon = [];
      scheduleDraw();
    } else if (key === "Backspace" && state.polygon.length) {
      state.polygon.pop();
      scheduleDraw();
    } else handled = false;
    if (handled) {
      e.preventDefault();
      e.stopPropagation(); // not to OpenSeadragon's own keys (w/a/s/d pan, r rotate …)
    }
  }

  function onKeyUp(e) {
    if (e.key === " ") setSpacePan(false);
  }

  // ---------------------------------------------------------------- test hooks

  window.zp = {
    state,
    openRegion,
    save,
    // true once the region is open, its tiles are loaded and no request is in flight
    idle() {
      const v = state.viewer;
      if (!v || !state.item || state.pending > 0 || state.opening || state.animating) return false;
      return state.item.getFullyLoaded();
    },
    // page (client) coordinates of box pixel coordinates (x, y)
    maskToClient(x, y) {
      const [bx, by] = state.region.box;
      const p = state.item.imageToViewerElementCoordinates(new OpenSeadragon.Point(bx + x, by + y));
      const r = state.viewer.element.getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y };
    },
  };

  init();
})();
