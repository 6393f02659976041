"""bolid_lib.workflow against the real ComfyUI: converted workflows pass ComfyUI's own validate_prompt.

ComfyUI's bundled workflow templates (comfyui-workflow-templates, saved by the real frontend) are the
reference: every one that uses only core nodes and no subgraphs is converted with the live object_info
and validated by ``execution.validate_prompt``. The only errors allowed are the files this test
machine does not have (model files, input images and videos).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import sys

import pytest

from bolid_lib import workflow as W
from bolid_lib.model_catalog import folder_for_input

pytestmark = pytest.mark.host

DUMP = os.path.join(os.path.dirname(__file__), "..", "data", "object_info_core.json")


def _templates_dir() -> str | None:
    for base in sys.path:
        path = os.path.join(base, "comfyui_workflow_templates", "templates")
        if os.path.isdir(path):
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
    if error["type"] == "custom_validation_failed":
        return "Invalid image file" in error.get("details", "") or "Invalid video file" in error.get("details", "")
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


def test_committed_dump_matches_this_comfyui(live_info):
    """The contract tier's dump is current: same core nodes, same inputs and outputs (file lists aside)."""
    with open(DUMP, encoding="utf-8") as f:
        dump = json.load(f)
    import comfyui_version

    if dump["comfyui_version"] != comfyui_version.__version__:
        pytest.skip(f"dump from ComfyUI {dump['comfyui_version']}, host is {comfyui_version.__version__}: "
                    "regenerate with tests/tools/dump_object_info.py")
    core = {n: i for n, i in live_info.items() if not str(i.get("python_module", "")).startswith("custom_nodes")}
    assert sorted(core) == sorted(dump["nodes"])

    def shape(info: dict) -> dict:
        specs = W.input_specs(info)
        return {"inputs": [(s.name, s.type, s.optional, None if s.type == "COMBO" and not s.choices else s.choices)
                           for s in specs if not W.looks_like_model_file(str((s.choices or [""])[0]))],
                "output": info.get("output")}

    changed = [n for n in core if shape(core[n]) != shape(dump["nodes"][n])]
    # Combos that list files (models, input images) differ between machines; compare the rest.
    changed = [n for n in changed if any(
        a != b for a, b in zip(shape(core[n])["inputs"], shape(dump["nodes"][n])["inputs"])
        if not (a[1] == "COMBO" and b[1] == "COMBO"))]
    assert changed == []
