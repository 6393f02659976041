"""The real ComfyUI frontend with this pack, in headless Chromium: the host's pinned frontend and the newest,
each in the classic canvas and in Nodes 2.0 (tests/browser/conftest.py).

Screenshots: every run writes them under pytest's tmp folder; with ``BOLID_UPDATE_SCREENSHOTS=1`` the
workflow pictures also go to docs/images/<workflow>.png and example_workflows/<workflow>.jpg (the README's
pictures and the template browser's thumbnails come from this test).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import browserlib

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOWS = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
EXPECTED_WORKFLOWS = {"bolid_text_only", "bolid_text_only_lightning", "bolid_image_reference", "bolid_build_body_id",
                      "bolid_build_body_id_step_by_step"}
UPDATE = os.environ.get("BOLID_UPDATE_SCREENSHOTS") == "1"
MAX_PICTURE_BYTES = 300_000
# The README pictures and template thumbnails are taken with this frontend in the classic canvas.
PICTURE_FRONTEND = os.environ.get("BOLID_PICTURE_FRONTEND", browserlib.NEWEST_FRONTEND)


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
    """Loading the pack's extensions and putting every example workflow on the canvas raises no page error
    and logs no error from the pack's files (the same check runs after every test, in app_page)."""
    for path in sorted(WORKFLOW_DIR.glob("*.json")):
        browserlib.load_workflow(app_page, json.loads(path.read_text()), path.stem)
    errors = browserlib.pack_errors(app_page)
    assert not errors, errors


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_layout_holds_in_this_renderer(name, app_page):
    """The nodes' on-screen boxes, as this renderer draws them: no two nodes overlap, and every group holds each
    node it touches whole (Nodes 2.0 draws nodes taller than the classic canvas; the generator,
    tests/tools/make_workflows.py, sizes them for both)."""
    page = app_page
    wf = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    browserlib.close_dialogs(page)
    browserlib.load_workflow(page, wf, name)
    boxes = browserlib.node_boxes(page)
    assert len(boxes["nodes"]) == len(wf["nodes"]), boxes
    if any(g["bounding"] for g in wf.get("groups", [])):
        assert boxes["groups"], "the groups did not load"
    problems = browserlib.layout_problems(boxes)
    assert not problems, f"{name} in {page.renderer}:\n" + "\n".join(problems)


def test_pack_js_raises_no_deprecation_warning(app_page):
    """Every example workflow on the canvas, every pack node created: LiteGraph raises no deprecation warning whose
    stack passes through the pack's JS (frontend 1.58 warns on reads of input.link / output.links and
    LGraphCanvas.selected_nodes). The recorder itself is checked first, on 1.58: a deprecated read made here is caught."""
    page = app_page
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || '0'")
    if tuple(int(v) for v in re.findall(r"\d+", version)[:2]) >= (1, 58):  # where reading input.link warns
        page.evaluate("() => { const n = window.LiteGraph.createNode('BoLIDBodyPreview'); void n.inputs[0].link; }")
        seen = browserlib.deprecations(page, pack_only=False)
        assert any("input.link" in d["message"] for d in seen), f"the deprecation recorder caught nothing: {seen}"
    for path in sorted(WORKFLOW_DIR.glob("*.json")):
        browserlib.load_workflow(page, json.loads(path.read_text()), path.stem)
        browserlib.fit_view(page)
    page.evaluate("""() => { for (const t of Object.keys(window.LiteGraph.registered_node_types))
                               if (t.startsWith('BoLID')) window.app.graph.add(window.LiteGraph.createNode(t)); }""")
    page.wait_for_timeout(1000)
    ours = browserlib.deprecations(page)
    assert not ours, "\n".join(f"{d['message']}\n{d['stack'][:1500]}" for d in ours)


def _pixels(png: bytes):
    from PIL import Image
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype("int16")


# JS, on a card's title element: wait until the nearest enclosing card with a picture shows it loaded.
CARD_PICTURE_JS = """
async (title, timeoutMs) => {
  title.scrollIntoView({block: 'center'});
  const t0 = Date.now();
  const picture = () => {  // the picture of the smallest enclosing element that holds one
    for (let card = title; card && card !== document.body; card = card.parentElement) {
      const img = card.querySelector('img');
      if (img) return img;
    }
    return null;
  };
  let img = picture();
  while (!(img && img.complete && img.naturalWidth > 0)) {
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`the card of ${title.innerText} shows no picture: ${img ? img.src : 'no img'}`);
    await new Promise(r => setTimeout(r, 100));
    img = picture();
  }
  return img.src;
}
"""


