"""The pack loads in a real ComfyUI through ComfyUI's own loader, cleanly."""

import pytest

pytestmark = pytest.mark.host


def test_loaded_by_comfyui_loader_without_warnings(comfy):
    assert comfy.pack_loaded, "nodes.load_custom_node returned False"
    msgs = [r.getMessage() for r in comfy.load_log]
    assert not msgs, "warnings while loading the pack:\n" + "\n".join(msgs)


def test_nodes_registered_with_tooltips(comfy):
    assert comfy.pack_nodes, "no BoLID node registered"
    for node_id in comfy.pack_nodes:
        assert node_id.startswith("BoLID")
        info = comfy.object_info(node_id)
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_node_list_survives_a_deleted_model_folder(comfy):
    """A user deletes models/bolid/bodies while ComfyUI runs, after it was listed once: ComfyUI's listing cache
    raises FileNotFoundError on a vanished folder; the load-Body-ID node's schema (and so /object_info) must not."""
    import shutil

    import folder_paths

    bodies = comfy.models_dir / "bolid" / "bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    (bodies / "kept_for_listing.safetensors").write_bytes(b"")
    folder_paths.get_filename_list("bolid_bodies")          # cached with the folder's mtime
    shutil.rmtree(bodies)
    with pytest.raises(FileNotFoundError):                   # the host's behaviour this guards against
        folder_paths.get_filename_list("bolid_bodies")
    info = comfy.object_info("BoLIDLoadBody")                # raised FileNotFoundError before the fix
    assert "body_name" in info["input"]["required"]
    assert "kept_for_listing" not in str(info), "the deleted file is still offered"


def test_model_folders_registered_and_merged(comfy):
    import folder_paths

    for key in ("bolid", "bolid_bodies", "ultralytics"):
        assert key in folder_paths.folder_names_and_paths, key
    bodies = folder_paths.get_folder_paths("bolid_bodies")[0].replace("\\", "/")
    assert bodies.endswith("models/bolid/bodies")
    assert ".pt" in folder_paths.folder_names_and_paths["ultralytics"][1]


def test_register_keeps_user_paths(comfy, tmp_path):
    """A folder the user set in extra_model_paths.yaml stays first; ours is appended; extensions merged."""
    import folder_paths

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        user = str(tmp_path / "my_pose_models")
        folder_paths.folder_names_and_paths["ultralytics"] = ([user], {".onnx"})
        import sys

        comfy_mod = next(m for name, m in sys.modules.items() if name.endswith("nodes._comfy") and hasattr(m, "register_model_folders"))
        comfy_mod.register_model_folders()
        paths, exts = folder_paths.folder_names_and_paths["ultralytics"]
        assert paths[0] == user and len(paths) == 2
        assert {".onnx", ".pt"} <= set(exts)
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)


def test_web_directory_registered(comfy):
    import os

    dirs = {k: v for k, v in comfy.nodes.EXTENSION_WEB_DIRS.items()}
    ours = [v for v in dirs.values() if os.path.samefile(v, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "js"))]
    assert ours, f"the pack's js/ folder is not served: {dirs}"


def test_body_id_folders_follow_the_bolid_folders(comfy, tmp_path):
    """extra_model_paths.yaml read by ComfyUI's loader before the pack registers (main.py's order): a
    "bolid_bodies" path the user gave stays first, then <each "bolid" folder>/bodies in that key's order."""
    import importlib
    import sys

    import folder_paths

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"mine:\n    base_path: {tmp_path}\n    bolid: shared_bolid\n    bolid_bodies: my_bodies\n",
                      encoding="utf-8")
    try:
        for key in ("bolid", "bolid_bodies"):
            folder_paths.folder_names_and_paths.pop(key, None)
        importlib.import_module("utils.extra_config").load_extra_path_config(str(config))
        comfy_mod = next(m for name, m in sys.modules.items() if name.endswith("nodes._comfy") and hasattr(m, "register_model_folders"))
        comfy_mod.register_model_folders()
        comfy_mod.register_model_folders()  # twice (a reload): nothing is added twice
        own = str(comfy.models_dir / "bolid")
        assert folder_paths.get_folder_paths("bolid") == [str(tmp_path / "shared_bolid"), own]
        assert folder_paths.get_folder_paths("bolid_bodies") == [
            str(tmp_path / "my_bodies"), str(tmp_path / "shared_bolid" / "bodies"), str(comfy.models_dir / "bolid" / "bodies")]
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
