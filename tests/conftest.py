"""Test tiers (see docs/development.md, "Tests"): unit and contract always; host when a real ComfyUI is found;
browser when ComfyUI and Chromium are there; gpu when CUDA is. Missing hosts skip with the reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import hostlib

COMFY_ROOT, COMFY_WHY = hostlib.find_comfyui()


def pytest_report_header(config):
    return [f"bolid host tier: {'ON, ' + COMFY_WHY if COMFY_ROOT else 'OFF, ' + COMFY_WHY}"]


def pytest_collection_modifyitems(config, items):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    # Browser tests last: Playwright's sync API keeps an asyncio event loop running in the main thread while its
    # session-scoped browser lives, and the in-process ComfyUI of the host tier boots with asyncio.run, which
    # refuses to start inside a running loop. A plain `pytest` runs every tier, so the order matters.
    items.sort(key=lambda item: "browser" in item.keywords)
    for item in items:
        if "host" in item.keywords and COMFY_ROOT is None:
            item.add_marker(pytest.mark.skip(reason=f"host tier: {COMFY_WHY}"))
        if "browser" in item.keywords and (COMFY_ROOT is None or chromium is None):
            why = COMFY_WHY if COMFY_ROOT is None else "no Chromium: apt-get install chromium"
            item.add_marker(pytest.mark.skip(reason=f"browser tier: {why}"))
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device"))


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI booted in-process on CPU with this pack loaded by ComfyUI's own loader."""
    if COMFY_ROOT is None:
        pytest.skip(f"host tier: {COMFY_WHY}")
    return hostlib.boot(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Where generated random-weight model files live for this session (outside the repo)."""
    return tmp_path_factory.mktemp("models_cache")


@pytest.fixture(scope="session")
def yolo_pose_pt(model_cache) -> Path:
    """A random-init YOLO11n-pose .pt built offline by ultralytics from yolo11n-pose.yaml."""
    return hostlib.save_yolo(model_cache / "yolo11n-pose-random.pt", "yolo11n-pose.yaml")


@pytest.fixture(scope="session")
def yolo_detect_pt(model_cache) -> Path:
    """A random-init YOLO11n detection .pt (what the pose loader must refuse)."""
    return hostlib.save_yolo(model_cache / "yolo11n-detect-random.pt", "yolo11n.yaml")


@pytest.fixture(scope="session")
def sdxl_small(comfy):
    """ModelPatcher of a reduced-width SDXL-layout UNet (real 70-site layout and keys), random weights."""
    return hostlib.build_sdxl_model(model_channels=32, head_channels=8, seed=0)


@pytest.fixture(scope="session")
def sdxl_cond(comfy):
    """A function (seed, width, height) -> (positive, negative) SDXL conditioning."""
    return hostlib.sdxl_conditioning


@pytest.fixture(scope="session")
def clip_vision_h(comfy):
    """A random ComfyUI ClipVisionModel of the ViT-H shape (1024-d image_embeds, 1280-d hidden)."""
    return hostlib.build_clip_vision("h")


@pytest.fixture(scope="session")
def clip_vision_bigg(comfy):
    """A random ComfyUI ClipVisionModel of the ViT-bigG shape (1280-d image_embeds, 1664-d hidden)."""
    return hostlib.build_clip_vision("g")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on 2 shared cores,
    OpenMP spinning makes small ops much slower than one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ipa_plus(comfy):
    """ComfyUI_IPAdapter_plus's IPAdapterPlus module (skipped, saying where to put it, when it is absent)."""
    mod = hostlib.load_ipadapter_plus(comfy.root)
    if mod is None:
        pytest.skip("ComfyUI_IPAdapter_plus not found: set BOLID_IPADAPTER_PLUS to its folder, or install it in "
                    "ComfyUI/custom_nodes")
    return mod


@pytest.fixture
def install_model(comfy):
    """Copy a model file into the booted ComfyUI's models folder: install_model(src, "ultralytics/pose/x.pt")."""
    placed = []

    def _install(src: Path, rel: str) -> str:
        dst = comfy.models_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        placed.append(dst)
        return rel.split("/", 1)[1] if "/" in rel else rel

    yield _install
    for p in placed:
        if p.exists():
            os.unlink(p)

