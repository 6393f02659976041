"""Where the in-suite world (tests/host/test_world_proof_host.py) keeps its trained files between runs.

The key covers the preset and the source of every module that can change what the world trains or samples: all of
``bolid_lib`` but the headless runner (the world's stages, the trainers, the method's attention and adapter, the
data and the metrics). It once covered ``experiments/world*`` alone, so a regression in ``training/`` or ``method/``
passed on a warm cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

NOT_TRAINING = ("runner",)          # bolid_lib's rooms that no stage of the world imports


def source_files(package_root: Path) -> list[Path]:
    return sorted(f for f in Path(package_root).rglob("*.py")
                  if f.relative_to(package_root).parts[0] not in NOT_TRAINING)


def key(preset: dict, package_root: Path) -> str:
    h = hashlib.sha256(json.dumps(preset, sort_keys=True).encode())
    for f in source_files(package_root):
        h.update(str(f.relative_to(package_root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cache_dir(preset: dict) -> Path:
    """The folder of the trained test world for ``preset`` and today's source (``BOLID_TEST_ASSETS`` or
    ~/.cache/bolid-test-assets)."""
    import bolid_lib

    root = Path(bolid_lib.__file__).parent
    base = Path(os.environ.get("BOLID_TEST_ASSETS", Path.home() / ".cache" / "bolid-test-assets"))
    return base / f"world_proof_{key(preset, root)}"
