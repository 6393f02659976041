"""Boot a real ComfyUI in-process for the host tier, and build random-weight models of real layouts.

Used by tests/conftest.py and by the scripts under tests/tools and tests/benchmarks. Importing this module
does nothing; ``boot()`` does the work once per process. ComfyUI is found through ``COMFYUI_PATH`` or by the
pack sitting in ``ComfyUI/custom_nodes/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent


def find_comfyui() -> tuple[Path | None, str]:
    """(ComfyUI root, how it was found) or (None, why not)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if (root / "comfy").is_dir() and (root / "nodes.py").is_file():
            return root, f"COMFYUI_PATH={root}"
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/ and nodes.py there)"
    if PACK_DIR.parent.name == "custom_nodes":
        root = PACK_DIR.parent.parent
        if (root / "comfy").is_dir() and (root / "nodes.py").is_file():
            return root, f"pack inside {root}/custom_nodes"
    return None, "no ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout (or put this pack in ComfyUI/custom_nodes/)"


class _ServerStub:
    """What PromptExecutor needs of PromptServer; records the events it is sent."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, object]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))


@dataclass
class RunResult:
    ok: bool
    error: object = None
    node_errors: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    progress: list = field(default_factory=list)

    def error_text(self) -> str:
        """Every error message of a failed validation or execution, joined (for assertions)."""
        parts = []
        if isinstance(self.error, dict):
            parts += [str(self.error.get("message", "")), str(self.error.get("details", ""))]
        elif self.error is not None:
            parts.append(str(self.error))
        for nid, ne in (self.node_errors or {}).items():
            for e in ne.get("errors", []):
                parts += [str(e.get("message", "")), str(e.get("details", ""))]
        for event, data in self.messages:
            if event == "execution_error":
                parts += [str(data.get("exception_type", "")), str(data.get("exception_message", ""))]
        return "\n".join(p for p in parts if p)


class ComfyHost:
    """A booted ComfyUI with this pack loaded through ComfyUI's own loader."""

    def __init__(self, root: Path, base_dir: Path):
        self.root = root
        self.base_dir = base_dir
        self.models_dir = base_dir / "models"
        self.output_dir = base_dir / "output"
        self.input_dir = base_dir / "input"
        self.temp_dir = base_dir / "temp"
        self.progress: list[tuple[str | None, float, float]] = []
        self.load_log: list[logging.LogRecord] = []
        self._counter = 0

    def _boot(self) -> None:
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        from comfy.cli_args import args  # must precede comfy.model_management

        args.cpu = True
        args.base_directory = str(self.base_dir)
        # No partner (API) nodes and no assets system, under whichever names this ComfyUI has. cli_args resolves
        # its aliases while parsing (0.38.1: --disable-api-nodes sets offline, offline sets disable_partner_nodes),
        # which an in-process boot never does, so each name is set itself. The assets system of 0.38.1 (on by
        # default, its database needs SQLAlchemy / alembic) stays off: no PromptServer is built, the executor gets
        # no asset manager (PromptExecutor then uses NoAssets), and disable_assets says so to anything that looks.
        for name in ("disable_api_nodes", "offline", "disable_partner_nodes", "disable_assets"):
            if hasattr(args, name):
                setattr(args, name, True)
        import utils.extra_config  # noqa: F401  (before `nodes`, which puts comfy/ first on sys.path)
        import folder_paths

        for d in (self.models_dir, self.output_dir, self.input_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        folder_paths.set_output_directory(str(self.output_dir))
        folder_paths.set_input_directory(str(self.input_dir))
        folder_paths.set_temp_directory(str(self.temp_dir))
        self.folder_paths = folder_paths

        import comfy.utils
        import execution
        import nodes
        from comfy_execution.utils import get_executing_context

        def hook(value, total, preview_image, prompt_id=None, node_id=None):
            ctx = get_executing_context()
            if node_id is None and ctx is not None:
                node_id = ctx.node_id
            self.progress.append((node_id, value, total))

        comfy.utils.set_progress_bar_global_hook(hook)

        records = self.load_log

        class _Capture(logging.Handler):
            def emit(self, record):
                records.append(record)

        handler = _Capture(level=logging.WARNING)
        logging.getLogger().addHandler(handler)
        try:
            asyncio.run(nodes.init_public_apis())
            asyncio.run(nodes.init_builtin_extra_nodes())
            builtin = set(nodes.NODE_CLASS_MAPPINGS)
            records.clear()  # warnings from ComfyUI's own nodes are not ours
            self.pack_loaded = asyncio.run(nodes.load_custom_node(str(PACK_DIR), module_parent="custom_nodes"))
        finally:
            logging.getLogger().removeHandler(handler)
        self.pack_nodes = sorted(set(nodes.NODE_CLASS_MAPPINGS) - builtin)
        self.nodes = nodes
        self.execution = execution
        self.server = _ServerStub()
        self.executor = make_executor(execution, self.server)

    def node(self, name: str):
        return self.nodes.NODE_CLASS_MAPPINGS[name]

    @contextlib.contextmanager
    def model_installed(self, src, rel: str):
        """A model file copied into this ComfyUI's models folder for the duration: ``rel`` is its path under
        models/ (e.g. "ultralytics/pose/x.pt"); yields the name its loader lists (the part after the folder)."""
        dst = self.models_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        try:
            yield rel.split("/", 1)[1]
        finally:
            dst.unlink(missing_ok=True)

    def cached_output(self, node_id: str, slot: int):
        """A node's output value from the executor's cache after a run.

        ComfyUI 0.33's cache ``get`` is a coroutine giving a CacheEntry(ui, outputs); 0.3.64's gives the outputs
        list itself."""
        import inspect

        entry = self.executor.caches.outputs.get(node_id)
        if inspect.isawaitable(entry):
            entry = asyncio.run(entry)
        return getattr(entry, "outputs", entry)[slot][0]

    def object_info(self, name: str) -> dict:
        """The node's entry of GET /object_info, built as server.py builds it."""
        from tools.dump_object_info import node_info   # the one mirror of server.py's node_info

        return node_info(self.nodes, name)

    def run(self, prompt: dict, *, fresh: bool = True) -> RunResult:
        """Validate and execute an API-format prompt with ComfyUI's real executor."""
        import torch

        self._counter += 1
        prompt_id = f"bolid-test-{self._counter}"
        if fresh:
            self.executor.reset()
        self.server.messages = []
        self.progress.clear()
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        ok, err, outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
        if not ok:
            return RunResult(False, err, node_errors, messages=list(self.server.messages))
        with torch.inference_mode():
            self.executor.execute(prompt, prompt_id, {"client_id": None}, outputs)
        return RunResult(
            bool(self.executor.success),
            None,
            {},
            dict(self.executor.history_result.get("outputs", {})),
            list(self.executor.status_messages),
            list(self.progress),
        )


def make_executor(execution, server):
    """ComfyUI's PromptExecutor with the classic cache, on every supported host.

    ComfyUI 0.33 reads ``cache_args["ram"]`` and ``["ram_inactive"]`` in ``execute`` (main.py passes them; an
    executor built without them fails with a TypeError); 0.3.64 takes no ``cache_args``. Zero RAM headroom is
    what 0.33's main.py gives the classic cache. 0.38.1 adds ``asset_manager=None`` (then ``NoAssets``, which
    needs no database): left out here.
    """
    import inspect

    kwargs = {"cache_type": execution.CacheType.CLASSIC}
    if "cache_args" in inspect.signature(execution.PromptExecutor.__init__).parameters:
        kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
    return execution.PromptExecutor(server, **kwargs)


_HOST: ComfyHost | None = None


def boot(base_dir: Path | None = None) -> ComfyHost:
    """Boot ComfyUI once per process (ComfyUI's modules are process-global)."""
    global _HOST
    if _HOST is not None:
        return _HOST
    root, why = find_comfyui()
    if root is None:
        raise RuntimeError(why)
    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="bolid_comfy_"))
    host = ComfyHost(root, base)
    host._boot()
    _HOST = host
    return host


