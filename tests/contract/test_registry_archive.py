"""The archive the Comfy Registry serves (and ComfyUI-Manager installs) holds what ComfyUI needs to run the nodes
and show the workflows, and nothing the Registry's scanner flags: no process started, no environment variable
read or set, no network call, no eval/exec, no code it cannot classify, no test file (tests/registrylib.py says
how the archive is built and what is looked for)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import registrylib as reg

ROOT = reg.ROOT


@pytest.fixture(scope="module")
def archive() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the archive is built from `git ls-files`: needs git and a git checkout of the pack")
    return reg.archive_files(ROOT)


def test_the_archive_holds_every_file_the_nodes_and_workflows_need(archive):
    missing = sorted(reg.required_files(ROOT) - set(archive))
    assert missing == [], f"a Registry install would lack {missing}: let them in through .comfyignore"


def test_the_archive_holds_no_code_the_nodes_do_not_import(archive):
    """The runner, the trainers, the experiments, the tests, CI and the benchmarks stay in the git repository."""
    extra = sorted(f for f in archive if f.endswith(".py") and f not in reg.node_modules(ROOT))
    assert extra == [], f"Python files in the archive that ComfyUI never imports: {extra}"
    assert not [f for f in archive if f.startswith(("tests/", ".ci/", ".github/", "bolid_lib/runner/core_nodes/"))]


def test_nothing_in_the_archive_trips_a_scanner_rule(archive):
    findings = reg.scan(ROOT, archive)
    assert findings == [], "the Registry would flag this version:\n" + "\n".join(map(str, findings))


def test_comfy_cli_builds_the_same_archive(archive, tmp_path):
    """comfy-cli's own zip_files (what `comfy node pack` and `comfy node publish` call) gives the same names."""
    python = reg.comfy_cli_python()
    if python is None:
        pytest.skip("comfy-cli is not installed: `pip install comfy-cli==1.23.0` (in any environment; point "
                    "BOLID_COMFY_CLI_PYTHON at its python) to compare with it")
    assert reg.comfy_cli_archive(ROOT, python, tmp_path / "node.zip") == archive


def test_the_nodes_modules_are_found_through_their_imports():
    """The import walk is not vacuous: it reaches a module only imported inside a function (nodes/pose.py imports
    bolid_lib.method.pose in its loader) and the runner's catalogue, but not the runner itself."""
    mods = reg.node_modules(ROOT)
    assert {"__init__.py", "nodes/__init__.py", "nodes/pose.py", "bolid_lib/method/pose.py",
            "bolid_lib/runner/model_catalog.py", "bolid_lib/runner/__init__.py"} <= mods
    assert "bolid_lib/runner/headless.py" not in mods and not any(m.startswith("bolid_lib/training/") for m in mods)


# --- the scanner sees what it looks for ---------------------------------------------------------

FLAGGED_PY = [
    ("import subprocess\nsubprocess.run(['ls'])", reg.PROCESS),
    ("import os\nos.system('ls')", reg.PROCESS),
    ("from os import popen", reg.PROCESS),
    ("import multiprocessing as mp", reg.PROCESS),
    ("import asyncio\nasyncio.create_subprocess_exec('ls')", reg.PROCESS),
    ("import os\nx = os.environ['HOME']", reg.ENVIRONMENT),
    ("import os\nos.environ.setdefault('A', '1')", reg.ENVIRONMENT),
    ("import os as o\nx = o.getenv('HOME')", reg.ENVIRONMENT),
    ("from os import environ", reg.ENVIRONMENT),
    ("import socket", reg.NETWORK),
    ("from urllib.request import urlopen", reg.NETWORK),
    ("import requests", reg.NETWORK),
    ("import torch\ntorch.hub.load('a', 'b')", reg.NETWORK),
    ("from transformers import CLIPModel\nCLIPModel.from_pretrained('openai/clip')", reg.NETWORK),
    ("eval('1 + 1')", reg.DYNAMIC_CODE),
    ("exec('x = 1')", reg.DYNAMIC_CODE),
    ("m = __import__('os')", reg.DYNAMIC_CODE),
    ("import importlib\nimportlib.import_module('x')", reg.DYNAMIC_CODE),
    ("import torch\nsd = torch.load(path)", reg.DYNAMIC_CODE),
    ("import pickle\nobj = pickle.load(f)", reg.DYNAMIC_CODE),
    ("def f(:\n", reg.UNCLASSIFIABLE),
]


