"""The example workflows inside the real ComfyUI: converted to API prompts (bolid_lib.runner.workflow, against the
live node registry), accepted by ComfyUI's own ``validate_prompt``, and run by its real executor.

- Validation (every workflow): the files the workflow names are present (small stand-ins for the big
  checkpoints: validation only looks at names), so any error left is a real one.
- Build Body-ID: runs for real with a random-init YOLO11n-pose, a random-weight Body-ID VAE of the default
  layout and procedural photos; the saved Body-ID file is read back.
- SDXL workflows (marker ``slow``; set BOLID_SDXL_RUN=1): run for real with a full-size random-weight
  SDXL checkpoint (cached outside the repo, made by tests/tools/make_random_sdxl.py), a random ViT-H CLIP
  vision model and a random BoLID adapter of the real layout, down to saved images. Loading a full SDXL
  on CPU in bfloat16 (ComfyUI's --bf16-unet, set for these tests) peaks near 14 GiB: one such process at a time.

Overrides, because the models are random and the machine is a CPU: the pose node's ``conf`` and
``visibility`` go to ~0 (random weights score every detection about 2e-4), and the SDXL runs sample one
step at 256x256. Everything else is the workflow as shipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bolid_lib.runner import workflow as wfl

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOWS = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
SDXL_CACHE = Path(os.environ.get("BOLID_SDXL_CACHE", "/work/cache/bolid_random_sdxl_fp16.safetensors"))
RANDOM_POSE = {"conf": 0.0001, "visibility": 0.0}


def load(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def live_info(comfy) -> dict:
    infos = {name: comfy.object_info(name) for name in comfy.nodes.NODE_CLASS_MAPPINGS}
    return json.loads(json.dumps(infos))  # as served over HTTP (tuples -> lists)


@pytest.fixture(scope="module")
def photos(comfy) -> None:
    """The workflows' input pictures (procedural people) in ComfyUI's input folder."""
    import browserlib

    for rel, data in browserlib.sample_files().items():
        path = comfy.base_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class Placed:
    """Files put into the booted ComfyUI's folders for one test, removed afterwards."""

    def __init__(self, comfy):
        self.comfy, self.paths = comfy, []

    def put(self, rel: str, src: Path | bytes | None = None) -> Path:
        dst = self.comfy.models_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if src is None:
            dst.write_bytes(b"")
        elif isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            dst.symlink_to(Path(src).resolve())
        self.paths.append(dst)
        return dst

    def remove(self) -> None:
        for p in self.paths:
            if p.exists() or p.is_symlink():
                p.unlink()


@pytest.fixture
def placed(comfy):
    p = Placed(comfy)
    yield p
    p.remove()


@pytest.fixture(scope="module")
def body_vae_file(tmp_path_factory) -> Path:
    """A Body-ID VAE of the default layout (D = 756, R = 256), random weights, saved by the library."""
    import torch
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae

    torch.manual_seed(0)
    return save_body_vae(BodyVAE(BodyVAEConfig()), tmp_path_factory.mktemp("bolid") / "bolid_body_vae.safetensors")


@pytest.fixture(scope="module")
def body_file(tmp_path_factory) -> Path:
    import torch
    from bolid_lib.method.embedding import BodyEmbedding, save_body

    g = torch.Generator().manual_seed(1)
    body = BodyEmbedding(torch.randn(756, generator=g), torch.full((756,), -2.0), {"views_used": 3, "source": "encode"})
    return save_body(body, tmp_path_factory.mktemp("bodies") / "my_person.safetensors")


def model_files(wf: dict, live_info: dict) -> list[tuple[str, str]]:
    """(folder key, file name) of every model file the workflow names."""
    return [(f.folder, f.file_name) for f in wfl.required_files(wf, live_info) if f.folder not in (None, "input")]


FOLDER_DIRS = {"checkpoints": "checkpoints", "clip_vision": "clip_vision", "ultralytics": "ultralytics",
               "bolid": "bolid", "bolid_bodies": "bolid/bodies"}


def prompt_for(name: str, live_info: dict, **overrides) -> dict:
    """The workflow as an API prompt, with ``overrides`` = {class_type: {input: value}} applied."""
    prompt = wfl.ui_to_api(load(name), live_info)
    for entry in prompt.values():
        for key, value in overrides.get(entry["class_type"], {}).items():
            assert key in entry["inputs"], (entry["class_type"], key)
            entry["inputs"][key] = value
    return prompt


@pytest.mark.parametrize("name", WORKFLOWS)
def test_comfyui_accepts_the_converted_workflow(name, comfy, live_info, photos, placed):
    wf = load(name)
    for folder, fname in model_files(wf, live_info):
        placed.put(f"{FOLDER_DIRS[folder]}/{fname}")  # validation checks names only
    prompt = wfl.ui_to_api(wf, live_info)
    assert len(prompt) == sum(n["type"] not in wfl.FRONTEND_ONLY_TYPES for n in wf["nodes"])
    ok, err, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt(name, prompt, None))[:4]
    assert ok, json.dumps({"error": err, "node_errors": node_errors}, default=str)[:4000]
    assert outputs, "no output node"


BODY_ID_WORKFLOWS = ["bolid_build_body_id", "bolid_build_body_id_step_by_step"]


