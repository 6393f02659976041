"""Safe file handling shared by every format the pack writes or reads.

- Names from widgets are resolved inside their folder and never escape it.
- Every file is safetensors with a format name and version in its metadata.
- Writes are atomic (temporary file + rename), so a failure never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import BoLIDError

FORMAT_KEY = "bolid.format"
VERSION_KEY = "bolid.version"
CONFIG_KEY = "bolid.config"
# Suffixes of pickle-based checkpoints (torch.save, .bin, .ckpt ...): opening one can run code, so every reader of
# model files refuses them by name before opening (the pose loader vets its .pt separately, see method/pose.py).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Characters refused by at least one common filesystem (Windows is the strictest), plus controls.
_BAD_NAME_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def resolve_inside(folder: str | os.PathLike, name: str, *, suffix: str | None = None) -> Path:
    """The path of ``name`` inside ``folder``, refusing anything that would land outside it.

    ``name`` may hold sub-folders ("alice/front"); it may not be absolute, contain ``..``,
    characters a filesystem refuses, or be empty. ``suffix`` (".safetensors") is added when missing.
    """
    if not isinstance(name, str) or not name.strip():
        raise BoLIDError("the file name is empty: type a name such as 'alice'")
    raw = name.strip().replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise BoLIDError(f"the file name {name!r} is an absolute path: give a name relative to {folder}, such as 'alice'")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise BoLIDError(f"the file name {name!r} would leave the folder {folder}: remove '..' from it")
    for p in parts:
        if _BAD_NAME_CHARS.search(p):
            raise BoLIDError(f"the file name {name!r} has a character filesystems refuse (one of <>:\"|?* or a control character): remove it")
        if p.split(".")[0].upper() in _WINDOWS_RESERVED or p.endswith((" ", ".")):
            raise BoLIDError(f"the file name {name!r} has a part ({p!r}) that Windows refuses: choose another name")
    if suffix and not parts[-1].lower().endswith(suffix.lower()):
        parts[-1] += suffix
    base = Path(folder).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        # A symlink inside the folder pointing outside it.
        raise BoLIDError(f"the file name {name!r} resolves outside {base}: choose a plain name")
    return path


def next_free_path(path: Path) -> Path:
    """``path`` if free, else ``stem_00001.ext``, ``stem_00002.ext`` ... (ComfyUI's counter style)."""
    if not path.exists():
        return path
    stem, ext = path.stem, path.suffix
    m = re.match(r"^(.*)_(\d{5})$", stem)
    if m:
        stem = m.group(1)
    for i in range(1, 100000):
        candidate = path.with_name(f"{stem}_{i:05d}{ext}")
        if not candidate.exists():
            return candidate
    raise BoLIDError(f"no free name left next to {path}: choose another name")


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike, *, fmt: str, version: int,
                            config: dict | None = None, metadata: dict[str, str] | None = None,
                            overwrite: bool = True) -> Path:
    """Write tensors with format metadata to ``path`` atomically; never leaves a partial file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BoLIDError(f"{path.name} exists already and overwrite is off: choose another name or turn overwrite on")
    meta = {FORMAT_KEY: fmt, VERSION_KEY: str(version)}
    if config is not None:
        meta[CONFIG_KEY] = json.dumps(config, sort_keys=True)
    for k, v in (metadata or {}).items():
        meta[k] = str(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        if not overwrite and path.exists():
            raise BoLIDError(f"{path.name} appeared while saving and overwrite is off: choose another name")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def describe_safetensors(path: str | os.PathLike) -> str:
    """A short human description of a safetensors file: its format tag or its first keys."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        return f"not a readable safetensors file ({e})"
    if FORMAT_KEY in meta:
        return f"a {meta[FORMAT_KEY]} file (version {meta.get(VERSION_KEY)})"
    shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
    return f"a safetensors file with {len(keys)} tensors ({shown or 'none'})"


def read_safetensors(path: str | os.PathLike, *, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise BoLIDError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise BoLIDError(f"{path.name} is empty (0 bytes): the download or copy failed; get the file again")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BoLIDError(f"{path.name} is a pickle-based file, which can run code when loaded; BoLID reads only .safetensors: convert it or get the .safetensors version")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BoLIDError(f"{path.name} is not a valid safetensors file ({e}); it may be truncated or of another format: get the file again") from e
    return tensors, meta


def read_format(meta: dict[str, str], path: str | os.PathLike, *, fmt: str, max_version: int) -> tuple[int, dict]:
    """Check the format tag of loaded metadata; return (version, config)."""
    name = Path(path).name
    got = meta.get(FORMAT_KEY)
    if got != fmt:
        raise BoLIDError(f"{name} is not a {fmt} file: {'it is a ' + got + ' file' if got else 'it has no BoLID format tag'}; pick a {fmt} file")
    try:
        version = int(meta.get(VERSION_KEY, "0"))
    except ValueError:
        raise BoLIDError(f"{name} has a malformed version tag {meta.get(VERSION_KEY)!r}") from None
    if version > max_version:
        raise BoLIDError(f"{name} is {fmt} version {version}; this ComfyUI-BoLID reads up to version {max_version}: update the pack")
    config = json.loads(meta[CONFIG_KEY]) if CONFIG_KEY in meta else {}
    return version, config


def weights_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], partial: bool = False) -> str:
    """What keeps ``state`` from loading into a module whose ``state_dict()`` is ``expected``: the first few missing,
    unexpected and wrongly shaped keys, or "" when it fits. partial: keys absent from ``state`` are allowed."""
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    missing = [] if partial else sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = sorted(k for k in set(shapes) & set(state) if tuple(state[k].shape) != shapes[k])

    def few(ks):
        return ", ".join(ks[:3]) + (" ..." if len(ks) > 3 else "")
    return "; ".join(p for p in (
        f"{len(missing)} missing ({few(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
        f"{len(wrong)} of the wrong shape ({few([f'{k} {tuple(state[k].shape)} != {shapes[k]}' for k in wrong])})" if wrong else "",
    ) if p)
