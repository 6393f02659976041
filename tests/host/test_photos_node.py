"""BoLID Load Photos inside the real ComfyUI, and the Body-ID example workflow on a folder of mixed photos.

The folder holds what people have: photos of different sizes and aspect ratios, a JPEG stored sideways with an
EXIF orientation tag, a phone HEIC (written with pillow-heif's encoder), a PNG, plus a text file and a damaged
JPEG. The node runs in ComfyUI's own executor (validation included, where ComfyUI 0.33 checks combo values
itself); the Body-ID workflow is the shipped file converted against the live node registry and run down to a
saved Body-ID with a random-init YOLO11n-pose and a random-weight Body-ID VAE of the default layout.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bolid_lib.data import photos as ph
from bolid_lib.runner import workflow as wfl

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
FOLDER = "bolid_photos_mixed"
SIZE = 256
RANDOM_POSE = {"conf": 0.0001, "visibility": 0.0}  # random weights score every detection about 2e-4
# name -> (upright width, height) of each photo in the folder; the files come in this (sorted) order.
PHOTOS = {"a_portrait.jpg": (300, 450), "b_sideways.jpg": (320, 480), "c_phone.heic": (400, 300),
          "d_square.png": (256, 256)}
NOT_PHOTOS = ("broken.jpg", "notes.txt")


def person(w: int, h: int, seed: int) -> Image.Image:
    """An upright procedural person (bolid_lib.data.synthetic) filling a w x h picture."""
    from bolid_lib.data.synthetic import RenderSettings, random_shapes, render_views

    side = max(w, h)
    images, _ = render_views(random_shapes(1, seed=3), seed=seed,
                             settings=RenderSettings(size=side, min_height=0.8, max_height=0.9))
    arr = (images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    top, left = (side - h) // 2, (side - w) // 2
    return Image.fromarray(np.ascontiguousarray(arr[top:top + h, left:left + w]))


def upright_references() -> dict[str, Image.Image]:
    return {name: person(w, h, seed=i) for i, (name, (w, h)) in enumerate(PHOTOS.items())}


def write_folder(folder: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="writing HEIC needs pillow-heif (the dev extra)")
    folder.mkdir(parents=True, exist_ok=True)
    refs = upright_references()
    refs["a_portrait.jpg"].save(folder / "a_portrait.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view": the pixels are stored sideways, as phones do
    refs["b_sideways.jpg"].transpose(Image.Transpose.ROTATE_90).save(folder / "b_sideways.jpg", quality=95,
                                                                      exif=exif.tobytes())
    pillow_heif.from_pillow(refs["c_phone.heic"]).save(str(folder / "c_phone.heic"), quality=95)
    refs["d_square.png"].save(folder / "d_square.png")
    (folder / "notes.txt").write_text("photos of alice, summer")
    buf = io.BytesIO()
    refs["a_portrait.jpg"].save(buf, "JPEG", quality=95)
    (folder / "broken.jpg").write_bytes(buf.getvalue()[: buf.tell() // 2])   # a copy that stopped half way


@pytest.fixture(scope="module")
def mixed(comfy) -> str:
    folder = comfy.input_dir / FOLDER
    write_folder(folder)
    yield FOLDER
    shutil.rmtree(folder, ignore_errors=True)


def folder_options(comfy) -> list[str]:
    spec = comfy.object_info("BoLIDLoadPhotos")["input"]["required"]["folder"]
    if spec[0] == "COMBO":  # V3 schema as served by newer hosts: ["COMBO", {"options": [...]}]
        return list(spec[1]["options"])
    return list(spec[0])


def load_graph(folder: str, size: int = SIZE, max_photos: int = 0) -> dict:
    return {"p": {"class_type": "BoLIDLoadPhotos", "inputs": {"folder": folder, "size": size, "max_photos": max_photos}},
            "show": {"class_type": "PreviewImage", "inputs": {"images": ["p", 0]}}}


def test_folder_choices_are_the_input_sub_folders_and_follow_refresh(comfy, mixed):
    assert mixed in folder_options(comfy)
    late = comfy.input_dir / "bolid_made_after_boot"
    late.mkdir()
    try:
        assert "bolid_made_after_boot" in folder_options(comfy)  # what R (refresh) fetches: /object_info again
    finally:
        late.rmdir()
    assert "bolid_made_after_boot" not in folder_options(comfy)


def test_the_node_loads_mixed_photos_in_the_executor(comfy, mixed):
    result = comfy.run(load_graph(mixed))
    assert result.ok, result.error_text()
    report = result.outputs["p"]["text"][0]
    assert f"loaded {len(PHOTOS)} photos" in report and f"skipped {len(NOT_PHOTOS)}:" in report
    for name in NOT_PHOTOS:
        assert name in report
    # A progress bar per file tried: the four photos and broken.jpg, whose header reads (its data does not).
    bar = [(done, total) for node, done, total in result.progress if node == "p"]
    assert bar[0] == (1, len(PHOTOS) + 1) and bar[-1] == (len(PHOTOS) + 1, len(PHOTOS) + 1), bar
    shown = result.outputs["show"]["images"]
    assert len(shown) == len(PHOTOS)
    refs = upright_references()
    for (name, (w, h)), item in zip(PHOTOS.items(), shown):
        got = np.asarray(Image.open(comfy.temp_dir / item["subfolder"] / item["filename"]).convert("RGB"), dtype=float)
        assert got.shape == (SIZE, SIZE, 3)
        vw, vh = ph._fit(w, h, SIZE)
        want = np.asarray(refs[name].resize((vw, vh), Image.Resampling.BICUBIC), dtype=float)
        err = np.abs(got[:vh, :vw] - want).mean()
        wrong_way = np.abs(got[:vh, :vw] - np.asarray(refs[name].resize((vw, vh)).transpose(
            Image.Transpose.ROTATE_180), dtype=float)).mean()
        assert err < 6 and err < wrong_way / 3, (name, err, wrong_way)   # upright, scaled, not cropped
        assert np.abs(got[vh:, :] - ph.PAD_GREY).max(initial=0) <= 1 and np.abs(got[:, vw:] - ph.PAD_GREY).max(initial=0) <= 1


def test_node_outputs_images_masks_and_report(comfy, mixed):
    result = comfy.run(load_graph(mixed))
    assert result.ok, result.error_text()
    images, masks, report = (comfy.cached_output("p", slot) for slot in range(3))   # as the next nodes get them
    assert images.shape == (len(PHOTOS), SIZE, SIZE, 3) and images.dtype == torch.float32 and images.is_contiguous()
    assert masks.shape == (len(PHOTOS), SIZE, SIZE)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    for i, (w, h) in enumerate(PHOTOS.values()):
        vw, vh = ph._fit(w, h, SIZE)
        assert float(masks[i].sum()) == vw * vh and float(masks[i, :vh, :vw].min()) == 1.0
    assert report.splitlines()[0].startswith(f"loaded {len(PHOTOS)} photos from {mixed}")
    assert result.outputs["p"]["text"][0] == report


def test_max_photos_limits_the_batch(comfy, mixed):
    result = comfy.run(load_graph(mixed, size=128, max_photos=2))
    assert result.ok, result.error_text()
    images, report = comfy.cached_output("p", 0), comfy.cached_output("p", 2)
    assert images.shape == (2, 128, 128, 3)
    assert "not read: 3 more files" in report  # broken.jpg, c_phone.heic, d_square.png


@pytest.mark.parametrize("folder, words", [
    ("no_such_folder", "there is no folder 'no_such_folder'"), ("../", "would leave"), ("/etc", "absolute path"),
])
def test_a_bad_folder_keeps_the_fix_on_every_host(comfy, mixed, folder, words):
    """ComfyUI 0.33 checks combo values itself ("Value not in list"); the node names `folder` in its
    validate_inputs, so on both hosts the user reads the pack's message with the fix."""
    result = comfy.run(load_graph(folder))
    assert not result.ok
    text = result.error_text()
    assert words in text and "Value not in list" not in text, text


