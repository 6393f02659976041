"""The pack's main job: run a ComfyUI workflow headless and write its images.

``python -m bolid_lib run WORKFLOW.json [--comfyui PATH] [--out DIR] [--port N] [--timeout S] [--cpu]``

1. Find ComfyUI: ``--comfyui``, else ``$COMFYUI_PATH``, else the ComfyUI this pack sits in
   (``ComfyUI/custom_nodes/<pack>``).
2. Start it as a subprocess with the same Python (``main.py --listen 127.0.0.1 --port <free port> --offline``,
   each flag only if that ComfyUI's ``main.py --help`` lists it: ``--offline`` where it exists, else the older
   ``--disable-api-nodes``; ``--disable-assets`` where it exists), its log in a file; or use a running one with ``--server http://127.0.0.1:8188``
   (loopback only). When the pack is not inside that ComfyUI's ``custom_nodes``, it is loaded through a
   temporary ``--extra-model-paths-config`` that adds a ``custom_nodes`` folder linking to the pack.
3. Read ``/object_info``, convert the workflow (UI format or API format), list the model folders
   (``/models/<folder>``) and, when a file is missing, print a checklist (file, folder, where to get it)
   and exit with status 2 without queueing anything.
4. POST ``/prompt``, poll ``/history/<id>``, report node errors readably, copy the images to ``--out``.
5. Stop the server it started, by its PID (terminate, then kill), also on Ctrl-C and on errors.

This module never imports ComfyUI: it talks to it over HTTP.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from ..errors import BoLIDError
from .model_catalog import DEFAULT_FOLDER_PATHS, where_to_get
from .workflow import (RequiredFile, WorkflowError, find_problems, is_ui_workflow, required_files,
                       to_api_prompt)

log = logging.getLogger("bolid")

PACK_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

EXIT_OK, EXIT_ERROR, EXIT_MISSING_FILES, EXIT_INTERRUPTED = 0, 1, 2, 130


class RunError(BoLIDError):
    """The run failed for a reason the user can act on; ``log_path`` points at the server log."""

    def __init__(self, message: str, log_path: Path | None = None, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.log_path = log_path
        self.exit_code = exit_code


class ServerUnreachable(RunError):
    """No answer from the ComfyUI server (not started yet, stopped, or crashed)."""


# --- finding ComfyUI ---------------------------------------------------------------------------

def is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def find_comfyui(explicit: str | None = None) -> Path:
    """``--comfyui``, else ``$COMFYUI_PATH``, else the ComfyUI whose ``custom_nodes`` holds this pack."""
    for source, value in (("--comfyui", explicit), ("COMFYUI_PATH", os.environ.get("COMFYUI_PATH"))):
        if value:
            path = Path(value).expanduser().resolve()
            if not is_comfyui(path):
                raise RunError(f"{source} points at {path}, which is not a ComfyUI folder (no main.py, nodes.py "
                               "and comfy/ there): give the folder you start ComfyUI from")
            return path
    # The pack's own folder, not resolved: a symlink ComfyUI/custom_nodes/<pack> -> checkout counts too.
    for root in {Path(os.path.abspath(PACK_ROOT)), PACK_ROOT}:
        if root.parent.name == "custom_nodes" and is_comfyui(root.parent.parent):
            return root.parent.parent
    raise RunError("no ComfyUI found: pass --comfyui PATH, set COMFYUI_PATH, or install this pack in "
                   "ComfyUI/custom_nodes/")


def pack_is_installed_in(custom_nodes: Path) -> bool:
    """True when a folder (or link) in ``custom_nodes`` is this pack."""
    if not custom_nodes.is_dir():
        return False
    for entry in custom_nodes.iterdir():
        try:
            if entry.is_dir() and entry.resolve() == PACK_ROOT:
                return True
        except OSError:
            continue
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# --- HTTP ----------------------------------------------------------------------------------------

class Client:
    """A tiny JSON client for ComfyUI's HTTP API (standard library only)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
            reason = getattr(e, "reason", e)
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.base} ({reason}): is it running? "
                                    "(with --server, start ComfyUI first; without it, read the server log)") from None

    def get_json(self, path: str) -> tuple[int, Any]:
        status, raw = self._request("GET", path)
        try:
            return status, json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            return status, None

    def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        status, raw = self._request("POST", path, body)
        try:
            return status, json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def get_bytes(self, path: str) -> bytes:
        status, raw = self._request("GET", path)
        if status != 200:
            raise RunError(f"GET {path} answered {status}")
        return raw


