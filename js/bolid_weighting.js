// Live preview of the BoLID Gaussian weighting (paper eq. 11-13) on the BoLIDGaussianWeighting node.
//
// After the node has run, its `ui` output carries `bolid_weighting: [{sources, keypoints, image_size,
// preview_size, sigma, sigma_mode, alpha, min_sigma_px, widgets}]`: small copies of the first images (in the
// temp folder) and their keypoints in original pixels. When the sigma, sigma_mode or alpha widgets change, this
// extension recomputes I_w = I * (alpha + (1 - alpha) * W_norm) on a canvas in the browser, without queueing
// the graph. The preview is a DOM widget, which the classic canvas and Nodes 2.0 both show. A drag calls the
// widget's callback in both renderers (redraw at once); a value set any other way is picked up by the node's
// onDrawForeground in the classic canvas and, since Nodes 2.0 calls no canvas hook of a node, by a light
// check every WATCH_MS while the preview is in the page. State lives on the node instance
// (`node.bolidLivePreview`); nothing of LiteGraph is patched.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "BoLIDGaussianWeighting";
const WIDGET_NAME = "bolid_live_preview";
const WATCH_MS = 250;

function viewUrl(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "temp" });
  return api.apiURL(`/view?${q.toString()}`);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.crossOrigin = "anonymous";
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`BoLID live preview: cannot load ${src}`));
    img.src = src;
  });
}

// W_norm at the preview's pixel centres, evaluated in original-image pixels (eq. 11-13), as a Float32Array (h*w).
// Log space with the global maximum subtracted before exp: exact normalisation, no 0/0 for tiny sigma.
export function weightMap(keypoints, imageSize, previewSize, sigmaPx) {
  const [H, W] = imageSize;
  const [h, w] = previewSize;
  const sx = W / w, sy = H / h;
  const inv = 1 / (2 * sigmaPx * sigmaPx);
  const vis = keypoints.filter((p) => p[2] > 0);
  const out = new Float32Array(h * w);
  if (vis.length === 0) return out; // no visible keypoint: W_norm = 0 (I_w = alpha * I)
  const gx = vis.map(([kx]) => Float64Array.from({ length: w }, (_, x) => -(((x + 0.5) * sx - kx) ** 2) * inv));
  const gy = vis.map(([, ky]) => Float64Array.from({ length: h }, (_, y) => -(((y + 0.5) * sy - ky) ** 2) * inv));
  const log = new Float64Array(h * w).fill(-Infinity);
  let top = -Infinity;
  for (let k = 0; k < vis.length; k++) {
    const ax = gx[k], ay = gy[k];
    for (let y = 0; y < h; y++) {
      const row = y * w, by = ay[y];
      for (let x = 0; x < w; x++) {
        const v = ax[x] + by;
        if (v > log[row + x]) log[row + x] = v;
      }
    }
  }
  for (let i = 0; i < log.length; i++) if (log[i] > top) top = log[i];
  for (let i = 0; i < log.length; i++) out[i] = Math.exp(log[i] - top);
  return out;
}

class LivePreview {
  constructor(node) {
    this.node = node;
    this.data = null;
    this.sources = []; // ImageData of each small source image
    this.renderCount = 0;
    this.lastKey = null;
    this.ready = Promise.resolve();
    this.canvas = document.createElement("canvas");
    this.canvas.className = "bolid-live-preview";
    Object.assign(this.canvas.style, { width: "100%", flex: "1 1 auto", minHeight: "0", objectFit: "contain", display: "block" });
    this.label = document.createElement("div");
    Object.assign(this.label.style, { font: "11px sans-serif", color: "#ddd", padding: "2px 4px", flex: "0 0 auto" });
    this.widget = null;
    this.watch = null;
  }

  // Pick up widget values set without a callback while the preview is shown (a no-op when nothing changed).
  startWatch() {
    if (this.watch !== null) return;
    this.watch = setInterval(() => {
      if (this.canvas.isConnected) this.redraw();
    }, WATCH_MS);
  }

  stopWatch() {
    if (this.watch !== null) clearInterval(this.watch);
    this.watch = null;
  }

