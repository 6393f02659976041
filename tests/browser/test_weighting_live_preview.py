"""The live weighting preview (js/bolid_weighting.js) redraws in the real frontend when sigma or alpha change,
without queueing the graph; the pose overlay (js/bolid_pose.js) draws after the pose node runs.

Screenshot-based: the preview canvas's picture before and after a sigma change must differ, and no new
prompt may be queued by the change. Pictures are written to pytest's tmp folder.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

BUILD_GRAPH_JS = """
async ([imageName, modelName]) => {
  const g = window.app.graph; g.clear(); const L = window.LiteGraph;
  const add = (t, pos) => { const n = L.createNode(t); g.add(n); n.pos = pos; return n; };
  const load = add("LoadImage", [20, 20]);
  load.widgets.find(w => w.name === "image").value = imageName;
  const ml = add("BoLIDPoseModelLoader", [20, 420]);
  ml.widgets.find(w => w.name === "model_name").value = modelName;
  const pk = add("BoLIDPoseKeypoints", [380, 20]);
  pk.widgets.find(w => w.name === "conf").value = 0;   // random weights: every detection scores ~2e-4
  load.connect(0, pk, 0); ml.connect(0, pk, 1);
  const wt = add("BoLIDGaussianWeighting", [760, 20]);
  load.connect(0, wt, 0); pk.connect(0, wt, 1);
  window.__bolidWeighting = wt; window.__bolidPose = pk;
  await window.app.queuePrompt(0, 1);
}
"""


def _picture(page, path: Path) -> np.ndarray:
    data = page.locator("canvas.bolid-live-preview").screenshot(type="png")
    path.write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_live_preview_redraws_when_sigma_changes(comfy_server, app_page, yolo_pose_pt, tmp_path):
    page = app_page
    model = comfy_server.base / "models" / "ultralytics" / "pose" / "yolo11n-pose-live.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(yolo_pose_pt, model)
    yy, xx = np.mgrid[0:256, 0:192]
    photo = np.stack([xx / 192, yy / 256, 0.5 + 0 * xx], -1)
    photo[60:200, 60:130] = [0.9, 0.7, 0.6]
    Image.fromarray((photo * 255).astype(np.uint8)).save(comfy_server.base / "input" / "bolid_live_preview.png")

    page.keyboard.press("Escape")
    page.evaluate(BUILD_GRAPH_JS, ["bolid_live_preview.png", "pose/yolo11n-pose-live.pt"])
    page.wait_for_function(
        "() => window.__bolidWeighting.bolidLivePreview && window.__bolidWeighting.bolidLivePreview.renderCount > 0",
        timeout=180_000,
    )
    page.wait_for_function("() => window.__bolidPose.bolidPoseOverlay && window.__bolidPose.bolidPoseOverlay.renderCount > 0")
    page.wait_for_timeout(500)
    queued = comfy_server.get_json("/history")
    before = _picture(page, tmp_path / "live_sigma_0.1.png")

    # What a slider drag does: set the value and call the widget's callback.
    page.evaluate("""() => { const w = window.__bolidWeighting.widgets.find(w => w.name === "sigma");
                             w.value = 0.35; w.callback && w.callback(w.value); }""")
    page.wait_for_timeout(500)
    after = _picture(page, tmp_path / "live_sigma_0.35.png")
    state = page.evaluate("() => [window.__bolidWeighting.bolidLivePreview.renderCount, window.__bolidWeighting.bolidLivePreview.lastKey]")
    assert state == [2, "0.35|relative|0.2"], state
    assert before.shape == after.shape
    assert np.abs(after - before).mean() > 2.0, "the preview picture did not change with sigma"
    # A value set without a callback (a script, an undo) is picked up at the next frame.
    page.evaluate("""() => { window.__bolidWeighting.widgets.find(w => w.name === "alpha").value = 0.7;
                             window.app.graph.setDirtyCanvas(true, true); }""")
    page.wait_for_function("() => window.__bolidWeighting.bolidLivePreview.lastKey === '0.35|relative|0.7'", timeout=10_000)
    assert comfy_server.get_json("/history") == queued, "changing sigma or alpha queued the graph"
    page.screenshot(path=str(tmp_path / "live_preview_page.png"))
    errors = [m for m in getattr(page, "console_messages", []) if m[0] == "pageerror" and "bolid" in m[1].lower()]
    assert not errors, errors
