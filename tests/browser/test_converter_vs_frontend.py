"""bolid_lib.workflow.ui_to_api gives what the real frontend's ``app.graphToPrompt()`` gives.

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

from bolid_lib import workflow as W

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]

GRAPH_TO_PROMPT_JS = """
async (wf) => {
  await window.app.loadGraphData(wf, true, true, null);
  const out = (await window.app.graphToPrompt()).output;
  const slim = {};
  for (const [id, n] of Object.entries(out)) slim[id] = {class_type: n.class_type, inputs: n.inputs};
  return slim;
}
"""


def _templates() -> list[Path]:
    for base in sys.path:
        folder = os.path.join(base, "comfyui_workflow_templates", "templates")
        if os.path.isdir(folder):
            return [Path(p) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    return []


def _normalise(prompt: dict, object_info: dict) -> dict:
    """JSON round trip without the ``_meta`` titles and without values of inputs the node does not declare.

    Frontend extensions add widgets of their own that graphToPrompt serialises and the server ignores
    (SaveGLB's 3D preview sends ``image: ""``, LoadImageOutput's refresh button ``refresh: "refresh"``).
    """
    out = {}
    for node_id, node in prompt.items():
        declared = {s.name for s in W.input_specs(object_info.get(node["class_type"], {}))}
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


def _candidates(object_info: dict, max_templates: int = 30) -> list[Path]:
    """All example workflows, and the templates that together cover the most node types (greedy):
    loading each costs about 2 s in the browser."""
    chosen = [p for p in sorted((REPO / "example_workflows").glob("*.json")) if _convertible(p, object_info)]
    pool = {p: {n["type"] for n in wf["nodes"]} | {f"mode{n.get('mode', 0)}" for n in wf["nodes"]}
            for p in _templates() if (wf := _convertible(p, object_info)) is not None}
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
    if len(paths) < 5:
        pytest.skip(f"only {len(paths)} workflows with known nodes to compare")
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
