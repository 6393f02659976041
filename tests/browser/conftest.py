"""Browser tier: the real ComfyUI served on localhost with this pack, its real frontend in headless Chromium.

Every test that opens the app runs in each combination of

- frontend: the one the host pins (``fe-pinned``: what ``pip install -r requirements.txt`` gives) and the newest
  ``comfyui-frontend-package`` (``fe-1.58.1``, ``BOLID_NEWEST_FRONTEND`` to change it), installed once from the
  registry into ``$BOLID_ASSET_CACHE/frontends`` (default ``~/.cache/bolid-test-assets``) and served with
  ``main.py --front-end-root``; skipped with the reason when the registry cannot be reached;
- renderer: the classic LiteGraph canvas (``classic``) and Nodes 2.0 (``nodes2``, the user setting
  ``Comfy.VueNodes.Enabled`` stored through the settings API before the page opens); skipped with the reason
  on a frontend that keeps Nodes 2.0 a hidden experiment (1.27.x).

One ComfyUI process per frontend (starting it costs ~25 s on 2 cores; pytest groups the tests by frontend);
it runs with ``--base-directory`` in a temp folder (custom_nodes/ComfyUI-BoLID -> this repo), so nothing is
written into the ComfyUI checkout, and is stopped by its own PID. A fresh page per test.
"""

from __future__ import annotations

import pytest

import browserlib
import hostlib

FRONTENDS = ["pinned", browserlib.NEWEST_FRONTEND]
RENDERERS = ["classic", "nodes2"]


@pytest.fixture(scope="session")
def served_base(tmp_path_factory):
    """The ComfyUI base directory every served ComfyUI of this session uses (pictures, models, settings)."""
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
    from bolid_lib.method.embedding import BodyEmbedding, save_body

    g = torch.Generator().manual_seed(0)
    body = BodyEmbedding(torch.randn(756, generator=g), torch.full((756,), -2.0),
                         {"vae_fingerprint": "f00dcafe12345678", "views_used": 12, "views_skipped": 1,
                          "mean_confidence": 0.83, "source": "encode"})
    save_body(body, base / "models" / "bolid" / "bodies" / "my_person.safetensors")
    return root, base


@pytest.fixture(scope="session", params=FRONTENDS, ids=[f"fe-{f}" for f in FRONTENDS])
def frontend(request):
    """None for the host's pinned frontend, else the ``static`` folder of the newest one."""
    if request.param == "pinned":
        return None
    static, why = browserlib.fetch_frontend(request.param)
    if static is None:
        pytest.skip(f"browser tier, frontend {request.param}: {why}")
    return static


@pytest.fixture(scope="session")
def comfy_server(served_base, frontend):
    root, base = served_base
    server = browserlib.ComfyServer(root, base, front_end_root=frontend)
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser_context(served_base, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = browserlib.launch_browser(p, tmp_path_factory.mktemp("chromium_profile"))
        browserlib.record_deprecations(context)
        yield context
        context.close()


@pytest.fixture(params=RENDERERS)
def renderer(request) -> str:
    return request.param


@pytest.fixture
def app_page(browser_context, comfy_server, renderer):
    """A fresh ComfyUI page per test (no DOM widgets or dialogs left over from another test's graph), in the
    renderer asked for; after the test, nothing the page logged may point at the pack (browserlib.pack_errors),
    and LiteGraph raised no deprecation warning from the pack's JS (browserlib.deprecations)."""
    nodes2 = renderer == "nodes2"
    comfy_server.set_setting(browserlib.VUE_NODES_SETTING, nodes2)
    page = browserlib.open_app(browser_context, comfy_server.url)
    state = browserlib.renderer_state(page)
    if nodes2 and not state["offered"]:
        page.close()
        pytest.skip(f"frontend {state['version']} keeps Nodes 2.0 a hidden experiment "
                    f"({browserlib.VUE_NODES_SETTING} is not a user setting there)")
    assert state["setting"] is nodes2 and state["vueNodesMode"] is nodes2, \
        f"asked for {renderer}, the frontend {state['version']} runs {state}"
    page.renderer = renderer  # type: ignore[attr-defined]
    yield page
    errors = browserlib.pack_errors(page)
    errors += [f"deprecation warning from the pack's JS: {d['message']}\n{d['stack'][:1500]}"
               for d in browserlib.deprecations(page)]
    page.close()
    assert not errors, "\n".join(errors[:10])
