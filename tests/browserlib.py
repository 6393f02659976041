"""Serve the real ComfyUI with this pack on localhost and drive its real frontend in Debian's Chromium.

Used by tests/browser/ and tests/tools/make_workflows.py. ComfyUI runs as a separate process
(``main.py --cpu --listen 127.0.0.1``) with ``--base-directory`` set to a temporary folder, so nothing is
written into the ComfyUI checkout: that folder's ``custom_nodes/`` holds a symlink to this pack, its
``models/`` the model files a test wants listed, its ``user/`` fresh frontend settings. The process is
stopped by its own PID.

Chromium comes from Debian's ``chromium`` package (Playwright cannot download its own browser here);
Playwright only drives it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
PACK_NAME = "ComfyUI-BoLID"  # the folder name users get from git clone / ComfyUI-Manager
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
# Frontend settings for a fresh user: no first-run template browser, no update banners.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Workflow.ShowMissingModelsWarning": True,
    "Comfy.Validation.Workflows": True,
    "Comfy.NodeBadge.NodeSourceBadgeMode": "Hide built-in",
    "Comfy.NodeBadge.NodeIdBadgeMode": "None",
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # full drawing when zoomed out (pictures of whole workflows)
    "Comfy.Minimap.Visible": False,
    "Comfy.UseNewMenu": "Top",
    # Each page starts clean: no workflow tabs restored from an earlier page of the same profile.
    "Comfy.Workflow.Persist": False,
}


def chromium_missing() -> str | None:
    """Why the browser tier cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM}: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright: pip install playwright (its browser download is not needed)"
    return None


NEWEST_FRONTEND = os.environ.get("BOLID_NEWEST_FRONTEND", "1.58.1")
FRONTEND_CACHE = (Path(os.environ.get("BOLID_ASSET_CACHE") or Path.home() / ".cache" / "bolid-test-assets").expanduser()
                  / "frontends")
VUE_NODES_SETTING = "Comfy.VueNodes.Enabled"  # Nodes 2.0: the DOM-rendered node design


def fetch_frontend(version: str = NEWEST_FRONTEND, cache: Path | None = None) -> tuple[Path | None, str]:
    """(the ``static`` folder of ``comfyui-frontend-package==version`` for ``main.py --front-end-root``, how it
    was found) or (None, why not). Installed once from the registry with pip into a cache outside the repo."""
    folder = Path(cache or FRONTEND_CACHE) / version
    static = folder / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static, f"comfyui-frontend-package {version} from {folder}"
    tmp = folder.with_name(f"{version}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--retries", "2", "--timeout", "30", "--target", str(tmp), f"comfyui-frontend-package=={version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"cannot get comfyui-frontend-package {version} from the registry: {e}"
    if done.returncode != 0 or not (tmp / "comfyui_frontend_package" / "static" / "index.html").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        lines = (done.stderr or done.stdout).strip().splitlines() or ["pip said nothing"]
        why = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1])
        return None, f"cannot get comfyui-frontend-package {version} from the registry: {why[:300]}"
    try:
        tmp.rename(folder)
    except OSError:  # another process filled the cache meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return static, f"comfyui-frontend-package {version} from the registry, cached in {folder}"


def sample_files() -> dict[str, bytes]:
    """Pictures for the example workflows' image loaders: procedural people (bolid_lib.data.synthetic), so the
    canvas shows a person in Load Image and the photo folder exists for Load Image Dataset from Folder."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(PACK_DIR))
    from bolid_lib.data.synthetic import RenderSettings, random_shapes, render_views

    shapes = random_shapes(1, seed=7).repeat(5, 1)
    images, _ = render_views(shapes, seed=11, settings=RenderSettings(size=384, min_height=0.8, max_height=0.92))
    out = {}
    for i, img in enumerate(images):
        arr = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        rel = "input/bolid_reference.png" if i == 0 else f"input/bolid_person/view_{i:02d}.png"
        out[rel] = buf.getvalue()
    return out


def write_pictures(name: str, png: bytes, max_bytes: int = 300_000) -> list[Path]:
    """docs/images/<name>.png (README picture) and example_workflows/<name>.jpg (template thumbnail),
    from one canvas screenshot, both kept small."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    doc = img.copy()
    doc.thumbnail((1800, 1200))
    for colours in (256, 128, 64, 32):
        buf = io.BytesIO()
        doc.quantize(colours, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
        if buf.tell() <= max_bytes:
            break
    else:
        raise RuntimeError(f"the picture of {name} stays over {max_bytes} bytes")
    out = PACK_DIR / "docs" / "images" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    thumb_path = PACK_DIR / "example_workflows" / f"{name}.jpg"
    thumb = img.copy()
    thumb.thumbnail((512, 512))
    thumb.save(thumb_path, "JPEG", quality=85, optimize=True)
    return [out, thumb_path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: Path, files: dict[str, Path | bytes] | None = None) -> Path:
    """A ComfyUI base directory: custom_nodes/<pack> -> this repo, user settings, and ``files``
    ({path relative to the base dir, e.g. "models/bolid/x.safetensors" or "input/a.png": source})."""
    base = Path(base)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    for rel, src in (files or {}).items():
        dst = base / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copyfile(src, dst)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(FRONTEND_SETTINGS))
    for d in ("input", "output", "temp"):
        (base / d).mkdir(exist_ok=True)
    return base


