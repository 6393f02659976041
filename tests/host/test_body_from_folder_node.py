"""BoLID Body-ID From Folder inside the real ComfyUI: the same Body-ID as the step-by-step nodes (Load Photos ->
Pose Keypoints -> Gaussian Weighting -> Body-ID Encode) on a folder of mixed photos, through ComfyUI's executor;
and BoLID Load Photos refusing, before it allocates, a folder whose batch would not fit in memory.

The folder is test_photos_node's: photos of different sizes and orientations (a sideways JPEG with its EXIF tag,
a phone HEIC, a PNG), a text file and a damaged JPEG. Random-init YOLO11n-pose (conf ~0 so every photo carries a
detection) and a random Body-ID VAE of the default layout.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from bolid_lib.data import photos as ph
from test_photos_node import PHOTOS, RANDOM_POSE, SIZE, write_folder

pytestmark = pytest.mark.host

FOLDER = "bolid_lean_mixed"
WEIGHTING = {"sigma": 0.1, "sigma_mode": "relative", "alpha": 0.2}


@pytest.fixture(scope="module")
def mixed(comfy) -> str:
    write_folder(comfy.input_dir / FOLDER)
    yield FOLDER
    shutil.rmtree(comfy.input_dir / FOLDER, ignore_errors=True)


@pytest.fixture(scope="module")
def models(comfy, yolo_pose_pt, tmp_path_factory):
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae

    torch.manual_seed(0)
    placed = {"ultralytics/pose/yolo11n-pose.pt": yolo_pose_pt,
              "bolid/bolid_body_vae_lean.safetensors": save_body_vae(
                  BodyVAE(BodyVAEConfig()), tmp_path_factory.mktemp("lean") / "vae.safetensors")}
    for rel, src in placed.items():
        dst = comfy.models_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    yield {"pose": "pose/yolo11n-pose.pt", "vae": "bolid_body_vae_lean.safetensors"}
    for rel in placed:
        (comfy.models_dir / rel).unlink(missing_ok=True)


def loaders(models) -> dict:
    return {"pm": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": models["pose"]}},
            "vl": {"class_type": "BoLIDBodyVAELoader", "inputs": {"vae_name": models["vae"]}}}


def test_the_lean_node_gives_the_step_by_step_nodes_body_id(comfy, mixed, models):
    step = loaders(models) | {
        "load": {"class_type": "BoLIDLoadPhotos", "inputs": {"folder": mixed, "size": SIZE, "max_photos": 0}},
        "pose": {"class_type": "BoLIDPoseKeypoints", "inputs": {
            "image": ["load", 0], "pose_model": ["pm", 0], "person": "largest", "person_index": 0,
            "on_missing": "skip", **RANDOM_POSE}},
        "weight": {"class_type": "BoLIDGaussianWeighting", "inputs": {"image": ["load", 0], "pose": ["pose", 0], **WEIGHTING}},
        "enc": {"class_type": "BoLIDBodyEncode", "inputs": {
            "views": ["weight", 0], "pose": ["pose", 0], "body_vae": ["vl", 0], "mode": "mean", "seed": 0,
            "views_per_chunk": 8}},
        "show": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["enc", 0]}},
    }
    result = comfy.run(step)
    assert result.ok, result.error_text()
    ref = comfy.cached_output("enc", 0)

    lean = loaders(models) | {"lean": {"class_type": "BoLIDBodyIDFromFolder", "inputs": {
        "folder": mixed, "pose_model": ["pm", 0], "body_vae": ["vl", 0], "size": SIZE, "max_photos": 0,
        "person": "largest", "person_index": 0, "mode": "mean", "seed": 0, "photos_per_step": 3,
        **RANDOM_POSE, **WEIGHTING}}}
    result = comfy.run(lean)
    assert result.ok, result.error_text()
    body = comfy.cached_output("lean", 0)
    torch.testing.assert_close(body.mean, ref.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(body.logvar, ref.logvar, rtol=1e-4, atol=1e-5)
    assert body.meta["views_used"] + body.meta["views_skipped"] == len(PHOTOS) == ref.meta["views_used"] + ref.meta["views_skipped"]
    assert body.meta["vae_fingerprint"] == ref.meta["vae_fingerprint"]
    # The preview is one small contact sheet, not the photos; the report names the files that were no photos.
    sheet = comfy.cached_output("lean", 1)
    assert sheet.shape[0] == 1 and sheet.shape[1] * sheet.shape[2] <= 2 * 4 * 192 ** 2
    report = comfy.cached_output("lean", 2)
    assert f"read {len(PHOTOS)} photos" in report and "notes.txt" in report and "broken.jpg" in report
    ui = result.outputs["lean"]
    assert len(ui["images"]) == 1 and ui["bolid_body"][0]["dim"] == 756
    ticks = [(v, t) for node, v, t in result.progress if node == "lean"]
    assert ticks and ticks[-1][0] == ticks[-1][1], ticks  # ComfyUI's progress bar went to the end


def test_load_photos_refuses_an_over_budget_folder_before_allocating(comfy):
    """1,000 photos at the largest working size would be a 250 GiB batch: refused with the fix, at once, on any
    machine (no mock: the node reads the real available memory), and nothing of that size is allocated."""
    from memlib import status_bytes

    folder = comfy.input_dir / "bolid_too_many"
    folder.mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (8, 12), (90, 120, 200)).save(folder / "p0000.png")
    for i in range(1, 1000):
        shutil.copyfile(folder / "p0000.png", folder / f"p{i:04d}.png")
    try:
        before = status_bytes("VmRSS")
        result = comfy.run({"load": {"class_type": "BoLIDLoadPhotos",
                                     "inputs": {"folder": "bolid_too_many", "size": ph.MAX_SIZE, "max_photos": 0}},
                            "show": {"class_type": "PreviewImage", "inputs": {"images": ["load", 0]}}})
        assert not result.ok
        text = result.error_text()
        assert f"1000 photos at size {ph.MAX_SIZE} would take 250.0 GiB" in text, text
        assert "Nothing was loaded" in text and "BoLID Body-ID From Folder" in text and "set max_photos to" in text
        assert status_bytes("VmRSS") - before < 256 * 1024 ** 2
    finally:
        shutil.rmtree(folder, ignore_errors=True)
