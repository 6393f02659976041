"""ComfyUI-BoLID: body-identity personalisation for SDXL (the BoLID method) as ComfyUI nodes.

Registers the nodes (V3 ``comfy_entrypoint``), the web directory and the model folders. Nothing else
happens at import: no downloads, no ``sys.path`` edits, no patching of ComfyUI or torch.
"""

MIN_COMFYUI_VERSION = (0, 3, 64)
WEB_DIRECTORY = "./js"


def _check_host() -> None:
    """Fail with the version needed on a ComfyUI older than the one this pack supports."""
    needed = ".".join(map(str, MIN_COMFYUI_VERSION))
    try:
        from comfyui_version import __version__ as host_version
    except ImportError:
        host_version = "unknown (older than 0.3.30)"
    try:
        parsed = tuple(int(p) for p in host_version.split(".")[:3])
    except ValueError:
        parsed = (0,)
    try:
        import comfy_api.latest  # noqa: F401  (the V3 node API, ComfyUI >= 0.3.47)
    except ImportError:
        parsed = (0,)
    if parsed < MIN_COMFYUI_VERSION:
        raise ImportError(
            f"ComfyUI-BoLID needs ComfyUI >= {needed}; this ComfyUI is {host_version}. "
            "Update ComfyUI (Manager > Update ComfyUI, or `git pull` in the ComfyUI folder) and restart."
        )


def _inside_comfyui() -> bool:
    """Whether ComfyUI's modules are importable, i.e. this folder is being loaded by a ComfyUI process.

    Outside one (pytest collecting the repository, packaging tools) the folder imports as an inert package:
    the library under ``bolid_lib`` works on its own and the nodes need ComfyUI.
    """
    import importlib.util

    return importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None


if _inside_comfyui():
    _check_host()
    from .nodes import comfy_entrypoint, register_model_folders

    register_model_folders()
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
