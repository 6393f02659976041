"""Shared glue between ComfyUI and ``bolid_lib``: socket types, image layout, model folders, progress.

Everything ComfyUI-specific that more than one node family needs lives here, so the family modules
stay short. ComfyUI images are BHWC float in [0, 1] and masks BHW; the library is BCHW.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch
from comfy_api.latest import io

import folder_paths

from ..bolid_lib.errors import BoLIDError

log = logging.getLogger("bolid")

# Socket types that travel between BoLID nodes (and the community's POSE_KEYPOINT).
PoseModel = io.Custom("BOLID_POSE_MODEL")
Pose = io.Custom("BOLID_POSE")
PoseKeypoint = io.Custom("POSE_KEYPOINT")
BodyVAE = io.Custom("BOLID_BODY_VAE")
Body = io.Custom("BOLID_BODY")
Adapter = io.Custom("BOLID_ADAPTER")

CATEGORY = "BoLID"

# Model folder keys (folder_paths) and their default places under ComfyUI/models.
FOLDER_BOLID = "bolid"              # adapters and Body-ID VAEs: models/bolid/
FOLDER_BODIES = "bolid_bodies"      # saved Body-IDs: models/bolid/bodies/ (a subfolder of their own)
FOLDER_POSE = "ultralytics"         # YOLO pose models: models/ultralytics/ (and its pose/ subfolder)
FOLDER_IPADAPTER = "ipadapter"      # public IP-Adapter files, shared with IPAdapter_plus
BODIES_SUBFOLDER = "bodies"

_FOLDERS = {
    FOLDER_BOLID: (("bolid",), {".safetensors"}),
    FOLDER_BODIES: (("bolid", BODIES_SUBFOLDER), {".safetensors"}),
    FOLDER_POSE: (("ultralytics",), {".pt"}),
    FOLDER_IPADAPTER: (("ipadapter",), {".safetensors", ".bin"}),
}


def register_model_folders() -> None:
    """Add the pack's model folders, merging with what the user (extra_model_paths.yaml) or other packs set.

    Their paths stay first (theirs win for look-ups), ours are appended, extension sets are united.
    """
    for key, (parts, exts) in _FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, *parts)
        if key in folder_paths.folder_names_and_paths:
            paths, existing_exts = folder_paths.folder_names_and_paths[key]
            if path not in paths:
                paths.append(path)
            merged = set(existing_exts) | exts if existing_exts else set(exts)
            folder_paths.folder_names_and_paths[key] = (paths, merged)
        else:
            folder_paths.folder_names_and_paths[key] = ([path], set(exts))


def list_models(key: str, *, exclude_prefix: str | None = None) -> list[str]:
    """File names in a model folder (sub-folders included), for a combo widget.

    ComfyUI caches each folder's listing with its mtime and, when a cached folder has been deleted since (a
    user tidying models/bolid/bodies while ComfyUI runs), its cache check raises FileNotFoundError, which
    would break this node's schema and with it the whole node list. Drop that stale entry and list afresh.
    """
    try:
        names = folder_paths.get_filename_list(key)
    except FileNotFoundError:
        folder_paths.filename_list_cache.pop(key, None)
        names = folder_paths.get_filename_list(key)
    if exclude_prefix:
        names = [n for n in names if not n.replace("\\", "/").startswith(exclude_prefix)]
    return names


def model_path(key: str, name: str) -> str:
    """Full path of a listed model file; a clear error names the folder to put it in when absent."""
    path = folder_paths.get_full_path(key, name)
    if path is None:
        folders = folder_paths.get_folder_paths(key) if key in folder_paths.folder_names_and_paths else []
        where = folders[0] if folders else f"models/{key}"
        raise BoLIDError(f"model file {name!r} not found: put it in {where} and press R (refresh) in ComfyUI")
    return path


def writable_folder(key: str) -> str:
    """The first folder of a model folder key, created if needed: where the pack writes its files."""
    folder = folder_paths.get_folder_paths(key)[0]
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise BoLIDError(f"cannot create the folder {folder} ({e.strerror}): check its permissions") from e
    return folder


# --- image layout -----------------------------------------------------------------------------

def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) -> (B, 3, H, W); grey is repeated to RGB, alpha is dropped."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise BoLIDError(f"expected an IMAGE batch of shape (B, H, W, C); got {shape}")
    if image.shape[0] == 0:
        raise BoLIDError("the image batch is empty: connect a node that gives at least one image")
    c = image.shape[-1]
    if c == 1:
        image = image.expand(-1, -1, -1, 3)
    elif c == 4:
        image = image[..., :3]
    elif c != 3:
        raise BoLIDError(f"images must have 1, 3 or 4 channels; got {c}")
    return image.permute(0, 3, 1, 2).contiguous()


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> ComfyUI IMAGE (B, H, W, C), float32 on the CPU is not forced (ComfyUI accepts any)."""
    return x.permute(0, 2, 3, 1).contiguous()


def progress_callback(total: int) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback for library functions that drives ComfyUI's progress bar."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def on_progress(done: int, total_: int) -> None:
        bar.update_absolute(done, total_)

    return on_progress
