"""Body-ID nodes inside a real ComfyUI executor: encode -> save -> load -> blend -> preview, with a random-init
YOLO11n-pose model and a Body-ID VAE trained for a few steps by the real trainer (its command line)."""

from __future__ import annotations

import copy
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bolid_lib.method.embedding import BodyEmbedding, load_body, save_body

pytestmark = pytest.mark.host

H, W = 96, 128
LOW_CONF = 0.0001  # random-weight YOLO scores every detection about 2e-4
VAE_NAME = "body_vae_host_test.safetensors"


@pytest.fixture(scope="module")
def trained_vae(comfy, tmp_path_factory):
    """A tiny Body-ID VAE trained 3 steps by `python -m bolid_lib.training body-vae --synthetic`, in models/bolid/."""
    from bolid_lib.training.cli import main

    out = tmp_path_factory.mktemp("vae_train")
    rc = main(["body-vae", "--synthetic", "3", "--views-per-person", "4", "--steps", "3", "--batch-persons", "2",
               "--input-size", "32", "--latent-dim", "16", "--widths", "8,16", "--feature-dim", "16",
               "--checkpoint-every", "2", "--warmup", "1", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    dst = comfy.models_dir / "bolid" / VAE_NAME
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "body_vae.safetensors", dst)
    yield VAE_NAME
    dst.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def photos(comfy):
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(1)
    arrays = [
        np.stack([xx / W, yy / H, 0.5 + 0 * xx], -1),
        rng.random((H, W, 3)),
        np.kron(rng.random((6, 8, 3)), np.ones((16, 16, 1))),
        np.where(((xx - 64) ** 2 + (yy - 48) ** 2 < 30 ** 2)[..., None], [0.9, 0.8, 0.7], [0.1, 0.2, 0.3]),
    ]
    names = []
    for i, a in enumerate(arrays):
        name = f"bolid_body_test_{i}.png"
        Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(comfy.input_dir / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def pose_name(comfy, yolo_pose_pt):
    with comfy.model_installed(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-body-test.pt") as name:
        yield name


@pytest.fixture
def bodies_dir(comfy):
    d = comfy.models_dir / "bolid" / "bodies"
    d.mkdir(parents=True, exist_ok=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def encode_graph(photos, pose_name, vae_name, *, conf=LOW_CONF, save_name="alice", if_exists="increment") -> dict:
    g = {f"l{i}": {"class_type": "LoadImage", "inputs": {"image": n}} for i, n in enumerate(photos)}
    g["b1"] = {"class_type": "ImageBatch", "inputs": {"image1": ["l0", 0], "image2": ["l1", 0]}}
    g["b2"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b1", 0], "image2": ["l2", 0]}}
    g["b3"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b2", 0], "image2": ["l3", 0]}}
    g["pm"] = {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": pose_name}}
    g["pose"] = {"class_type": "BoLIDPoseKeypoints", "inputs": {
        "image": ["b3", 0], "pose_model": ["pm", 0], "conf": conf, "visibility": 0.0, "person": "largest",
        "person_index": 0, "on_missing": "skip"}}
    g["wt"] = {"class_type": "BoLIDGaussianWeighting", "inputs": {
        "image": ["b3", 0], "pose": ["pose", 0], "sigma": 0.1, "sigma_mode": "relative", "alpha": 0.2}}
    g["vae"] = {"class_type": "BoLIDBodyVAELoader", "inputs": {"vae_name": vae_name}}
    g["enc"] = {"class_type": "BoLIDBodyEncode", "inputs": {
        "views": ["wt", 0], "pose": ["pose", 0], "body_vae": ["vae", 0], "mode": "mean", "seed": 0, "views_per_chunk": 3}}
    g["save"] = {"class_type": "BoLIDSaveBody", "inputs": {"body": ["enc", 0], "name": save_name, "if_exists": if_exists}}
    g["show"] = {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["enc", 0]}}
    return g


def cached(comfy, node_id: str, slot: int):
    """A node's output from the executor's cache: 0.3.64 stores the output lists; 0.33's ``get`` is a coroutine
    giving a CacheEntry (ui, outputs)."""
    import asyncio
    import inspect

    entry = comfy.executor.caches.outputs.get(node_id)
    if inspect.isawaitable(entry):
        entry = asyncio.run(entry)
    return getattr(entry, "outputs", entry)[slot][0]


def cached_nodes(result) -> list[str]:
    """Node ids the executor took from its cache (its execution_cached status message)."""
    return [n for event, data in result.messages if event == "execution_cached" for n in data.get("nodes", [])]


def test_encode_save_load_blend_in_real_executor(comfy, photos, pose_name, trained_vae, bodies_dir):
    from bolid_lib.method.body_vae import load_body_vae

    result = comfy.run(encode_graph(photos, pose_name, trained_vae))
    assert result.ok, result.error_text()
    body = cached(comfy, "enc", 0)
    vae_file = comfy.models_dir / "bolid" / trained_vae
    vae = load_body_vae(vae_file)
    assert body.dim == 16 and body.meta["vae_fingerprint"] == vae.fingerprint()
    pose = cached(comfy, "pose", 0)
    assert body.meta["views_used"] + body.meta["views_skipped"] == 4
    assert body.meta["views_used"] == int(pose.found.sum()) >= 1
    # Progress over views: chunks of 3 -> 3 of 4, then 4 of 4.
    enc_progress = [(v, t) for n, v, t in result.progress if n == "enc"]
    assert enc_progress[-1] == (4, 4) and (3, 4) in enc_progress
    # The saved file is exactly the encoded Body-ID.
    saved = bodies_dir / "alice.safetensors"
    back = load_body(saved)
    assert torch.equal(back.mean, body.mean) and torch.equal(back.logvar, body.logvar)
    text = result.outputs["show"]["text"][0]
    assert "D=16" in text and vae.fingerprint() in text
    assert result.outputs["show"]["bolid_body"][0]["views_used"] == body.meta["views_used"]

    # Same name again: incremented, the first file untouched.
    result = comfy.run(encode_graph(photos, pose_name, trained_vae))
    assert result.ok, result.error_text()
    assert (bodies_dir / "alice_00001.safetensors").is_file()
    assert torch.equal(load_body(saved).mean, body.mean)
    # "refuse" stops with a clear error.
    result = comfy.run(encode_graph(photos, pose_name, trained_vae, if_exists="refuse"))
    assert not result.ok and "exists already" in result.error_text()

    # Load both and blend / slerp them.
    other = BodyEmbedding(body.mean + 1.0, body.logvar, dict(body.meta))
    save_body(other, bodies_dir / "bob.safetensors")
    g = {
        "la": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "alice.safetensors"}},
        "lb": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "bob.safetensors"}},
        "mix": {"class_type": "BoLIDBlendBodies", "inputs": {
            "body_1": ["la", 0], "body_2": ["lb", 0], "mode": "weighted_mean", "t": 0.5,
            "weight_1": 3.0, "weight_2": 1.0, "weight_3": 1.0, "weight_4": 1.0}},
        "sl": {"class_type": "BoLIDBlendBodies", "inputs": {
            "body_1": ["la", 0], "body_2": ["lb", 0], "mode": "slerp", "t": 0.0,
            "weight_1": 1.0, "weight_2": 1.0, "weight_3": 1.0, "weight_4": 1.0}},
        "p1": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["mix", 0]}},
        "p2": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["sl", 0]}},
    }
    result = comfy.run(g)
    assert result.ok, result.error_text()
    torch.testing.assert_close(cached(comfy, "mix", 0).mean, body.mean + 0.25)
    torch.testing.assert_close(cached(comfy, "sl", 0).mean, body.mean)


