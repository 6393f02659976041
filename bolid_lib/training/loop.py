"""The tools both trainers (adapter.py, body_vae.py) share: settings, learning rate, optimizer state, checkpoints.

- Settings: a frozen config dataclass <-> dict, a YAML / JSON / TOML file, command-line flags (``--field-name``).
- Optimizer: ``adamw`` (fused where the device has it).
- Learning rate: ``Schedule``, a pure function of the step (linear warm-up, then constant or cosine decay), so a
  resume needs no scheduler state.
- Optimizer state: flat safetensors tensors + JSON scalars under one key scheme, ``optim.<param id>.<name>``
  (version 2 of both checkpoint formats). Version 1 files used ``state.`` (adapter) or bare ``<id>.<name>``
  scalars (Body-ID VAE); they still load.
- Checkpoints: one layout for both trainers (``CHECKPOINTS``): a folder ``step_<N>/`` holding the weights (the
  trainer's own file, loadable as it is), ``optimizer.safetensors`` and ``state.json`` (written last: the folder
  counts once it exists). ``save_checkpoint`` writes one whole under a temporary name, then renames it;
  ``CheckpointLayout`` finds the newest, prunes, resolves ``resume``.
- Weights: ``load_weights`` checks keys and shapes before loading and names what does not match.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BoLIDError
from .. import settings
from ..files import read_format, read_safetensors, save_safetensors_atomic, weights_mismatch

OPT_PREFIX = "optim."
LEGACY_OPT_PREFIXES = ("state.",)          # version 1 of the adapter's optimizer.safetensors


# --- settings -------------------------------------------------------------------------------------

config_to_dict = settings.to_dict


def config_from_dict(cls, d: dict, source: str = "settings"):
    """``cls(**d)``, refusing keys that are not fields; lists of tuple-typed fields (JSON, YAML) become tuples."""
    return settings.from_dict(cls, d, source)


def read_config_file(path: str | os.PathLike, cls) -> dict:
    """The settings of a YAML, JSON or TOML file, checked against the fields of ``cls``."""
    p = Path(path)
    if not p.is_file():
        raise BoLIDError(f"config file not found: {path}")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml
        d = yaml.safe_load(text) or {}
    elif suffix == ".json":
        d = json.loads(text)
    elif suffix == ".toml":
        import tomllib
        d = tomllib.loads(text)
    else:
        raise BoLIDError(f"config file {p.name}: use .yaml, .json or .toml")
    if not isinstance(d, dict):
        raise BoLIDError(f"config file {p.name} must hold a mapping of settings")
    settings.check_fields(cls, d, f"config file {p.name}")
    return d


def _flag_type(tp):
    """(argparse type, nargs) of a dataclass field type."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _flag_type(args[0])
    if origin is tuple:
        return args[0], len(args)
    if tp is bool:
        return (lambda s: s.lower() in ("1", "true", "yes", "on")), None
    return tp, None


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` (``--field-name``, default None: unset flags leave the file's or the field's)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, nargs = _flag_type(hints[f.name])
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=tp, nargs=nargs, default=None,
                            help=f"(default {f.default!r})")


def flag_values(args: argparse.Namespace, cls, base: dict | None = None) -> dict:
    """``base`` (e.g. a config file's settings) updated with every flag of ``add_config_flags`` that was given."""
    d = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            d[f.name] = v
    return d


# --- learning rate --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """Learning rate at a step: linear warm-up lr·(step + 1)/warmup over the first ``warmup`` steps, then ``lr``
    (decay "constant") or a cosine from lr down to min_ratio·lr at step ``total`` (decay "cosine")."""

    lr: float
    warmup: int = 0
    decay: str = "constant"
    total: int = 0
    min_ratio: float = 1.0

    def __post_init__(self):
        if self.decay not in ("constant", "cosine"):
            raise BoLIDError(f"learning-rate decay must be 'constant' or 'cosine'; got {self.decay!r}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.decay == "constant":
            return self.lr
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.lr * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def adamw(params, **kw) -> torch.optim.AdamW:
    """AdamW, fused where this torch has a fused kernel for the parameters' device (CUDA, and CPU since torch 2.4),
    else the default implementation. The saved state is the same either way, so a checkpoint of one resumes in the
    other. On one CPU thread the world base's update (57 M parameters) takes 0.04 s fused against 0.15 s."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kw)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- optimizer state ------------------------------------------------------------------------------

def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, info): state tensors as ``optim.<param id>.<name>``; info = {"param_groups", "scalars"} (JSON),
    scalars under the same keys."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            (tensors if isinstance(v, torch.Tensor) else scalars)[f"{OPT_PREFIX}{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _param_key(key: str, bare_ok: bool) -> tuple[int, str] | None:
    """(param id, name) of a flat optimizer key, or None when the key is not one."""
    for prefix in (OPT_PREFIX, *LEGACY_OPT_PREFIXES):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        if not bare_ok:
            return None
    pid, _, name = key.partition(".")
    return (int(pid), name) if pid.isdigit() and name else None


def unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    """The optimizer state dict of ``flatten_optimizer``'s output; ``tensors`` may hold other keys (skipped).
    Reads the version 1 keys too: ``state.<id>.<name>`` (adapter), bare ``<id>.<name>`` scalars (Body-ID VAE)."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        got = _param_key(key, bare_ok=False)
        if got is not None:
            state.setdefault(got[0], {})[got[1]] = v
    for key, v in info["scalars"].items():
        got = _param_key(key, bare_ok=True)
        if got is None:
            raise BoLIDError(f"optimizer state key {key!r} is not <param id>.<name>: the checkpoint is damaged")
        state.setdefault(got[0], {})[got[1]] = v
    return {"state": state, "param_groups": info["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """``optimizer.load_state_dict``, giving back the tuples JSON turned into lists (AdamW's betas), so the restored
    state dict equals the saved one."""
    groups = [{k: tuple(v) if isinstance(v, list) and isinstance(live.get(k), tuple) else v for k, v in g.items()}
              for g, live in zip(state_dict["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({"state": state_dict["state"], "param_groups": groups})


# --- weights --------------------------------------------------------------------------------------

def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, *, partial: bool = False) -> None:
    """Copy ``state`` into ``module`` after checking its keys and shapes; a mismatch raises naming the first few
    missing, unexpected and wrongly shaped keys. partial: keys of ``module`` absent from ``state`` keep their values."""
    details = weights_mismatch(module.state_dict(), state, partial)
    if details:
        raise BoLIDError(f"{source} does not fit this model: {details}; use weights made with the same settings")
    module.load_state_dict(state, strict=not partial)


# --- checkpoints ----------------------------------------------------------------------------------

OPT_FORMAT = "bolid.optimizer"
OPT_VERSION = 2                      # 2: optim.<id>.<name> keys; 1: state.<id>.<name> (still read)
OPT_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class CheckpointLayout:
    """Checkpoints are folders ``step_<N zero-padded to digits>`` that count once their ``marker`` file, written
    last, exists (any padding is read)."""

    digits: int = 7
    marker: str = STATE_FILE

    def path(self, folder: str | os.PathLike, step: int) -> Path:
        return Path(folder) / f"step_{step:0{self.digits}d}"

    def is_checkpoint(self, p: Path) -> bool:
        return (Path(p) / self.marker).is_file()

    def all(self, folder: str | os.PathLike) -> list[Path]:
        """The complete checkpoints in ``folder``, oldest step first."""
        found = []
        for p in Path(folder).glob("step_*"):
            m = re.fullmatch(r"step_(\d+)", p.name)
            if m and self.is_checkpoint(p):
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def latest(self, folder: str | os.PathLike) -> Path | None:
        found = self.all(folder)
        return found[-1] if found else None

    def remove(self, p: Path) -> None:
        """Delete checkpoint ``p``: its marker first, so one whose deletion is stopped half-way never counts as
        complete again."""
        (p / self.marker).unlink(missing_ok=True)
        shutil.rmtree(p)

    def prune(self, folder: str | os.PathLike, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` complete checkpoints in ``folder`` (``keep`` <= 0: delete none);
        returns what was deleted."""
        if keep <= 0:
            return []
        old = self.all(folder)[:-keep]
        for p in old:
            self.remove(p)
        return old

    def resolve(self, resume: str | os.PathLike | None, folder: str | os.PathLike | None) -> Path | None:
        """What to resume from. None: start fresh; "latest": the newest checkpoint in ``folder`` (None while there
        is none); a checkpoint: that one; a folder of checkpoints: its newest (an error when it holds none)."""
        if not resume:
            return None
        if str(resume) == "latest":
            return self.latest(folder) if folder is not None else None
        p = Path(resume)
        if self.is_checkpoint(p):
            return p
        found = self.latest(p) if p.is_dir() else None
        if found is None:
            raise BoLIDError(f"resume: no checkpoint (a step_* folder with {self.marker}) at {p}: point it at a "
                             "checkpoint or a folder of them")
        return found


CHECKPOINTS = CheckpointLayout()


def save_checkpoint(folder: str | os.PathLike, step: int, write_weights, optimizer: torch.optim.Optimizer,
                    state: dict) -> Path:
    """Write checkpoint ``folder`` (``CHECKPOINTS.path(...)``): ``write_weights(tmp_folder)`` writes the trainer's
    weights file into it, then ``optimizer.safetensors`` and ``state.json`` ({"step": step, **state}, last). It is
    written whole under ``<name>.partial`` and then renamed, so a step folder that exists is never rewritten in
    place and a crash leaves either the old complete checkpoint or none that counts."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)                                   # left by a crash: never counted, never resumed
    tmp.mkdir(parents=True)
    write_weights(tmp)
    tensors, info = flatten_optimizer(optimizer)
    save_safetensors_atomic(tensors, tmp / OPT_FILE, fmt=OPT_FORMAT, version=OPT_VERSION, config=info)
    write_json_atomic(tmp / CHECKPOINTS.marker, {"step": step, **state})
    if folder.exists():
        CHECKPOINTS.remove(folder)      # loses its marker first: it never counts as complete half deleted
    os.replace(tmp, folder)
    return folder


