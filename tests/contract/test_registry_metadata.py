"""pyproject.toml's [tool.comfy] block, which the Comfy registry and ComfyUI-Manager read, is complete and true."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[2]


def test_tool_comfy_names_a_publisher_a_version_floor_and_a_committed_icon():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    repo = meta["project"]["urls"]["Repository"].rstrip("/")
    raw = repo.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert comfy["Icon"].startswith(raw), (comfy["Icon"], raw)            # served from this repository
    icon = ROOT / comfy["Icon"][len(raw):]
    assert icon.is_file(), f"{icon} is not committed: run tests/tools/make_icon.py"
    from PIL import Image

    with Image.open(icon) as im:
        assert im.size == (400, 400)                                     # the registry shows a square icon