def check_loopback(url: str) -> str:
    parsed = urllib.parse.urlparse(url if "://" in url else "http://" + url)
    if parsed.scheme not in ("http",) or (parsed.hostname or "") not in {h.strip("[]") for h in LOOPBACK_HOSTS}:
        raise RunError(f"--server must be a ComfyUI on this machine (http://127.0.0.1:PORT); got {url!r}. "
                       "Workflows and file names are sent to it: a remote server is not supported")
    return f"http://{parsed.netloc}"


# --- the server we start -----------------------------------------------------------------------

_FLAGS_CACHE: dict[str, frozenset[str]] = {}


def parse_help_flags(text: str) -> set[str]:
    """The long options an argparse ``--help`` text lists (its option lines: ``  --port PORT   Set ...``)."""
    flags = set()
    for line in text.splitlines():
        if not re.match(r"^\s{1,8}-", line):
            continue
        head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]      # "-h, --help" or "--listen [IP]"
        for part in head.split(", "):
            token = part.split()[0].split("=")[0] if part.split() else ""
            if re.fullmatch(r"--[A-Za-z0-9][\w-]*", token):
                flags.add(token)
    return flags


def parse_cli_args_flags(source: str) -> set[str]:
    """The long options ``add_argument`` calls declare in a ``comfy/cli_args.py`` text."""
    flags = set()
    for names in re.findall(r"""add_argument\(\s*((?:["']-[^"']*["']\s*,\s*)+)""", source):
        flags |= {f for f in re.findall(r"""["'](--[A-Za-z0-9][\w-]*)["']""", names)}
    return flags


