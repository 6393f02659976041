// BoLID: a readable summary on the Body-ID nodes (encode, load, blend, preview).
//
// After a Body-ID node has run, its `ui` output carries a summary of the embedding: its width D, the
// norm of its mean, how many views were used or skipped, their mean pose confidence, and the fingerprint
// of the Body-ID VAE that made it. This extension draws those lines at the bottom of the node, so a user
// sees at once whether the Body-ID came from the views they expected and from the VAE the adapter needs.
//
// Accepted `ui` shapes (the node sends one of them):
//   {bolid_body: [{dim, norm, views_used, views_skipped, mean_confidence, vae_fingerprint, source}]}
//   {text: ["line\nline..."]}           (ui.PreviewText)
// State lives on the node instance (`node.bolidBodySummary`); nothing in LiteGraph is patched.

import { app } from "../../scripts/app.js";

const LINE_HEIGHT = 16;
const PAD = 6;

function isBodyNode(nodeData) {
    if (!nodeData || !String(nodeData.name || "").startsWith("BoLID")) return false;
    const outputs = nodeData.output || [];
    const inputs = Object.values(nodeData.input?.required || {}).concat(Object.values(nodeData.input?.optional || {}));
    const touchesBody = outputs.includes("BOLID_BODY") || inputs.some((spec) => spec && spec[0] === "BOLID_BODY");
    return touchesBody || /Body(?!VAE)/.test(nodeData.name);
}

function fmt(value, digits) {
    const n = Number(value);
    return Number.isFinite(n) ? n.toFixed(digits) : String(value ?? "?");
}

// Lines of text for one Body-ID summary, or null when the message carries none.
export function summaryLines(message) {
    if (!message) return null;
    let info = message.bolid_body;
    if (Array.isArray(info)) info = info[0];
    if (info && typeof info === "object") {
        const lines = [`Body-ID  D=${info.dim ?? "?"}  |mean|=${fmt(info.norm, 3)}`];
        const skipped = Number(info.views_skipped || 0);
        lines.push(`views: ${info.views_used ?? "?"} used` + (skipped ? `, ${skipped} skipped (no person)` : ""));
        if (info.mean_confidence !== undefined) lines.push(`pose confidence: ${fmt(info.mean_confidence, 2)}`);
        lines.push(`VAE: ${info.vae_fingerprint ? String(info.vae_fingerprint).slice(0, 16) : "unknown"}`);
        if (info.source && info.source !== "encode") lines.push(`made by: ${info.source}`);
        return lines;
    }
    const text = Array.isArray(message.text) ? message.text.join("\n") : message.text;
    if (typeof text === "string" && text.trim()) return text.trim().split("\n").slice(0, 8);
    return null;
}

function boxHeight(lines) {
    return lines.length * LINE_HEIGHT + 2 * PAD;
}

app.registerExtension({
    name: "bolid.bodySummary",

    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!isBodyNode(nodeData)) return;

        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            const result = onExecuted?.apply(this, arguments);
            const lines = summaryLines(message);
            if (lines) {
                this.bolidBodySummary = lines;
                const min = this.computeSize();
                this.setSize([Math.max(this.size[0], min[0], 240), Math.max(this.size[1], min[1] + boxHeight(lines))]);
                this.setDirtyCanvas(true, true);
            }
            return result;
        };

        const onDrawForeground = nodeType.prototype.onDrawForeground;
        nodeType.prototype.onDrawForeground = function (ctx) {
            const result = onDrawForeground?.apply(this, arguments);
            const lines = this.bolidBodySummary;
            if (!lines || this.flags?.collapsed) return result;
            const h = boxHeight(lines);
            const y0 = this.size[1] - h - 4;
            ctx.save();
            ctx.fillStyle = "rgba(0, 0, 0, 0.35)";
            ctx.beginPath();
            if (ctx.roundRect) ctx.roundRect(6, y0, this.size[0] - 12, h, 4);
            else ctx.rect(6, y0, this.size[0] - 12, h);
            ctx.fill();
            ctx.font = "12px monospace";
            ctx.fillStyle = "#d8e4f0";
            ctx.textBaseline = "top";
            lines.forEach((line, i) => ctx.fillText(line, 12, y0 + PAD + i * LINE_HEIGHT, this.size[0] - 24));
            ctx.restore();
            return result;
        };
    },
});
