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


@pytest.fixture(scope="session")
def app_page(browser_context, comfy_server):
    """The ComfyUI page, opened once; tests put their own workflow on the canvas."""
    page = browserlib.open_app(browser_context, comfy_server.url)
    yield page
    page.close()
