"""The real ComfyUI frontend (comfyui-frontend-package pinned by ComfyUI) with this pack, in headless Chromium.

Screenshots: every run writes them under pytest's tmp folder; with ``BOLID_UPDATE_SCREENSHOTS=1`` the
workflow pictures also go to docs/images/<workflow>.png and example_workflows/<workflow>.jpg (the README's
pictures and the template browser's thumbnails come from this test).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

import browserlib

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOWS = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
EXPECTED_WORKFLOWS = {"bolid_text_only", "bolid_text_only_lightning", "bolid_image_reference", "bolid_build_body_id"}
UPDATE = os.environ.get("BOLID_UPDATE_SCREENSHOTS") == "1"
MAX_PICTURE_BYTES = 300_000


def _pack_node_ids(server) -> set[str]:
    info = server.get_json("/object_info")
    return {k for k, v in info.items() if browserlib.PACK_NAME in str(v.get("python_module", ""))}


def test_extensions_lists_the_pack_js(comfy_server):
    listed = set(comfy_server.get_json("/extensions"))
    ours = sorted(p.relative_to(ROOT / "js").as_posix() for p in (ROOT / "js").rglob("*.js"))
    assert ours, "js/ holds no extension"
    missing = [f for f in ours if f"/extensions/{browserlib.PACK_NAME}/{f}" not in listed]
    assert not missing, f"GET /extensions does not list {missing}"


def test_workflow_templates_lists_the_examples(comfy_server):
    assert EXPECTED_WORKFLOWS <= set(WORKFLOWS), f"example_workflows/ lacks {EXPECTED_WORKFLOWS - set(WORKFLOWS)}"
    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed.get(browserlib.PACK_NAME, [])) == WORKFLOWS, listed
    for name in WORKFLOWS:  # the files the template browser fetches: the workflow and its thumbnail
        wf = comfy_server.get_json(f"/api/workflow_templates/{browserlib.PACK_NAME}/{name}.json")
        assert wf["nodes"] and "links" in wf
        import urllib.request

        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{browserlib.PACK_NAME}/{name}.jpg") as r:
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG"


def test_frontend_knows_every_pack_node(comfy_server, app_page):
    ids = _pack_node_ids(comfy_server)
    assert ids, "ComfyUI serves no node of this pack (did it fail to import? see the server log)"
    known = set(app_page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)"))
    assert ids <= known, f"the frontend did not register {sorted(ids - known)}"


def test_no_pack_extension_throws(app_page):
    errors = [text for kind, text in app_page.console_messages
              if kind == "pageerror" or (kind == "error" and "bolid" in text.lower())]
    ours = [e for e in errors if "bolid" in e.lower()]
    assert not ours, ours


def _pixels(png: bytes):
    from PIL import Image
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype("int16")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_opens_from_template_browser(name, app_page, tmp_path):
    """Open the template browser, pick the pack, click the workflow: all nodes known, all links intact,
    no missing-nodes (or any other) dialog; then a picture of it on the canvas."""
    page = app_page
    browserlib.close_dialogs(page)
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    dialog = page.locator(".p-dialog").first
    dialog.get_by_text(browserlib.PACK_NAME, exact=True).click()
    card_title = re.compile("^" + re.escape(name).replace("_", "[ _]") + "$", re.I)
    dialog.get_by_text(card_title).first.click()
    page.wait_for_function(
        "(n) => window.app.graph._nodes.some(x => x.type && x.type.startsWith('BoLID'))", arg=name, timeout=30_000)
    page.wait_for_timeout(1000)
    report = browserlib.graph_report(page)
    wf = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    assert not report["missingTypes"], f"{name}: the frontend does not know {report['missingTypes']}"
    assert not report["broken"], f"{name}: broken links {report['broken']}"
    assert report["nodeCount"] == len(wf["nodes"]), (report["nodeCount"], len(wf["nodes"]))
    assert report["linkCount"] == len(wf["links"]), (report["linkCount"], len(wf["links"]))
    assert not report["dialogs"], f"{name}: a dialog came up on load: {report['dialogs']}"

    browserlib.fit_view(page)
    png = browserlib.canvas_screenshot(page, tmp_path / f"{name}.png")
    px = _pixels(png)
    assert px.std() > 5, "the canvas screenshot is blank"
    if UPDATE:
        browserlib.write_pictures(name, png, MAX_PICTURE_BYTES)
