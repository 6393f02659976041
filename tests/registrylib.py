"""The archive the Comfy Registry gets from this repository, and a scan of it for what flags a version.

``comfy node pack`` / ``comfy node publish`` (comfy-cli 1.23.0, ``comfy_cli.file_utils.zip_files``) put in the
archive every file ``git ls-files`` lists, less those a ``.comfyignore`` line matches (pathspec's gitwildmatch,
the last matching line wins, ``!`` lets a path back in), plus the files under each ``[tool.comfy] includes``
path (an include also wins over ``.comfyignore``). ``archive_files`` applies the same rules; where comfy-cli is
installed, ``comfy_cli_archive`` asks comfy-cli itself, so the two can be compared.

Since mid-2026 the Registry scans each archive; any finding flags the version and a flagged version never
becomes the latest, so ComfyUI-Manager users never get it. Rule classes seen in flags (ComfyUI-Manager #2927,
#2997, #3085; registry-backend #179, #192): starting processes, reading or setting environment variables,
network operations, eval / exec, vendored or unclassifiable code; findings in test files count. ``scan`` looks
for each of them (unpickling outside torch's weights_only reader counts as running code): Python through its
syntax tree, JavaScript as text.

``python tests/registrylib.py [REPO]`` prints the archive's files and the findings (exit status 1 when any).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROCESS, ENVIRONMENT, NETWORK, DYNAMIC_CODE, UNCLASSIFIABLE = (
    "starts a process", "environment variables", "network", "eval/exec", "vendored or unclassifiable")


# --- the archive, as comfy-cli builds it --------------------------------------------------------

class UnsupportedPattern(ValueError):
    """A .comfyignore line this reimplementation does not translate; comfy-cli's own build is the judge then."""


def _segment_regex(segment: str) -> str:
    if "[" in segment or "\\" in segment:
        raise UnsupportedPattern(f"character classes and escapes are not reimplemented: {segment!r}")
    return "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)


def gitwildmatch_regex(pattern: str) -> tuple[re.Pattern, bool]:
    """(regex, leaves_out) for one .comfyignore line, as pathspec's GitWildMatchPattern translates it.

    The regex is matched at the start of a repository-relative path (``re.match``); leaves_out is False for a
    ``!`` line (it lets a path back in). A pattern with no inner slash matches at any depth; a trailing slash matches what is under a
    folder; a match on a folder covers everything under it.
    """
    leaves_out = not pattern.startswith("!")
    pattern = pattern if leaves_out else pattern[1:]
    dir_only = pattern.endswith("/")
    body = pattern.strip("/") if pattern.startswith("/") else pattern.rstrip("/")
    anchored = pattern.startswith("/") or "/" in body
    parts = body.split("/")
    out = "" if anchored else "(?:.+/)?"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":                                        # any number of folders
            out += (".*" if last else "(?:.+/)?") if i == 0 else ("/.*" if last else "(?:/.+)?")
            continue
        if i and not (i == 1 and parts[0] == "**"):
            out += "/"
        out += _segment_regex(part)
    out += "/" if dir_only else "(?:/|$)"
    return re.compile("^" + out), leaves_out


def comfyignore_rules(root: Path) -> list[tuple[re.Pattern, bool]]:
    path = root / ".comfyignore"
    if not path.is_file():
        return []
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    return [gitwildmatch_regex(l) for l in lines if l and not l.startswith("#")]


def ignored(rel_path: str, rules: list[tuple[re.Pattern, bool]]) -> bool:
    """Whether the last rule that matches leaves the path out."""
    verdict = False
    for regex, leaves_out in rules:
        if regex.match(rel_path):
            verdict = leaves_out
    return verdict


def tool_comfy(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("comfy", {})


def git_tracked(root: Path) -> list[str]:
    """``git ls-files`` in the repository (what comfy-cli lists); raises where git or the repository is missing."""
    done = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True)
    return [l for l in done.stdout.splitlines() if l.strip()]


def archive_files(root: Path = ROOT) -> list[str]:
    """The archive's file names, by comfy-cli 1.23.0's rules (``zip_files``)."""
    rules = comfyignore_rules(root)
    includes = [os.path.normpath(i.lstrip("/")).replace("\\", "/") for i in tool_comfy(root).get("includes", [])]

    def forced(rel: str) -> bool:
        return any(rel == p or rel.startswith(p + "/") for p in includes if p and p != ".")

    names = [f for f in git_tracked(root) if (root / f).exists() and (forced(f) or not ignored(f, rules))]
    for inc in includes:
        base = root / inc
        extra = [inc] if base.is_file() else [p.relative_to(root).as_posix() for p in sorted(base.rglob("*")) if p.is_file()]
        names += [f for f in extra if f not in names]
    return sorted(set(names))


