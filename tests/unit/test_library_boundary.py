"""bolid_lib imports and works with ComfyUI absent (and never imports it)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import importlib, pkgutil, sys
FORBIDDEN = ("comfy", "comfy_api", "comfy_execution", "folder_paths", "nodes", "server", "execution")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"bolid_lib imported {name}")
        return None

sys.meta_path.insert(0, Block())
import bolid_lib
names = [m.name for m in pkgutil.walk_packages(bolid_lib.__path__, "bolid_lib.")]
for name in names:
    if name.endswith("__main__"):
        continue
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not bad, bad
print(len(names))
'''


def test_bolid_lib_imports_without_comfyui():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) >= 3