def test_load_body_rereads_a_changed_file(comfy, bodies_dir):
    path = bodies_dir / "carol.safetensors"
    save_body(BodyEmbedding(torch.zeros(8), torch.zeros(8)), path)
    g = {"l": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "carol.safetensors"}},
         "p": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["l", 0]}}}
    first = comfy.run(copy.deepcopy(g))  # a fresh prompt per run, as the server gets one (the executor annotates it)
    assert first.ok, first.error_text()
    assert first.outputs["p"]["bolid_body"][0]["norm"] == 0.0
    # Unchanged file, cache kept: the loader does not run again.
    again = comfy.run(copy.deepcopy(g), fresh=False)
    assert again.ok and "l" in cached_nodes(again)
    old = path.stat().st_mtime_ns
    path.unlink()
    save_body(BodyEmbedding(torch.full((8,), 2.0), torch.zeros(8)), path)
    os.utime(path, ns=(old + 10 ** 9, old + 10 ** 9))  # a later mtime even on coarse-grained file systems
    second = comfy.run(copy.deepcopy(g), fresh=False)  # cache kept: only the changed file makes it run again
    assert second.ok, second.error_text()
    assert "l" not in cached_nodes(second)
    assert torch.equal(cached(comfy, "l", 0).mean, torch.full((8,), 2.0))


def test_a_name_cannot_escape_the_bodies_folder(comfy, photos, pose_name, trained_vae, bodies_dir, caplog):
    """validate_inputs refuses the name: ComfyUI drops that output (logging why) and runs the others."""
    with caplog.at_level(logging.ERROR):
        result = comfy.run(encode_graph(photos, pose_name, trained_vae, save_name="../../x"))
    assert "would leave the folder" in caplog.text and "remove '..'" in caplog.text
    assert "save" not in result.outputs and "show" in result.outputs
    assert not list(comfy.models_dir.parent.rglob("x.safetensors"))
    assert not list(bodies_dir.rglob("*.safetensors"))


