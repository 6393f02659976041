import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def standin_pack_info() -> dict:
    """The pack's node schemas as /object_info would serve them, built against the ComfyUI stand-in."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests/standin/dump_pack_info.py")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"the pack did not import against the stand-in:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)
