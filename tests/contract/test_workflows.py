"""Every example workflow against the node schemas: this pack's (built from code through the stand-in) and
ComfyUI's core, once per supported ComfyUI version (the committed /object_info dumps in bolid_lib/runner/core_nodes: a
workflow that leans on a core node one version lacks fails here, with no ComfyUI installed).

Checked: every node type exists; every link joins an output and an input of the same type, and the slot
records on both ends agree; every widget value is valid for its input (type, range, options; model and
input file names excepted, since the dump comes from a ComfyUI without them); and what each example is
for: the mode it shows, its sampler settings, and the note on the canvas naming every model file it needs.
Regenerate the files with tests/tools/make_workflows.py when a schema changes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bolid_lib.runner import workflow as wfl

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOWS = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
EXPECTED = {"bolid_text_only", "bolid_text_only_lightning", "bolid_image_reference", "bolid_build_body_id",
            "bolid_build_body_id_step_by_step"}
# The dump was taken on a machine without these files; a missing file is the user's checklist, not a fault.
FILE_PROBLEMS = {"missing model file", "missing input file"}
# Loader inputs that name a file or folder the user provides; the note on the canvas must name each value.
FILE_INPUTS = {
    "CheckpointLoaderSimple": ("ckpt_name",), "CLIPVisionLoader": ("clip_name",),
    "BoLIDPoseModelLoader": ("model_name",), "BoLIDAdapterLoader": ("adapter_name",),
    "BoLIDBodyVAELoader": ("vae_name",), "BoLIDLoadBody": ("body_name",), "BoLIDLoadPhotos": ("folder",),
    "BoLIDBodyIDFromFolder": ("folder",),
}


VERSIONS = list(wfl.core_dumps())


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"comfyui-{v}" for v in VERSIONS])
def object_info(request, standin_pack_info) -> dict:
    info = copy.deepcopy(wfl.core_object_info(request.param))
    clash = set(info) & set(standin_pack_info["nodes"])
    assert not clash, f"pack node ids clash with ComfyUI {request.param} core: {clash}"
    info.update(copy.deepcopy(standin_pack_info["nodes"]))
    return info


def test_a_dump_per_supported_version():
    assert {"0.3.64", "0.33.0"} <= set(VERSIONS), VERSIONS


def load(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text())


def nodes_of(wf: dict, kind: str) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] == kind]


def values(node: dict, object_info: dict) -> dict:
    return wfl.widget_values(node, object_info[node["type"]])


def linked_inputs(node: dict) -> set[str]:
    return {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}


def test_the_examples_exist_with_thumbnails():
    assert EXPECTED <= set(WORKFLOWS), f"missing: {EXPECTED - set(WORKFLOWS)}"
    for name in WORKFLOWS:
        jpg = WORKFLOW_DIR / f"{name}.jpg"
        assert jpg.is_file() and jpg.read_bytes()[:3] == b"\xff\xd8\xff", f"{name}.jpg (thumbnail) is missing"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_format(name):
    wf = load(name)
    assert wfl.is_ui_workflow(wf)
    assert wf["version"] == 0.4 and isinstance(wf.get("extra"), dict)
    ids = [n["id"] for n in wf["nodes"]]
    assert len(ids) == len(set(ids))
    assert wf["last_node_id"] >= max(ids) and wf["last_link_id"] >= max(l[0] for l in wf["links"])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_against_node_schemas(name, object_info):
    problems = wfl.check_workflow(load(name), object_info, ignore=FILE_PROBLEMS)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_links_join_same_types(name, object_info):
    """Independent of the converter: each link record against both nodes' slots and the schemas."""
    wf = load(name)
    by_id = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out = by_id[src]["outputs"][src_slot]
        inp = by_id[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id, f"link {link_id} not recorded on both ends"
        schema_out = object_info[by_id[src]["type"]]["output"][src_slot]
        spec = {s.name: s for s in wfl.input_specs(object_info[by_id[dst]["type"]])}[inp["name"]]
        assert kind == out["type"] == schema_out == spec.type, (
            f"link {link_id}: {by_id[src]['type']} output {src_slot} ({schema_out}) -> "
            f"{by_id[dst]['type']}.{inp['name']} ({spec.type}), recorded as {kind}")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_conversion_keeps_every_server_node(name, object_info):
    wf = load(name)
    prompt = wfl.ui_to_api(wf, object_info)
    server_nodes = [n for n in wf["nodes"] if n["type"] not in wfl.FRONTEND_ONLY_TYPES]
    assert len(prompt) == len(server_nodes)
    assert not wfl.check_workflow(prompt, object_info, ignore=FILE_PROBLEMS)
    assert wfl.output_nodes(prompt, object_info), "the workflow has no output node"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_note_names_every_model_file(name, object_info):
    wf = load(name)
    notes = [n for n in wf["nodes"] if n["type"] in wfl.NOTE_TYPES]
    assert notes, f"{name} has no note on the canvas"
    text = "\n".join(str(v) for n in notes for v in n.get("widgets_values", []))
    for node in wf["nodes"]:
        for field in FILE_INPUTS.get(node["type"], ()):
            value = values(node, object_info)[field]
            base = value.rsplit("/", 1)[-1]
            assert base in text, f"the note of {name} does not say where {value} goes"
    assert "models/" in text


def _one(wf, kind):
    found = nodes_of(wf, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("name", ["bolid_text_only", "bolid_text_only_lightning"])
def test_text_only_mode_uses_the_body_branch_alone(name, object_info):
    wf = load(name)
    apply = _one(wf, "BoLIDApply")
    assert linked_inputs(apply) == {"model", "adapter", "body"}
    assert values(apply, object_info)["lambda_body"] > 0
    assert not nodes_of(wf, "LoadImage") and not nodes_of(wf, "CLIPVisionLoader")
    assert nodes_of(wf, "BoLIDLoadBody")
    sampler = _one(wf, "KSampler")
    assert "model" in linked_inputs(sampler)


def test_sdxl_settings(object_info):
    base = values(_one(load("bolid_text_only"), "KSampler"), object_info)
    assert 20 <= base["steps"] <= 50 and 4 <= base["cfg"] <= 8
    latent = values(_one(load("bolid_text_only"), "EmptyLatentImage"), object_info)
    assert 0.8e6 <= latent["width"] * latent["height"] <= 1.2e6, "SDXL wants about one megapixel"
    light = values(_one(load("bolid_text_only_lightning"), "KSampler"), object_info)
    assert (light["steps"], light["sampler_name"], light["scheduler"]) == (4, "euler", "sgm_uniform")
    assert 1.0 <= light["cfg"] <= 2.0
    ckpt = values(_one(load("bolid_text_only_lightning"), "CheckpointLoaderSimple"), object_info)
    assert "lightning" in ckpt["ckpt_name"].lower()


def test_image_reference_mode_feeds_both_branches_from_one_image(object_info):
    wf = load("bolid_image_reference")
    apply = _one(wf, "BoLIDApply")
    v = values(apply, object_info)
    assert v["lambda_ref"] > 0 and v["lambda_body"] > 0
    assert {"model", "adapter", "body", "clip_vision", "image"} <= linked_inputs(apply)
    image = _one(wf, "LoadImage")
    by_link = {l[0]: l for l in wf["links"]}
    image_targets = {(by_link[i][3]) for i in image["outputs"][0]["links"]}
    ids = {n["type"]: n["id"] for n in wf["nodes"]}
    assert {ids["BoLIDApply"], ids["BoLIDPoseKeypoints"], ids["BoLIDGaussianWeighting"]} <= image_targets
    clip = values(_one(wf, "CLIPVisionLoader"), object_info)["clip_name"]
    assert "clip_vision_h" in clip or "ViT-H" in clip, "the adapter's ref branch needs the ViT-H encoder"


def test_build_body_id_streams_the_folder_to_a_saved_body_id(object_info):
    """The shipped Body-ID workflow is the flat-memory one: Body-ID From Folder (fed a pose model and a Body-ID VAE)
    into Save Body-ID, at the nodes' default working size; no node that holds the whole batch."""
    wf = load("bolid_build_body_id")
    kinds = {n["type"] for n in wf["nodes"]}
    assert {"BoLIDBodyIDFromFolder", "BoLIDSaveBody", "BoLIDPoseModelLoader", "BoLIDBodyVAELoader"} <= kinds
    assert not kinds & {"BoLIDLoadPhotos", "BoLIDPoseKeypoints", "BoLIDGaussianWeighting", "BoLIDBodyEncode"}
    lean = _one(wf, "BoLIDBodyIDFromFolder")
    assert {"pose_model", "body_vae"} <= linked_inputs(lean)
    assert values(lean, object_info)["size"] == 1024
    assert "body" in linked_inputs(_one(wf, "BoLIDSaveBody"))


def test_build_body_id_step_by_step_saves_and_shows_previews():
    wf = load("bolid_build_body_id_step_by_step")
    kinds = [n["type"] for n in wf["nodes"]]
    for kind in ("BoLIDPoseKeypoints", "BoLIDGaussianWeighting", "BoLIDBodyEncode", "BoLIDSaveBody"):
        assert kind in kinds
    for kind in ("BoLIDPoseKeypoints", "BoLIDGaussianWeighting"):  # tall enough to show their previews
        assert _one(wf, kind)["size"][1] >= 400
