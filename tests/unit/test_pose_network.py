"""The pose node's path (load a YOLO pose .pt, find poses) opens no connection, while ultralytics' own predict posts
a usage event to Google Analytics after each call (README "Security review", Network).

Run in a fresh interpreter: ultralytics turns its analytics off under pytest (and when it finds no network), so the
probe resolves every name to a documentation address (192.0.2.1) and records, then refuses, every connect.
ultralytics' analytics switch is forced on in the probe, so the control does not depend on this machine's
ultralytics settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, socket, sys, threading
attempts = []
def getaddrinfo(host, *args, **kwargs):
    attempts.append(["dns", str(host)])
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 443))]
def connect(self, address):
    attempts.append(["connect", str(address)])
    raise OSError("refused by the test")
socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: (attempts.append(["connect", str(address)]), 111)[1]

root, mode, pt = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root)
import torch
from ultralytics import YOLO
try:
    from ultralytics.utils.events import events
except ImportError:
    from ultralytics.hub.utils import events
events.enabled = True
YOLO("yolo11n-pose.yaml").save(pt)
at_import = list(attempts)
del attempts[:]
images = torch.rand(2, 3, 96, 64)
if mode == "ultralytics":
    YOLO(pt).predict(images, conf=0.01, verbose=False)
else:
    from bolid_lib.method.pose import PoseModel
    PoseModel.load(pt).predict(images, conf=0.01)
for thread in threading.enumerate():       # the analytics post runs on a thread of its own
    if thread is not threading.main_thread():
        thread.join(timeout=20)
print(json.dumps({"import": at_import, "run": attempts}))
"""


def _probe(mode: str, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), mode, str(tmp_path / "pose.pt")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ultralytics_predict_would_post_its_analytics(tmp_path):
    """The control: what the pack keeps out is real in this ultralytics."""
    got = _probe("ultralytics", tmp_path)
    assert any(kind == "connect" for kind, _ in got["run"]), got


def test_the_pack_s_pose_path_opens_no_connection(tmp_path):
    got = _probe("pack", tmp_path)
    assert got["run"] == [], f"the pose path touched the network: {got['run']}"
    # What remains is ultralytics' own connectivity check when it is first imported (two DNS names, no
    # connection), which only YOLO_OFFLINE=1 in ComfyUI's environment turns off; the README says so.
    assert all(kind == "dns" for kind, _ in got["import"]), got["import"]