def read_checkpoint_state(folder: str | os.PathLike) -> tuple[dict, dict]:
    """(optimizer state dict, state.json) of checkpoint ``folder``; restore the former with ``restore_optimizer``."""
    folder = Path(folder)
    tensors, meta = read_safetensors(folder / OPT_FILE)
    _, info = read_format(meta, folder / OPT_FILE, fmt=OPT_FORMAT, max_version=OPT_VERSION)
    return unflatten_optimizer(tensors, info), json.loads((folder / CHECKPOINTS.marker).read_text())


def write_json_atomic(path: str | os.PathLike, data: dict, indent: int = 1) -> Path:
    """``path`` holds ``data`` as JSON, written through a temporary file so it is never half written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)
    return path


def guard_run_folder(folder: str | os.PathLike, resume, resumed_from: Path | None, *,
                     overwrite: bool = False, outputs: tuple[str | os.PathLike, ...] = ()) -> None:
    """Refuse to start a run in a folder that holds another run's checkpoints or outputs (issue 27).

    A fresh run there would prune the other run's checkpoints by step number, overwrite its final file, append to
    its log, and a later ``resume: latest`` could pick up either run's weights. Allowed: the folder is empty of
    them; ``resume`` is "latest" (the folder is declared this run's own); the run resumes from a checkpoint in
    this folder; ``overwrite`` (the other run's checkpoints and ``outputs`` are deleted first).
    """
    folder = Path(folder)
    if str(resume) == "latest":
        return
    if resumed_from is not None and Path(resumed_from).resolve().parent == folder.resolve():
        return
    others = [*(CHECKPOINTS.all(folder) if folder.is_dir() else []),
              *(sorted(folder.glob("step_*.safetensors")) if folder.is_dir() else []),   # the VAE's old single-file layout
              *(Path(o) for o in outputs if Path(o).exists())]
    if not others:
        return
    if overwrite:
        for p in others:
            if CHECKPOINTS.is_checkpoint(p):
                CHECKPOINTS.remove(p)
            elif p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        return
    names = ", ".join(p.name for p in others[:4]) + (" ..." if len(others) > 4 else "")
    raise BoLIDError(f"{folder} holds another training run ({names}): resume it (resume 'latest'), write to another "
                     "folder, or overwrite it (overwrite: true / --overwrite deletes that run's checkpoints and files)")