# --- random-weight models of real layouts -----------------------------------------------------

def fill_random_(module, seed: int = 0, std: float = 0.02) -> None:
    """Fill every parameter (ComfyUI layers skip init and hold torch.empty garbage)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif p.ndim == 1 and ("norm" in name or leaf == "weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)
        for name, b in module.named_buffers():
            if b.is_floating_point() and not torch.isfinite(b).all():
                b.zero_()


def sdxl_unet_config(model_channels: int = 32, head_channels: int = 8) -> dict:
    """SDXL's unet_config (comfy/model_detection.py) with reduced widths; depths and keys unchanged (70 sites)."""
    import torch

    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "dtype": torch.float32,
        "in_channels": 4, "model_channels": model_channels, "num_res_blocks": [2, 2, 2],
        "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
        "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": head_channels,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def build_sdxl_model(model_channels: int = 32, head_channels: int = 8, seed: int = 0):
    """A ComfyUI ModelPatcher around a real SDXL BaseModel (reduced widths), random weights, on CPU.

    model_channels=320, head_channels=64 gives the full SDXL UNet (about 10 GB in float32).
    """
    import torch
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    cfg = sdxl_unet_config(model_channels, head_channels)
    mc = comfy.supported_models.SDXL(cfg)
    mc.unet_config["num_head_channels"] = head_channels
    mc.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SDXL(mc, device=torch.device("cpu"))
    fill_random_(model.diffusion_model, seed=seed)
    model.diffusion_model.to(torch.float32)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    return patcher


