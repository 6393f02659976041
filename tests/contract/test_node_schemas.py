"""Node schemas: naming, tooltips and descriptions on everything, and the stand-in agreeing with ComfyUI."""

import pytest

EXPECTED_FAMILIES = {"BoLIDPoseModelLoader", "BoLIDPoseKeypoints", "BoLIDGaussianWeighting"}


def _inputs(info):
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            yield name, spec


def test_pack_registers_nodes(standin_pack_info):
    nodes = standin_pack_info["nodes"]
    assert nodes, "the pack registers no nodes"
    assert standin_pack_info["web_directory"] == "./js"


def test_names_and_categories(standin_pack_info):
    for node_id, info in standin_pack_info["nodes"].items():
        assert node_id.startswith("BoLID"), node_id
        assert info["display_name"].startswith("BoLID "), (node_id, info["display_name"])
        assert info["category"].split("/")[0] == "BoLID", (node_id, info["category"])
        assert len(info["description"]) >= 20, f"{node_id} has no real description"


def test_every_input_and_output_has_a_tooltip(standin_pack_info):
    missing = []
    for node_id, info in standin_pack_info["nodes"].items():
        for name, spec in _inputs(info):
            opts = spec[1] if len(spec) > 1 else {}
            if not opts.get("tooltip"):
                missing.append(f"{node_id}.{name}")
        for i, tip in enumerate(info["output_tooltips"]):
            if not tip:
                missing.append(f"{node_id} output {i} ({info['output_name'][i]})")
    assert not missing, "no tooltip on: " + ", ".join(missing)


def test_custom_socket_types_are_namespaced(standin_pack_info):
    core_like = {"IMAGE", "MASK", "MODEL", "CLIP_VISION", "CLIP_VISION_OUTPUT", "FLOAT", "INT", "STRING",
                 "BOOLEAN", "COMBO", "POSE_KEYPOINT", "LATENT", "CONDITIONING"}
    for node_id, info in standin_pack_info["nodes"].items():
        types = [spec[0] for _, spec in _inputs(info)] + list(info["output"])
        for t in types:
            if isinstance(t, str) and t not in core_like:
                assert t.startswith("BOLID_"), f"{node_id}: socket type {t} should be BOLID_*"


def _drop_listed_files(fake: dict, real: dict) -> None:
    """Combo options listed from folders (model files, input sub-folders) are what the stand-in's empty folders
    hold, not a schema difference: where the stand-in lists none, leave both lists out of the comparison."""
    for section in ("required", "optional"):
        for name, spec in fake.get("input", {}).get(section, {}).items():
            other = real.get("input", {}).get(section, {}).get(name)
            if spec and spec[0] == "COMBO" and len(spec) > 1 and spec[1].get("options") == [] and other and len(other) > 1:
                spec[1] = {k: v for k, v in spec[1].items() if k != "options"}
                other[1] = {k: v for k, v in other[1].items() if k != "options"}


@pytest.mark.host
def test_standin_matches_real_comfyui(comfy, standin_pack_info):
    """The stand-in used on machines without ComfyUI must serve what the real ComfyUI serves."""
    real_ids = set(comfy.pack_nodes)
    assert real_ids == set(standin_pack_info["nodes"]), "the stand-in and ComfyUI see different node sets"
    import json

    for node_id in sorted(real_ids):
        real = json.loads(json.dumps(comfy.object_info(node_id), default=lambda o: getattr(o, "value", str(o))))
        fake = json.loads(json.dumps(standin_pack_info["nodes"][node_id]))
        real.pop("python_module", None)
        fake.pop("python_module", None)
        # The stand-in copies 0.3.64's schema fields; a newer ComfyUI may serve more (0.33: dev_only,
        # essentials_category, ...), which the contract checks never read. Every field the stand-in serves must be
        # there and equal.
        assert set(fake) <= set(real), f"{node_id}: ComfyUI no longer serves {sorted(set(fake) - set(real))}"
        _drop_listed_files(fake, real)
        assert fake == {k: real[k] for k in fake}, f"stand-in schema of {node_id} differs from ComfyUI's"