@pytest.mark.parametrize("name", BODY_ID_WORKFLOWS)
def test_build_body_id_runs_to_a_saved_body_id(name, comfy, live_info, photos, placed, yolo_pose_pt, body_vae_file):
    from bolid_lib.method.embedding import load_body

    placed.put("ultralytics/pose/yolo11n-pose.pt", yolo_pose_pt)
    placed.put("bolid/bolid_body_vae.safetensors", body_vae_file)
    bodies = comfy.models_dir / "bolid" / "bodies"
    before = set(bodies.glob("*.safetensors")) if bodies.exists() else set()
    prompt = prompt_for(name, live_info, BoLIDPoseKeypoints=RANDOM_POSE, BoLIDBodyIDFromFolder=RANDOM_POSE)
    result = comfy.run(prompt)
    assert result.ok, result.error_text()
    new = sorted(set(bodies.glob("*.safetensors")) - before)
    assert len(new) == 1, new
    placed.paths.extend(new)
    body = load_body(new[0])
    assert body.dim == 756 and body.meta["views_used"] + body.meta["views_skipped"] == 4
    ui = {n: o for n, o in result.outputs.items()}
    kinds = {prompt[n]["class_type"]: o for n, o in ui.items()}
    shown = ("BoLIDPoseKeypoints", "BoLIDGaussianWeighting") if "step_by_step" in name else ("BoLIDBodyIDFromFolder",)
    summary = kinds["BoLIDBodyPreview" if "step_by_step" in name else "BoLIDBodyIDFromFolder"]
    assert summary["bolid_body"][0]["dim"] == 756
    for kind in shown:  # the previews the workflow shows
        images = kinds[kind]["images"]
        assert images and all((comfy.temp_dir / i["subfolder"] / i["filename"]).is_file() for i in images)


def _ensure_sdxl() -> Path:
    if not SDXL_CACHE.is_file():
        SDXL_CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "tests/tools/make_random_sdxl.py"), str(SDXL_CACHE)],
                       check=True, timeout=1800, env=dict(os.environ))
    return SDXL_CACHE


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    """(checkpoint, clip vision, adapter) paths: full-size random SDXL, ViT-H, BoLID adapter (ref + body)."""
    if os.environ.get("BOLID_SDXL_RUN") != "1":
        pytest.skip("full-size SDXL runs are opt-in (BOLID_SDXL_RUN=1): ~14 GiB of RAM and minutes on CPU")
    import hostlib
    import torch
    from bolid_lib.method.adapter import AdapterConfig
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "tests" / "tools"))
    from make_test_models import save_bolid_adapter

    ckpt = _ensure_sdxl()
    folder = tmp_path_factory.mktemp("sdxl_side")
    clip = folder / "clip_vision_h.safetensors"
    cv = hostlib.build_clip_vision("h")
    save_file({k: v.to(torch.float16).contiguous() for k, v in cv.get_sd().items()}, str(clip))
    del cv
    adapter = save_bolid_adapter(folder / "bolid_adapter_sdxl.safetensors",
                                 AdapterConfig(ref_kind="plain", clip_embed_dim=1024, body_dim=756))
    # ComfyUI's own --bf16-unet: the full UNet in bfloat16 (5 GB) instead of float32 (10 GB) on this CPU.
    from comfy.cli_args import args

    old = args.bf16_unet
    args.bf16_unet = True
    yield ckpt, clip, adapter
    args.bf16_unet = old


SDXL_WORKFLOWS = [w for w in WORKFLOWS if w not in BODY_ID_WORKFLOWS]


@pytest.mark.slow
@pytest.mark.parametrize("name", SDXL_WORKFLOWS)
def test_sdxl_workflow_runs_to_saved_images(name, comfy, live_info, photos, placed, sdxl_files, yolo_pose_pt,
                                            body_vae_file, body_file):
    ckpt, clip, adapter = sdxl_files
    wf = load(name)
    sources = {"checkpoints": ckpt, "clip_vision": clip, "ultralytics": yolo_pose_pt, "bolid_bodies": body_file}
    for folder, fname in model_files(wf, live_info):
        src = sources.get(folder) or (adapter if "adapter" in fname else body_vae_file)
        placed.put(f"{FOLDER_DIRS[folder]}/{fname}", src)
    ksampler = next(n for n in wf["nodes"] if n["type"] == "KSampler")
    prompt = prompt_for(name, live_info, BoLIDPoseKeypoints=RANDOM_POSE,
                        KSampler={"steps": 1}, EmptyLatentImage={"width": 256, "height": 256})
    result = comfy.run(prompt)
    assert result.ok, result.error_text()
    saved = [img for nid, out in result.outputs.items() if prompt[nid]["class_type"] == "SaveImage"
             for img in out["images"]]
    assert saved and all((comfy.output_dir / i["subfolder"] / i["filename"]).is_file() for i in saved)
    assert ksampler["widgets_values"][2] >= 4  # the shipped workflow keeps its own step count
    import gc

    import comfy.model_management as mm  # (a plain `import comfy...` would shadow the fixture)

    comfy.executor.reset()  # drop this run's cached models before the next workflow loads its own
    mm.unload_all_models()
    gc.collect()
