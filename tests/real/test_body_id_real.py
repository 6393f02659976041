"""Gaussian weighting and the Body-ID path with the real pose model on two real consecutive frames
(OpenCV's basketball1.png and basketball2.png), through ComfyUI's executor and through
``python -m bolid_lib run`` with the shipped step-by-step build-Body-ID workflow. The Body-ID VAE has random weights
(no trained one exists); the pose model, the photos and everything around the VAE are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_pose_real import cached

pytestmark = [pytest.mark.real, pytest.mark.host]

PACK = Path(__file__).resolve().parents[2]
WORKFLOW = PACK / "example_workflows" / "bolid_build_body_id_step_by_step.json"
FRAMES = ("basketball1.png", "basketball2.png")


@pytest.fixture(scope="module")
def body_vae_file(tmp_path_factory) -> Path:
    """A Body-ID VAE of the default layout, random weights (seed 0), saved by the library."""
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae

    torch.manual_seed(0)
    return save_body_vae(BodyVAE(BodyVAEConfig()), tmp_path_factory.mktemp("bolid_real") / "bolid_body_vae.safetensors")


def _photo_loader(wf: dict) -> dict:
    """The node that feeds BoLID Pose Keypoints its images in the UI workflow."""
    pose = next(n for n in wf["nodes"] if n["type"] == "BoLIDPoseKeypoints")
    link = next(i["link"] for i in pose["inputs"] if i["name"] == "image")
    source = next(lk[1] for lk in wf["links"] if lk[0] == link)
    return next(n for n in wf["nodes"] if n["id"] == source)


@pytest.fixture(scope="module")
def workflow(comfy) -> dict:
    """The shipped build-Body-ID workflow (UI format); skips where this ComfyUI lacks its photo loader."""
    wf = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    loader = _photo_loader(wf)
    if loader["type"] not in comfy.nodes.NODE_CLASS_MAPPINGS:
        pytest.skip(f"{WORKFLOW.name} loads its photos with {loader['type']}, which this ComfyUI "
                    f"({comfy.root.name}) does not have")
    return wf


@pytest.fixture(scope="module")
def chain(comfy, workflow, real_photos, real_model_name, body_vae_file):
    """The workflow's nodes, as shipped, in the real executor: the two frames in a folder of the input
    directory for its photo loader, the real pose model and the random VAE for its loaders.
    Returns (result, node ids by class, pose, weighted, w_norm, body)."""
    import shutil

    from bolid_lib.runner import workflow as wfl

    folder = comfy.input_dir / "bolid_real_frames"
    folder.mkdir(exist_ok=True)
    for name in FRAMES:
        shutil.copyfile(real_photos[name], folder / name)
    vae = comfy.models_dir / "bolid" / "bolid_body_vae_real_test.safetensors"
    vae.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(body_vae_file, vae)
    live = json.loads(json.dumps({n: comfy.object_info(n) for n in comfy.nodes.NODE_CLASS_MAPPINGS}))
    prompt = wfl.ui_to_api(workflow, live)
    ids = {entry["class_type"]: key for key, entry in prompt.items()}
    prompt[str(_photo_loader(workflow)["id"])]["inputs"]["folder"] = folder.name
    prompt[ids["BoLIDPoseModelLoader"]]["inputs"]["model_name"] = real_model_name
    prompt[ids["BoLIDBodyVAELoader"]]["inputs"]["vae_name"] = vae.name
    saved_dir = comfy.models_dir / "bolid" / "bodies"
    before = set(saved_dir.glob("*.safetensors")) if saved_dir.exists() else set()
    try:
        result = comfy.run(prompt)
        assert result.ok, result.error_text()
        yield (result, ids, cached(comfy, ids["BoLIDPoseKeypoints"], 0), cached(comfy, ids["BoLIDGaussianWeighting"], 0),
               cached(comfy, ids["BoLIDGaussianWeighting"], 1), cached(comfy, ids["BoLIDBodyEncode"], 0))
    finally:
        vae.unlink(missing_ok=True)
        for p in set(saved_dir.glob("*.safetensors")) - before if saved_dir.exists() else ():
            p.unlink()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = float((rb - lt).clamp(min=0).prod())
    area = lambda x: float((x[2] - x[0]) * (x[3] - x[1]))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_weighting_sits_on_the_same_player_in_both_frames(chain):
    _, _, pose, _, w_norm, _ = chain
    assert pose.found.tolist() == [True, True] and tuple(w_norm.shape[1:]) == pose.image_size
    assert (pose.visible.sum(-1) >= 5).all()
    # Consecutive frames: the largest person is the same player, barely moved.
    assert box_iou(pose.boxes[0], pose.boxes[1]) >= 0.8
    for b in range(2):
        x0, y0, x1, y1 = (int(v) for v in pose.boxes[b].round())
        inside = torch.zeros(pose.image_size, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        w = w_norm[b]
        assert torch.isclose(w.max(), torch.tensor(1.0))
        assert w[inside].mean() > 5 * w[~inside].mean()
        # Away from every keypoint the photo is dimmed to alpha (0.2) of itself; on a keypoint it is kept whole.
        kp = pose.keypoints[b][pose.visible[b]]
        x, y = (int(v) for v in kp[0, :2].round())
        assert float(w[y, x]) > 0.9
        far = w < 1e-3
        assert far.any()


def test_body_id_from_real_frames(chain):
    result, ids, pose, _, _, body = chain
    assert body.meta["views_used"] == 2 and body.meta.get("views_skipped", 0) == 0
    assert torch.isfinite(body.mean).all() and torch.isfinite(body.logvar).all() and body.dim == 756
    assert result.outputs[ids["BoLIDBodyPreview"]]["bolid_body"][0]["dim"] == 756


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PACK))
    return subprocess.run([sys.executable, "-m", "bolid_lib", "run", *args], cwd=str(PACK), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_build_body_id_workflow_runs_on_real_frames(comfy, workflow, chain, tmp_path, real_photos, real_pose_pt,
                                                     body_vae_file):
    """The shipped workflow, unchanged, through ``python -m bolid_lib run``: photos in the folder its loader
    names, the real pose model and the VAE where its loaders look. Its Body-ID equals the executor chain's."""
    from bolid_lib.method.embedding import load_body

    wf = workflow
    folder = next(v for v in _photo_loader(wf)["widgets_values"] if isinstance(v, str))
    base = tmp_path / "base"
    photos = base / "input" / folder
    photos.mkdir(parents=True)
    for name in FRAMES:
        (photos / name).write_bytes(real_photos[name].read_bytes())
    models = {n["type"]: n["widgets_values"][0] for n in wf["nodes"]
              if n["type"] in ("BoLIDPoseModelLoader", "BoLIDBodyVAELoader")}
    for rel, src in ((f"ultralytics/{models['BoLIDPoseModelLoader']}", real_pose_pt),
                     (f"bolid/{models['BoLIDBodyVAELoader']}", body_vae_file)):
        (base / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "models" / rel).symlink_to(src)
    out = tmp_path / "out"
    done = _cli(str(WORKFLOW), "--comfyui", str(comfy.root), "--cpu", "--base-directory", str(base), "--out", str(out),
                "--timeout", "600")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    saved = sorted((base / "models" / "bolid" / "bodies").glob("*.safetensors"))
    assert len(saved) == 1, saved
    body = load_body(saved[0])
    assert body.meta["views_used"] == 2
    expected = chain[5]
    torch.testing.assert_close(body.mean, expected.mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(body.logvar, expected.logvar, rtol=0, atol=1e-4)
    # The previews the workflow shows (skeletons, weighted photos, heat maps) come back as files of the run.
    images = sorted(out.glob("*.png"))
    assert len(images) >= 2 * 3, [p.name for p in images]
    sizes = {Image.open(p).size for p in images}
    assert (chain[2].image_size[1], chain[2].image_size[0]) in sizes  # PIL: (width, height)
