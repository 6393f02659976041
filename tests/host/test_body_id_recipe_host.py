"""Issue 27, fault 1: a Body-ID VAE trained with non-default settings gives, through ComfyUI's nodes, the Body-ID
that the trainer's own preparation and encoder give for the same photos; settings that differ are stated on the
Encode node."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.host

LOW_CONF = 0.0001          # random-weight YOLO scores every detection about 2e-4
RECIPE = dict(working_size=96, conf=LOW_CONF, visibility=0.05, sigma=0.07, sigma_mode="relative", alpha=0.35)
VAE_NAME = "body_vae_recipe_test.safetensors"
FOLDER = "bolid_recipe_person"


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Two people of three procedural photos each (64 x 48 px PNGs)."""
    from bolid_lib.data import synthetic

    root = tmp_path_factory.mktemp("people")
    shapes = synthetic.random_shapes(2, 0)
    for p in range(2):
        (root / f"p{p}").mkdir()
        imgs, _ = synthetic.render_views(shapes[p:p + 1].repeat(3, 1), seed=p,
                                         settings=synthetic.RenderSettings(size=64))
        for i, im in enumerate(imgs):
            arr = (im[:, :, 8:56].permute(1, 2, 0).numpy() * 255).round().astype("uint8")    # portrait 48 x 64
            Image.fromarray(arr).save(root / f"p{p}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(comfy, people, yolo_pose_pt, tmp_path_factory):
    """A tiny VAE trained from the folders by the trainer's command line with the non-default RECIPE."""
    from bolid_lib.training.cli import main

    out = tmp_path_factory.mktemp("vae")
    flags = ["--working-size", str(RECIPE["working_size"]), "--conf", str(RECIPE["conf"]),
             "--visibility", str(RECIPE["visibility"]), "--sigma", str(RECIPE["sigma"]),
             "--sigma-mode", RECIPE["sigma_mode"], "--alpha", str(RECIPE["alpha"])]
    rc = main(["body-vae", "--data", str(people), "--pose-model", str(yolo_pose_pt), "--steps", "1",
               "--batch-persons", "2", "--input-size", "32", "--latent-dim", "8", "--widths", "8,16",
               "--feature-dim", "16", "--warmup", "1", "--device", "cpu", "--out", str(out), *flags])
    assert rc == 0
    dst = comfy.models_dir / "bolid" / VAE_NAME
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "body_vae.safetensors", dst)
    photos_dir = comfy.input_dir / FOLDER
    shutil.copytree(people / "p0", photos_dir, dirs_exist_ok=True)
    yield dst
    dst.unlink(missing_ok=True)
    shutil.rmtree(photos_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pose_name(comfy, yolo_pose_pt):
    with comfy.model_installed(yolo_pose_pt, "ultralytics/pose/yolo11n-pose-recipe-test.pt") as name:
        yield name


def graph(pose_name: str, *, vae_to_settings: bool) -> dict:
    """Load Photos -> Pose Keypoints -> Gaussian Weighting -> Body-ID Encode, the widgets at their defaults (the
    working size excepted: Load Photos has no VAE input); the VAE connected to pose and weighting or not."""
    g = {
        "ph": {"class_type": "BoLIDLoadPhotos", "inputs": {"folder": FOLDER, "size": RECIPE["working_size"], "max_photos": 0}},
        "pm": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": pose_name}},
        "vae": {"class_type": "BoLIDBodyVAELoader", "inputs": {"vae_name": VAE_NAME}},
        "pose": {"class_type": "BoLIDPoseKeypoints", "inputs": {
            "image": ["ph", 0], "pose_model": ["pm", 0], "conf": 0.25, "visibility": 0.5, "person": "largest",
            "person_index": 0, "on_missing": "skip"}},
        "wt": {"class_type": "BoLIDGaussianWeighting", "inputs": {
            "image": ["ph", 0], "pose": ["pose", 0], "sigma": 0.1, "sigma_mode": "relative", "alpha": 0.1}},
        "enc": {"class_type": "BoLIDBodyEncode", "inputs": {
            "views": ["wt", 0], "pose": ["pose", 0], "body_vae": ["vae", 0], "mode": "mean", "seed": 0,
            "views_per_chunk": 8}},
        "show": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["enc", 0]}},   # an output, so the graph runs
    }
    if vae_to_settings:
        g["pose"]["inputs"]["body_vae"] = ["vae", 0]
        g["wt"]["inputs"]["body_vae"] = ["vae", 0]
    else:   # a random-weight YOLO finds nobody at the default conf: the pose thresholds set by hand to the VAE's
        g["pose"]["inputs"].update(conf=RECIPE["conf"], visibility=RECIPE["visibility"])
    return g


def test_nodes_give_the_trainers_body_id_and_say_when_settings_differ(comfy, trained, people, pose_name, yolo_pose_pt):
    from bolid_lib.data.views import read_recipe_photo
    from bolid_lib.method.body_id import BodyIDRecipe, encode_photos
    from bolid_lib.method.body_vae import load_body_vae
    from bolid_lib.method.pose import PoseModel

    vae = load_body_vae(trained)
    assert vae.recipe == BodyIDRecipe(**RECIPE)              # the trainer recorded what it prepared the views with
    # The trainer's own path: its photo reading (data.views) and the recipe's pose + weighting + encoder.
    images = torch.stack([read_recipe_photo(p, vae.recipe) for p in sorted((people / "p0").iterdir())])
    expected = encode_photos(vae, images, PoseModel.load(str(yolo_pose_pt)))

    result = comfy.run(graph(pose_name, vae_to_settings=True))
    assert result.ok, result.error_text()
    body = comfy.cached_output("enc", 0)
    torch.testing.assert_close(body.mean, expected.mean, atol=1e-5, rtol=1e-5)
    enc_text = result.outputs["enc"]["text"][0]
    assert "WARNING" not in enc_text, enc_text

    # Not connected: the widgets' defaults weight differently from what the VAE learned, and the node says so.
    result = comfy.run(graph(pose_name, vae_to_settings=False))
    assert result.ok, result.error_text()
    other = comfy.cached_output("enc", 0)
    assert not torch.allclose(other.mean, expected.mean, atol=1e-4)
    enc_text = result.outputs["enc"]["text"][0]
    assert "WARNING" in enc_text and "alpha 0.1 (VAE: 0.35)" in enc_text and "sigma 0.1 (VAE: 0.07)" in enc_text, enc_text
