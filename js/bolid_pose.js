// Keypoint overlay on the BoLIDPoseKeypoints node: the chosen person's skeleton for each image of the batch
// (up to 16), drawn from the node's `ui` output `bolid_pose: [{keypoints, found, image_size, skeleton, names}]`,
// with the images where no person was found marked, so a long batch's failures are seen at a glance.
// A DOM widget, so it shows in the classic canvas and in Nodes 2.0 alike (Nodes 2.0 draws no node through
// canvas hooks). State lives on the node instance (`node.bolidPoseOverlay`); nothing of LiteGraph is patched.

import { app } from "../../scripts/app.js";

const NODE_TYPE = "BoLIDPoseKeypoints";
const WIDGET_NAME = "bolid_pose_overlay";
const MAX_SHOWN = 16;
const LIMB_COLOURS = ["#00c8ff", "#00c8ff", "#3c5aff", "#3c5aff", "#28dc5a", "#28dc5a", "#28dc5a", "#28dc5a",
  "#ffaa00", "#ff3c3c", "#ffaa00", "#ff3c3c", "#ff50c8", "#ff50c8", "#ff50c8", "#ff50c8", "#ff50c8", "#ff50c8", "#ff50c8"];

class PoseOverlay {
  constructor(node) {
    this.node = node;
    this.data = null;
    this.renderCount = 0;
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, { width: "100%", flex: "1 1 auto", minHeight: "0", objectFit: "contain", display: "block" });
    this.label = document.createElement("div");
    Object.assign(this.label.style, { font: "11px sans-serif", padding: "2px 4px", flex: "0 0 auto" });
    this.widget = null;
  }

  ensureWidget() {
    if (this.widget) return;
    const container = document.createElement("div");
    container.className = "bolid-pose-overlay";
    Object.assign(container.style, { width: "100%", height: "100%", background: "#111", display: "flex", flexDirection: "column" });
    container.append(this.label, this.canvas);
    // A DOM widget: the classic canvas places it over the node, Nodes 2.0 mounts it inside the node's element.
    this.widget = this.node.addDOMWidget(WIDGET_NAME, "bolid_pose_overlay", container, {
      serialize: false,
      hideOnZoom: false,
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => 180,
    });
    this.widget.serialize = false;
  }

  setData(data) {
    this.data = data;
    this.ensureWidget();
    this.draw();
  }

  draw() {
    const d = this.data;
    if (!d) return;
    const [H, W] = d.image_size;
    const n = Math.min(d.keypoints.length, MAX_SHOWN);
    const cols = Math.min(n, 4);
    const rows = Math.ceil(n / cols);
    const cell = n === 1 ? 320 : 200;
    const cw = cell, ch = Math.max(40, Math.round((cell * H) / W));
    this.canvas.width = cols * cw;
    this.canvas.height = rows * ch;
    const ctx = this.canvas.getContext("2d");
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.font = "13px sans-serif";
    const missing = d.found.map((f, i) => (f ? null : i)).filter((i) => i !== null);
    const list = missing.slice(0, 8).join(", ") + (missing.length > 8 ? ", ..." : "");
    this.label.style.color = missing.length ? "#ff8080" : "#9f9";
    this.label.textContent = `person found in ${d.found.length - missing.length}/${d.found.length} images` +
      (missing.length ? `; none in #${list}` : "") + (d.found.length > n ? ` (first ${n} shown)` : "");
    for (let i = 0; i < n; i++) {
      const ox = (i % cols) * cw, oy = Math.floor(i / cols) * ch;
      const s = Math.min(cw / W, ch / H);
      ctx.strokeStyle = "#333";
      ctx.strokeRect(ox + 0.5, oy + 0.5, cw - 1, ch - 1);
      ctx.fillStyle = "#888";
      ctx.fillText(`#${i}`, ox + 4, oy + 14);
      if (!d.found[i]) {
        ctx.strokeStyle = "#f55";
        ctx.beginPath();
        ctx.moveTo(ox + 8, oy + 8); ctx.lineTo(ox + cw - 8, oy + ch - 8);
        ctx.moveTo(ox + cw - 8, oy + 8); ctx.lineTo(ox + 8, oy + ch - 8);
        ctx.stroke();
        continue;
      }
      const kp = d.keypoints[i];
      const px = (p) => [ox + p[0] * s, oy + p[1] * s];
      ctx.lineWidth = 2;
      d.skeleton.forEach(([a, b], j) => {
        if (kp[a][2] > 0 && kp[b][2] > 0) {
          ctx.strokeStyle = LIMB_COLOURS[j % LIMB_COLOURS.length];
          ctx.beginPath();
          ctx.moveTo(...px(kp[a]));
          ctx.lineTo(...px(kp[b]));
          ctx.stroke();
        }
      });
      ctx.lineWidth = 1;
      ctx.fillStyle = "#fff";
      for (const p of kp) {
        if (p[2] > 0) {
          const [x, y] = px(p);
          ctx.beginPath();
          ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    }
    this.renderCount += 1;
    this.node.setDirtyCanvas?.(true, true);
  }
}

app.registerExtension({
  name: "bolid.poseOverlay",
  async nodeCreated(node) {
    if (node.comfyClass !== NODE_TYPE && node.type !== NODE_TYPE) return;
    const overlay = new PoseOverlay(node);
    node.bolidPoseOverlay = overlay;
    const original = node.onExecuted;
    node.onExecuted = function (message) {
      const r = original?.apply(this, arguments);
      const data = message?.bolid_pose?.[0];
      if (data) overlay.setData(data);
      return r;
    };
  },
});