def _open_from_template_browser(page, name: str) -> None:
    """Open the template browser as a user does, pick the pack, click the workflow's card. The dialog is
    found by its ARIA role: PrimeVue's ``.p-dialog`` up to frontend 1.2x, a Reka UI dialog in 1.4x-1.5x."""
    browserlib.close_dialogs(page)
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    dialog = page.locator("[role=dialog]").filter(has_text=browserlib.PACK_NAME).first
    dialog.get_by_text(browserlib.PACK_NAME, exact=True).first.click()
    card_title = re.compile("^" + re.escape(name).replace("_", "[ _]") + "$", re.I)
    card = dialog.get_by_text(card_title).first
    card.wait_for(timeout=30_000)
    # The thumbnail: fetched from the route this host serves the pack's workflows from (directly as the
    # picture's src, or through a blob URL in 1.4x+), and the card shows it.
    thumb = f"/workflow_templates/{browserlib.PACK_NAME}/{name}.jpg"
    src = card.evaluate(CARD_PICTURE_JS, 20_000)
    if not src.split("?")[0].endswith(thumb):  # a blob: the page fetched the file itself
        assert src.startswith("blob:"), f"{name}: the card shows {src}, not {thumb}"
        # Playwright hands the response event to Python only while it waits on the page: on a busy machine it can
        # still be queued when the card already shows the blob, so wait for it (up to 10 s).
        fetched = []
        for _ in range(100):
            fetched = [(s, ct) for s, url, ct in page.pack_responses if url.split("?")[0].endswith(thumb)]
            if fetched:
                break
            page.wait_for_timeout(100)
        assert fetched and fetched[-1][0] == 200 and "image/jpeg" in fetched[-1][1], \
            f"{name}: the thumbnail {thumb} was not fetched as a JPEG: {fetched}"
    card.click()


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_opens_from_template_browser(name, app_page, tmp_path):
    """Open the template browser, pick the pack, click the workflow (its thumbnail shown): all nodes known,
    all links intact, no missing-nodes (or any other) dialog; in Nodes 2.0 every node is a DOM node, in the
    classic canvas none is; then a picture of it on the canvas."""
    page = app_page
    _open_from_template_browser(page, name)
    page.wait_for_function(
        "() => window.app.graph._nodes.some(x => x.type && x.type.startsWith('BoLID'))", timeout=30_000)
    page.wait_for_timeout(1000)
    report = browserlib.graph_report(page)
    wf = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    assert not report["missingTypes"], f"{name}: the frontend does not know {report['missingTypes']}"
    assert not report["broken"], f"{name}: broken links {report['broken']}"
    assert report["nodeCount"] == len(wf["nodes"]), (report["nodeCount"], len(wf["nodes"]))
    assert report["linkCount"] == len(wf["links"]), (report["linkCount"], len(wf["links"]))
    assert not report["dialogs"], f"{name}: a dialog came up on load: {report['dialogs']}"
    assert not report["toasts"], f"{name}: the frontend warned on load: {report['toasts']}"
    expected_dom = report["nodeCount"] if page.renderer == "nodes2" else 0
    assert report["domNodes"] == expected_dom, f"{page.renderer}: {report['domNodes']} DOM nodes for {report['nodeCount']}"

    png = browserlib.workflow_picture(page)
    (tmp_path / f"{name}.png").write_bytes(png)
    px = _pixels(png)
    assert px.std() > 5, "the canvas screenshot is blank"
    if UPDATE and page.renderer == "classic" and page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == PICTURE_FRONTEND:
        browserlib.write_pictures(name, png, MAX_PICTURE_BYTES)


def test_body_summary_shown_on_body_nodes(comfy_server, app_page, tmp_path):
    """js/bolid_body.js: after Load Body-ID -> Body-ID Preview has run, both nodes show the summary
    (D, views, confidence, VAE fingerprint) in a DOM widget that both renderers display."""
    page = app_page
    # One file per renderer: the server runs both nodes again instead of answering from its cache (a cached
    # run sends the output node's summary only).
    bodies = comfy_server.base / "models" / "bolid" / "bodies"
    body_name = f"my_person_{page.renderer}.safetensors"
    shutil.copyfile(bodies / "my_person.safetensors", bodies / body_name)
    browserlib.close_dialogs(page)
    built = browserlib.build_graph(page, {
        "nodes": [{"key": "load", "type": "BoLIDLoadBody", "widgets": {"body_name": body_name}, "col": 0},
                  {"key": "preview", "type": "BoLIDBodyPreview", "widgets": {}, "col": 1}],
        "links": [["load", "BOLID_BODY", "preview", "body"]], "groups": []})
    assert not built["problems"], built["problems"]
    assert page.locator(".bolid-body-summary").count() == 0, "a summary is shown before the nodes ran"
    browserlib.queue_and_wait(page, comfy_server)
    page.wait_for_function(
        "() => window.app.graph._nodes.filter(n => n.type.startsWith('BoLID') && n.bolidBodySummary).length === 2",
        timeout=30_000)
    browserlib.fit_view(page)
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "body_summary.png"))
    summaries = page.locator(".bolid-body-summary")
    assert summaries.count() == 2, f"{summaries.count()} summaries shown for 2 Body-ID nodes"
    for i in range(2):
        box = summaries.nth(i)
        text = box.inner_text()
        assert "D=756" in text and "12 used" in text and "1 skipped" in text and "0.83" in text, text
        assert "f00dcafe" in text, text
        why = browserlib.why_not_shown(box)
        assert not why, f"summary {i} is not shown: {why}"