def test_a_folder_without_photos_says_what_it_found(comfy, mixed):
    folder = comfy.input_dir / "bolid_no_photos"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    try:
        result = comfy.run(load_graph("bolid_no_photos"))
    finally:
        shutil.rmtree(folder)
    assert not result.ok
    text = result.error_text()
    assert "no readable photo" in text and "readme.txt: not an image" in text and "Put photos of one person" in text


def test_a_changed_folder_is_read_again(comfy, mixed, tmp_path):
    """The node's fingerprint follows the folder's files, so a cached result is not reused after a change."""
    folder = comfy.input_dir / "bolid_growing"
    folder.mkdir()
    try:
        upright_references()["d_square.png"].save(folder / "one.png")
        first = comfy.run(load_graph("bolid_growing"), fresh=False)
        upright_references()["a_portrait.jpg"].save(folder / "two.jpg")
        second = comfy.run(load_graph("bolid_growing"), fresh=False)
    finally:
        shutil.rmtree(folder)
    assert first.ok and second.ok
    assert "loaded 1 photo " in first.outputs["p"]["text"][0] and "loaded 2 photos" in second.outputs["p"]["text"][0]


# --- the Body-ID example workflow on the mixed folder ------------------------------------------------

@pytest.fixture(scope="module")
def body_vae_file(tmp_path_factory) -> Path:
    """A Body-ID VAE of the default layout (D = 756, R = 256), random weights, saved by the library."""
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae

    torch.manual_seed(0)
    return save_body_vae(BodyVAE(BodyVAEConfig()), tmp_path_factory.mktemp("bolid") / "bolid_body_vae.safetensors")


