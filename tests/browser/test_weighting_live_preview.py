"""The live weighting preview (js/bolid_weighting.js) redraws in the real frontend when sigma or alpha change,
without queueing the graph; the pose overlay (js/bolid_pose.js) shows the skeleton after the pose node runs.
Both are DOM widgets, which the classic canvas and Nodes 2.0 both display (each combination: conftest.py).

Screenshot-based: the preview's picture before and after a sigma change must differ, the same sigma must give
the same picture again, and no new prompt may be queued by the change. Pictures go to pytest's tmp folder.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browserlib
from bolid_lib.method.body_id import DEFAULT_RECIPE

pytestmark = pytest.mark.browser

BUILD_GRAPH_JS = """
async ([imageName, modelName]) => {
  const g = window.app.graph; g.clear(); const L = window.LiteGraph;
  const add = (t, pos) => { const n = L.createNode(t); g.add(n); n.pos = pos; return n; };
  const load = add("LoadImage", [20, 20]);
  load.widgets.find(w => w.name === "image").value = imageName;
  const ml = add("BoLIDPoseModelLoader", [20, 520]);
  ml.widgets.find(w => w.name === "model_name").value = modelName;
  const pk = add("BoLIDPoseKeypoints", [420, 20]);
  pk.widgets.find(w => w.name === "conf").value = 0;   // random weights: every detection scores ~2e-4
  load.connect(0, pk, 0); ml.connect(0, pk, 1);
  const wt = add("BoLIDGaussianWeighting", [820, 20]);
  load.connect(0, wt, 0); pk.connect(0, wt, 1);
  window.__bolidWeighting = wt; window.__bolidPose = pk;
}
"""

SET_WIDGET_JS = """([name, value]) => { const n = window.__bolidWeighting; const w = n.widgets.find(w => w.name === name);
                                        w.value = value; w.callback && w.callback(value, window.app.canvas, n); }"""


def _picture(locator, path: Path) -> np.ndarray:
    data = locator.screenshot(type="png")
    path.write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_live_preview_redraws_when_sigma_changes(comfy_server, app_page, yolo_pose_pt, tmp_path):
    page = app_page
    model = comfy_server.base / "models" / "ultralytics" / "pose" / "yolo11n-pose-live.pt"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(yolo_pose_pt, model)
    yy, xx = np.mgrid[0:256, 0:192]
    photo = np.stack([xx / 192, yy / 256, 0.5 + 0 * xx], -1)
    photo[60:200, 60:130] = [0.9, 0.7, 0.6]
    # One file per renderer: the server runs the graph again instead of answering from its cache.
    image_name = f"bolid_live_preview_{page.renderer}.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(comfy_server.base / "input" / image_name)

    browserlib.close_dialogs(page)
    page.evaluate(BUILD_GRAPH_JS, [image_name, "pose/yolo11n-pose-live.pt"])
    browserlib.queue_and_wait(page, comfy_server)
    page.wait_for_function(
        "() => window.__bolidWeighting.bolidLivePreview && window.__bolidWeighting.bolidLivePreview.renderCount > 0",
        timeout=60_000,
    )
    page.wait_for_function("() => window.__bolidPose.bolidPoseOverlay && window.__bolidPose.bolidPoseOverlay.renderCount > 0")
    browserlib.fit_view(page)
    page.wait_for_timeout(800)
    page.screenshot(path=str(tmp_path / "live_preview_page.png"))

    # The pose overlay: shown, says what it found, and draws more than its background.
    overlay = page.locator(".bolid-pose-overlay")
    assert overlay.count() == 1, f"{overlay.count()} pose overlays on the page"
    why = browserlib.why_not_shown(overlay)
    assert not why, f"the pose overlay is not shown: {why}"
    assert "person found in 1/1 images" in overlay.inner_text(), overlay.inner_text()
    _picture(overlay.locator("canvas"), tmp_path / "pose_overlay.png")
    # Keypoints are white dots, limbs saturated colours; the cell frame and its label are grey on #111.
    # Counted in the canvas's own pixels (its on-screen copy is scaled to the node's width).
    drawn = page.evaluate("""() => { const c = document.querySelector('.bolid-pose-overlay canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) { const mx = Math.max(d[i], d[i+1], d[i+2]), mn = Math.min(d[i], d[i+1], d[i+2]);
          if (mn > 200 || mx - mn > 80) n++; }
        return n; }""")
    assert drawn >= 10, f"the overlay shows no keypoint ({drawn} keypoint-coloured pixels)"

    preview = page.locator("canvas.bolid-live-preview")
    assert preview.count() == 1
    why = browserlib.why_not_shown(preview)
    assert not why, f"the weighting preview is not shown: {why}"
    queued = comfy_server.get_json("/history")
    before = _picture(preview, tmp_path / "live_sigma_0.1.png")
    assert before.std() > 5, "the weighting preview is blank"

    if page.renderer == "nodes2":
        # As a user does in Nodes 2.0: type the new sigma into the node's number field (the widget component
        # sets the value and calls the widget's callback).
        node = page.locator(f'[data-node-id="{page.evaluate("() => window.__bolidWeighting.id")}"]')
        field = node.locator('[data-widget-name="sigma"] input')
        if field.count() == 0:  # frontends without data-widget-name: sigma is the node's first number field
            field = node.get_by_role("spinbutton").first
        field.fill("0.35")  # focuses the field (a click lands on its drag-to-scrub layer)
        field.press("Enter")
    else:
        # What a slider drag does in the classic canvas: set the value and call the widget's callback.
        page.evaluate(SET_WIDGET_JS, ["sigma", 0.35])
    page.wait_for_timeout(500)
    after = _picture(preview, tmp_path / "live_sigma_0.35.png")
    state = page.evaluate("() => [window.__bolidWeighting.bolidLivePreview.renderCount, window.__bolidWeighting.bolidLivePreview.lastKey]")
    # The node's alpha default is the Body-ID recipe's (issue 27: the value every VAE is trained with).
    assert state[1] == f"0.35|relative|{DEFAULT_RECIPE.alpha}" and state[0] >= 2, state
    assert before.shape == after.shape
    assert np.abs(after - before).mean() > 2.0, "the preview picture did not change with sigma"
    # And back: the same sigma gives the same picture (the preview is a function of the widgets).
    page.evaluate(SET_WIDGET_JS, ["sigma", 0.1])
    page.wait_for_timeout(500)
    again = _picture(preview, tmp_path / "live_sigma_0.1_again.png")
    assert (np.abs(again - before).max(axis=-1) > 8).mean() < 0.01, "sigma 0.1 again gives another picture"
    # A value set without a callback (a script, an undo) is picked up without a prompt, in either renderer.
    page.evaluate("""() => { window.__bolidWeighting.widgets.find(w => w.name === "alpha").value = 0.7;
                             window.app.graph.setDirtyCanvas(true, true); }""")
    page.wait_for_function("() => window.__bolidWeighting.bolidLivePreview.lastKey === '0.1|relative|0.7'", timeout=10_000)
    assert comfy_server.get_json("/history") == queued, "changing sigma or alpha queued the graph"
