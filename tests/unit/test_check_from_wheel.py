"""`python -m bolid_lib check` from an installed wheel, away from the checkout: the core dumps and this pack's own
node schemas (bolid_lib/runner/core_nodes/object_info_pack.json) come from the package, never from tests/.

The wheel is built with the project's own build backend (offline with --no-build-isolation where this environment
has setuptools >= 77, as the dev extra installs; else pip fetches it, and without a registry the test is skipped with
the reason), installed with `pip install --no-deps --target`, and run with cwd outside the checkout and PYTHONPATH
set to the install only. About 10 s.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
# What the wheel is built from: the files pyproject.toml packs (the node glue, js and tests are not in the wheel).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bolid_lib")
OFFLINE_HINTS = ("No matching distribution found", "Could not find a version", "NewConnectionError",
                 "Network is unreachable", "Temporary failure in name resolution", "Max retries exceeded")


def _setuptools_builds_offline() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(p) for p in version.split(".")[:1] if p.isdigit()) >= (77,)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel was installed into (--target)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    isolation = [] if not _setuptools_builds_offline() else ["--no-build-isolation"]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(work / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        if not isolation and any(h in build.stdout + build.stderr for h in OFFLINE_HINTS):
            pytest.skip("this environment has no setuptools >= 77 (pip install 'setuptools>=77', in the dev extra) and "
                        "pip could not fetch it: " + (build.stderr.strip().splitlines() or ["?"])[-1])
        pytest.fail(f"the wheel did not build:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    wheels = list((work / "dist").glob("comfyui_bolid-*.whl"))
    assert len(wheels) == 1, wheels
    target = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheels[0])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(installed)
    env.pop("COMFYUI_PATH", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_the_installed_package_is_the_one_run(installed, tmp_path):
    done = _run(installed, tmp_path, "-c", "import bolid_lib, pathlib; print(pathlib.Path(bolid_lib.__file__).resolve())")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.resolve())
    data = installed / "bolid_lib" / "runner" / "core_nodes"
    assert (data / "object_info_pack.json").is_file() and list(data.glob("object_info_core_*.json"))
    assert not (installed / "tests").exists() and not (installed / "nodes").exists()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflows_check_clean_from_the_wheel(installed, tmp_path, workflow):
    copy_ = tmp_path / workflow.name
    shutil.copy2(workflow, copy_)
    done = _run(installed, tmp_path, "-m", "bolid_lib", "check", copy_.name, "--ignore-missing-files")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "problem(s)" in line]
    assert len(lines) >= 2 and all(line.startswith("0 problem(s)") for line in lines), done.stdout
    assert "warning" not in done.stderr.lower(), done.stderr


def test_a_wrong_value_on_a_bolid_node_is_found_from_the_wheel(installed, tmp_path):
    """Only the pack's own schemas know BoLID Gaussian Weighting's alpha range and BoLID Pose Keypoints' choices."""
    wf = json.loads((ROOT / "example_workflows" / "bolid_image_reference.json").read_text())
    bad = copy.deepcopy(wf)
    nodes = {n["type"]: n for n in bad["nodes"]}
    weighting, pose = nodes["BoLIDGaussianWeighting"], nodes["BoLIDPoseKeypoints"]
    info = json.loads((installed / "bolid_lib" / "runner" / "core_nodes" / "object_info_pack.json").read_text())["nodes"]
    from bolid_lib.runner.workflow import widget_layout

    weighting["widgets_values"][widget_layout(info["BoLIDGaussianWeighting"]).index(("alpha", "value"))] = 5.0
    pose["widgets_values"][widget_layout(info["BoLIDPoseKeypoints"]).index(("person", "value"))] = "tallest"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    done = _run(installed, tmp_path, "-m", "bolid_lib", "check", path.name, "--ignore-missing-files")
    assert done.returncode == 1, done.stdout + done.stderr
    for version in ("0.3.64", "0.33.0"):
        assert (f"[ComfyUI {version}] out of range: node {weighting['id']} (BoLIDGaussianWeighting) input 'alpha': "
                "5.0 is above the maximum 1.0") in done.stdout, done.stdout
        assert (f"[ComfyUI {version}] bad value: node {pose['id']} (BoLIDPoseKeypoints) input 'person': "
                "'tallest' is not one of") in done.stdout, done.stdout
        assert f"2 problem(s) in bad.json on ComfyUI {version}" in done.stdout, done.stdout
