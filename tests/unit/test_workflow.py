"""bolid_lib.runner.workflow: UI -> API conversion and checks, against the committed core /object_info dump.

The tiny workflows below are written the way the frontend (1.27) saves them: every widget input is also
listed in ``inputs`` with a ``widget`` field, ``widgets_values`` carries control/upload slots.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import sys

import pytest

from bolid_lib.runner import workflow as W
from bolid_lib.errors import BoLIDError

VERSIONS = list(W.core_dumps())  # one committed core-node dump per supported ComfyUI version


@pytest.fixture(scope="module", params=VERSIONS)
def oi(request) -> dict:
    return W.core_object_info(request.param)


@pytest.fixture(scope="module")
def dump_path(oi, request) -> str:
    version = next(v for v in VERSIONS if W.core_object_info(v).keys() == oi.keys())
    return str(W.core_dumps()[version])


def test_one_dump_per_supported_version():
    assert {"0.3.64", "0.33.0"} <= set(VERSIONS)
    for version, path in W.core_dumps().items():
        dump = W.load_core_dump(version)
        assert dump["comfyui_version"] == version and path.parent == W.DATA_DIR
        assert {"KSampler", "CheckpointLoaderSimple", "SaveImage", "LoadImage"} <= set(dump["nodes"])
        assert not any(str(i.get("python_module", "")).startswith("custom_nodes") for i in dump["nodes"].values())
    with pytest.raises(W.WorkflowError, match="no committed /object_info dump for ComfyUI 9.9.9.*0.3.64"):
        W.core_object_info("9.9.9")


# --- a tiny workflow builder -------------------------------------------------------------------

class UI:
    """Builds a UI-format workflow; ``link`` keeps node inputs/outputs and the link list in sync."""

    def __init__(self, oi: dict):
        self.oi = oi
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, node_id: int, kind: str, widgets=None, mode: int = 0, inputs=None, outputs=None) -> dict:
        info = self.oi.get(kind)
        if inputs is None and info is not None:
            inputs = []
            for spec in W.input_specs(info):
                if spec.type == "IMAGEUPLOAD":
                    continue
                entry = {"name": spec.name, "type": spec.type, "link": None}
                if spec.is_widget:
                    entry["widget"] = {"name": spec.name}
                inputs.append(entry)
        if outputs is None and info is not None:
            outputs = [{"name": str(t), "type": t if isinstance(t, str) else "COMBO", "links": []}
                       for t in info["output"]]
        node = {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or [], "outputs": outputs or [],
                "properties": {}, "widgets_values": [] if widgets is None else widgets}
        self.nodes.append(node)
        return node

    def node(self, node_id: int) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)

    def link(self, origin: int, slot: int, target: int, input_name: str) -> int:
        link_id = len(self.links) + 1
        tgt = self.node(target)
        t_slot = next(i for i, inp in enumerate(tgt["inputs"]) if inp["name"] == input_name)
        tgt["inputs"][t_slot]["link"] = link_id
        src = self.node(origin)
        src["outputs"][slot].setdefault("links", []).append(link_id)
        self.links.append([link_id, origin, slot, target, t_slot, src["outputs"][slot]["type"]])
        return link_id

    def json(self) -> dict:
        return {"last_node_id": max(n["id"] for n in self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


KSAMPLER_WIDGETS = [42, "randomize", 20, 7.5, "euler", "karras", 0.8]


def sampler_graph(oi: dict) -> UI:
    ui = UI(oi)
    ui.add(4, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"])
    ui.add(5, "EmptyLatentImage", [512, 512, 1])
    ui.add(6, "CLIPTextEncode", ["a photo of a person"])
    ui.add(7, "CLIPTextEncode", ["blurry"])
    ui.add(3, "KSampler", list(KSAMPLER_WIDGETS))
    ui.add(8, "VAEDecode")
    ui.add(9, "SaveImage", ["bolid"])
    ui.link(4, 0, 3, "model")
    ui.link(4, 1, 6, "clip")
    ui.link(4, 1, 7, "clip")
    ui.link(6, 0, 3, "positive")
    ui.link(7, 0, 3, "negative")
    ui.link(5, 0, 3, "latent_image")
    ui.link(3, 0, 8, "samples")
    ui.link(4, 2, 8, "vae")
    ui.link(8, 0, 9, "images")
    return ui


# --- conversion --------------------------------------------------------------------------------

def test_ksampler_seed_control_slot_is_skipped(oi):
    prompt = W.ui_to_api(sampler_graph(oi).json(), oi)
    ks = prompt["3"]["inputs"]
    assert {k: ks[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == {
        "seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler", "scheduler": "karras", "denoise": 0.8}
    assert ks["model"] == ["4", 0] and ks["positive"] == ["6", 0] and ks["latent_image"] == ["5", 0]
    assert prompt["3"]["class_type"] == "KSampler"
    assert W.control_values(sampler_graph(oi).node(3), oi["KSampler"]) == {"seed": "randomize"}
    assert prompt["9"]["inputs"] == {"filename_prefix": "bolid", "images": ["8", 0]}


def test_widget_layouts_of_core_nodes(oi):
    assert W.widget_layout(oi["KSampler"]) == [
        ("seed", "value"), ("seed", "control"), ("steps", "value"), ("cfg", "value"),
        ("sampler_name", "value"), ("scheduler", "value"), ("denoise", "value")]
    assert W.widget_layout(oi["LoadImage"]) == [("image", "value"), ("upload", "upload")]
    assert W.widget_layout(oi["VAEDecode"]) == []
    # KSamplerAdvanced: noise_seed carries the control slot, add_noise / return_with_leftover_noise are combos
    names = [n for n, _ in W.widget_layout(oi["KSamplerAdvanced"])]
    assert names[:3] == ["add_noise", "noise_seed", "noise_seed"]


def test_combo_with_control_after_generate_has_two_extra_slots():
    info = {"input": {"required": {"pick": [["a", "b"], {"control_after_generate": True}],
                                   "n": ["INT", {"default": 3, "control_after_generate": False}],
                                   "seed": ["INT", {}]}},
            "input_order": {"required": ["pick", "n", "seed"]}, "output": []}
    assert W.widget_layout(info) == [("pick", "value"), ("pick", "control"), ("pick", "filter"),
                                     ("n", "value"), ("seed", "value"), ("seed", "control")]
    values = W.widget_values({"widgets_values": ["b", "fixed", "", 7, 9, "increment"]}, info)
    assert values == {"pick": "b", "n": 7, "seed": 9}


def test_load_image_upload_slot_is_not_an_input(oi):
    ui = UI(oi)
    ui.add(1, "LoadImage", ["person.png", "image"])
    ui.add(2, "SaveImage", ["x"])
    ui.link(1, 0, 2, "images")
    prompt = W.ui_to_api(ui.json(), oi)
    assert prompt["1"]["inputs"] == {"image": "person.png"}
    assert W.required_models(ui.json(), oi) == [("LoadImage", "image", "person.png", "input")]


def test_missing_widget_values_take_defaults(oi):
    ui = UI(oi)
    ui.add(1, "EmptyImage", [])
    ui.add(2, "SaveImage", None)
    ui.link(1, 0, 2, "images")
    prompt = W.ui_to_api(ui.json(), oi)
    assert prompt["1"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1, "color": 0}
    assert prompt["2"]["inputs"]["filename_prefix"] == "ComfyUI"


def test_reroute_is_followed_and_dropped(oi):
    ui = sampler_graph(oi)
    ui.add(20, "Reroute", None, inputs=[{"name": "", "type": "*", "link": None}],
           outputs=[{"name": "", "type": "MODEL", "links": []}])
    ui.add(21, "Reroute", None, inputs=[{"name": "", "type": "*", "link": None}],
           outputs=[{"name": "", "type": "MODEL", "links": []}])
    # re-route the model: 4 -> 20 -> 21 -> KSampler
    ks = ui.node(3)
    ui.links = [l for l in ui.links if not (l[3] == 3 and l[4] == 0)]
    ks["inputs"][0]["link"] = None
    ui.link(4, 0, 20, "")
    ui.link(20, 0, 21, "")
    ui.link(21, 0, 3, "model")
    prompt = W.ui_to_api(ui.json(), oi)
    assert "20" not in prompt and "21" not in prompt
    assert prompt["3"]["inputs"]["model"] == ["4", 0]
    assert W.check_workflow(ui.json(), oi, ignore={"missing model file"}) == []


def test_primitive_node_value_goes_to_its_targets(oi):
    ui = sampler_graph(oi)
    ui.add(30, "PrimitiveNode", [123456, "fixed"], inputs=[],
           outputs=[{"name": "INT", "type": "INT", "links": [], "widget": {"name": "seed"}}])
    ui.link(30, 0, 3, "seed")
    prompt = W.ui_to_api(ui.json(), oi)
    assert "30" not in prompt
    assert prompt["3"]["inputs"]["seed"] == 123456  # not the 42 left in the KSampler's own slot
    assert prompt["3"]["inputs"]["steps"] == 20
    # A primitive feeding an out-of-range value is caught as the target's value.
    ui.node(30)["widgets_values"] = [-5, "fixed"]
    problems = W.check_workflow(ui.json(), oi, ignore={"missing model file"})
    assert len(problems) == 1 and problems[0].startswith("out of range") and "'seed'" in problems[0]


def test_converted_widget_takes_its_link_and_keeps_its_slot(oi):
    ui = sampler_graph(oi)
    ui.add(10, "PrimitiveInt", [777, "fixed"])
    ui.link(10, 0, 3, "steps")
    prompt = W.ui_to_api(ui.json(), oi)
    ks = prompt["3"]["inputs"]
    assert ks["steps"] == ["10", 0]
    assert (ks["seed"], ks["cfg"], ks["sampler_name"]) == (42, 7.5, "euler")  # slots after steps unshifted
    assert prompt["10"]["inputs"] == {"value": 777}
    assert W.check_workflow(ui.json(), oi, ignore={"missing model file"}) == []


def test_old_style_converted_widget_input_without_socket_list(oi):
    """Older frontends listed only converted widgets in ``inputs``; the mapping must not depend on it."""
    ui = sampler_graph(oi)
    ks = ui.node(3)
    ks["inputs"] = [i for i in ks["inputs"] if "widget" not in i]
    for link in ui.links:  # re-number target slots to the shortened list
        if link[3] == 3:
            link[4] = next(i for i, inp in enumerate(ks["inputs"]) if inp["link"] == link[0])
    ks["widgets_values"] = [5, True, 30, 4.0, "dpmpp_2m", "normal", 1.0]  # `true` control: pre-2024 files
    prompt = W.ui_to_api(ui.json(), oi)
    assert {k: prompt["3"]["inputs"][k] for k in ("seed", "steps", "cfg", "sampler_name")} == {
        "seed": 5, "steps": 30, "cfg": 4.0, "sampler_name": "dpmpp_2m"}


def test_muted_node_is_dropped_with_its_links(oi):
    ui = sampler_graph(oi)
    ui.node(8)["mode"] = 2
    prompt = W.ui_to_api(ui.json(), oi)
    assert "8" not in prompt
    assert "images" not in prompt["9"]["inputs"]  # ComfyUI then reports the missing input, as in the UI


def test_bypassed_node_passes_its_matching_input_through(oi):
    ui = UI(oi)
    ui.add(1, "EmptyImage", [64, 32, 1, 0])
    ui.add(2, "ImageInvert", None, mode=4)
    ui.add(3, "SaveImage", ["x"])
    ui.link(1, 0, 2, "image")
    ui.link(2, 0, 3, "images")
    prompt = W.ui_to_api(ui.json(), oi)
    assert "2" not in prompt
    assert prompt["3"]["inputs"]["images"] == ["1", 0]


def test_bypassed_node_without_a_matching_input_leaves_the_input_empty(oi):
    ui = sampler_graph(oi)
    ui.node(8)["mode"] = 4  # VAEDecode: LATENT, VAE in; IMAGE out: nothing to pass through
    prompt = W.ui_to_api(ui.json(), oi)
    assert "8" not in prompt and "images" not in prompt["9"]["inputs"]


def test_notes_are_dropped(oi):
    ui = sampler_graph(oi)
    ui.add(40, "Note", ["needs sd_xl_base_1.0.safetensors in models/checkpoints"], inputs=[], outputs=[])
    ui.add(41, "MarkdownNote", ["# hello"], inputs=[], outputs=[])
    prompt = W.ui_to_api(ui.json(), oi)
    assert set(prompt) == {"3", "4", "5", "6", "7", "8", "9"}


def test_list_widget_values_are_wrapped(oi):
    info = {"input": {"required": {"xs": ["FLOAT", {"default": [1.0]}]}}, "input_order": {"required": ["xs"]},
            "output": ["FLOAT"]}
    ui = UI({"ListNode": info})
    ui.add(1, "ListNode", [[0.5, 0.25]])
    assert W.ui_to_api(ui.json(), {"ListNode": info})["1"]["inputs"] == {"xs": {"__value__": [0.5, 0.25]}}


def test_subgraphs_and_unknown_formats_are_refused(oi):
    wf = sampler_graph(oi).json()
    wf["definitions"] = {"subgraphs": [{"id": "0d0f-...", "name": "Upscale"}]}
    with pytest.raises(W.WorkflowError, match="Unpack Subgraph"):
        W.ui_to_api(wf, oi)
    assert W.check_workflow(wf, oi)[0].startswith("unsupported")
    with pytest.raises(BoLIDError, match="neither"):
        W.to_api_prompt({"hello": 1}, oi)


def test_api_prompt_is_detected_and_passed_through(oi):
    api = W.ui_to_api(sampler_graph(oi).json(), oi)
    assert W.is_api_prompt(api) and not W.is_ui_workflow(api)
    assert W.to_api_prompt(api, oi) is api
    assert W.to_api_prompt({"prompt": api}, oi) is api
    assert W.check_workflow(api, oi, ignore={"missing model file"}) == []
    bad = copy.deepcopy(api)
    bad["3"]["inputs"]["steps"] = 0
    assert [p.split(":")[0] for p in W.check_workflow(bad, oi, ignore={"missing model file"})] == ["out of range"]


def test_unknown_node_type_raises_on_conversion(oi):
    ui = sampler_graph(oi)
    ui.add(50, "NoSuchNode", [1], inputs=[], outputs=[])
    with pytest.raises(W.WorkflowError, match="NoSuchNode"):
        W.ui_to_api(ui.json(), oi)


# --- checks ------------------------------------------------------------------------------------

def _categories(problems: list[str]) -> list[str]:
    return sorted(p.split(":")[0] for p in problems)


def test_clean_workflow_has_only_the_missing_model(oi):
    wf = sampler_graph(oi).json()
    problems = W.check_workflow(wf, oi)
    assert _categories(problems) == ["missing model file"]
    assert "sd_xl_base_1.0.safetensors" in problems[0]
    assert W.check_workflow(wf, oi, ignore={"missing model file"}) == []


@pytest.mark.parametrize("node_id, index, value, category", [
    (3, 4, "no_such_sampler", "bad value"),      # combo value not among options
    (3, 2, 0, "out of range"),                   # steps min 1
    (3, 3, 101.0, "out of range"),               # cfg max 100
    (3, 2, "20", "wrong type"),                  # a string in an INT
    (3, 6, True, "wrong type"),                  # a bool is not a FLOAT
    (5, 0, 7.5, "wrong type"),                   # a fraction in an INT
    (6, 0, 12, "wrong type"),                    # a number in a STRING
])
def test_bad_widget_values_are_detected(oi, node_id, index, value, category):
    ui = sampler_graph(oi)
    ui.node(node_id)["widgets_values"][index] = value
    problems = W.check_workflow(ui.json(), oi, ignore={"missing model file"})
    assert _categories(problems) == [category], problems


def test_type_mismatch_is_detected(oi):
    ui = sampler_graph(oi)
    vae_link = next(l for l in ui.links if l[3] == 8 and l[4] == 1)
    vae_link[2] = 1  # CLIP output into the VAE input
    problems = W.check_workflow(ui.json(), oi, ignore={"missing model file"})
    assert _categories(problems) == ["type mismatch"]
    assert "CLIP" in problems[0] and "VAE" in problems[0]


def test_unknown_node_type_is_detected(oi):
    ui = sampler_graph(oi)
    ui.add(50, "BoLIDDoesNotExist", [1], inputs=[], outputs=[])
    problems = W.check_workflow(ui.json(), oi, ignore={"missing model file"})
    assert _categories(problems) == ["unknown node type"] and "BoLIDDoesNotExist" in problems[0]


def test_link_to_missing_output_slot_is_detected(oi):
    ui = sampler_graph(oi)
    next(l for l in ui.links if l[3] == 8 and l[4] == 1)[2] = 7  # CheckpointLoaderSimple has 3 outputs
    assert _categories(W.check_workflow(ui.json(), oi, ignore={"missing model file"})) == ["bad link"]


def test_missing_model_is_its_own_category_and_an_installed_one_passes(oi):
    info = copy.deepcopy(oi)
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = ["sd_xl_base_1.0.safetensors"]
    assert W.check_workflow(sampler_graph(oi).json(), info) == []
    ui = sampler_graph(oi)
    ui.node(4)["widgets_values"] = ["v1-5.safetensors"]
    assert _categories(W.check_workflow(ui.json(), info)) == ["missing model file"]


def test_unknown_ignore_category_is_refused(oi):
    with pytest.raises(BoLIDError, match="unknown problem categories"):
        W.check_workflow(sampler_graph(oi).json(), oi, ignore={"missing models"})


@pytest.mark.parametrize("a, b, ok", [
    ("IMAGE", "IMAGE", True), ("IMAGE", "MASK", False), ("*", "MODEL", True), ("MODEL", "*", True),
    ("INT,FLOAT", "FLOAT", True), ("STRING", "INT, FLOAT", False), (["a", "b"], "COMBO", True),
])
def test_types_match(a, b, ok):
    assert W.types_match(a, b) is ok


# --- required models ---------------------------------------------------------------------------

def test_required_models_lists_loader_files_with_folders(oi):
    ui = sampler_graph(oi)
    ui.add(60, "CLIPVisionLoader", ["clip_vision_h.safetensors"])
    ui.add(61, "LoadImage", ["ref.png", "image"])
    ui.add(62, "CheckpointLoaderSimple", ["muted.safetensors"], mode=2)
    assert W.required_models(ui.json(), oi) == [
        ("CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors", "checkpoints"),
        ("CLIPVisionLoader", "clip_name", "clip_vision_h.safetensors", "clip_vision"),
        ("LoadImage", "image", "ref.png", "input"),
    ]
    api = W.ui_to_api(ui.json(), oi)
    assert sorted(W.required_models(api, oi)) == sorted(W.required_models(ui.json(), oi))


def test_bolid_loaders_are_in_the_catalogue():
    from bolid_lib.runner import model_catalog as C

    assert C.folder_for_input("BoLIDAdapterLoader", "adapter_name") == "bolid"
    assert C.folder_for_input("BoLIDLoadBody", "body_name") == "bolid_bodies"
    assert "train" in C.where_to_get("my_adapter.safetensors", "bolid")
    assert "6.9 GB" in C.where_to_get("sd_xl_base_1.0.safetensors", "checkpoints")
    assert C.describe_file("pose/yolo11n-pose.pt").folder == "ultralytics"


def _pack_object_info() -> dict:
    """The pack's node schemas as /object_info serves them, built against the ComfyUI stand-in (a subprocess:
    the stand-in's module names are ComfyUI's)."""
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "..", "standin", "dump_pack_info.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the pack did not import against the stand-in:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)["nodes"]


def test_catalogue_matches_the_pack_node_inputs():
    """Every BoLID loader input in the catalogue is a file choice (COMBO) of that node's schema, and every file
    choice of the pack's nodes is in the catalogue (the stand-in lists no files, so a file choice is a COMBO
    with no options there; fixed choices such as ``mode`` have theirs)."""
    from bolid_lib.runner import model_catalog as C

    info = _pack_object_info()
    bolid = sorted((n, i) for (n, i) in C.LOADER_FOLDERS if n.startswith("BoLID"))
    assert bolid, "the catalogue names no BoLID loader input"

    def spec(node: str, name: str):
        inputs = info.get(node, {}).get("input", {})
        return (inputs.get("required") or {}).get(name) or (inputs.get("optional") or {}).get(name)

    not_combos = [(n, i, spec(n, i)) for (n, i) in bolid if not spec(n, i) or spec(n, i)[0] != "COMBO"]
    assert not_combos == [], f"catalogue inputs that are not a COMBO of the pack's node schemas: {not_combos}"
    file_choices = sorted((node, name) for node, entry in info.items()
                          for section in ("required", "optional")
                          for name, s in ((entry.get("input") or {}).get(section) or {}).items()
                          if (s[0] == "COMBO" and not (s[1] if len(s) > 1 else {}).get("options"))
                          or (isinstance(s[0], list) and not s[0]))
    assert file_choices == bolid, f"the pack's file choices {file_choices} != the catalogue's {bolid}"
    for (n, i), table in C.PREFIXED_FOLDERS.items():
        assert (n, i) in bolid, f"a value prefix for {(n, i)}, which is not a catalogue loader input"
        for prefix, folder in table.items():
            assert C.resolve_file(n, i, prefix + "x.safetensors") == (folder, "x.safetensors")


# --- the frontend's own default workflow -------------------------------------------------------

def _default_template() -> str | None:
    for base in sys.path:
        path = os.path.join(base, "comfyui_workflow_templates", "templates", "default.json")
        if os.path.isfile(path):
            return path
    return None


def test_comfyui_default_template_converts_like_the_frontend(oi):
    path = _default_template()
    if path is None:
        # Not in the dev extra (a ComfyUI requirement), and its releases split into bundles (0.2+, what ComfyUI
        # 0.33 pins) no longer ship the frontend's default graph as templates/default.json.
        pytest.skip("no comfyui_workflow_templates/templates/default.json on sys.path: comfyui-workflow-templates "
                    "is absent, or a bundle-split release (0.2+) that no longer ships default.json")
    with open(path, encoding="utf-8") as f:
        wf = json.load(f)
    prompt = W.ui_to_api(wf, oi)
    ks = prompt["3"]["inputs"]
    # The values the frontend's graphToPrompt gives (comfy-cli 1.23 gets these wrong, see HOST_NOTES.md).
    assert {k: ks[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == {
        "seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1}
    assert (ks["model"], ks["positive"], ks["negative"], ks["latent_image"]) == (["4", 0], ["6", 0], ["7", 0], ["5", 0])
    assert prompt["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}
    assert prompt["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert prompt["9"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["8", 0]}
    assert prompt["7"]["inputs"] == {"text": "text, watermark", "clip": ["4", 1]}
    assert W.check_workflow(wf, oi, ignore={"missing model file"}) == []


def test_prefixed_adapter_choice_resolves_to_the_ipadapter_folder(oi):
    info = dict(oi)
    info["BoLIDAdapterLoader"] = {"input": {"required": {"adapter_name": ["COMBO", {"options": []}]}},
                                  "input_order": {"required": ["adapter_name"]}, "output": ["BOLID_ADAPTER"]}
    ui = UI(info)
    ui.add(1, "BoLIDAdapterLoader", ["[ipadapter] ip-adapter_sdxl_vit-h.safetensors"])
    ui.add(2, "BoLIDAdapterLoader", ["bolid_adapter_sdxl.safetensors"])
    assert W.required_models(ui.json(), info) == [
        ("BoLIDAdapterLoader", "adapter_name", "ip-adapter_sdxl_vit-h.safetensors", "ipadapter"),
        ("BoLIDAdapterLoader", "adapter_name", "bolid_adapter_sdxl.safetensors", "bolid"),
    ]
    assert [p.split(":")[0] for p in W.check_workflow(ui.json(), info)] == ["missing model file"] * 2


def test_check_command_reports_problems_without_comfyui(oi, dump_path, tmp_path, capsys):
    from bolid_lib.__main__ import main

    ui = sampler_graph(oi)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(ui.json()), encoding="utf-8")
    dump = ["--object-info", dump_path]  # core nodes only: skips reading the pack's schemas (a subprocess)
    assert main(["check", str(path), "--ignore-missing-files", *dump]) == 0
    assert main(["check", str(path), *dump]) == 1
    assert "missing model file" in capsys.readouterr().out
    ui.node(3)["widgets_values"][2] = 0
    path.write_text(json.dumps(ui.json()), encoding="utf-8")
    assert main(["check", str(path), "--ignore-missing-files", *dump]) == 1
    assert "out of range: node 3 (KSampler) input 'steps'" in capsys.readouterr().out


# --- V3 inputs of ComfyUI 0.33 and the frontend's extra widgets --------------------------------------

def _info(required: dict, output=("IMAGE",)) -> dict:
    return {"input": {"required": required}, "input_order": {"required": list(required)}, "output": list(output)}


def test_dynamic_combo_nodes_are_refused_with_the_fix():
    info = {"Resize": _info({"image": ["IMAGE", {}], "resize_type": ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "scale dimensions", "inputs": {"required": {"width": ["INT", {"default": 512}]}}}]}]})}
    wf = {"nodes": [{"id": 1, "type": "Resize", "inputs": [], "outputs": [], "widgets_values": ["scale dimensions", 2048]}],
          "links": [], "version": 0.4}
    assert W.dynamic_inputs(info["Resize"]) == ["resize_type"]
    with pytest.raises(W.WorkflowError, match=r"resize_type.*Export \(API\)"):
        W.ui_to_api(wf, info)
    assert [p.split(":")[0] for p in W.check_workflow(wf, info)] == ["unsupported"]


def test_match_type_sockets_take_any_type():
    assert W.types_match("MODEL", "COMFY_MATCHTYPE_V3") and W.types_match("COMFY_MATCHTYPE_V3", "INT")
    assert not W.types_match("MODEL", "INT")


def test_file_upload_buttons_sit_after_their_combo():
    """Load3D in the 0.33 frontend: the model file, three button widgets, the LOAD_3D widget, width, height."""
    info = _info({"model_file": ["COMBO", {"options": ["none"], "file_upload": True}], "image": ["LOAD_3D", {}],
                  "width": ["INT", {"default": 1024, "min": 1}], "height": ["INT", {"default": 1024, "min": 1}]})
    node = {"id": 1, "type": "Load3D",
            "widgets_values": ["bike.fbx", "upload3dmodel", "uploadExtraResources", "clear", "", 640, 480]}
    assert W.widget_values(node, info) == {"model_file": "bike.fbx", "image": "", "width": 640, "height": 480}
    node["widgets_values"] = ["bike.fbx", "", 640, 480]        # no buttons saved: the plain layout
    assert W.widget_values(node, info)["width"] == 640


def test_input_folder_files_of_any_kind_are_missing_input_files():
    """Audio and 3D upload combos, and folders of photos, name things in ComfyUI's input folder."""
    audio = W.input_specs(_info({"audio": [[], {"audio_upload": True}]}))[0]
    assert W.check_value(audio, "song.mp3", "LoadAudio")[0] == "missing input file"
    folder = W.input_specs(_info({"folder": [["3d"], {}]}))[0]
    assert W.check_value(folder, "bolid_person", "BoLIDLoadPhotos")[0] == "missing input file"
    assert W.check_value(folder, "bolid_person", "SomeOtherNode")[0] == "bad value"
    from bolid_lib.runner.model_catalog import where_to_get

    assert "photos of one person" in where_to_get("bolid_person", "input")
    assert "ultralytics/assets" in where_to_get("pose/my_pose.pt", "ultralytics")
    assert "h94/IP-Adapter" in where_to_get("other.safetensors", "ipadapter")