  ensureWidget() {
    if (this.widget) return;
    const container = document.createElement("div");
    container.className = "bolid-live-preview-widget";
    Object.assign(container.style, { width: "100%", height: "100%", background: "#111", display: "flex", flexDirection: "column" });
    container.append(this.label, this.canvas);
    this.widget = this.node.addDOMWidget(WIDGET_NAME, "bolid_preview", container, {
      serialize: false,
      hideOnZoom: false,
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => 220,
    });
    this.widget.serialize = false;
    const [w, h] = this.node.size;
    this.node.setSize([Math.max(w, 320), Math.max(h, this.node.computeSize()[1] + 40)]);
  }

  widgetValue(name, fallback) {
    const widget = this.node.widgets?.find((wd) => wd.name === name);
    return widget ? widget.value : fallback;
  }

  params() {
    const d = this.data;
    const names = d.widgets || { sigma: "sigma", sigma_mode: "sigma_mode", alpha: "alpha" };
    return {
      sigma: Number(this.widgetValue(names.sigma, d.sigma)),
      mode: String(this.widgetValue(names.sigma_mode, d.sigma_mode)),
      alpha: Number(this.widgetValue(names.alpha, d.alpha)),
    };
  }

  setData(data) {
    this.data = data;
    this.lastKey = null;
    this.ensureWidget();
    this.startWatch();
    this.ready = Promise.all(data.sources.map((ref) => loadImage(viewUrl(ref)))).then((imgs) => {
      const [h, w] = data.preview_size;
      this.sources = imgs.map((img) => {
        const c = document.createElement("canvas");
        c.width = w;
        c.height = h;
        const ctx = c.getContext("2d", { willReadFrequently: true });
        ctx.drawImage(img, 0, 0, w, h);
        return ctx.getImageData(0, 0, w, h);
      });
      this.redraw(true);
    });
    return this.ready;
  }

  // Recompute when the widget values differ from the last drawing (or when forced).
  redraw(force = false) {
    if (!this.data || this.sources.length === 0) return false;
    const { sigma, mode, alpha } = this.params();
    if (!Number.isFinite(sigma) || !Number.isFinite(alpha)) return false;
    const key = `${sigma}|${mode}|${alpha}`;
    if (!force && key === this.lastKey) return false;
    const d = this.data;
    const [H, W] = d.image_size;
    const [h, w] = d.preview_size;
    const sigmaPx = Math.max(mode === "pixels" ? sigma : sigma * Math.min(H, W), d.min_sigma_px || 1e-3);
    const a = Math.min(1, Math.max(0, alpha));
    const n = this.sources.length;
    this.canvas.width = w * n;
    this.canvas.height = h;
    const ctx = this.canvas.getContext("2d");
    for (let i = 0; i < n; i++) {
      const wn = weightMap(d.keypoints[i] || [], d.image_size, d.preview_size, sigmaPx);
      const src = this.sources[i].data;
      const out = ctx.createImageData(w, h);
      for (let p = 0; p < wn.length; p++) {
        const f = a + (1 - a) * wn[p];
        out.data[4 * p] = src[4 * p] * f;
        out.data[4 * p + 1] = src[4 * p + 1] * f;
        out.data[4 * p + 2] = src[4 * p + 2] * f;
        out.data[4 * p + 3] = 255;
      }
      ctx.putImageData(out, i * w, 0);
    }
    this.label.textContent = `live preview: sigma ${sigma} (${mode}), alpha ${a}`;
    this.lastKey = key;
    this.renderCount += 1;
    this.node.setDirtyCanvas?.(true, true);
    return true;
  }
}

function chain(original, extra) {
  return function (...args) {
    const r = original?.apply(this, args);
    extra.apply(this, args);
    return r;
  };
}

app.registerExtension({
  name: "bolid.weightingPreview",
  async nodeCreated(node) {
    if (node.comfyClass !== NODE_TYPE && node.type !== NODE_TYPE) return;
    const preview = new LivePreview(node);
    node.bolidLivePreview = preview;
    node.onExecuted = chain(node.onExecuted, function (message) {
      const data = message?.bolid_weighting?.[0];
      if (data) preview.setData(data);
    });
    // Dragging a widget calls its callback: redraw at once.
    for (const name of ["sigma", "sigma_mode", "alpha"]) {
      const widget = node.widgets?.find((w) => w.name === name);
      if (widget) widget.callback = chain(widget.callback, () => preview.redraw());
    }
    // A value set any other way (a script, an undo) is picked up at the next frame (classic canvas) or by the
    // preview's watch (both renderers).
    node.onDrawForeground = chain(node.onDrawForeground, () => preview.redraw());
    node.onRemoved = chain(node.onRemoved, () => preview.stopWatch());
  },
});