def test_build_body_id_workflow_runs_on_mixed_photos(comfy, mixed, yolo_pose_pt, body_vae_file):
    from bolid_lib.method.embedding import load_body

    live = json.loads(json.dumps({n: comfy.object_info(n) for n in comfy.nodes.NODE_CLASS_MAPPINGS}))
    wf = json.loads((ROOT / "example_workflows" / "bolid_build_body_id_step_by_step.json").read_text())
    assert not [n for n in wf["nodes"] if n["type"] not in comfy.nodes.NODE_CLASS_MAPPINGS
                and n["type"] not in wfl.FRONTEND_ONLY_TYPES], "the workflow needs a node this host lacks"
    prompt = wfl.ui_to_api(wf, live)
    overrides = {"BoLIDPoseKeypoints": RANDOM_POSE, "BoLIDLoadPhotos": {"folder": mixed}}
    for entry in prompt.values():
        for key, value in overrides.get(entry["class_type"], {}).items():
            assert key in entry["inputs"], (entry["class_type"], key)
            entry["inputs"][key] = value
    loader = next(e for e in prompt.values() if e["class_type"] == "BoLIDLoadPhotos")
    assert loader["inputs"]["size"] == 1024  # the shipped working size, not a test's smaller one
    placed = {comfy.models_dir / "ultralytics/pose/yolo11n-pose.pt": yolo_pose_pt,
              comfy.models_dir / "bolid/bolid_body_vae.safetensors": body_vae_file}
    bodies = comfy.models_dir / "bolid" / "bodies"
    before = set(bodies.glob("*.safetensors")) if bodies.exists() else set()
    for dst, src in placed.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        dst.symlink_to(Path(src).resolve())
    try:
        ok, err, _, node_errors = asyncio.run(comfy.execution.validate_prompt("bolid-photos", prompt, None))[:4]
        assert ok, json.dumps({"error": err, "node_errors": node_errors}, default=str)[:3000]
        result = comfy.run(prompt)
        assert result.ok, result.error_text()
        new = sorted(set(bodies.glob("*.safetensors")) - before)
        assert len(new) == 1, new
        body = load_body(new[0])
        assert body.dim == 756 and body.meta["views_used"] + body.meta["views_skipped"] == len(PHOTOS)
        kinds = {prompt[n]["class_type"]: o for n, o in result.outputs.items()}
        assert f"loaded {len(PHOTOS)} photos" in kinds["BoLIDLoadPhotos"]["text"][0]
        assert kinds["BoLIDBodyPreview"]["bolid_body"][0]["views_used"] == body.meta["views_used"]
    finally:
        for dst in placed:
            dst.unlink(missing_ok=True)
        for p in set(bodies.glob("*.safetensors")) - before if bodies.exists() else ():
            p.unlink()