def host_flags(comfyui: Path) -> frozenset[str]:
    """The command-line flags this ComfyUI's ``main.py`` accepts: asked from ``main.py --help`` (which parses
    the arguments before importing anything heavy), else read from ``comfy/cli_args.py``. Flags come and go
    between ComfyUI versions (``--offline`` replaced ``--disable-api-nodes``), so the runner never assumes."""
    key = str(comfyui)
    if key in _FLAGS_CACHE:
        return _FLAGS_CACHE[key]
    flags: set[str] = set()
    try:
        done = subprocess.run([sys.executable, "main.py", "--help"], cwd=key, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            flags = parse_help_flags(done.stdout)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not ask %s/main.py --help (%s); reading comfy/cli_args.py instead", key, e)
    if not flags:
        try:
            flags = parse_cli_args_flags((comfyui / "comfy" / "cli_args.py").read_text(encoding="utf-8"))
        except OSError:
            flags = set()
    if not flags:
        raise RunError(f"cannot tell which command-line options {comfyui}/main.py accepts (`python main.py --help` "
                       "failed and comfy/cli_args.py is unreadable): check that this ComfyUI starts on its own")
    _FLAGS_CACHE[key] = frozenset(flags)
    return _FLAGS_CACHE[key]


def server_args(flags: frozenset[str] | set[str], port: int, *, cpu: bool, base_directory: Path | None = None) -> list[str]:
    """``main.py`` arguments for a headless, loopback-only ComfyUI, using only the flags ``flags`` holds.

    No partner/API nodes (the runner works offline): ``--offline`` where it exists (ComfyUI after 0.33, where
    ``--disable-api-nodes`` became its deprecated alias), else ``--disable-api-nodes``, else
    ``--disable-partner-nodes``. No assets system where it can be turned off (``--disable-assets``: on by
    default from about ComfyUI 0.38, it stops the start-up with ASSETS_STARTUP_FAILED when SQLAlchemy / alembic
    are missing, when the database is not writable, or when the user's own ComfyUI already holds the database's
    lock; a run that reads its outputs from ``/history`` and ``/view`` needs none of it). With a base
    directory, its database goes there too (0.33 would write ``user/comfyui.db`` into the ComfyUI folder
    otherwise).
    """
    for needed in ("--listen", "--port"):
        if needed not in flags:
            raise RunError(f"this ComfyUI's main.py has no {needed} option, which the runner needs to start it on a "
                           "free loopback port: start ComfyUI yourself and pass --server http://127.0.0.1:PORT")
    args = ["--listen", "127.0.0.1", "--port", str(port)]
    offline = next((f for f in ("--offline", "--disable-api-nodes", "--disable-partner-nodes") if f in flags), None)
    if offline:
        args.append(offline)
    else:
        log.warning("this ComfyUI has no option to leave out its API nodes; they load as usual")
    if "--disable-assets" in flags:
        args.append("--disable-assets")
    if cpu:
        if "--cpu" in flags:
            args.append("--cpu")
        else:
            log.warning("this ComfyUI has no --cpu option; it picks its device itself")
    if base_directory is not None:
        if "--base-directory" not in flags:
            raise RunError("this ComfyUI's main.py has no --base-directory option: update ComfyUI, or run without "
                           "--base-directory")
        args += ["--base-directory", str(base_directory)]
        if "--database-url" in flags:
            (base_directory / "user").mkdir(parents=True, exist_ok=True)
            args += ["--database-url", f"sqlite:///{(base_directory / 'user' / 'comfyui.db').as_posix()}"]
    return args

@dataclass
class ServerProcess:
    """A ComfyUI started by us; ``stop()`` ends exactly this process (by its PID)."""

    comfyui: Path
    port: int
    log_path: Path
    args: list[str]
    proc: subprocess.Popen | None = None
    _log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        cmd = [sys.executable, "main.py", *self.args]
        log.info("starting ComfyUI: %s (in %s)", " ".join(cmd), self.comfyui)
        # A session of its own: Ctrl-C in the terminal reaches us, and we stop the server in order.
        self.proc = subprocess.Popen(cmd, cwd=str(self.comfyui), stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=(os.name != "nt"))

    def wait_ready(self, timeout: float, say: Callable[[str], None]) -> None:
        client = Client(self.url, timeout=5)
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(f"ComfyUI exited with status {self.proc.returncode} while starting; "
                               f"the end of its log:\n{self.log_tail()}", self.log_path)
            try:
                status, _ = client.get_json("/system_stats")
                if status == 200:
                    return
            except ServerUnreachable:
                pass  # not listening yet
            if time.monotonic() > next_note:
                say(f"  ... still starting ComfyUI (log: {self.log_path})")
                next_note = time.monotonic() + 15
            time.sleep(0.5)
        raise RunError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s; raise --start-timeout, or "
                       f"read its log", self.log_path)

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + l for l in text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("ComfyUI (pid %d) did not stop within %.0f s: killing it", self.proc.pid, grace)
                self.proc.kill()
                self.proc.wait(timeout=grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def prepare_pack_loading(comfyui: Path, base_directory: Path | None, workdir: Path,
                         flags: frozenset[str] | set[str] | None = None) -> list[str]:
    """Arguments that make ComfyUI load this pack when it is not in its ``custom_nodes`` folder.

    A ``custom_nodes`` folder in ``workdir`` holds a link to the pack; an extra model paths file adds it.
    ``flags``: what this ComfyUI's main.py accepts (``host_flags``), checked when given.
    """
    custom_nodes = (base_directory or comfyui) / "custom_nodes"
    if pack_is_installed_in(custom_nodes):
        return []
    if flags is not None and "--extra-model-paths-config" not in flags:
        raise RunError(f"this pack is not in {custom_nodes} and this ComfyUI has no --extra-model-paths-config "
                       f"option to load it from elsewhere: install the pack in {custom_nodes}")
    folder = workdir / "custom_nodes"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ComfyUI-BoLID"
    if not link.exists():
        try:
            link.symlink_to(PACK_ROOT, target_is_directory=True)
        except OSError as e:
            raise RunError(f"cannot link the pack into a temporary custom_nodes folder ({e}); install it in "
                           f"{custom_nodes} instead") from e
    config = workdir / "bolid_extra_model_paths.yaml"
    config.write_text(f"bolid_runner:\n    custom_nodes: {json.dumps(str(folder))}\n", encoding="utf-8")
    return ["--extra-model-paths-config", str(config)]


# --- checks before queueing --------------------------------------------------------------------

@dataclass
class MissingFile:
    file: RequiredFile
    folder_path: str


def find_missing_files(client: Client, workflow: dict, object_info: dict, base_hint: str) -> list[MissingFile]:
    """Files the workflow names that this ComfyUI does not have (checked with ``/models/<folder>``)."""
    status, folder_paths = client.get_json("/internal/folder_paths")
    folder_paths = folder_paths if status == 200 and isinstance(folder_paths, dict) else {}
    listings: dict[str, list[str] | None] = {}
    missing: list[MissingFile] = []
    for req in required_files(workflow, object_info):
        listed = None
        if req.folder and req.folder != "input":
            if req.folder not in listings:
                status, files = client.get_json(f"/models/{urllib.parse.quote(req.folder)}")
                listings[req.folder] = [f.replace("\\", "/") for f in files] if status == 200 and isinstance(files, list) else None
            listed = listings[req.folder]
        if listed is None:
            # No such model folder in this ComfyUI (its pack is absent) or an input image: the live combo
            # of the node lists what ComfyUI can load.
            spec = ((object_info.get(req.node_type) or {}).get("input") or {})
            entry = (spec.get("required") or {}).get(req.input_name) or (spec.get("optional") or {}).get(req.input_name)
            options = entry[0] if entry and isinstance(entry[0], list) else (
                (entry[1] or {}).get("options") if entry and len(entry) > 1 and isinstance(entry[1], dict) else None)
            listed = [str(o).replace("\\", "/") for o in options] if isinstance(options, list) else []
        names = {req.file_name.replace("\\", "/"), (req.value or req.file_name).replace("\\", "/")}
        if names & set(listed):
            continue
        if req.folder == "input":
            where = f"{base_hint}/input"
        elif req.folder and folder_paths.get(req.folder):
            where = folder_paths[req.folder][0]
        elif req.folder:
            where = f"{base_hint}/{DEFAULT_FOLDER_PATHS.get(req.folder, 'models/' + req.folder)}"
        else:
            where = "the folder of the node's loader (unknown to this pack's catalogue)"
        missing.append(MissingFile(req, where))
    return missing


def format_checklist(missing: list[MissingFile]) -> str:
    lines = ["This workflow needs files that this ComfyUI does not have. Put each one in its folder, then run again:",
             ""]
    seen = set()
    for m in missing:
        key = (m.file.file_name, m.folder_path)
        if key in seen:
            continue
        seen.add(key)
        source = m.file.url or where_to_get(m.file.file_name, m.file.folder)
        subfolder = os.path.dirname(m.file.file_name.replace("\\", "/"))  # e.g. pose/ of pose/yolo11n-pose.pt
        folder = os.path.join(m.folder_path, *subfolder.split("/")) if subfolder and m.file.folder else m.folder_path
        lines.append(f"  [ ] {m.file.file_name}")
        lines.append(f"        folder : {folder}")
        lines.append(f"        used by: {m.file.node_type}.{m.file.input_name} (node {m.file.node_id})")
        lines.append(f"        get it : {source}")
    return "\n".join(lines)


def format_node_errors(node_errors: dict, prompt: dict) -> str:
    """ComfyUI's ``node_errors`` (POST /prompt, status 400) as one line per problem."""
    lines = []
    for node_id, entry in (node_errors or {}).items():
        kind = entry.get("class_type") or (prompt.get(str(node_id)) or {}).get("class_type", "?")
        title = ((prompt.get(str(node_id)) or {}).get("_meta") or {}).get("title")
        name = f"node {node_id} ({kind}{', ' + repr(title) if title and title != kind else ''})"
        for err in entry.get("errors") or []:
            input_name = (err.get("extra_info") or {}).get("input_name")
            where = f" input {input_name!r}" if input_name else ""
            details = err.get("details") or ""
            lines.append(f"  {name}{where}: {err.get('message', '?')}{': ' + details if details else ''}")
    return "\n".join(lines)


def format_execution_error(messages: list) -> str:
    """The ``execution_error`` of a history entry: node, exception type and message; the traceback's end
    only for unexpected errors (a BoLIDError is a user error and its message says the fix)."""
    for item in messages or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and item[0] == "execution_error":
            e = item[1]
            kind = str(e.get("exception_type", "")).rsplit(".", 1)[-1]
            text = f"  node {e.get('node_id')} ({e.get('node_type')}): {kind}: {str(e.get('exception_message', '')).strip()}"
            tb = "".join(e.get("traceback") or [])[-1500:]
            if tb and kind != "BoLIDError":
                text += f"\n  traceback (end):\n{tb}"
            return text
    return "  (no error message in the history)"


# --- progress over the websocket ---------------------------------------------------------------

class ProgressFollower(threading.Thread):
    """Prints which node runs and its step count, from ComfyUI's websocket (``/ws?clientId=``).

    Cosmetic: when aiohttp is missing or the socket fails, the run goes on with history polling only.
    """

    def __init__(self, base_url: str, client_id: str, say: Callable[[str], None], min_interval: float = 2.0):
        super().__init__(name="bolid-progress", daemon=True)
        self.ws_url = "ws" + base_url[len("http"):] + f"/ws?clientId={client_id}"
        self.say = say
        self.min_interval = min_interval
        self.prompt: dict = {}
        self.prompt_id: str | None = None
        self.connected = threading.Event()
        self.done = threading.Event()
        self._last_node = None
        self._last_note = 0.0

    def run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._follow())
        except Exception as e:  # noqa: BLE001 - progress display must never break a run; logged
            log.debug("progress websocket ended: %s", e)
        finally:
            self.connected.set()

    async def _follow(self) -> None:
        import asyncio

        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.ws_url, heartbeat=30) as ws:
                self.connected.set()
                while not self.done.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self._handle(json.loads(msg.data))
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                        return

    def _describe(self, node_id: Any) -> str:
        kind = (self.prompt.get(str(node_id)) or {}).get("class_type", "?")
        return f"node {node_id} ({kind})"

    def _handle(self, message: dict) -> None:
        kind, data = message.get("type"), message.get("data") or {}
        if self.prompt_id and data.get("prompt_id") not in (None, self.prompt_id):
            return
        if kind == "executing" and data.get("node") is not None and data["node"] != self._last_node:
            self._last_node = data["node"]
            self.say(f"  running {self._describe(data['node'])}")
        elif kind == "progress":
            now = time.monotonic()
            value, total = data.get("value"), data.get("max")
            if value == total or now - self._last_note >= self.min_interval:
                self._last_note = now
                self.say(f"  {self._describe(data.get('node'))}: {value}/{total}")


