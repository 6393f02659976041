"""bolid_lib.runner.workflow against the real ComfyUI: converted workflows pass ComfyUI's own validate_prompt.

ComfyUI's bundled workflow templates (comfyui-workflow-templates, saved by the real frontend) are the
reference: every one that uses only core nodes and no subgraphs is converted with the live object_info
and validated by ``execution.validate_prompt``. The only errors allowed are the files this test
machine does not have (model files, input images, videos and audio). Which optional core nodes load
(audio nodes need torchaudio; API nodes) differs between installs: templates using a node this ComfyUI did not
load are not convertible here and are left out, and the dump comparison looks at the nodes both sides have.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import sys
from pathlib import Path

import pytest

from bolid_lib.runner import workflow as W
from bolid_lib.runner.model_catalog import folder_for_input

pytestmark = pytest.mark.host

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
# comfyui-workflow-templates keeps its JSON files in its own package (0.1.x, ComfyUI 0.3.64) or, split into
# bundles, in comfyui-workflow-templates-json (0.11.x, ComfyUI 0.33).
TEMPLATE_PACKAGES = ("comfyui_workflow_templates", "comfyui_workflow_templates_json")


def _templates_dir() -> str | None:
    for package in TEMPLATE_PACKAGES:
        for base in sys.path:
            path = os.path.join(base, package, "templates")
            if glob.glob(os.path.join(path, "*.json")):
                return path
    return None


@pytest.fixture(scope="module")
def live_info(comfy) -> dict:
    infos = {name: comfy.object_info(name) for name in comfy.nodes.NODE_CLASS_MAPPINGS}
    return json.loads(json.dumps(infos))  # as served over HTTP (tuples -> lists)


def _is_missing_file_error(error: dict, class_type: str) -> bool:
    info = error.get("extra_info") or {}
    name, value = info.get("input_name"), info.get("received_value")
    if error["type"] == "value_not_in_list":
        return W.looks_like_model_file(value) or folder_for_input(class_type, name) is not None
    if error["type"] == "custom_validation_failed":  # LoadImage/LoadVideo/LoadAudio...: "Invalid <kind> file: x"
        return re.search(r"Invalid \w+ file", error.get("details", "")) is not None
    return False


def test_frontend_templates_convert_to_prompts_comfyui_accepts(comfy, live_info):
    folder = _templates_dir()
    if folder is None:
        pytest.skip("comfyui-workflow-templates is not installed")
    converted, unexplained = 0, []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
        if not W.is_ui_workflow(wf):
            continue
        try:
            prompt = W.ui_to_api(wf, live_info)
        except W.WorkflowError:
            continue  # subgraphs, API nodes, audio nodes without torchaudio
        converted += 1
        ok, err, _, node_errors = asyncio.run(comfy.execution.validate_prompt("t", prompt, None))[:4]
        for node_id, entry in node_errors.items():
            for error in entry["errors"]:
                if not _is_missing_file_error(error, entry["class_type"]):
                    unexplained.append(f"{os.path.basename(path)} node {node_id} ({entry['class_type']}): "
                                       f"{error['type']} {error.get('details')}")
        if not ok and not node_errors:
            unexplained.append(f"{os.path.basename(path)}: {err}")
    assert converted >= 20, f"only {converted} templates could be converted"
    assert unexplained == []


def test_checks_agree_with_comfyui_on_the_templates(comfy, live_info):
    """check_workflow finds nothing but missing files in the templates ComfyUI accepts."""
    folder = _templates_dir()
    if folder is None:
        pytest.skip("comfyui-workflow-templates is not installed")
    problems = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
        if not W.is_ui_workflow(wf):
            continue
        found = W.check_workflow(wf, live_info, ignore={"missing model file", "missing input file",
                                                         "unknown node type", "unsupported"})
        problems += [f"{os.path.basename(path)}: {p}" for p in found]
    assert problems == []


def _shape(info: dict) -> dict:
    specs = W.input_specs(info)
    return {"inputs": [(s.name, s.type, s.optional, None if s.type == "COMBO" and not s.choices else s.choices)
                       for s in specs if not W.looks_like_model_file(str((s.choices or [""])[0]))],
            "output": info.get("output")}


def _core_used_by_examples(core_names) -> set[str]:
    used = set()
    for path in EXAMPLES.glob("*.json"):
        wf = json.loads(path.read_text(encoding="utf-8"))
        used |= {n.get("type") for n in wf.get("nodes", [])} & set(core_names)
    return used


def test_committed_dump_matches_this_comfyui(live_info):
    """The committed dump of this ComfyUI version is current for every node both have: same inputs and outputs
    (file lists aside); and every core node the example workflows use is in it. Optional core nodes that one
    side loaded and the other did not (torchaudio's, API nodes) are not the pack's business."""
    import comfyui_version

    version = comfyui_version.__version__
    dumps = W.core_dumps()
    if version not in dumps:
        pytest.skip(f"no committed dump for ComfyUI {version} (there are {', '.join(dumps)}): make one with "
                    "tests/tools/dump_object_info.py to check the examples against this version without it")
    dump = W.core_object_info(version)
    core = {n: i for n, i in live_info.items() if not str(i.get("python_module", "")).startswith("custom_nodes")}
    both = set(core) & set(dump)
    assert len(both) >= 0.9 * min(len(core), len(dump)), "the dump and this ComfyUI share too few nodes: wrong dump?"
    used = _core_used_by_examples(core)
    assert used <= set(dump), f"core nodes the examples use are missing from the dump: {sorted(used - set(dump))}"

    def differs(n: str) -> bool:
        a, b = _shape(core[n]), _shape(dump[n])
        if a["output"] != b["output"] or len(a["inputs"]) != len(b["inputs"]):
            return True
        # Combos that list files (models, input images) differ between machines; compare the rest.
        return any(x != y for x, y in zip(a["inputs"], b["inputs"]) if not (x[1] == "COMBO" and y[1] == "COMBO"))

    assert sorted(n for n in both if differs(n)) == []
