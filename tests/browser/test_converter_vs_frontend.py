"""bolid_lib.runner.workflow.ui_to_api gives what the real frontend's ``app.graphToPrompt()`` gives.

The frontend is the canonical converter (HOST_NOTES.md). Each workflow (ComfyUI's own templates that use
only core nodes and no subgraphs, plus this pack's example workflows) is put on the canvas with
``app.loadGraphData`` and converted by the frontend; the headless converter must produce the same
class types and the same inputs for every node.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import pytest

from bolid_lib.runner import workflow as W

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]

GRAPH_TO_PROMPT_JS = """
async (wf) => {
  await window.app.loadGraphData(wf, true, true, null);
  await new Promise(r => requestAnimationFrame(() => r()));  // Nodes 2.0 mounts its node components
  // Remote combos (LoadImageOutput's list of output files) read "Loading..." until their list arrives.
  const loading = () => window.app.graph._nodes.some(n => (n.widgets || []).some(w => w.value === 'Loading...'));
  for (let t = 0; t < 100 && loading(); t++) await new Promise(r => setTimeout(r, 100));
  const out = (await window.app.graphToPrompt()).output;
  const slim = {};
  for (const [id, n] of Object.entries(out)) slim[id] = {class_type: n.class_type, inputs: n.inputs};
  return slim;
}
"""


def _templates() -> list[Path]:
    """ComfyUI's own workflow templates as installed with the host: through the package's manifest API
    (``iter_templates``/``get_asset_path``, comfyui-workflow-templates 0.2+ split into bundles; what 0.33
    serves) or its single ``templates/`` folder (older releases; what 0.3.64 serves)."""
    try:
        from comfyui_workflow_templates import get_asset_path, iter_templates

        found = []
        for entry in iter_templates():
            for asset in entry.assets:
                if asset.filename.endswith(".json"):
                    try:
                        found.append(Path(get_asset_path(entry.template_id, asset.filename)))
                    except FileNotFoundError:  # get_asset_path: a bundle of the split package that is not installed
                        continue
        if found:
            return sorted(p for p in found if p.is_file())
    except ImportError:
        pass
    for base in sys.path:
        folder = os.path.join(base, "comfyui_workflow_templates", "templates")
        if os.path.isdir(folder):
            return [Path(p) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    return []


# Input types that only show something on the node: 0.33's ImageCompare ``compare_view`` (IMAGECOMPARE; the
# frontend sends ``{"__value__": ["", ""]}`` whatever the file saved, ImageCompare.execute ignores it).
DISPLAY_ONLY_TYPES = frozenset({"IMAGECOMPARE"})


def _normalise(prompt: dict, object_info: dict) -> dict:
    """JSON round trip without the ``_meta`` titles and without values of inputs the node does not declare.

    Frontend extensions add widgets of their own that graphToPrompt serialises and the server ignores
    (SaveGLB's 3D preview sends ``image: ""``, LoadImageOutput's refresh button ``refresh: "refresh"``).
    Inputs of a remote combo (``remote`` in its spec: LoadImageOutput's list of output files) are left out too:
    the frontend replaces the saved value with the first entry of the server's list once it arrives (and reads
    "Loading..." until then), so what it sends depends on the output folder and the moment, not on the workflow.
    So are display-only inputs (DISPLAY_ONLY_TYPES: ImageCompare's ``compare_view``), which the frontend fills
    from the node's last run and never from the file, and the node never reads.
    """
    out = {}
    for node_id, node in prompt.items():
        specs = W.input_specs(object_info.get(node["class_type"], {}))
        declared = {s.name for s in specs if not s.options.get("remote") and s.type not in DISPLAY_ONLY_TYPES}
        inputs = {k: v for k, v in node["inputs"].items() if k in declared or isinstance(v, list)}
        out[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return json.loads(json.dumps(out))


def _convertible(path: Path, object_info: dict) -> dict | None:
    try:
        wf = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not W.is_ui_workflow(wf) or (wf.get("definitions") or {}).get("subgraphs"):
        return None
    if all(n.get("type") in object_info or n.get("type") in W.FRONTEND_ONLY_TYPES for n in wf["nodes"]):
        return wf
    return None


def _dynamic(wf: dict, object_info: dict) -> list[str]:
    """The node types of a workflow that the converter refuses (V3 inputs whose widgets change with their value)."""
    return sorted({n["type"] for n in wf["nodes"] if W.dynamic_inputs(object_info.get(n.get("type"), {}))})


def _candidates(object_info: dict, max_templates: int = 30) -> list[Path]:
    """All example workflows, and the templates that together cover the most node types (greedy):
    loading each costs about 2 s in the browser."""
    chosen = [p for p in sorted((REPO / "example_workflows").glob("*.json")) if _convertible(p, object_info)]
    pool = {p: {n["type"] for n in wf["nodes"]} | {f"mode{n.get('mode', 0)}" for n in wf["nodes"]}
            for p in _templates()
            if (wf := _convertible(p, object_info)) is not None and not _dynamic(wf, object_info)}
    covered: set[str] = set()
    for _ in range(max_templates):
        best = max(sorted(pool), key=lambda p: len(pool[p] - covered), default=None)
        if best is None or not pool[best] - covered:
            break
        covered |= pool.pop(best)
        chosen.append(best)
    return chosen


def test_headless_conversion_equals_graph_to_prompt(app_page, comfy_server):
    object_info = comfy_server.get_json("/object_info")
    paths = _candidates(object_info)
    # Every example workflow converts (the pack is loaded, so all its nodes are known), and the host's templates
    # (comfyui-workflow-templates is in ComfyUI's own requirements.txt, so always there with the host) add more.
    examples = sorted((REPO / "example_workflows").glob("*.json"))
    assert len(examples) >= 4 and set(examples) <= set(paths), \
        f"example workflows not compared: {sorted(p.name for p in set(examples) - set(paths))}"
    templates = [p for p in paths if p not in examples]
    assert len(templates) >= 10, (f"only {len(templates)} of ComfyUI's templates can be compared "
                                 f"({len(_templates())} template files found): is comfyui-workflow-templates there?")
    compared, differences = 0, []
    for path in paths:
        wf = json.loads(path.read_text(encoding="utf-8"))
        ours = _normalise(W.ui_to_api(json.loads(json.dumps(wf)), object_info), object_info)
        theirs = _normalise(app_page.evaluate(GRAPH_TO_PROMPT_JS, wf), object_info)
        compared += 1
        if ours == theirs:
            continue
        for node_id in sorted(set(ours) | set(theirs)):
            a, b = ours.get(node_id), theirs.get(node_id)
            if a != b:
                differences.append(f"{path.name} node {node_id}: ours {a} != frontend {b}")
    assert compared >= 5
    assert differences == [], "\n".join(differences[:30])


def test_converter_refuses_what_it_cannot_read(comfy_server):
    """A template with a node whose widgets change with their value (0.33's SaveVideo: a DynamicCombo) is
    refused with an error that names the node and the fix, never converted wrongly."""
    object_info = comfy_server.get_json("/object_info")
    if not any(W.dynamic_inputs(info) for info in object_info.values()):
        pytest.skip("this ComfyUI has no node whose widgets change with their value (no DynamicCombo-type inputs, "
                    "as in 0.3.64): nothing for the converter to refuse")
    for path in _templates():
        wf = _convertible(path, object_info)
        if wf is not None and _dynamic(wf, object_info):
            break
    else:
        pytest.fail("this ComfyUI has nodes whose widgets change with their value, but none of its templates uses "
                    "one (0.33's templates use SaveVideo): the refusal went unchecked")
    with pytest.raises(W.WorkflowError) as err:
        W.ui_to_api(wf, object_info)
    assert any(t in str(err.value) for t in _dynamic(wf, object_info)), str(err.value)


def _modes_workflow() -> dict:
    """Bypassed, muted, Reroute, PrimitiveNode and a converted widget in one hand-written UI workflow."""
    def node(node_id, kind, inputs, outputs, widgets, mode=0, **extra):
        return {"id": node_id, "type": kind, "pos": [node_id * 220, 100], "size": [200, 120], "flags": {},
                "order": node_id, "mode": mode, "inputs": inputs, "outputs": outputs, "properties": {},
                "widgets_values": widgets, **extra}

    def inp(name, kind, link=None, widget=False):
        entry = {"name": name, "type": kind, "link": link}
        if widget:
            entry["widget"] = {"name": name}
        return entry

    def out(name, kind, links):
        return {"name": name, "type": kind, "links": links}

    nodes = [
        node(1, "EmptyImage", [inp("width", "INT", 1, True), inp("height", "INT", None, True),
                               inp("batch_size", "INT", None, True), inp("color", "INT", None, True)],
             [out("IMAGE", "IMAGE", [2, 6])], [64, 48, 1, 255]),
        node(2, "PrimitiveNode", [], [{"name": "INT", "type": "INT", "links": [1], "widget": {"name": "width"}}],
             [96, "fixed"], title="width"),
        node(3, "ImageInvert", [inp("image", "IMAGE", 2)], [out("IMAGE", "IMAGE", [3])], [], mode=4),
        node(4, "Reroute", [inp("", "*", 3)], [out("", "IMAGE", [4])], []),
        node(5, "SaveImage", [inp("images", "IMAGE", 4), inp("filename_prefix", "STRING", None, True)], [],
             ["modes"]),
        node(6, "ImageBlur", [inp("image", "IMAGE", 6), inp("blur_radius", "INT", None, True),
                              inp("sigma", "FLOAT", None, True)], [out("IMAGE", "IMAGE", [7])], [3, 1.5], mode=2),
        node(7, "PreviewImage", [inp("images", "IMAGE", 7)], [], []),
        node(8, "ImageScale", [inp("image", "IMAGE", 8), inp("upscale_method", "COMBO", None, True),
                               inp("width", "INT", 9, True), inp("height", "INT", None, True),
                               inp("crop", "COMBO", None, True)], [out("IMAGE", "IMAGE", [])],
             ["bilinear", 512, 40, "center"]),
        node(9, "PrimitiveInt", [inp("value", "INT", None, True)], [out("INT", "INT", [9])], [80, "fixed"]),
        node(10, "Note", [], [], ["hand-made"]),
    ]
    links = [[1, 2, 0, 1, 0, "INT"], [2, 1, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"],
             [6, 1, 0, 6, 0, "IMAGE"], [7, 6, 0, 7, 0, "IMAGE"], [8, 4, 0, 8, 0, "IMAGE"], [9, 9, 0, 8, 2, "INT"]]
    nodes[3]["outputs"][0]["links"].append(8)
    return {"last_node_id": 10, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def test_modes_reroute_primitive_match_the_frontend(app_page, comfy_server):
    object_info = comfy_server.get_json("/object_info")
    wf = _modes_workflow()
    ours = _normalise(W.ui_to_api(json.loads(json.dumps(wf)), object_info), object_info)
    theirs = _normalise(app_page.evaluate(GRAPH_TO_PROMPT_JS, wf), object_info)
    assert ours == theirs
    # and what both say, spelled out
    assert ours["1"]["inputs"]["width"] == 96                   # the Primitive's value
    assert ours["5"]["inputs"]["images"] == ["1", 0]            # through the bypassed invert and the Reroute
    assert "6" not in ours and "images" not in ours["7"]["inputs"]  # muted blur: its consumer loses the input
    assert ours["8"]["inputs"]["width"] == ["9", 0] and ours["8"]["inputs"]["height"] == 40
