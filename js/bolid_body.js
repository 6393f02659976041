// BoLID: a readable summary on the Body-ID nodes (encode, load, blend, preview).
//
// After a Body-ID node has run, its `ui` output carries a summary of the embedding: its width D, the
// norm of its mean, how many views were used or skipped, their mean pose confidence, and the fingerprint
// of the Body-ID VAE that made it. This extension shows those lines at the bottom of the node, so a user
// sees at once whether the Body-ID came from the views they expected and from the VAE the adapter needs.
// The lines are a DOM widget (text in an element), which the classic canvas and Nodes 2.0 both show; Nodes 2.0
// calls no canvas hook of a node (onDrawForeground), so drawing on the canvas would show nothing there.
//
// Accepted `ui` shapes (the node sends one of them):
//   {bolid_body: [{dim, norm, views_used, views_skipped, mean_confidence, vae_fingerprint, source}]}
//   {text: ["line\nline..."]}           (ui.PreviewText)
// State lives on the node instance (`node.bolidBodySummary`, the widget `bolid_body_summary`); nothing in
// LiteGraph is patched.

import { app } from "../../scripts/app.js";

const LINE_HEIGHT = 16;
const PAD = 6;
const WIDGET_NAME = "bolid_body_summary";

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

// The summary's element, added to the node as a DOM widget the first time the node has a summary to show.
function showSummary(node, lines) {
    let state = node.bolidBodySummaryWidget;
    if (!state) {
        const element = document.createElement("div");
        element.className = "bolid-body-summary";
        Object.assign(element.style, {
            font: "12px monospace", lineHeight: `${LINE_HEIGHT}px`, whiteSpace: "pre", overflow: "hidden",
            color: "#d8e4f0", background: "rgba(0, 0, 0, 0.35)", borderRadius: "4px", padding: `${PAD}px`,
            boxSizing: "border-box", width: "100%", height: "100%",
        });
        const widget = node.addDOMWidget(WIDGET_NAME, "bolid_body_summary", element, {
            serialize: false,
            hideOnZoom: false,
            getValue: () => "",
            setValue: () => {},
            getMinHeight: () => boxHeight(node.bolidBodySummary || [""]) + 4,
        });
        widget.serialize = false;
        state = node.bolidBodySummaryWidget = { element, widget };
    }
    state.element.textContent = lines.join("\n");
    const min = node.computeSize();
    node.setSize([Math.max(node.size[0], min[0], 260), Math.max(node.size[1], min[1])]);
    node.setDirtyCanvas?.(true, true);
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
                showSummary(this, lines);
            }
            return result;
        };
    },
});