def sdxl_conditioning(seed: int = 0, width: int = 64, height: int = 64, tokens: int = 77):
    """(positive, negative) CONDITIONING lists for an SDXL model."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def one():
        return [[torch.randn(1, tokens, 2048, generator=gen),
                 {"pooled_output": torch.randn(1, 1280, generator=gen), "width": width, "height": height}]]

    return one(), one()


def build_clip_vision(kind: str = "h", seed: int = 0):
    """A random-weight ComfyUI ClipVisionModel of the ViT-H (1024-d embeds) or ViT-bigG (1280-d) shape."""
    import comfy.clip_vision

    config = {"h": "clip_vision_config_h.json", "g": "clip_vision_config_g.json", "bigg": "clip_vision_config_g.json"}[kind]
    path = os.path.join(os.path.dirname(comfy.clip_vision.__file__), config)
    cv = comfy.clip_vision.ClipVisionModel(path)
    fill_random_(cv.model, seed=seed)
    return cv


def save_yolo(path: Path, yaml_name: str = "yolo11n-pose.yaml") -> Path:
    """A random-init YOLO11 model built offline from its yaml and saved as an ultralytics .pt."""
    from ultralytics import YOLO

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = YOLO(yaml_name)
    model.save(str(path))
    return path


IPADAPTER_PLUS_NAMES = ("ComfyUI_IPAdapter_plus", "comfyui_ipadapter_plus")


def load_ipadapter_plus(comfy_root: Path):
    """ComfyUI_IPAdapter_plus's IPAdapterPlus module, or None when it is not installed.

    Looked for at $BOLID_IPADAPTER_PLUS, then in ComfyUI's custom_nodes under the names ComfyUI-Manager uses.
    Imported as a package of its own (its modules import each other relatively); ComfyUI must be booted first.
    """
    import importlib.util

    env = os.environ.get("BOLID_IPADAPTER_PLUS")
    candidates = ([Path(env)] if env else []) + [Path(comfy_root) / "custom_nodes" / n for n in IPADAPTER_PLUS_NAMES]
    path = next((c for c in candidates if (c / "IPAdapterPlus.py").is_file()), None)
    if path is None:
        return None
    name = "bolid_test_ipadapter_plus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name + ".IPAdapterPlus"]