@pytest.mark.parametrize("code, rule", FLAGGED_PY, ids=[c.splitlines()[-1][:40] for c, _ in FLAGGED_PY])
def test_the_python_scan_flags(code, rule):
    assert rule in {f.rule for f in reg.scan_python("x.py", code)}, code


CLEAN_PY = """
import os, re, torch
from pathlib import Path
model = torch.nn.Linear(1, 1).eval()          # a method named eval
rx = re.compile("a")                           # a method named compile
p = os.path.join("a", "b"); os.makedirs(p, exist_ok=True)
clip = CLIPModel.from_pretrained(p, local_files_only=True)
state = torch.load(p, map_location="cpu", weights_only=True)   # torch's restricted reader: tensors only
url = "https://huggingface.co/h94/IP-Adapter"  # an address in a message is not a request
"""


def test_the_python_scan_leaves_ordinary_code_alone():
    assert reg.scan_python("x.py", CLEAN_PY) == []


FLAGGED_JS = [
    ('fetch("https://example.com/x")', reg.NETWORK),
    ("const ws = new WebSocket(url);", reg.NETWORK),
    ("const r = new XMLHttpRequest();", reg.NETWORK),
    ('img.src = "https://tracker.example/p.gif";', reg.NETWORK),
    ("eval(text);", reg.DYNAMIC_CODE),
    ('const f = new Function("a", "return a");', reg.DYNAMIC_CODE),
    ('setTimeout("alert(1)", 10);', reg.DYNAMIC_CODE),
    ('const m = await import(url);', reg.DYNAMIC_CODE),
    ("x" * 600, reg.UNCLASSIFIABLE),
]


@pytest.mark.parametrize("code, rule", FLAGGED_JS, ids=[c[:30] for c, _ in FLAGGED_JS])
def test_the_js_scan_flags(code, rule):
    assert rule in {f.rule for f in reg.scan_js("x.js", code)}, code


CLEAN_JS = """
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
const src = api.apiURL(`/view?${q.toString()}`);   // ComfyUI's own server
const r = await api.fetchApi("/object_info");
// evaluated in original-image pixels (eq. 11-13)
node.evaluate(x);
"""


def test_the_js_scan_leaves_comfyui_s_own_api_alone():
    assert reg.scan_js("x.js", CLEAN_JS) == []


@pytest.mark.parametrize("path, data, flagged", [
    ("tests/unit/test_x.py", b"x = 1\n", True),                    # test files count
    ("nodes/conftest.py", b"x = 1\n", True),
    ("nodes/lib.so", b"\x7fELF", True),                           # binaries cannot be classified
    ("js/vendor/lib.js", b"let a = 1;\n", True),
    ("docs/images/icon.png", b"\x89PNG\r\n\x1a\n....", False),
    ("example_workflows/a.jpg", b"<script>", True),               # named an image, is not one
    ("nodes/blob.py", b"X = '" + b"QUJD" * 200 + b"'\n", True),   # an encoded payload
    ("nodes/ok.py", b"X = 1\n", False),
])
def test_files_the_scanner_cannot_classify(path, data, flagged):
    assert bool(reg.scan_file(path, data)) is flagged


def test_the_runner_left_out_of_the_archive_is_what_would_be_flagged():
    """What .comfyignore keeps out is real: the runner starts ComfyUI, reads COMFYUI_PATH and talks HTTP."""
    path = "bolid_lib/runner/headless.py"
    rules = {f.rule for f in reg.scan_file(path, (ROOT / path).read_bytes())}
    assert {reg.PROCESS, reg.ENVIRONMENT, reg.NETWORK} <= rules