def test_no_person_in_any_view_is_a_clear_error(comfy, photos, pose_name, trained_vae, bodies_dir):
    result = comfy.run(encode_graph(photos, pose_name, trained_vae, conf=1.0))
    assert not result.ok
    assert "no person was found in any of the 4 views" in result.error_text()
    assert not (bodies_dir / "alice.safetensors").exists()


def test_vae_loader_refuses_another_kind_of_file(comfy, photos, pose_name, bodies_dir):
    path = comfy.models_dir / "bolid" / "not_a_vae.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"ip_adapter.1.to_k_ip.weight": torch.zeros(2, 2)}, str(path))
    try:
        result = comfy.run(encode_graph(photos, pose_name, "not_a_vae.safetensors"))
        assert not result.ok
        text = result.error_text()
        assert "not a Body-ID VAE file" in text and "safetensors file with 1 tensors" in text
    finally:
        path.unlink()


def _pack_comfy_module():
    import sys

    return next(m for name, m in sys.modules.items() if name.endswith("nodes._comfy") and hasattr(m, "register_model_folders"))


def _options(comfy, node: str, name: str) -> list[str]:
    spec = comfy.object_info(node)["input"]["required"][name]
    return list(spec[0] if isinstance(spec[0], list) else spec[1]["options"])


@pytest.mark.parametrize("order", ["yaml_before_pack", "yaml_after_pack"])
def test_body_ids_of_a_shared_model_folder_are_listed_loaded_and_saved_there(comfy, tmp_path, order):
    """``bolid: <path>`` in a real extra_model_paths.yaml, read by ComfyUI's own loader (utils.extra_config),
    before the pack registers its folders (as main.py does) or after (another pack, a late yaml): a Body-ID in
    <path>/bodies/ is among Load Body-ID's choices, passes validation and loads; the VAE list leaves it out;
    BoLID Save Body-ID writes where the list then shows it."""
    import importlib

    import folder_paths

    extra_config = importlib.import_module("utils.extra_config")
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    shared = tmp_path / "shared models"
    person = BodyEmbedding(torch.linspace(-1, 1, 12), torch.zeros(12), {"views_used": 3})
    save_body(person, shared / "bolid" / "bodies" / "my_person.safetensors")
    (shared / "bolid" / "bodies" / "team").mkdir()
    save_body(person, shared / "bolid" / "bodies" / "team" / "bob.safetensors")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"shared:\n    base_path: {shared}\n    bolid: bolid\n", encoding="utf-8")
    own_bodies = comfy.models_dir / "bolid" / "bodies"
    try:
        if order == "yaml_before_pack":
            for key in ("bolid", "bolid_bodies"):
                folder_paths.folder_names_and_paths.pop(key, None)
            extra_config.load_extra_path_config(str(config))
            _pack_comfy_module().register_model_folders()
        else:
            extra_config.load_extra_path_config(str(config))
        choices = _options(comfy, "BoLIDLoadBody", "body_name")
        assert {"my_person.safetensors", "team/bob.safetensors"} <= set(choices), choices
        assert not any("my_person" in c for c in _options(comfy, "BoLIDBodyVAELoader", "vae_name"))
        g = {"l": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "team/bob.safetensors"}},
             "save": {"class_type": "BoLIDSaveBody", "inputs": {"body": ["l", 0], "name": "saved_here", "if_exists": "refuse"}},
             "p": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["l", 0]}}}
        result = comfy.run(g)
        assert result.ok, result.error_text()
        assert result.outputs["p"]["bolid_body"][0]["dim"] == 12
        # Saved into the first Body-ID folder: the user's when their yaml came first, else models/bolid/bodies.
        folder = shared / "bolid" / "bodies" if order == "yaml_before_pack" else own_bodies
        assert (folder / "saved_here.safetensors").is_file(), result.outputs["save"]
        assert result.outputs["save"]["bolid_saved"] == ["saved_here.safetensors"]
        assert "saved_here.safetensors" in _options(comfy, "BoLIDLoadBody", "body_name")
        again = comfy.run({"l": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "saved_here.safetensors"}},
                           "p": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["l", 0]}}})
        assert again.ok, again.error_text()
        assert torch.equal(cached(comfy, "l", 0).mean, person.mean)
    finally:
        (own_bodies / "saved_here.safetensors").unlink(missing_ok=True)
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update({k: (p, e) for k, (p, e) in saved.items()})
        folder_paths.filename_list_cache.clear()