def comfy_cli_python() -> str | None:
    """A Python that can import comfy_cli: $BOLID_COMFY_CLI_PYTHON, this one, or the one behind ``comfy`` on PATH."""
    import importlib.util
    import shutil

    env = os.environ.get("BOLID_COMFY_CLI_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("comfy_cli") is not None:
        return sys.executable
    comfy = shutil.which("comfy")
    if comfy:
        with open(comfy, "rb") as f:
            first = f.readline().decode("utf-8", "replace")
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    return None


# Runs in comfy-cli's environment: the same two calls `comfy node pack` makes, writing to a path we choose
# instead of node.zip in the repository.
_PACK = """
import sys, zipfile
from comfy_cli.registry.config_parser import extract_node_configuration
from comfy_cli.file_utils import zip_files
config = extract_node_configuration()
includes = config.tool_comfy.includes if config and config.tool_comfy else []
zip_files(sys.argv[1], includes=includes)
print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))
"""


def comfy_cli_archive(root: Path, python: str, out_zip: Path) -> list[str]:
    """The archive's file names as comfy-cli itself builds it (run in the repository, as ``comfy node pack``)."""
    done = subprocess.run([python, "-c", _PACK, str(out_zip)], cwd=root, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, COMFY_CLI_TELEMETRY="0"))
    if done.returncode != 0:
        raise RuntimeError(f"comfy-cli's zip_files failed:\n{done.stdout}\n{done.stderr}")
    return sorted(n for n in zipfile.ZipFile(out_zip).namelist() if not n.endswith("/"))


# --- what the nodes need ------------------------------------------------------------------------