# --- the job -----------------------------------------------------------------------------------

@dataclass
class RunOptions:
    workflow: Path
    comfyui: str | None = None
    out: Path = Path("bolid_outputs")
    port: int | None = None
    timeout: float = 3600.0
    start_timeout: float = 300.0
    cpu: bool | None = None
    server: str | None = None
    base_directory: Path | None = None
    extra_args: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    exit_code: int
    images: list[Path] = field(default_factory=list)
    missing: list[MissingFile] = field(default_factory=list)
    log_path: Path | None = None


def load_workflow(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise RunError(f"no workflow file {path}: give the path of a .json saved from ComfyUI") from None
    except ValueError as e:
        raise RunError(f"{path} is not valid JSON ({e}); save the workflow from ComfyUI again") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} holds a JSON {type(data).__name__}, not a ComfyUI workflow")
    return data


def run(opts: RunOptions, say: Callable[[str], None]) -> RunResult:
    """Run one workflow; returns the exit code and the written images. Never leaves a server running."""
    workflow = load_workflow(opts.workflow)
    server: ServerProcess | None = None
    workdir: Path | None = None  # only when we start a server: its log and the link to the pack
    log_path: Path | None = None
    try:
        if opts.server:
            url = check_loopback(opts.server)
            base_hint = "ComfyUI"
            say(f"using the running ComfyUI at {url}")
        else:
            comfyui = find_comfyui(opts.comfyui)
            workdir = Path(tempfile.mkdtemp(prefix="bolid_run_"))
            port = opts.port or free_port()
            flags = host_flags(comfyui)
            use_cpu = opts.cpu if opts.cpu is not None else not _gpu_available()
            base = opts.base_directory.resolve() if opts.base_directory else None
            if base is not None:
                (base / "custom_nodes").mkdir(parents=True, exist_ok=True)  # ComfyUI lists it at start
            args = server_args(flags, port, cpu=use_cpu, base_directory=base)
            args += prepare_pack_loading(comfyui, base, workdir, flags)
            args += list(opts.extra_args)
            log_path = workdir / "comfyui.log"
            server = ServerProcess(comfyui, port, log_path, args)
            base_hint = str(opts.base_directory.resolve() if opts.base_directory else comfyui)
            server.start()
            say(f"starting ComfyUI (pid {server.proc.pid}) from {comfyui} on 127.0.0.1:{port}"
                f"{' (CPU)' if use_cpu else ''}; log: {log_path}")
            server.wait_ready(opts.start_timeout, say)
            url = server.url
        client = Client(url, timeout=60)
        status, object_info = client.get_json("/object_info")
        if status != 200 or not isinstance(object_info, dict):
            raise RunError(f"GET {url}/object_info answered {status}", log_path)
        result = _run_prompt(client, workflow, object_info, opts, base_hint, log_path, say)
    except RunError as e:
        if e.log_path is None:
            e.log_path = log_path
        if server is None:  # failed before starting anything: no log worth keeping
            _remove_workdir(workdir)
        raise
    except KeyboardInterrupt:
        if server is not None:
            server.stop()
            server = None
        _remove_workdir(workdir)
        raise
    finally:
        if server is not None:
            server.stop()
    # Success or checklist: the log is not needed; on errors the folder stays for the log it holds.
    _remove_workdir(workdir)
    result.log_path = None
    return result


