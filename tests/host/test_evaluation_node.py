"""BoLIDBodyFidelity inside a real ComfyUI: through the executor with a random-init YOLO pose model.

Random weights find "persons" only at conf 0 and their keypoints mean nothing; what is shown here is the
plumbing: IMAGE and pose model in, a per-image table on the node, the same image as its own reference
measuring 0, a refusal when no reference is connected.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.host


def _pack_module(comfy, name: str):
    """A module of the pack copy ComfyUI loaded (library objects passed into nodes must come from it)."""
    root = comfy.node("BoLIDBodyFidelity").__module__.rsplit(".nodes.", 1)[0]
    return importlib.import_module(f"{root}.{name}")


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.full((128, 96, 3), 40, np.uint8)
    a[20:110, 38:58] = rng.integers(150, 255, (90, 20, 3), dtype=np.uint8)
    return a


def _image(*seeds) -> torch.Tensor:
    return torch.from_numpy(np.stack([_picture(s) for s in seeds])).float() / 255  # (B, H, W, C)


@pytest.fixture(scope="module")
def pose_model(comfy, yolo_pose_pt):
    return _pack_module(comfy, "bolid_lib.method.pose").PoseModel.load(str(yolo_pose_pt))


def test_same_image_as_reference_measures_zero(comfy, pose_model):
    node = comfy.node("BoLIDBodyFidelity")
    out = node.execute(images=_image(1, 1), pose_model=pose_model, conf=0.0, visibility=0.0,
                       reference_image=_image(1))
    mean, table = out.args
    assert out.ui is not None and out.ui.as_dict()["text"] == (table,)
    assert "image 0" in table and "image 1" in table and "mean over" in table
    assert not math.isnan(mean), table   # conf 0: the random model reports someone
    assert mean < 1e-3, table


def test_reference_pose_input_and_refusal(comfy, pose_model):
    node = comfy.node("BoLIDBodyFidelity")
    keypoints = _pack_module(comfy, "bolid_lib.method.keypoints")
    ref_pose = pose_model.predict(_image(2).permute(0, 3, 1, 2), conf=0.0, visibility=0.0)
    assert isinstance(ref_pose, keypoints.PoseBatch)
    out = node.execute(images=_image(2, 3), pose_model=pose_model, conf=0.0, visibility=0.0, reference_pose=ref_pose)
    assert out.args[1].count("\n") == 4  # header, column names, 2 rows, mean
    errors = _pack_module(comfy, "bolid_lib.errors")
    with pytest.raises(errors.BoLIDError, match="exactly one of reference_image and reference_pose"):
        node.execute(images=_image(2), pose_model=pose_model, conf=0.0, visibility=0.0)


POSE_LOADER = "BoLIDPoseModelLoader"


def test_body_fidelity_through_the_executor(comfy, yolo_pose_pt, install_model):
    assert POSE_LOADER in comfy.pack_nodes, f"{POSE_LOADER} is not registered; the pack's nodes: {comfy.pack_nodes}"
    info = comfy.object_info(POSE_LOADER)
    assert info["output"] == ["BOLID_POSE_MODEL"], info["output"]
    assert list(info["input"]["required"]) == ["model_name"], info["input"]
    name = install_model(yolo_pose_pt, "ultralytics/pose/bolid_eval_test.pt")
    spec = comfy.object_info(POSE_LOADER)["input"]["required"]["model_name"]
    options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    assert name in options, f"the installed pose model {name!r} is not among the loader's choices {options}"
    Image.fromarray(_picture(4)).save(comfy.input_dir / "bolid_eval_ref.png")
    prompt = {
        "1": {"class_type": POSE_LOADER, "inputs": {"model_name": name}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "bolid_eval_ref.png"}},
        "3": {"class_type": "BoLIDBodyFidelity",
              "inputs": {"images": ["2", 0], "pose_model": ["1", 0], "reference_image": ["2", 0],
                         "conf": 0.0, "visibility": 0.0}},
    }
    result = comfy.run(prompt)
    assert result.ok, result.error_text()
    text = result.outputs["3"]["text"][0]
    assert "image 0 | 0.0000" in text, text

    prompt["3"]["inputs"].pop("reference_image")
    result = comfy.run(prompt)
    assert not result.ok and "exactly one of reference_image and reference_pose" in result.error_text()
