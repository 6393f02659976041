"""The library's rooms and the direction of their imports (docs/development.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "bolid_lib"
ROOMS = ("method", "data", "training", "evaluation", "runner", "experiments")
# who may import whom (besides the shared errors / files modules)
ALLOWED = {
    "method": {"method"},
    "data": {"data", "method"},
    "training": {"training", "method", "data"},
    "evaluation": {"evaluation", "method", "data"},   # data: the one photo reader
    "runner": {"runner"},
    "experiments": {"experiments", "method", "data", "training", "evaluation"},
}
SHARED = {"errors", "files", "settings"}


def _imports(path: Path) -> set[str]:
    """Dotted bolid_lib modules a file imports (top level or inside functions), as 'room.module' or 'errors'."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = path.relative_to(LIB.parent).with_suffix("").parts[:-1]      # ('bolid_lib', 'training')
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                mod = base + (node.module.split(".") if node.module else [])
            else:
                mod = (node.module or "").split(".")
            if mod[:1] != ["bolid_lib"]:
                continue
            names = [a.name for a in node.names]
            targets = [mod + [n] for n in names] if len(mod) == 1 else [mod]
            found.update(".".join(t[1:]) for t in targets)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("bolid_lib."))
    return found


def test_every_module_lives_in_a_room():
    loose = sorted(p.name for p in LIB.glob("*.py") if p.stem not in SHARED | {"__init__", "__main__"})
    assert loose == [], f"modules outside a room: {loose}"
    assert all((LIB / r / "__init__.py").is_file() for r in ROOMS)


@pytest.mark.parametrize("room", ROOMS)
def test_imports_go_one_way(room):
    bad = []
    for path in sorted((LIB / room).rglob("*.py")):
        for target in _imports(path):
            head = target.split(".")[0]
            if head in SHARED or head in ALLOWED[room]:
                continue
            bad.append(f"{path.relative_to(LIB)} imports bolid_lib.{target}")
    assert bad == [], "\n".join(bad)


def test_the_checker_sees_relative_imports():
    """The parser above would pass vacuously if it missed relative imports: it finds the method's own."""
    assert "method.keypoints" in _imports(LIB / "method" / "pose.py") or "keypoints" in {
        t.split(".")[-1] for t in _imports(LIB / "method" / "pose.py")}
    assert any(t.startswith("method.") for t in _imports(LIB / "training" / "adapter.py"))


def test_one_name_for_each_lambda():
    """λ_body (the paper's λ_b) is ``lambda_body`` and λ_ref is ``lambda_ref`` in the nodes, the library, the trainer
    and the docs; the other spellings that once stood for them are gone (the paper's "λ_b" is named where it is
    explained, and the evaluation report still reads the old ``lambda_b`` key of older bolid_run.json files)."""
    import re

    root = LIB.parent
    old = re.compile(r"\bscale_body\b|\bscale_ref\b|\bBranch\.scale\b|\bbr\.scale\b|\blambda_b\b|λ_b\b")
    allowed = {"the paper's λ_b", "the paper's\nλ_b", 'info.get("lambda_b"))', "lambda_b=0.6", "lambda_b=", "lambda[_-]?b"}
    bad = []
    files = [*root.glob("bolid_lib/**/*.py"), *root.glob("nodes/*.py"), *root.glob("js/*.js"), root / "README.md",
             root / "bolid_lib" / "training" / "README.md", *root.glob("docs/*.md"), *root.glob("example_workflows/*.json")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in old.finditer(text):
            around = text[max(0, m.start() - 20):m.end() + 5]
            if not any(a in around for a in allowed):
                bad.append(f"{path.relative_to(root)}: ...{around!r}")
    assert bad == [], "\n".join(bad)


def test_one_pickle_suffix_list():
    """Which file names are pickles is said once (files.PICKLE_SUFFIXES); the runner's list of model-file extensions
    (which pickles are among) is a different list."""
    import re

    lists = re.compile(r'\([^()]*"\.(?:bin|pt|pth|ckpt|pkl)"[^()]*"\.(?:bin|pt|pth|ckpt|pkl)"[^()]*\)')
    where = sorted(str(p.relative_to(LIB)) for p in LIB.rglob("*.py") if lists.search(p.read_text(encoding="utf-8")))
    assert where == ["files.py", "runner/workflow.py"], where
