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
    assert not report["toasts"], f"{name}: the frontend warned on load: {report['toasts']}"

    png = browserlib.workflow_picture(page)
    (tmp_path / f"{name}.png").write_bytes(png)
    px = _pixels(png)
    assert px.std() > 5, "the canvas screenshot is blank"
    if UPDATE:
        browserlib.write_pictures(name, png, MAX_PICTURE_BYTES)


def _queue_and_wait(page, server, timeout_s: float = 300) -> dict:
    """Queue the graph on the canvas as the Run button does (the frontend's graphToPrompt, POST /prompt)
    and wait until the server has run it; returns its history entry."""
    import time

    answer = page.evaluate("""async () => {
        const p = await window.app.graphToPrompt();
        const r = await fetch('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({prompt: p.output, client_id: window.app.api.clientId, extra_data: {extra_pnginfo: {workflow: p.workflow}}})});
        return {status: r.status, body: await r.json()};
    }""")
    assert answer["status"] == 200, json.dumps(answer["body"])[:3000]
    prompt_id = answer["body"]["prompt_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
            return entry
        time.sleep(1.0)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout_s} s:\n{server.log_tail()}")


POSE_GRAPH = {
    "nodes": [
        {"key": "image", "type": "LoadImage", "widgets": {"image": "bolid_reference.png"}, "col": 0},
        {"key": "pose_model", "type": "BoLIDPoseModelLoader", "widgets": {"model_name": "pose/yolo11n-pose.pt"}, "col": 0},
        # Random weights score every detection about 2e-4: a tiny conf and visibility 0 keep a "person".
        {"key": "pose", "type": "BoLIDPoseKeypoints", "widgets": {"conf": 0.0001, "visibility": 0.0}, "col": 1},
        {"key": "weighting", "type": "BoLIDGaussianWeighting",
         "widgets": {"sigma": 0.03, "sigma_mode": "relative", "alpha": 0.1}, "col": 2, "height": 520},
    ],
    "links": [["image", "IMAGE", "pose", "image"], ["pose_model", "BOLID_POSE_MODEL", "pose", "pose_model"],
              ["image", "IMAGE", "weighting", "image"], ["pose", "BOLID_POSE", "weighting", "pose"]],
    "groups": [],
}


def test_weighting_preview_redraws_when_sigma_changes(comfy_server, app_page, tmp_path):
    """Issue 3: once the weighting node has run, moving sigma redraws its preview in the browser, without
    queueing the graph: the preview's pixels differ before and after, and no new prompt reaches the server."""
    page = app_page
    browserlib.close_dialogs(page)
    built = browserlib.build_graph(page, POSE_GRAPH)
    assert not built["problems"], built["problems"]
    _queue_and_wait(page, comfy_server)
    node_js = "window.app.graph._nodes.find(n => n.type === 'BoLIDGaussianWeighting')"
    page.wait_for_function(f"() => {{ const n = {node_js}; return n.bolidLivePreview && n.bolidLivePreview.renderCount > 0; }}",
                           timeout=60_000)
    browserlib.fit_view(page)
    preview = page.locator("canvas.bolid-live-preview")
    before_png = preview.screenshot()
    history_before = len(comfy_server.get_json("/history"))
    # What dragging the sigma widget does: the value changes and the widget's callback runs.
    page.evaluate(f"""() => {{ const n = {node_js}; const w = n.widgets.find(w => w.name === 'sigma');
                               w.value = 0.25; w.callback && w.callback(0.25, window.app.canvas, n); }}""")
    page.wait_for_timeout(500)
    after_png = preview.screenshot()
    (tmp_path / "sigma_before.png").write_bytes(before_png)
    (tmp_path / "sigma_after.png").write_bytes(after_png)
    a, b = _pixels(before_png), _pixels(after_png)
    assert a.shape == b.shape
    changed = (abs(a - b).max(axis=-1) > 8).mean()
    assert changed > 0.05, f"only {changed:.1%} of the preview's pixels changed when sigma went 0.03 -> 0.25"
    assert len(comfy_server.get_json("/history")) == history_before, "changing sigma queued the graph"
    # And back: the same sigma gives the same picture (the preview is a function of the widgets).
    page.evaluate(f"""() => {{ const n = {node_js}; const w = n.widgets.find(w => w.name === 'sigma');
                               w.value = 0.03; w.callback && w.callback(0.03, window.app.canvas, n); }}""")
    page.wait_for_timeout(500)
    again = _pixels(preview.screenshot())
    assert (abs(again - a).max(axis=-1) > 8).mean() < 0.01


def test_body_summary_drawn_on_body_nodes(comfy_server, app_page):
    """js/bolid_body.js: after Load Body-ID -> Body-ID Preview has run, both nodes carry the summary
    (D, norm, views, confidence, VAE fingerprint) and draw it: the node's pixels change."""
    page = app_page
    browserlib.close_dialogs(page)
    built = browserlib.build_graph(page, {
        "nodes": [{"key": "load", "type": "BoLIDLoadBody", "widgets": {"body_name": "my_person.safetensors"}, "col": 0},
                  {"key": "preview", "type": "BoLIDBodyPreview", "widgets": {}, "col": 1}],
        "links": [["load", "BOLID_BODY", "preview", "body"]], "groups": []})
    assert not built["problems"], built["problems"]
    browserlib.fit_view(page)
    rect_js = """() => { const n = window.app.graph._nodes.find(n => n.type === 'BoLIDBodyPreview');
        const ds = window.app.canvas.ds, s = ds.scale, [ox, oy] = ds.offset;
        const c = document.querySelector('#graph-canvas').getBoundingClientRect();
        return {x: c.x + (n.pos[0] + ox) * s, y: c.y + (n.pos[1] - 30 + oy) * s, width: (n.size[0] + 40) * s, height: (n.size[1] + 200) * s}; }"""
    before = _pixels(page.screenshot(clip=page.evaluate(rect_js)))
    _queue_and_wait(page, comfy_server)
    page.wait_for_function(
        "() => window.app.graph._nodes.filter(n => n.type.startsWith('BoLID') && n.bolidBodySummary).length === 2",
        timeout=30_000)
    lines = page.evaluate("() => window.app.graph._nodes.find(n => n.type === 'BoLIDBodyPreview').bolidBodySummary")
    text = "\n".join(lines)
    assert "D=756" in text and "12 used" in text and "1 skipped" in text and "0.83" in text, text
    assert "f00dcafe" in text, text
    page.wait_for_timeout(500)
    after = _pixels(page.screenshot(clip=page.evaluate(rect_js)))
    h = min(before.shape[0], after.shape[0])
    w = min(before.shape[1], after.shape[1])
    changed = (abs(before[:h, :w] - after[:h, :w]).max(axis=-1) > 20).mean()
    assert changed > 0.01, f"the node looks the same after it ran ({changed:.2%} of pixels changed)"