def _module_file(root: Path, parts: list[str]) -> Path | None:
    p = root.joinpath(*parts)
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def node_modules(root: Path = ROOT) -> set[str]:
    """Every file of this repository that ComfyUI imports when it loads the pack: ``__init__.py`` and, through
    its imports (relative, or of ``bolid_lib``; at top level or inside functions), transitively, the rest.
    Importing a module imports the packages above it, so their ``__init__.py`` count too."""
    seen: set[Path] = set()
    todo = [root / "__init__.py"]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        rel = list(f.relative_to(root).with_suffix("").parts)
        package = rel[:-1]                                      # the package a relative import starts from
        if rel[-1] == "__init__":
            rel = rel[:-1]
        targets = [rel[:i] for i in range(1, len(rel))]         # the packages above this module
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    if node.level - 1 > len(package):
                        continue
                    mod = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                elif (node.module or "").split(".")[0] == "bolid_lib":
                    mod = node.module.split(".")
                else:
                    continue
                targets += [mod] + [mod + [a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets += [a.name.split(".") for a in node.names if a.name.split(".")[0] == "bolid_lib"]
        for t in targets:
            for i in range(1, len(t) + 1):
                mf = _module_file(root, t[:i])
                if mf is not None:
                    todo.append(mf)
    return {p.relative_to(root).as_posix() for p in seen}


def required_files(root: Path = ROOT) -> set[str]:
    """What a Registry install needs: the modules the nodes import, the JS, the example workflows (and their
    thumbnails), the requirements, the metadata, the licence, the README and the icon [tool.comfy] names."""
    tracked = git_tracked(root)
    need = node_modules(root) | {"requirements.txt", "pyproject.toml", "LICENSE", "README.md"}
    need |= {f for f in tracked if f.startswith(("js/", "example_workflows/"))}
    icon = tool_comfy(root).get("Icon", "")
    marker = "/main/"
    if marker in icon:
        need.add(icon.split(marker, 1)[1])
    return need


# --- the scan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.what}"


_PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "pexpect", "sh", "plumbum"}
_NETWORK_MODULES = {"socket", "ssl", "urllib", "http", "requests", "httpx", "aiohttp", "websocket", "websockets",
                    "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "socketserver", "webbrowser",
                    "huggingface_hub", "urllib3", "paramiko", "grpc", "boto3", "pycurl"}
_OS_PROCESS = re.compile(r"^(system|popen|spawn\w*|exec[lv]\w*|fork|forkpty|posix_spawn\w*|startfile|kill|killpg)$")
_OS_ENV = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
_DYNAMIC_BUILTINS = {"eval", "exec", "compile", "__import__"}
_DYNAMIC_IMPORTS = {"importlib.import_module", "importlib.__import__", "runpy.run_path", "runpy.run_module",
                    "marshal.loads", "pickle.loads", "code.interact"}
_NETWORK_CALLS = {"asyncio.open_connection", "asyncio.start_server", "asyncio.open_unix_connection",
                  "torch.hub.load", "torch.hub.download_url_to_file", "torch.hub.load_state_dict_from_url"}
_PROCESS_CALLS = {"asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell",
                  "concurrent.futures.ProcessPoolExecutor"}


def dotted(node: ast.AST, tail_ok: bool = False) -> str:
    """The dotted name of ``a.b.c``; for a chain on anything but a name (``f().b.c``) "" or, with ``tail_ok``,
    the attributes after it ("b.c")."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif not tail_ok:
        return ""
    return ".".join(reversed(parts))


def scan_python(path: str, text: str) -> list[Finding]:
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        return [Finding(path, e.lineno or 0, UNCLASSIFIABLE, f"does not parse as Python: {e.msg}")]
    found: list[Finding] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for ("sp" -> "subprocess", "environ" -> "os.environ")

    def add(node, rule, what):
        found.append(Finding(path, getattr(node, "lineno", 0), rule, what))

    def module_rule(name: str) -> str | None:
        top = name.split(".")[0]
        if top in _PROCESS_MODULES:
            return PROCESS
        if top in _NETWORK_MODULES:
            return NETWORK
        if name in ("torch.hub", "ultralytics.hub", "ultralytics.utils.downloads"):
            return NETWORK
        if top in ("dotenv",):
            return ENVIRONMENT
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                rule = module_rule(a.name)
                if rule:
                    add(node, rule, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                rule = module_rule(node.module) or module_rule(full)
                if rule is None and node.module == "os":
                    rule = ENVIRONMENT if a.name in _OS_ENV else PROCESS if _OS_PROCESS.match(a.name) else None
                if rule is None and full in _DYNAMIC_IMPORTS:
                    rule = DYNAMIC_CODE
                if rule:
                    add(node, rule, f"from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            head, _, rest = name.partition(".")
            full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
            if full.startswith("os."):
                attr = full.split(".")[1]
                if attr in _OS_ENV:
                    add(node, ENVIRONMENT, name)
                elif _OS_PROCESS.match(attr):
                    add(node, PROCESS, name)
            if full in _NETWORK_CALLS or full.startswith(("torch.hub.", "urllib.request.")):
                add(node, NETWORK, name)
            if full in _PROCESS_CALLS:
                add(node, PROCESS, name)
            if full in _DYNAMIC_IMPORTS:
                add(node, DYNAMIC_CODE, name)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_BUILTINS and node.func.id not in aliases:
                add(node, DYNAMIC_CODE, f"{node.func.id}(...)")
            # Unpickling runs whatever the file names: only torch's weights_only reader passes.
            callee = dotted(node.func)
            head, _, rest = callee.partition(".")
            callee = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
            if callee in ("pickle.load", "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load"):
                add(node, DYNAMIC_CODE, f"{callee}(...) (unpickling runs code)")
            if callee == "torch.load" and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords):
                add(node, DYNAMIC_CODE, "torch.load(...) without weights_only=True (unpickling runs code)")
            # A Hugging Face loader without local_files_only=True downloads when the name is a hub id.
            if isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                local = any(k.arg == "local_files_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                            for k in node.keywords)
                if not local:
                    add(node, NETWORK, "from_pretrained(...) without local_files_only=True")
    # One finding per line and rule: an attribute chain (os.environ.get) is walked at every level; keep the longest.
    best: dict[tuple[int, str], Finding] = {}
    for f in found:
        if (f.line, f.rule) not in best or len(f.what) > len(best[f.line, f.rule].what):
            best[f.line, f.rule] = f
    return sorted(best.values(), key=lambda f: (f.line, f.rule))


_JS_RULES = [
    (NETWORK, re.compile(r"(?<![\w.])fetch\s*\(")),              # api.fetchApi / api.apiURL stay on ComfyUI's server
    (NETWORK, re.compile(r"\bXMLHttpRequest\b|\bWebSocket\b|\bEventSource\b|\bsendBeacon\b|\bRTCPeerConnection\b")),
    (NETWORK, re.compile(r"""["'`](?:https?:|wss?:)?//[\w.-]+""")),  # a literal address of another host
    (DYNAMIC_CODE, re.compile(r"(?<![\w.])eval\s*\(|\bnew\s+Function\s*\(|(?<![\w.])Function\s*\(")),
    (DYNAMIC_CODE, re.compile(r"\bset(?:Timeout|Interval)\s*\(\s*[\"'`]")),
    (DYNAMIC_CODE, re.compile(r"(?<![\w.])import\s*\(")),        # a dynamic import can load code from anywhere
]


