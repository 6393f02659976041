"""Browser tier: the real ComfyUI served on localhost with this pack, its real frontend in headless Chromium.

One ComfyUI process and one Chromium per session (starting them costs ~25 s on 2 cores). ComfyUI runs with
``--base-directory`` in a temp folder (custom_nodes/ComfyUI-BoLID -> this repo), so nothing is written into
the ComfyUI checkout; it is stopped by its own PID at the end.
"""

from __future__ import annotations

import pytest

import browserlib
import hostlib


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    root, why = hostlib.find_comfyui()
    if root is None:
        pytest.skip(f"browser tier: {why}")
    missing = browserlib.chromium_missing()
    if missing:
        pytest.skip(f"browser tier: {missing}")
    base = browserlib.make_base_dir(tmp_path_factory.mktemp("comfy_served"), browserlib.sample_files())
    # A random-init YOLO11n-pose under the name the example workflows use (a real ultralytics .pt).
    hostlib.save_yolo(base / "models" / "ultralytics" / "pose" / "yolo11n-pose.pt")
    # A Body-ID file under the name the text-only workflows use (random numbers, real format).
    import torch
    from bolid_lib.embedding import BodyEmbedding, save_body

    g = torch.Generator().manual_seed(0)
    body = BodyEmbedding(torch.randn(756, generator=g), torch.full((756,), -2.0),
                         {"vae_fingerprint": "f00dcafe12345678", "views_used": 12, "views_skipped": 1,
                          "mean_confidence": 0.83, "source": "encode"})
    save_body(body, base / "models" / "bolid" / "bodies" / "my_person.safetensors")
    server = browserlib.ComfyServer(root, base)
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser_context(comfy_server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = browserlib.launch_browser(p, tmp_path_factory.mktemp("chromium_profile"))
        yield context
        context.close()


@pytest.fixture
def app_page(browser_context, comfy_server):
    """A fresh ComfyUI page per test (no DOM widgets or dialogs left over from another test's graph)."""
    page = browserlib.open_app(browser_context, comfy_server.url)
    yield page
    page.close()
