// zeropath viewer: OpenSeadragon deep zoom of the slide, the tissue class map as a second
// tiled image (same geometry, adjustable opacity) and nucleus outlines drawn on a canvas
// from /api/nuclei for the visible region. Clicking asks /api/hit for the nucleus under the
// pointer and lists its measurements. `window.zp` exposes the state (and `idle()`) for tests.
(function () {
  "use strict";

  const NUCLEI_LIMIT = 20000; // most outlines fetched at once; beyond it: "zoom in"
  const CLICK_RADIUS_PX = 4; // screen pixels of slack around a click

  const $ = (id) => document.getElementById(id);
  const state = {
    stem: null,
    info: null,
    viewer: null,
    slideItem: null,
    tissueItem: null,
    canvas: null,
    showTissue: true,
    showNuclei: true,
    opacity: 0.4,
    nuclei: [],
    paths: [], // Path2D per nucleus class, in level-0 pixel coordinates
    nucleiBox: null,
    nucleiTruncated: false,
    nucleiCount: 0,
    selected: null,
    nucleiLoading: false,
    pending: 0,
    animating: false,
    abort: null,
  };

  // ---------------------------------------------------------------- helpers

  const query = (params) => new URLSearchParams(params).toString();
  const rgb = (c, a) =>
    a === undefined ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${a})`;

  async function getJSON(url, signal) {
    const response = await fetch(url, { signal });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  function formatNumber(v) {
    if (typeof v !== "number" || !isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e7)) return v.toExponential(3);
    return String(Number(v.toPrecision(5)));
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

  // ---------------------------------------------------------------- start-up

  async function init() {
    let slides;
    try {
      ({ slides } = await getJSON("api/slides"));
    } catch (e) {
      showError(`cannot list slides: ${e.message}`);
      return;
    }
    const wanted = new URLSearchParams(location.search).get("stem");
    const stem = slides.some((s) => s.stem === wanted) ? wanted : slides[0].stem;
    const select = $("slide-select");
    if (slides.length > 1) {
      for (const s of slides) select.append(el("option", { value: s.stem }, s.name));
      select.value = stem;
      select.hidden = false;
      select.addEventListener("change", () => {
        const params = new URLSearchParams(location.search); // keeps ?token=
        params.set("stem", select.value);
        location.search = "?" + params.toString();
      });
    }
    $("toggle-tissue").addEventListener("change", (e) => {
      state.showTissue = e.target.checked;
      applyTissue();
    });
    $("tissue-opacity").addEventListener("input", (e) => {
      state.opacity = Number(e.target.value) / 100;
      applyTissue();
    });
    $("toggle-nuclei").addEventListener("change", (e) => {
      state.showNuclei = e.target.checked;
      if (state.showNuclei) refreshNuclei();
      draw();
      updateStatus();
    });
    state.opacity = Number($("tissue-opacity").value) / 100;
    await openSlide(stem);
  }

  async function openSlide(stem) {
    state.stem = stem;
    let info;
    try {
      info = await getJSON("api/info?" + query({ stem }));
    } catch (e) {
      showError(`cannot open ${stem}: ${e.message}`);
      return;
    }
    state.info = info;
    describeSlide(info);
    buildLegend(info);
    for (const message of Object.values(info.errors || {})) showError(message);
    if (info.nuclei && info.nuclei.loading) waitForNuclei();

    const base = `dzi/${encodeURIComponent(stem)}/`;
    const viewer = OpenSeadragon({
      element: $("viewer"),
      prefixUrl: "static/vendor/openseadragon/images/",
      tileSources: base + "slide.dzi",
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
      animationTime: 0.5,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: true },
    });
    state.viewer = viewer;
    viewer.addOnceHandler("open", () => {
      state.slideItem = viewer.world.getItemAt(0);
      if (info.tissue) {
        viewer.addTiledImage({
          tileSource: base + "tissue.dzi",
          x: 0,
          y: 0,
          width: 1,
          opacity: state.showTissue ? state.opacity : 0,
          success: (e) => {
            state.tissueItem = e.item;
            applyTissue();
          },
          error: (e) => showError(`tissue overlay: ${e.message || "failed to load"}`),
        });
      }
      setupCanvas();
      refreshNuclei();
    });
    viewer.addHandler("open-failed", (e) => showError(`cannot open the slide: ${e.message}`));
    viewer.addHandler("animation-start", () => (state.animating = true));
    viewer.addHandler("animation-finish", () => {
      state.animating = false;
      refreshNuclei();
    });
    viewer.addHandler("update-viewport", draw);
    viewer.addHandler("resize", () => {
      resizeCanvas();
      draw();
    });
    viewer.addHandler("canvas-click", onClick);
  }

  function describeSlide(info) {
    const s = info.slide;
    $("slide-info").textContent =
      `${s.name} — ${s.width}×${s.height} px, ${formatNumber(s.mpp)} µm/px` +
      (s.mpp_origin === "default" ? " (assumed)" : "");
    document.title = `${s.name} — zeropath viewer`;
  }

  function legendItem(layer, color, name, count) {
    const item = el(
      "li",
      { class: "legend-item", "data-layer": layer, "data-name": name },
      el("span", { class: "swatch", style: `background:${rgb(color)}` }),
      el("span", { class: "name" }, name),
    );
    if (count !== undefined) item.append(el("span", { class: "count" }, `(${count})`));
    return item;
  }

  function buildLegend(info) {
    const tissue = $("legend-tissue");
    tissue.replaceChildren();
    if (info.tissue) {
      for (const c of info.tissue.classes) {
        if (!c.transparent) tissue.append(legendItem("tissue", c.color, c.name));
      }
    } else {
      $("layer-tissue").classList.add("unavailable");
      $("toggle-tissue").checked = false;
      $("toggle-tissue").disabled = true;
      $("tissue-opacity").disabled = true;
      tissue.append(el("li", { class: "hint" }, "no tissue map"));
    }
    buildNucleiLegend(info);
  }

  function buildNucleiLegend(info) {
    const nuclei = $("legend-nuclei");
    nuclei.replaceChildren();
    if (info.nuclei && info.nuclei.loading) {
      nuclei.append(el("li", { class: "hint" }, "loading nuclei…"));
    } else if (info.nuclei) {
      for (const c of info.nuclei.classes) nuclei.append(legendItem("nuclei", c.color, c.name, c.count));
    } else {
      $("layer-nuclei").classList.add("unavailable");
      $("toggle-nuclei").checked = false;
      $("toggle-nuclei").disabled = true;
      nuclei.append(el("li", { class: "hint" }, "no nuclei"));
    }
  }

  // the nucleus index of a big slide takes a while to read: ask again until it is ready
  async function waitForNuclei() {
    state.nucleiLoading = true;
    try {
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        const info = await getJSON("api/info?" + query({ stem: state.stem }));
        if (info.nuclei && info.nuclei.loading) continue;
        state.info.nuclei = info.nuclei;
        if (info.errors && info.errors.nuclei) showError(info.errors.nuclei);
        break;
      }
    } catch (e) {
      state.info.nuclei = null;
      showError(`nuclei: ${e.message}`);
    } finally {
      state.nucleiLoading = false;
    }
    buildNucleiLegend(state.info);
    refreshNuclei();
    updateStatus();
  }

  // ---------------------------------------------------------------- tissue overlay

  function applyTissue() {
    if (state.tissueItem) state.tissueItem.setOpacity(state.showTissue ? state.opacity : 0);
  }

  // ---------------------------------------------------------------- nuclei overlay

  function setupCanvas() {
    const canvas = el("canvas", {
      id: "nuclei-canvas",
      style: "position:absolute;left:0;top:0;pointer-events:none;",
    });
    state.viewer.canvas.appendChild(canvas);
    state.canvas = canvas;
    resizeCanvas();
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

  // level-0 pixel → element pixel is x * scale + offset (no rotation or flip in this viewer)
  function imageTransform() {
    const item = state.slideItem;
    const p0 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const p1 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1024, 0));
    return { scale: (p1.x - p0.x) / 1024, x: p0.x, y: p0.y };
  }

  function ringPath(path, flat) {
    path.moveTo(flat[0], flat[1]);
    for (let i = 2; i < flat.length; i += 2) path.lineTo(flat[i], flat[i + 1]);
    path.closePath();
  }

  const nucleiReady = () => Boolean(state.info && state.info.nuclei && !state.info.nuclei.loading);

  function buildPaths() {
    const classes = nucleiReady() ? state.info.nuclei.classes : [];
    state.paths = classes.map(() => new Path2D());
    for (const n of state.nuclei) {
      const path = state.paths[n.c];
      if (path) for (const ring of n.rings) ringPath(path, ring);
    }
  }

  function draw() {
    const canvas = state.canvas;
    if (!canvas || !state.slideItem) return;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.showNuclei || !nucleiReady()) return;
    const dpr = window.devicePixelRatio || 1;
    const t = imageTransform();
    ctx.setTransform(t.scale * dpr, 0, 0, t.scale * dpr, t.x * dpr, t.y * dpr);
    ctx.lineJoin = "round";
    state.info.nuclei.classes.forEach((c, i) => {
      const path = state.paths[i];
      if (!path) return;
      ctx.fillStyle = rgb(c.color, 0.25);
      ctx.fill(path);
      ctx.strokeStyle = rgb(c.color);
      ctx.lineWidth = 2 / t.scale;
      ctx.stroke(path);
    });
    if (state.selected) {
      const path = new Path2D();
      for (const ring of state.selected.rings) ringPath(path, ring);
      ctx.strokeStyle = "rgb(255,230,0)";
      ctx.lineWidth = 3 / t.scale;
      ctx.stroke(path);
    }
  }

  function visibleImageBox() {
    const bounds = state.viewer.viewport.getBounds(true);
    const r = state.slideItem.viewportToImageRectangle(bounds);
    return [r.x, r.y, r.x + r.width, r.y + r.height];
  }

  async function refreshNuclei() {
    if (!nucleiReady() || !state.showNuclei || !state.slideItem) return;
    const [x0, y0, x1, y1] = visibleImageBox();
    const W = state.info.slide.width;
    const H = state.info.slide.height;
    const have = state.nucleiBox;
    const covered =
      have &&
      !state.nucleiTruncated &&
      have[0] <= Math.max(x0, 0) &&
      have[1] <= Math.max(y0, 0) &&
      have[2] >= Math.min(x1, W) &&
      have[3] >= Math.min(y1, H);
    if (covered) return;
    // fetch a margin around the view so small pans need no new request
    const mx = (x1 - x0) * 0.25;
    const my = (y1 - y0) * 0.25;
    const box = [
      Math.floor(Math.max(0, x0 - mx)),
      Math.floor(Math.max(0, y0 - my)),
      Math.ceil(Math.min(W, x1 + mx)),
      Math.ceil(Math.min(H, y1 + my)),
    ];
    if (state.abort) state.abort.abort();
    const controller = new AbortController();
    state.abort = controller;
    state.pending++;
    try {
      const params = { stem: state.stem, x0: box[0], y0: box[1], x1: box[2], y1: box[3] };
      params.limit = NUCLEI_LIMIT;
      const res = await getJSON("api/nuclei?" + query(params), controller.signal);
      state.nucleiBox = box;
      state.nucleiTruncated = res.truncated;
      state.nucleiCount = res.count;
      state.nuclei = res.nuclei;
      buildPaths();
      draw();
      updateStatus();
    } catch (e) {
      if (e.name !== "AbortError") showError(`nuclei: ${e.message}`);
    } finally {
      state.pending--;
      if (state.abort === controller) state.abort = null;
    }
  }

  function updateStatus() {
    const status = $("nuclei-status");
    if (!nucleiReady()) status.textContent = "";
    else if (!state.showNuclei) status.textContent = "hidden";
    else if (state.nucleiTruncated)
      status.textContent = `${state.nucleiCount.toLocaleString()} nuclei here — zoom in to draw them`;
    else status.textContent = `${state.nuclei.length} of ${state.info.nuclei.count} nuclei drawn`;
  }

  // ---------------------------------------------------------------- click to measure

  async function onClick(e) {
    if (!e.quick || !state.slideItem || !nucleiReady() || !state.showNuclei) return;
    const p = state.slideItem.viewerElementToImageCoordinates(e.position);
    const radius = CLICK_RADIUS_PX / imageTransform().scale;
    state.pending++;
    try {
      const params = { stem: state.stem, x: p.x.toFixed(2), y: p.y.toFixed(2), r: radius.toFixed(2) };
      const res = await getJSON("api/hit?" + query(params));
      select(res.nucleus);
    } catch (err) {
      showError(`nucleus lookup: ${err.message}`);
    } finally {
      state.pending--;
    }
  }

  function select(nucleus) {
    state.selected = nucleus;
    const panel = $("measurements");
    if (!nucleus) {
      panel.replaceChildren(el("h2", {}, "Nucleus"), el("p", { class: "hint" }, "No nucleus here."));
    } else {
      const c = nucleus.classification;
      const table = el("table", { id: "measurement-table" });
      const row = (name, value) =>
        table.append(el("tr", { "data-name": name }, el("th", {}, name), el("td", {}, value)));
      for (const [name, value] of Object.entries(nucleus.measurements)) row(name, formatNumber(value));
      row("Centroid x, y (px)", nucleus.centroid.map((v) => formatNumber(v)).join(", "));
      panel.replaceChildren(
        el("h2", {}, `Nucleus ${nucleus.id}`),
        el(
          "p",
          { class: "legend-item" },
          el("span", { class: "swatch", style: `background:${rgb(c.color)}` }),
          el("span", { class: "class-name" }, c.name),
        ),
        table,
      );
    }
    draw();
  }

  // ---------------------------------------------------------------- test hooks

  window.zp = {
    state,
    select,
    // true once the view has settled: tiles of visible layers loaded, no request in flight
    idle() {
      const v = state.viewer;
      if (!v || !state.slideItem || state.pending > 0 || state.animating) return false;
      if (state.nucleiLoading) return false;
      if (state.info.tissue && !state.tissueItem) return false;
      for (let i = 0; i < v.world.getItemCount(); i++) {
        const item = v.world.getItemAt(i);
        if (item.getOpacity() > 0 && !item.getFullyLoaded()) return false;
      }
      return true;
    },
  };

  init();
})();