def scan_js(path: str, text: str) -> list[Finding]:
    found = []
    for no, line in enumerate(text.splitlines(), 1):
        code = line.split("//", 1)[0] if not re.search(r"""["'`][^"'`]*//""", line) else line
        for rule, rx in _JS_RULES:
            m = rx.search(code)
            if m:
                found.append(Finding(path, no, rule, m.group(0).strip()))
        if len(line) > 500:
            found.append(Finding(path, no, UNCLASSIFIABLE, f"a {len(line)}-character line (minified code)"))
    return found


_TEXT_SUFFIXES = {".py", ".js", ".json", ".md", ".txt", ".toml", ".yaml", ".yml", ".css", ".html"}
_IMAGE_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".webp": b"RIFF"}
_PLAIN_NAMES = {"LICENSE", "LICENSE.txt", ".comfyignore", ".gitignore"}
_VENDOR_DIRS = {"vendor", "vendored", "_vendor", "third_party", "thirdparty", "node_modules", "site-packages", "dist",
                "build", "__pycache__"}
_BLOB = re.compile(r"[A-Za-z0-9+/=]{400,}")
_TEST_FILE = re.compile(r"(^|/)(tests?|testing)/|(^|/)(test_[^/]*|[^/]*_test|conftest)\.py$")


def scan_file(path: str, data: bytes) -> list[Finding]:
    """Findings for one archive member: its kind first (what the scanner cannot classify), then its code."""
    name = path.rsplit("/", 1)[-1]
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    found: list[Finding] = []
    if set(path.split("/")[:-1]) & _VENDOR_DIRS:
        found.append(Finding(path, 0, UNCLASSIFIABLE, "a vendored or build folder"))
    if _TEST_FILE.search(path):
        found.append(Finding(path, 0, UNCLASSIFIABLE, "a test file (the Registry scans test files too)"))
    if suffix in _IMAGE_MAGIC:
        if not data.startswith(_IMAGE_MAGIC[suffix]):
            found.append(Finding(path, 0, UNCLASSIFIABLE, f"named {suffix} but its bytes are not that image format"))
        return found
    if suffix not in _TEXT_SUFFIXES and name not in _PLAIN_NAMES:
        found.append(Finding(path, 0, UNCLASSIFIABLE, "a file of a kind the scanner cannot classify (binary or unknown)"))
        return found
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return found + [Finding(path, 0, UNCLASSIFIABLE, "not UTF-8 text")]
    blob = _BLOB.search(text)
    if blob and suffix != ".json":
        line = text.count("\n", 0, blob.start()) + 1
        found.append(Finding(path, line, UNCLASSIFIABLE, f"a {len(blob.group(0))}-character encoded blob"))
    if suffix == ".py":
        found += scan_python(path, text)
    elif suffix == ".js":
        found += scan_js(path, text)
    elif suffix == ".json":
        try:
            json.loads(text)
        except ValueError as e:
            found.append(Finding(path, 0, UNCLASSIFIABLE, f"not valid JSON ({e})"))
    return found


def scan(root: Path, files: list[str]) -> list[Finding]:
    found: list[Finding] = []
    for f in files:
        found += scan_file(f, (root / f).read_bytes())
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else ROOT
    files = archive_files(root)
    findings = scan(root, files)
    missing = sorted(required_files(root) - set(files))
    print(f"{len(files)} files in the archive of {root}")
    for f in files:
        print("  " + f)
    print(f"{len(findings)} findings:")
    for f in findings:
        print("  " + str(f))
    if missing:
        print(f"missing from the archive: {missing}")
    return 1 if findings or missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