def _remove_workdir(workdir: Path | None) -> None:
    """Delete the run's temp folder; the link to the pack is unlinked first, never followed."""
    import shutil

    if workdir is None:
        return
    link = workdir / "custom_nodes" / "ComfyUI-BoLID"
    if link.is_symlink():
        link.unlink()
    try:
        shutil.rmtree(workdir)
    except OSError as e:
        log.warning("could not remove the temporary folder %s: %s", workdir, e)


def _run_prompt(client: Client, workflow: dict, object_info: dict, opts: RunOptions, base_hint: str,
                log_path: Path | None, say: Callable[[str], None]) -> RunResult:
    problems = find_problems(workflow, object_info)
    fatal = [p for p in problems if p.category in ("unsupported", "unknown node type")]
    if fatal:
        hint = ""
        if any(p.node_type.startswith("BoLID") for p in fatal):
            hint = "\nThe BoLID nodes did not load: look for 'IMPORT FAILED' or a traceback in the server log."
        raise RunError("this workflow cannot run on this ComfyUI:\n" + "\n".join(f"  {p}" for p in fatal) + hint,
                       log_path)
    try:
        prompt = to_api_prompt(workflow, object_info)
    except WorkflowError as e:
        raise RunError(str(e), log_path) from None
    missing = find_missing_files(client, workflow, object_info, base_hint)
    if missing:
        say(format_checklist(missing))
        return RunResult(EXIT_MISSING_FILES, missing=missing, log_path=log_path)
    for p in problems:
        if p.category not in ("missing model file", "missing input file"):
            say(f"warning: {p}")

    client_id = uuid.uuid4().hex
    body: dict[str, Any] = {"prompt": prompt, "client_id": client_id}
    if is_ui_workflow(workflow):
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}  # as the frontend does: PNGs embed it
    follower = ProgressFollower(client.base, client_id, say)
    follower.prompt = prompt
    follower.start()
    follower.connected.wait(5)  # connect before queueing, so no event is missed
    try:
        return _queue_and_wait(client, body, prompt, opts, log_path, say, follower)
    finally:
        follower.done.set()
        follower.join(timeout=5)


