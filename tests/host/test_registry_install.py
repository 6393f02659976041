"""What ComfyUI-Manager installs from the Registry (the archive of .comfyignore, unpacked into custom_nodes) loads in
a real ComfyUI with every node the pack has, its web directory and its example workflows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hostlib
import registrylib as reg

pytestmark = pytest.mark.host

# Run in a fresh interpreter, so that nothing of the checkout (pytest's sys.path, the session's booted ComfyUI)
# can stand in for a file the archive lacks.
_LOAD = """
import asyncio, json, logging, sys
root, pack = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
from comfy.cli_args import args
args.cpu = True
import utils.extra_config
import nodes
records = []
class Capture(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
asyncio.run(nodes.init_public_apis())
asyncio.run(nodes.init_builtin_extra_nodes())
builtin = set(nodes.NODE_CLASS_MAPPINGS)
logging.getLogger().addHandler(Capture(level=logging.WARNING))
ok = asyncio.run(nodes.load_custom_node(pack, module_parent="custom_nodes"))
print(json.dumps({"ok": ok, "nodes": sorted(set(nodes.NODE_CLASS_MAPPINGS) - builtin),
                  "web": sorted(nodes.EXTENSION_WEB_DIRS.values()), "warnings": records}))
"""


def test_the_registry_archive_loads_in_comfyui(tmp_path):
    root, why = hostlib.find_comfyui()
    if root is None:
        pytest.skip(why)
    if shutil.which("git") is None:
        pytest.skip("the archive is built from `git ls-files`: needs git")
    pack = tmp_path / "custom_nodes" / "comfyui-bolid"                   # the folder name Manager gives it
    for name in reg.archive_files(reg.ROOT):
        (pack / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reg.ROOT / name, pack / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(root), str(pack)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["ok"], f"ComfyUI did not load the installed archive:\n{done.stderr[-4000:]}"
    assert got["warnings"] == [], got["warnings"]
    dumped = json.loads((reg.ROOT / "bolid_lib/runner/core_nodes/object_info_pack.json").read_text(encoding="utf-8"))
    assert got["nodes"] == sorted(dumped.get("nodes", dumped)), "nodes missing from the Registry install"
    assert str(pack / "js") in got["web"]
    assert sorted(p.name for p in (pack / "example_workflows").glob("*.json")) == sorted(
        p.name for p in (reg.ROOT / "example_workflows").glob("*.json"))