# --- .comfyignore lines mean what they mean to comfy-cli ----------------------------------------

# Verdicts of pathspec 1.1.1's GitWildMatchPattern (comfy-cli 1.23.0's matcher) on these pairs.
PATTERN_CASES = [
    ("/*", "nodes/pose.py", True), ("/*", "__init__.py", True),
    ("!/nodes/", "nodes/pose.py", True), ("!/nodes/", "bolid_lib/nodes/x.py", False),
    ("*.pyc", "a/b/c.pyc", True), ("*.pyc", "a/b/c.py", False),
    ("bolid_lib/runner/", "bolid_lib/runner/headless.py", True), ("bolid_lib/runner/", "x/bolid_lib/runner/a", False),
    ("__pycache__/", "a/__pycache__/x.pyc", True),
    ("docs", "docs/images/icon.png", True), ("docs", "a/docs", True), ("docs", "docs.md", False),
    ("a/**/b", "a/b", True), ("a/**/b", "a/x/y/b", True), ("a/**/b", "ab", False),
    ("**/x.py", "x.py", True), ("**/x.py", "q/r/x.py", True),
    ("?at.py", "cat.py", True), ("?at.py", "at.py", False),
]


@pytest.mark.parametrize("pattern, path, matches", PATTERN_CASES)
def test_comfyignore_patterns_match_as_pathspec_does(pattern, path, matches):
    regex, _ = reg.gitwildmatch_regex(pattern)
    assert bool(regex.match(path)) is matches


_PATHSPEC_VERDICTS = """
import json, sys, warnings
warnings.simplefilter("ignore")
from pathspec.patterns import GitWildMatchPattern
print(json.dumps([GitWildMatchPattern(p).match_file(f) is not None for p, f in json.loads(sys.argv[1])]))
"""


def test_the_pinned_verdicts_are_pathspec_s():
    """PATTERN_CASES hold pathspec's own answers: asked here, or in comfy-cli's environment."""
    import importlib.util
    import json
    import sys

    python = sys.executable if importlib.util.find_spec("pathspec") else reg.comfy_cli_python()
    if python is None:
        pytest.skip("neither pathspec nor comfy-cli is installed: `pip install comfy-cli==1.23.0` to ask pathspec")
    pairs = [[p, f] for p, f, _ in PATTERN_CASES]
    done = subprocess.run([python, "-c", _PATHSPEC_VERDICTS, json.dumps(pairs)], capture_output=True, text=True,
                          check=True, timeout=120)
    assert json.loads(done.stdout) == [m for _, _, m in PATTERN_CASES]


def test_the_last_matching_line_wins():
    rules = [reg.gitwildmatch_regex(p) for p in ("/*", "!/bolid_lib/method/", "/bolid_lib/method/draw.py")]
    assert reg.ignored("bolid_lib/runner/headless.py", rules)
    assert not reg.ignored("bolid_lib/method/pose.py", rules)
    assert reg.ignored("bolid_lib/method/draw.py", rules)


def test_a_pattern_this_reimplementation_cannot_translate_is_refused():
    with pytest.raises(reg.UnsupportedPattern):
        reg.gitwildmatch_regex("nodes/[ab].py")


def test_includes_win_over_comfyignore(tmp_path):
    """comfy-cli adds each [tool.comfy] includes path even where .comfyignore leaves it out."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\nversion="1"\n[tool.comfy]\nincludes=["extra"]\n')
    (tmp_path / ".comfyignore").write_text("/*\n!/pyproject.toml\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "built.js").write_text("let a = 1;\n")          # untracked, as a build output is
    (tmp_path / "kept_out.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "pyproject.toml", ".comfyignore", "kept_out.py"], check=True)
    assert reg.archive_files(tmp_path) == ["extra/built.js", "pyproject.toml"]