def _queue_and_wait(client: Client, body: dict, prompt: dict, opts: RunOptions, log_path: Path | None,
                    say: Callable[[str], None], follower: ProgressFollower) -> RunResult:
    status, answer = client.post_json("/prompt", body)
    if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
        details = format_node_errors((answer or {}).get("node_errors") or {}, prompt) if isinstance(answer, dict) else ""
        error = (answer or {}).get("error") if isinstance(answer, dict) else answer
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise RunError(f"ComfyUI refused the workflow: {message}" + (f"\n{details}" if details else ""), log_path)
    prompt_id = answer["prompt_id"]
    follower.prompt_id = prompt_id
    say(f"queued prompt {prompt_id} ({len(prompt)} nodes)")
    entry = _wait_for_history(client, prompt_id, opts.timeout, say, log_path)
    state = entry.get("status") or {}
    if state.get("status_str") != "success":
        raise RunError("the workflow failed while running:\n" + format_execution_error(state.get("messages")),
                       log_path)
    images = _copy_images(client, entry.get("outputs") or {}, opts.out)
    if not images:
        say("the workflow ran but produced no images (does it have a Save Image or Preview Image node?)")
    for path in images:
        say(f"wrote {path}")
    return RunResult(EXIT_OK, images=images, log_path=log_path)


