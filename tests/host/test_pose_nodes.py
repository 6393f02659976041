"""Pose and weighting nodes inside a real ComfyUI executor, with a random-init YOLO11n-pose .pt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.host

H, W = 96, 160
LOW_CONF = 0.0001  # random weights score every detection about 2e-4


@pytest.fixture(scope="module")
def photos(comfy):
    """Four input images of different content (gradient, noise, blocks, a disc), in ComfyUI's input folder."""
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(0)
    arrays = [
        np.stack([xx / W, yy / H, 0.5 + 0 * xx], -1),
        rng.random((H, W, 3)),
        np.kron(rng.random((6, 10, 3)), np.ones((16, 16, 1))),
        np.where(((xx - 80) ** 2 + (yy - 48) ** 2 < 30**2)[..., None], [0.9, 0.8, 0.7], [0.1, 0.2, 0.3]),
    ]
    names = []
    for i, a in enumerate(arrays):
        name = f"bolid_pose_test_{i}.png"
        Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(comfy.input_dir / name)
        names.append(name)
    return names


def image_batch_nodes(names: list[str]) -> dict:
    """LoadImage x 4 joined by ImageBatch: node "b3" gives the (4, H, W, 3) batch."""
    g = {f"l{i}": {"class_type": "LoadImage", "inputs": {"image": n}} for i, n in enumerate(names)}
    g["b1"] = {"class_type": "ImageBatch", "inputs": {"image1": ["l0", 0], "image2": ["l1", 0]}}
    g["b2"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b1", 0], "image2": ["l2", 0]}}
    g["b3"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b2", 0], "image2": ["l3", 0]}}
    return g


def pose_nodes(model_name: str, conf=LOW_CONF, on_missing="skip") -> dict:
    return {
        "loader": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": model_name}},
        "pose": {"class_type": "BoLIDPoseKeypoints", "inputs": {
            "image": ["b3", 0], "pose_model": ["loader", 0], "conf": conf, "visibility": 0.5,
            "person": "largest", "person_index": 0, "on_missing": on_missing}},
    }


def weighting_node(source: list, key: str, sigma=0.1, alpha=0.2) -> dict:
    return {"class_type": "BoLIDGaussianWeighting", "inputs": {
        "image": ["b3", 0], key: source, "sigma": sigma, "sigma_mode": "relative", "alpha": alpha}}


def cached(comfy, node_id: str, slot: int):
    """A node's output value from the executor's cache after a run."""
    return comfy.cached_output(node_id, slot)


def test_pose_and_weighting_nodes_in_real_executor(comfy, photos, yolo_pose_pt, install_model):
    name = install_model(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-test.pt")
    assert name == "pose/yolo11n-pose-test.pt"
    prompt = image_batch_nodes(photos) | pose_nodes(name)
    prompt["wp"] = weighting_node(["pose", 0], "pose")
    prompt["wk"] = weighting_node(["pose", 1], "pose_keypoint")
    prompt["mask_img"] = {"class_type": "MaskToImage", "inputs": {"mask": ["wp", 1]}}
    prompt["show"] = {"class_type": "PreviewImage", "inputs": {"images": ["mask_img", 0]}}
    result = comfy.run(prompt)
    assert result.ok, result.error_text()

    # Shapes of what travels between nodes.
    pose = cached(comfy, "pose", 0)
    assert pose.keypoints.shape == (4, 17, 3) and pose.image_size == (H, W) and pose.found.all()
    vis = pose.visible
    assert (pose.keypoints[..., 2][vis] >= 0.5).all() and (pose.keypoints[~vis] == 0).all()
    pose_kp = cached(comfy, "pose", 1)
    assert len(pose_kp) == 4 and pose_kp[0]["canvas_width"] == W and len(pose_kp[0]["people"][0]["pose_keypoints_2d"]) == 54
    assert cached(comfy, "pose", 2).shape == (4, H, W, 3)
    weighted, w_norm, heat = (cached(comfy, "wp", i) for i in range(3))
    assert weighted.shape == (4, H, W, 3) and w_norm.shape == (4, H, W) and heat.shape == (4, H, W, 3)
    assert torch.isclose(w_norm.amax(dim=(1, 2)), torch.ones(4)).all()
    # Same weighting from BOLID_POSE and from its POSE_KEYPOINT (the round trip is exact for visible points).
    assert torch.equal(cached(comfy, "wk", 0), weighted) and torch.equal(cached(comfy, "wk", 1), w_norm)

    # Previews and the data the browser needs, in the ui output.
    pose_ui = result.outputs["pose"]
    assert len(pose_ui["images"]) == 4 and all(im["type"] == "temp" for im in pose_ui["images"])
    data = pose_ui["bolid_pose"][0]
    assert data["image_size"] == [H, W] and len(data["keypoints"]) == 4 and data["found"] == [True] * 4
    w_ui = result.outputs["wp"]
    assert len(w_ui["images"]) == 8  # 4 weighted + 4 heat maps
    live = w_ui["bolid_weighting"][0]
    assert live["sigma_mode"] == "relative" and live["sigma"] == 0.1 and live["alpha"] == 0.2
    assert live["image_size"] == [H, W] and len(live["sources"]) == 4 and len(live["keypoints"]) == 4
    assert live["widgets"] == {"sigma": "sigma", "sigma_mode": "sigma_mode", "alpha": "alpha"}
    src = Image.open(comfy.temp_dir / live["sources"][0]["subfolder"] / live["sources"][0]["filename"])
    assert src.size == (live["preview_size"][1], live["preview_size"][0])
    shown = Image.open(comfy.temp_dir / w_ui["images"][0]["subfolder"] / w_ui["images"][0]["filename"])
    assert shown.size == (W, H)
    assert np.abs(np.asarray(shown, np.float32) / 255 - weighted[0].numpy()).max() <= 1 / 255 + 1e-6

    # A progress bar on the batch, for both nodes.
    assert ("pose", 4, 4) in result.progress and ("wp", 4, 4) in result.progress


def test_skip_and_error_when_no_person(comfy, photos, yolo_pose_pt, install_model):
    name = install_model(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-test.pt")
    prompt = image_batch_nodes(photos) | pose_nodes(name, conf=1.0, on_missing="skip")
    prompt["wp"] = weighting_node(["pose", 0], "pose", alpha=0.3)
    result = comfy.run(prompt)
    assert result.ok, result.error_text()
    pose = cached(comfy, "pose", 0)
    assert not pose.found.any() and not pose.keypoints.any()
    assert cached(comfy, "pose", 1)[2]["people"] == []
    # No visible keypoint: W_norm = 0 and I_w = alpha * I.
    assert not cached(comfy, "wp", 1).any()
    images = cached(comfy, "b3", 0)
    torch.testing.assert_close(cached(comfy, "wp", 0), 0.3 * images)

    prompt = image_batch_nodes(photos) | pose_nodes(name, conf=1.0, on_missing="error")
    result = comfy.run(prompt)
    assert not result.ok
    assert "not found in image 0 of the batch" in result.error_text()


def test_detection_model_refused(comfy, photos, yolo_detect_pt, install_model):
    name = install_model(yolo_detect_pt, "ultralytics/yolo11n-detect-test.pt")
    result = comfy.run(image_batch_nodes(photos) | pose_nodes(name))
    assert not result.ok
    text = result.error_text()
    assert "is a detect model" in text and "pose model" in text and "yolo11n-pose.pt" in text


def test_weighting_needs_exactly_one_pose_input(comfy, photos, yolo_pose_pt, install_model):
    name = install_model(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-test.pt")
    prompt = image_batch_nodes(photos)
    prompt["wp"] = {"class_type": "BoLIDGaussianWeighting", "inputs": {
        "image": ["b3", 0], "sigma": 0.1, "sigma_mode": "relative", "alpha": 0.2}}
    result = comfy.run(prompt)
    assert not result.ok and "connect exactly one of 'pose'" in result.error_text() and "neither" in result.error_text()
    prompt |= pose_nodes(name)
    prompt["wp"]["inputs"] |= {"pose": ["pose", 0], "pose_keypoint": ["pose", 1]}
    result = comfy.run(prompt)
    assert not result.ok and "both are connected" in result.error_text()


def test_loader_lists_pose_subfolder(comfy, yolo_pose_pt, install_model):
    name = install_model(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-test.pt")
    info = comfy.object_info("BoLIDPoseModelLoader")
    options = info["input"]["required"]["model_name"][1].get("options") or info["input"]["required"]["model_name"][0]
    assert name in options