class ComfyServer:
    """A ComfyUI process serving the real frontend; ``stop()`` ends it by its PID."""

    def __init__(self, root: Path, base: Path, port: int | None = None, front_end_root: Path | None = None):
        self.root = Path(root)
        self.base = Path(base)
        self.front_end_root = Path(front_end_root) if front_end_root else None
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "comfyui.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> "ComfyServer":
        log = open(self.log_path, "wb")
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-api-nodes", "--base-directory", str(self.base)]
        if self.front_end_root is not None:  # a frontend other than the one the host pins
            cmd += ["--front-end-root", str(self.front_end_root)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/object_info", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post_json(self, path: str, value) -> int:
        req = urllib.request.Request(self.url + path, data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status

    def set_setting(self, key: str, value) -> None:
        """A user setting through the settings API (what the frontend's settings dialog stores); pages opened
        afterwards read it at start."""
        status = self.post_json(f"/api/settings/{key}", value)
        if status != 200:
            raise RuntimeError(f"POST /api/settings/{key} answered {status}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


def launch_browser(playwright, user_data_dir: Path, viewport=(1600, 1000)):
    """A persistent Chromium context on a fresh profile folder (Debian's binary, headless)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": viewport[0], "height": viewport[1]},
    )


def open_app(context, url: str, timeout_ms: int = 120_000):
    """Open the ComfyUI page and wait until the frontend app and its graph exist and node defs are in."""
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]  (kind, text, where it came from)
    page.failed_requests = []  # type: ignore[attr-defined]  (status, url)

    def on_console(m):
        page.console_messages.append((m.type, m.text, (m.location or {}).get("url", "")))

    def on_pageerror(e):
        page.console_messages.append(("pageerror", str(e), getattr(e, "stack", "") or ""))

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    page.pack_responses = []  # type: ignore[attr-defined]  (status, url, content type) of the pack's files

    def on_response(r):
        if r.status >= 400:
            page.failed_requests.append((r.status, r.url))
        if f"/{PACK_NAME}/" in r.url:
            page.pack_responses.append((r.status, r.url, r.headers.get("content-type", "")))

    page.on("response", on_response)
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_function(
        "() => window.app && window.app.graph && window.LiteGraph && "
        "Object.keys(window.LiteGraph.registered_node_types).length > 50",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(300)
    page.startup_messages = len(page.console_messages)  # type: ignore[attr-defined]
    return page


def pack_errors(page) -> list[str]:
    """What the page logged that points at this pack: every uncaught exception (a page error), console
    errors raised from the pack's extension files or naming it, and failed requests for the pack's files
    (extensions, example workflows and their thumbnails). The frontend's own complaints about this sandbox
    (no internet: CSP-blocked model downloads; 404 for user.css and empty user folders) are not the pack's."""
    prefix = (f"/extensions/{PACK_NAME}/", f"/workflow_templates/{PACK_NAME}/")
    started = getattr(page, "startup_messages", 0)
    out = []
    for i, (kind, text, where) in enumerate(page.console_messages):
        ours = any(p in where for p in prefix) or "bolid" in (text + where).lower()
        # A page error while the app starts is the frontend's own unless its stack passes through the pack
        # (1.27.10 throws one from its Comfy.Canvas.NavigationMode setting on every start); after that, any.
        if kind == "pageerror" and (i >= started or ours):
            out.append(f"page error: {text}\n{where[:1500]}")
        elif kind == "error" and ours:
            out.append(f"console error from {where or '?'}: {text}")
    out += [f"HTTP {status} for {url}" for status, url in page.failed_requests if any(p in url for p in prefix)]
    return out


def renderer_state(page) -> dict:
    """Which node renderer the page runs: LiteGraph's flag, the stored setting, and whether this frontend
    offers Nodes 2.0 to users (its setting exists and is not a hidden experiment)."""
    return page.evaluate("""(key) => {
        const lookup = (window.app.ui && window.app.ui.settings && window.app.ui.settings.settingsLookup) || {};
        const def = lookup[key];
        const setting = window.app.extensionManager && window.app.extensionManager.setting;
        return {vueNodesMode: !!window.LiteGraph.vueNodesMode,
                setting: setting ? setting.get(key) : null,
                offered: !!def && def.type !== 'hidden',
                version: window.__COMFYUI_FRONTEND_VERSION__ || null,
                domNodes: document.querySelectorAll('[data-node-id]').length};
    }""", VUE_NODES_SETTING)


# JS: is an element shown to the user? Attached, of a real size, inside the window, and on top at its centre
# (not hidden behind another node or a dialog).
SHOWN_JS = """
(el) => {
  if (!el || !el.isConnected) return 'not in the document';
  const r = el.getBoundingClientRect();
  if (r.width < 8 || r.height < 8) return `too small: ${r.width}x${r.height}`;
  const cx = r.x + r.width / 2, cy = r.y + r.height / 2;
  if (cx < 0 || cy < 0 || cx > window.innerWidth || cy > window.innerHeight) return `outside the window at ${cx},${cy}`;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none' || Number(style.opacity) === 0) return 'hidden by style';
  const top = document.elementFromPoint(cx, cy);
  if (!top || !(top === el || el.contains(top) || top.contains(el))) {
    return `covered by ${top ? top.tagName + '.' + String(top.className).slice(0, 60) : 'nothing'}`;
  }
  return '';
}
"""


def why_not_shown(locator) -> str:
    """'' when the element is shown (see SHOWN_JS), else why not."""
    return locator.evaluate(SHOWN_JS)


# JS: the frontend's view of a loaded graph (missing types, broken links, visible dialogs).
GRAPH_REPORT_JS = """
() => {
  const g = window.app.graph;
  const known = window.LiteGraph.registered_node_types;
  const nodes = g._nodes || g.nodes;
  const missingTypes = nodes.filter(n => !(n.type in known) || n.has_errors && n.constructor === window.LGraphNode)
                            .map(n => n.type);
  const links = [];
  const linkMap = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  const broken = [];
  for (const l of linkMap) {
    if (!l) continue;
    links.push(l.id);
    const o = g.getNodeById(l.origin_id), t = g.getNodeById(l.target_id);
    if (!o || !t) { broken.push(`link ${l.id}: node missing`); continue; }
    const out = o.outputs[l.origin_slot], inp = t.inputs[l.target_slot];
    if (!out || !inp) { broken.push(`link ${l.id}: slot missing`); continue; }
    // Read connectivity through the node (frontend 1.58 deprecates reading input.link / output.links).
    const inLink = t.getInputLink(l.target_slot);
    if (!inLink || inLink.id !== l.id) broken.push(`link ${l.id}: input ${t.type}.${inp.name} points at ${inLink && inLink.id}`);
    const outNodes = o.getOutputNodes(l.origin_slot) || [];
    if (!outNodes.includes(t)) broken.push(`link ${l.id}: output ${o.type}.${out.name} lacks it`);
    if (out.type !== inp.type && inp.type !== '*' && out.type !== '*' &&
        !String(inp.type).split(',').includes(out.type))
      broken.push(`link ${l.id}: ${o.type}.${out.name} (${out.type}) -> ${t.type}.${inp.name} (${inp.type})`);
  }
  const dialogs = [...document.querySelectorAll('.p-dialog, [role=dialog]')]
    .filter(d => d.offsetParent !== null || d.getClientRects().length)
    .map(d => d.innerText.slice(0, 400));
  const toasts = [...document.querySelectorAll('.p-toast-message')].map(t => t.innerText.slice(0, 400));
  // Nodes 2.0 draws each node as a DOM element carrying its id; the classic canvas draws none.
  const domNodes = document.querySelectorAll('[data-node-id]').length;
  return {nodeCount: nodes.length, linkCount: links.length, missingTypes, broken, dialogs, toasts, domNodes,
          vueNodesMode: !!window.LiteGraph.vueNodesMode, types: nodes.map(n => n.type)};
}
"""


def graph_report(page) -> dict:
    return page.evaluate(GRAPH_REPORT_JS)


def load_workflow(page, workflow: dict, name: str) -> dict:
    """Put a workflow on the canvas as the template browser does, and return the graph report."""
    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }", [workflow, name])
    page.wait_for_timeout(800)
    return graph_report(page)


def queue_and_wait(page, server, timeout_s: float = 300) -> dict:
    """Queue the graph on the canvas as the Run button does (the frontend's graphToPrompt, POST /prompt with
    this page's client id, so the page gets the nodes' ``executed`` messages) and wait until the server has
    run it; returns its history entry."""
    answer = page.evaluate("""async () => {
        const p = await window.app.graphToPrompt();
        const r = await fetch('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({prompt: p.output, client_id: window.app.api.clientId,
                                        extra_data: {extra_pnginfo: {workflow: p.workflow}}})});
        return {status: r.status, body: await r.json()};
    }""")
    if answer["status"] != 200:
        raise AssertionError(json.dumps(answer["body"])[:3000])
    prompt_id = answer["body"]["prompt_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            if entry["status"]["status_str"] != "success":
                raise AssertionError(json.dumps(entry["status"])[:3000])
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout_s} s:\n{server.log_tail()}")


def close_dialogs(page) -> None:
    """Close open dialogs and toasts (so that a report only sees what the next action brings up)."""
    page.keyboard.press("Escape")
    page.evaluate("() => document.querySelectorAll('.p-toast-close-button, .p-toast-icon-close').forEach(b => b.click())")
    page.wait_for_timeout(300)


def fit_view(page) -> None:
    """Fit the whole graph in the canvas (the frontend's own 'Fit view' command)."""
    page.evaluate("""async () => {
        const cmd = window.app.extensionManager && window.app.extensionManager.command;
        if (cmd) { try { await cmd.execute('Comfy.Canvas.FitView'); } catch (e) {} }
        window.app.canvas.setDirty(true, true);
    }""")
    page.wait_for_timeout(500)


PICTURE_VIEWPORT = (2400, 1350)

# JS: the graph's bounding box (nodes with their title bars, groups) in canvas-element pixels.
BOUNDS_JS = """
() => {
  const c = window.app.canvas, ds = c.ds, g = window.app.graph;
  const boxes = g._nodes.map(n => [n.pos[0], n.pos[1] - 32, n.pos[0] + n.size[0], n.pos[1] + n.size[1]])
    .concat((g._groups || g.groups || []).map(gr => [gr.pos[0], gr.pos[1], gr.pos[0] + gr.size[0], gr.pos[1] + gr.size[1]]));
  const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
  const x1 = Math.max(...boxes.map(b => b[2])), y1 = Math.max(...boxes.map(b => b[3]));
  const s = ds.scale, [ox, oy] = ds.offset;
  return [(x0 + ox) * s, (y0 + oy) * s, (x1 + ox) * s, (y1 + oy) * s];
}
"""


def workflow_picture(page) -> bytes:
    """The workflow now on the canvas, fitted into a large window (so LiteGraph draws text, not its
    low-quality zoomed-out shapes), as PNG bytes; the window size is restored afterwards."""
    old = page.viewport_size
    page.set_viewport_size({"width": PICTURE_VIEWPORT[0], "height": PICTURE_VIEWPORT[1]})
    page.wait_for_timeout(500)
    try:
        fit_view(page)
        page.wait_for_timeout(700)
        box = page.evaluate(BOUNDS_JS)
        canvas = page.locator("#graph-canvas").bounding_box()
        pad = 24
        x0 = max(canvas["x"], canvas["x"] + box[0] - pad)
        y0 = max(canvas["y"], canvas["y"] + box[1] - pad)
        x1 = min(canvas["x"] + canvas["width"], canvas["x"] + box[2] + pad)
        y1 = min(canvas["y"] + canvas["height"], canvas["y"] + box[3] + pad)
        return page.screenshot(type="png", clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})
    finally:
        page.set_viewport_size(old)


def canvas_screenshot(page, path: Path | None, *, jpeg_quality: int | None = None) -> bytes:
    """A picture of the graph canvas (only the canvas element, without menus)."""
    kwargs = {"type": "jpeg", "quality": jpeg_quality} if jpeg_quality else {"type": "png"}
    loc = page.locator("#graph-canvas")
    data = loc.screenshot(**kwargs)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


# An init script (runs before the page's own scripts): once LiteGraph exists, every deprecation warning it raises
# (reads of input.link / output.links, LGraphCanvas.selected_nodes, ...) is recorded with the stack that raised it,
# each time (LiteGraph warns once per message unless alwaysRepeatWarnings), so a warning can be traced to the
# file that caused it. Frontends without the hook (before 1.5x) record nothing.
DEPRECATION_HOOK_JS = """
(() => {
  window.__bolidDeprecations = [];
  const install = () => {
    const LG = window.LiteGraph;
    if (!LG || !Array.isArray(LG.onDeprecationWarning)) return false;
    LG.alwaysRepeatWarnings = true;
    LG.onDeprecationWarning.push((message) => {
      window.__bolidDeprecations.push({message: String(message), stack: String(new Error().stack || '')});
    });
    return true;
  };
  const timer = setInterval(() => { if (install()) clearInterval(timer); }, 5);
})();
"""


def record_deprecations(context) -> None:
    """Record LiteGraph's deprecation warnings, with their stacks, in every page of ``context`` (see
    DEPRECATION_HOOK_JS); read them with ``deprecations(page)``."""
    context.add_init_script(DEPRECATION_HOOK_JS)


def deprecations(page, *, pack_only: bool = True) -> list[dict]:
    """LiteGraph deprecation warnings the page raised ({message, stack}); with ``pack_only`` those whose stack
    passes through one of this pack's extension files."""
    found = page.evaluate("() => window.__bolidDeprecations || []")
    if pack_only:
        found = [d for d in found if f"/extensions/{PACK_NAME}/" in d["stack"]]
    return found


# JS: every node's box on screen, in graph units, and every group's: in the classic canvas the node's bounding
# box (title bar included) as LiteGraph draws it; in Nodes 2.0 the box of the node's DOM element, mapped back
# through the canvas transform (Nodes 2.0 draws nodes taller than the classic canvas does).
NODE_BOXES_JS = """
() => {
  const app = window.app, g = app.graph, c = app.canvas, ds = c.ds;
  const rect = c.canvas.getBoundingClientRect();
  const toGraph = (x, y) => [(x - rect.left) / ds.scale - ds.offset[0], (y - rect.top) / ds.scale - ds.offset[1]];
  const nodes = {};
  const missing = [];
  for (const n of g._nodes) {
    if (window.LiteGraph.vueNodesMode) {
      const el = document.querySelector(`[data-node-id="${n.id}"]`);
      if (!el) { missing.push(String(n.id)); continue; }
      const r = el.getBoundingClientRect();
      nodes[n.id] = [...toGraph(r.left, r.top), ...toGraph(r.right, r.bottom)];
    } else {
      const b = n.getBounding();
      nodes[n.id] = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
    }
  }
  const groups = (g._groups || g.groups || []).map(gr => ({title: gr.title,
    box: [gr.pos[0], gr.pos[1], gr.pos[0] + gr.size[0], gr.pos[1] + gr.size[1]]}));
  return {nodes, groups, missing, types: Object.fromEntries(g._nodes.map(n => [n.id, n.type]))};
}
"""


def node_boxes(page, timeout_ms: int = 20_000) -> dict:
    """{nodes: {id: [x0, y0, x1, y1]}, groups: [{title, box}], types: {id: type}} in graph units, as the renderer
    the page runs shows them; waits (Nodes 2.0) until every node has its DOM element and the boxes stop moving."""
    fit_view(page)
    last, deadline = None, time.monotonic() + timeout_ms / 1000
    while True:
        page.wait_for_timeout(400)
        now = page.evaluate(NODE_BOXES_JS)
        if not now["missing"] and now == last:
            return now
        if time.monotonic() > deadline:
            if now["missing"]:
                raise AssertionError(f"nodes {now['missing']} have no DOM element after {timeout_ms} ms")
            return now
        last = now


def layout_problems(boxes: dict, tolerance: float = 1.0) -> list[str]:
    """What is wrong with a layout of ``node_boxes``: two nodes whose boxes overlap, and a node that is neither
    wholly inside nor wholly outside a group (a group must hold its nodes, and no node may stick into one)."""
    problems = []
    items = sorted(boxes["nodes"].items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else str(kv[0]))
    name = lambda i: f"{boxes['types'].get(i, '?')} #{i}"  # noqa: E731

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > tolerance and h > tolerance else 0.0

    for k, (i, a) in enumerate(items):
        for j, b in items[k + 1:]:
            if overlap(a, b):
                problems.append(f"{name(i)} {[round(v) for v in a]} overlaps {name(j)} {[round(v) for v in b]}")
    for gr in boxes["groups"]:
        g = gr["box"]
        for i, a in items:
            if not overlap(a, g):
                continue
            inside = a[0] >= g[0] - tolerance and a[1] >= g[1] - tolerance and a[2] <= g[2] + tolerance and a[3] <= g[3] + tolerance
            if not inside:
                problems.append(f"group {gr['title']!r} {[round(v) for v in g]} does not hold {name(i)} "
                                f"{[round(v) for v in a]}")
    return problems


# JS: build a graph in the frontend from a spec {nodes: [{key, type, widgets, col, title, width, height,
# color}], links: [[from key, output name or type, to key, input name]], groups: [[title, keys, colour]]};
# returns {problems, graph: app.graph.serialize()}.
BUILD_JS = r"""
async (spec) => {
  const app = window.app, LG = window.LiteGraph;
  app.graph.clear();
  const made = {};
  const problems = [];
  for (const s of spec.nodes) {
    const node = LG.createNode(s.type);
    if (!node) { problems.push(`unknown node type ${s.type}`); continue; }
    if (s.title) node.title = s.title;
    app.graph.add(node);
    for (const [name, value] of Object.entries(s.widgets)) {
      const w = (node.widgets || []).find(w => w.name === name);
      if (!w) { problems.push(`${s.type} has no widget ${name} (has ${(node.widgets || []).map(w => w.name)})`); continue; }
      w.value = value;
    }
    const size = node.computeSize();
    node.size = [Math.max(size[0], s.width || 0, 300), Math.max(size[1], s.height || 0)];
    if (s.color) { node.color = s.color; node.bgcolor = '#653'; }
    made[s.key] = node;
  }
  for (const [a, out, b, inp] of spec.links) {
    const src = made[a], dst = made[b];
    if (!src || !dst) { problems.push(`link ${a}.${out} -> ${b}.${inp}: node missing`); continue; }
    const oi = src.outputs.findIndex(o => o.name === out || o.type === out);
    const ii = (dst.inputs || []).findIndex(i => i.name === inp);
    if (oi < 0 || ii < 0) {
      problems.push(`link ${a}.${out} -> ${b}.${inp}: outputs ${src.outputs.map(o => o.name + ':' + o.type)} ` +
                    `inputs ${(dst.inputs || []).map(i => i.name + ':' + i.type)}`);
      continue;
    }
    if (!src.connect(oi, dst, ii)) problems.push(`link ${a}.${out} -> ${b}.${inp}: refused by the frontend`);
  }
  // Columns left to right, nodes stacked top to bottom in declaration order.
  const cols = {};
  for (const s of spec.nodes) if (made[s.key]) (cols[s.col] = cols[s.col] || []).push(made[s.key]);
  let x = 0;
  for (const c of Object.keys(cols).map(Number).sort((p, q) => p - q)) {
    let y = 0, wmax = 0;
    for (const node of cols[c]) {
      node.pos = [x, y];
      y += node.size[1] + 90;
      wmax = Math.max(wmax, node.size[0]);
    }
    x += wmax + 70;
  }
  for (const [title, keys, color] of spec.groups) {
    const members = keys.map(k => made[k]).filter(Boolean);
    if (!members.length) continue;
    const pad = 14, head = 72;
    const x0 = Math.min(...members.map(n => n.pos[0])) - pad;
    const y0 = Math.min(...members.map(n => n.pos[1])) - head - pad;
    const x1 = Math.max(...members.map(n => n.pos[0] + n.size[0])) + pad;
    const y1 = Math.max(...members.map(n => n.pos[1] + n.size[1])) + pad;
    const g = new LG.LGraphGroup(title);
    g.color = color;
    g.pos = [x0, y0];
    g.size = [x1 - x0, y1 - y0];
    app.graph.add(g);
  }
  app.graph.setDirtyCanvas(true, true);
  // Through JSON, as the frontend saves a file (drops undefined fields instead of turning them into null).
  const ids = Object.fromEntries(Object.entries(made).map(([k, n]) => [k, String(n.id)]));
  return {problems, ids, graph: JSON.parse(JSON.stringify(app.graph.serialize()))};
}
"""


def build_graph(page, spec: dict) -> dict:
    """Create nodes, set widgets by name, connect sockets, lay out columns, add groups: all through the
    frontend's own LiteGraph; returns {"problems": [...], "ids": {key: node id}, "graph": serialized UI workflow}."""
    return page.evaluate(BUILD_JS, spec)