def _wait_for_history(client: Client, prompt_id: str, timeout: float, say: Callable[[str], None],
                      log_path: Path | None) -> dict:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    next_note = started + 10
    while time.monotonic() < deadline:
        status, history = client.get_json(f"/history/{prompt_id}")
        if status == 200 and isinstance(history, dict) and prompt_id in history:
            entry = history[prompt_id]
            if (entry.get("status") or {}).get("completed") or (entry.get("status") or {}).get("status_str"):
                return entry
        if time.monotonic() > next_note:
            _, queue = client.get_json("/queue")
            running = len((queue or {}).get("queue_running") or []) if isinstance(queue, dict) else "?"
            say(f"  ... running ({time.monotonic() - started:.0f} s, {running} prompt(s) executing)")
            next_note = time.monotonic() + 10
        time.sleep(0.5)
    client.post_json("/interrupt", {})
    client.post_json("/queue", {"delete": [prompt_id]})
    raise RunError(f"the workflow did not finish within {timeout:.0f} s (--timeout); it was interrupted", log_path)


def _copy_images(client: Client, outputs: dict, out_dir: Path) -> list[Path]:
    from ..files import next_free_path

    written: list[Path] = []
    for node_id in sorted(outputs, key=lambda k: (len(k), k)):
        for image in outputs[node_id].get("images") or []:
            name = os.path.basename(image.get("filename") or "")
            if not name:
                continue
            query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                            "type": image.get("type", "output")})
            data = client.get_bytes(f"/view?{query}")
            out_dir.mkdir(parents=True, exist_ok=True)
            target = next_free_path(out_dir / name)
            target.write_bytes(data)
            written.append(target.resolve())
    return written


# --- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="workflow .json (UI format, or API format from Export (API))")
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH, else the ComfyUI this pack is in)")
    parser.add_argument("--out", type=Path, default=Path("bolid_outputs"), help="where to copy the images (default: ./bolid_outputs)")
    parser.add_argument("--port", type=int, help="port for the ComfyUI we start (default: a free one)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the workflow may run (default 3600)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds ComfyUI may take to start (default 300)")
    parser.add_argument("--cpu", action="store_true", default=None, help="run ComfyUI on the CPU (default: when no GPU is found)")
    parser.add_argument("--server", help="use a ComfyUI already running on this machine, e.g. http://127.0.0.1:8188")
    parser.add_argument("--base-directory", type=Path,
                        help="ComfyUI's --base-directory: models/, input/, output/, user/ under this folder")
    parser.epilog = "Arguments after -- go to ComfyUI's main.py, e.g. `... run wf.json -- --lowvram`."


def main_run(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout

    def say(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    extra = list(getattr(args, "comfy_args", None) or [])
    opts = RunOptions(workflow=args.workflow, comfyui=args.comfyui, out=args.out, port=args.port,
                      timeout=args.timeout, start_timeout=args.start_timeout, cpu=args.cpu, server=args.server,
                      base_directory=args.base_directory, extra_args=extra)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # let `finally` stop the server
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(opts, say).exit_code
    except RunError as e:
        say(f"error: {e}")
        if e.log_path:
            say(f"ComfyUI's log: {e.log_path}")
        return e.exit_code
    except BoLIDError as e:
        say(f"error: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        say("interrupted: ComfyUI was stopped")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["run", "RunOptions", "RunResult", "RunError", "find_comfyui", "find_missing_files", "format_checklist",
           "host_flags", "server_args", "parse_help_flags", "parse_cli_args_flags",
           "format_node_errors", "add_arguments", "main_run", "EXIT_OK", "EXIT_ERROR", "EXIT_MISSING_FILES"]
