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

    Their paths stay first (theirs win for look-ups), ours are appended, extension sets are united. Saved
    Body-IDs live in a ``bodies/`` sub-folder of every Body-ID folder (see ``_sync_bodies_folders``).
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
    _sync_bodies_folders()


def _sync_bodies_folders() -> None:
    """Make ``<folder>/bodies`` a Body-ID folder for every folder of the "bolid" key, in the same order.

    A user who shares model folders writes ``bolid: /their/models/bolid`` in extra_model_paths.yaml and keeps
    Body-IDs in ``/their/models/bolid/bodies``; without this, the "bolid_bodies" key would know only
    ComfyUI's own models/bolid/bodies, so Load Body-ID would neither list nor find their files. Paths the
    user gave "bolid_bodies" directly stay first. Called before every listing and look-up of Body-IDs, so a
    folder added after the pack loaded (another pack, a yaml read later) counts as well: the combo's options,
    the loader's look-up and the save node's folder always come from the same list. Order: the user's own
    "bolid_bodies" paths, then one per "bolid" folder in that key's order (so the save node writes beside the
    user's first Body-ID folder when their yaml put theirs first, as ComfyUI's main.py does before packs load).
    """
    entry = folder_paths.folder_names_and_paths.get(FOLDER_BODIES)
    if entry is None:
        return  # register_model_folders has not run: nothing of ours to keep in step
    paths = entry[0]
    derived = [os.path.join(d, BODIES_SUBFOLDER) for d in folder_paths.folder_names_and_paths.get(FOLDER_BOLID, ([], set()))[0]]
    wanted = [p for p in paths if p not in derived] + derived
    if wanted != paths:
        paths[:] = wanted   # in place: the key's tuple is shared with whoever read it before


def _sync(key: str) -> None:
    if key == FOLDER_BODIES:
        _sync_bodies_folders()


def list_models(key: str, *, exclude_prefix: str | None = None) -> list[str]:
    """File names in a model folder (sub-folders included), for a combo widget.

    ComfyUI caches each folder's listing with its mtime and, when a cached folder has been deleted since (a
    user tidying models/bolid/bodies while ComfyUI runs), its cache check raises FileNotFoundError, which
    would break this node's schema and with it the whole node list. Drop that stale entry and list afresh.
    """
    _sync(key)
    try:
        names = folder_paths.get_filename_list(key)
    except FileNotFoundError:
        folder_paths.filename_list_cache.pop(key, None)
        names = folder_paths.get_filename_list(key)
    if exclude_prefix:
        names = [n for n in names if not n.replace("\\", "/").startswith(exclude_prefix)]
    return names


def missing_model_message(key: str, name: str) -> str:
    """What to tell the user about a model file that is not there: the folder it goes in and where to get it."""
    from ..bolid_lib.runner.model_catalog import where_to_get

    _sync(key)
    folders = folder_paths.get_folder_paths(key) if key in folder_paths.folder_names_and_paths else []
    where = folders[0] if folders else f"models/{key}"
    return (f"model file {name!r} not found: put it in {where} and press R (refresh) in ComfyUI. "
            f"Where to get it: {where_to_get(name, key)}")


def model_path(key: str, name: str) -> str:
    """Full path of a listed model file; a clear error names the folder to put it in when absent."""
    _sync(key)
    path = folder_paths.get_full_path(key, name)
    if path is None:
        raise BoLIDError(missing_model_message(key, name))
    return path


def check_model_choice(key: str, name, choices: list[str]) -> bool | str:
    """For a loader's ``validate_inputs``: True when ``name`` is one of ``choices`` (the combo's options) and the
    file is there; else the pack's message (folder, where to get the file).

    A loader names its file combo in ``validate_inputs`` so that the host skips its own combo check for that
    input (ComfyUI >= 0.33 checks V3 combo values and would answer first with a bare "Value not in list"); this
    check takes its place on every host. A value linked from another node (not a str here) is checked when
    the node runs.
    """
    if not isinstance(name, str):
        return True
    if name in choices:
        _sync(key)
        if folder_paths.get_full_path(key, name) is not None:
            return True
    return missing_model_message(key, name)


def writable_folder(key: str) -> str:
    """The first folder of a model folder key, created if needed: where the pack writes its files."""
    _sync(key)
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


# The weighting a batch of weighted views was made with travels on the IMAGE tensor itself (ComfyUI passes an output
# object to the nodes downstream as it is), so BoLID Body-ID Encode can compare it with the VAE's recipe. A node in
# between that makes a new tensor drops it; Encode then says the weighting is not known.
_WEIGHTING_ATTR = "bolid_weighting"


def tag_weighting(image: torch.Tensor, **settings) -> torch.Tensor:
    """``image`` with the weighting settings (sigma, sigma_mode, alpha) it was made with attached."""
    setattr(image, _WEIGHTING_ATTR, dict(settings))
    return image


def weighting_of(image: torch.Tensor) -> dict | None:
    """The weighting settings attached by ``tag_weighting``, or None."""
    return getattr(image, _WEIGHTING_ATTR, None)
