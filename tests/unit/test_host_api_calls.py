"""Calls into ComfyUI that survive its signatures moving (read in ComfyUI 0.38.1, HOST_NOTES "Where ComfyUI is
going"): keywords wherever a parameter list grows in the middle.

* V3 schemas: 0.38.1's ``Combo.Input`` has a new keyword ``remote_combo`` before ``socketless``; a schema argument
  passed by position would land in the wrong parameter. Only the socket id (the first parameter of every
  ``Input`` / ``Output`` since V3 began) and ``io.Custom``'s type name may be positional.
* ``ModelPatcher.__init__`` gained ``fast_disk=False`` and ``clone()`` passes it: a subclass with its own
  ``__init__`` breaks, and positional devices or sizes would shift. The model is the one positional argument.
* ``PromptServer(loop, asset_manager)``, ``prompt_worker(q, server, asset_manager)``: nothing here calls them
  (the host tier boots ComfyUI without a server; the runner and browser tier start ``main.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from registrylib import dotted

ROOT = Path(__file__).resolve().parents[2]
PY_FILES = sorted(p for d in ("nodes", "bolid_lib", "tests") for p in (ROOT / d).rglob("*.py")) + [ROOT / "__init__.py"]
STANDIN = ROOT / "tests" / "standin"      # the stand-in ComfyUI API that contract tests import: it defines, not calls


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.AST) -> str:
    return dotted(func, tail_ok=True)


def _schema_calls():
    """(where, call name, positional count, allowed) for every io.* schema constructor in nodes/."""
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for call in _calls(path):
            name = _name(call.func)
            if not name.startswith("io.") or name == "io.NodeOutput":    # NodeOutput's outputs are positional
                continue
            last = name.rsplit(".", 1)[-1]
            allowed = 1 if last in ("Input", "Output", "Custom") else 0
            yield f"{path.relative_to(ROOT)}:{call.lineno}", name, len(call.args), allowed


def test_v3_schema_arguments_are_passed_by_keyword():
    bad = [f"{where} {name}(...) has {n} positional arguments (at most {allowed}: pass the rest by keyword)"
           for where, name, n, allowed in _schema_calls() if n > allowed]
    assert bad == [], "\n".join(bad)


def test_the_schema_check_sees_the_schemas():
    """Not vacuous: it sees every io.Schema and the Combo inputs of the nodes."""
    calls = list(_schema_calls())
    assert sum(name == "io.Schema" for _, name, _, _ in calls) >= 13
    assert sum(name == "io.Combo.Input" for _, name, _, _ in calls) >= 8


def test_a_positional_schema_argument_would_be_caught(tmp_path):
    code = 'io.Combo.Input("mode", ["a", "b"])\nio.Schema("BoLIDX", "BoLID X")\n'
    calls = [(_name(c.func), len(c.args)) for c in ast.walk(ast.parse(code)) if isinstance(c, ast.Call)]
    assert ("io.Combo.Input", 2) in calls and ("io.Schema", 2) in calls


def test_no_model_patcher_subclass_and_no_positional_devices():
    bad = []
    for path in PY_FILES:
        if STANDIN in path.parents:
            continue
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any("ModelPatcher" in _name(b) for b in node.bases):
                bad.append(f"{where}:{node.lineno}: class {node.name} subclasses ModelPatcher (0.38.1's clone() "
                           "passes fast_disk= to __init__)")
            if isinstance(node, ast.Call) and _name(node.func).endswith("ModelPatcher") and len(node.args) > 1:
                bad.append(f"{where}:{node.lineno}: ModelPatcher(...) with {len(node.args)} positional arguments; "
                           "pass load_device=, offload_device=, size= by keyword")
            if isinstance(node, ast.Call) and _name(node.func).rsplit(".", 1)[-1] in ("PromptServer", "prompt_worker"):
                bad.append(f"{where}:{node.lineno}: {_name(node.func)}(...): 0.38.1 takes an asset_manager; build "
                           "its arguments from inspect.signature")
    assert bad == [], "\n".join(bad)


def test_the_model_patcher_check_sees_the_constructions():
    """Not vacuous: the host library builds its SDXL test models through ModelPatcher(model, load_device=...)."""
    calls = [c for c in _calls(ROOT / "tests" / "hostlib.py") if _name(c.func).endswith("ModelPatcher")]
    assert calls and all(len(c.args) == 1 and {k.arg for k in c.keywords} >= {"load_device", "offload_device"}
                         for c in calls)
