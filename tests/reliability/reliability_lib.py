"""Shared machinery of the reliability tier: the catalogue's case format, the guards run around every case, and
the bad files and images the cases feed to the nodes.

Guards (``Guard``): before and after a case, every file under the ComfyUI base directory (models, input,
output, temp, user) and under a sentinel folder outside it is hashed; a case may add files only where its
``writes`` globs allow (the temp folder always: previews), and may change or delete none. The source MODEL
given to the patch is fingerprinted (model_options deep-equal, weight patches, every parameter's storage,
version counter and checksum) and, for cases that use it, its UNet output on a fixed input is compared bit for bit.

Case format (``Case``): an id, a prompt builder (Env -> API prompt), the files it needs (keys of ``BadFiles``),
and the expected outcome: the class_type of the node that must fail, a regex for what was wrong and one for the
fix; or ``node=None`` for inputs the pack must accept (with an optional extra check on the result). Where hosts
differ in what the user sees, ``on_combo_checking_host`` states the other host's outcome (``HostView``).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# --- the case format ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostView:
    """What the user sees on a host that checks V3 combo values itself (ComfyUI 0.33 does, 0.3.64 does not).

    Such a host refuses a value that is not among a combo's options at validation, in its own words ("Value not
    in list: <input>: '<value>' not in [<options>]"), before the node can speak, unless the node names that
    input in its ``validate_inputs``. The options it lists are the fix; ``what``/``fix`` state it.
    """

    stage: str
    what: str
    fix: str


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    prompt: Env -> API-format prompt. node: class_type expected to report the error (None: the prompt must run).
    what / fix: regexes (case-insensitive) the error text must match: what was wrong, and what to do.
    stage: "validation" (validate_prompt refuses it), "execution" (a node raises) or "any".
    files: keys of BadFiles placed in the models/input folders for this case. writes: globs (relative to the
    base directory) where new files are allowed besides temp/**. model: check the source MODEL's output after.
    check: extra assertions on a successful RunResult. finding: a known shortfall of the node (the case is
    an expected failure until the node is fixed; strict, so a fix is noticed).
    """

    id: str
    prompt: Callable
    node: str | None
    what: str = ""
    fix: str = ""
    stage: str = "any"
    files: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    model: bool = False
    check: Callable | None = None
    finding: str | None = None
    note: str = ""
    setup: Callable | None = None   # env -> undo callable: changes made for this case only (before the snapshot)
    on_combo_checking_host: HostView | None = None  # the outcome on a host that checks combo values (else as above)

    def expected(self, host_checks_combos: bool) -> tuple[str, str, str]:
        """(stage, what, fix) the user sees on this host."""
        view = self.on_combo_checking_host
        if host_checks_combos and view is not None:
            return view.stage, view.what, view.fix
        return self.stage, self.what, self.fix


@dataclass
class Outcome:
    """What a run said, reduced to what the catalogue asserts on."""

    ok: bool
    stage: str                      # "validation", "execution" or "ok"
    node_types: list[str]           # class_types of the nodes that reported an error
    text: str                       # every message, joined
    exception_types: list[str]      # full type names of exceptions raised during execution
    tracebacks: str = ""


def _node_error_text(node_errors: dict) -> str:
    parts = []
    for ne in (node_errors or {}).values():
        for e in ne.get("errors", []):
            parts += [str(e.get("message", "")), str(e.get("details", ""))]
    return "\n".join(p for p in parts if p)


def outcome_of(result, prompt: dict, node_errors: dict | None = None) -> Outcome:
    """Reduce a hostlib.RunResult to the failing node types and messages.

    node_errors: validate_prompt's per-node errors. ComfyUI still runs the output nodes that validated when
    others did not (partial execution: the queue answers 200 with node_errors, and the UI marks the nodes), so
    a refused node can sit beside a run that "succeeded"; such a case counts as a validation error.
    """
    if node_errors:
        types = [ne.get("class_type") or prompt.get(nid, {}).get("class_type") for nid, ne in node_errors.items()]
        text = _node_error_text(node_errors) + ("\n" + result.error_text() if not result.ok else "")
        return Outcome(False, "validation", [t for t in types if t], text, [])
    if result.ok:
        return Outcome(True, "ok", [], "", [])
    if result.error is not None or result.node_errors:
        types = [ne.get("class_type") or prompt.get(nid, {}).get("class_type") for nid, ne in (result.node_errors or {}).items()]
        return Outcome(False, "validation", [t for t in types if t], result.error_text(), [])
    types, exc, tb = [], [], ""
    for event, data in result.messages:
        if event == "execution_error":
            types.append(data.get("node_type"))
            exc.append(str(data.get("exception_type", "")))
            tb += "".join(data.get("traceback") or [])
    return Outcome(False, "execution", [t for t in types if t], result.error_text(), exc, tb)


def history_outcome(entry: dict, prompt: dict) -> Outcome:
    """The same reduction for a server's GET /history/<id> entry (soak test)."""
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return Outcome(True, "ok", [], "", [])
    types, exc, parts, tb = [], [], [], ""
    for event, data in status.get("messages", []):
        if event == "execution_error":
            types.append(data.get("node_type"))
            exc.append(str(data.get("exception_type", "")))
            parts += [str(data.get("exception_type", "")), str(data.get("exception_message", ""))]
            tb += "".join(data.get("traceback") or [])
    return Outcome(False, "execution", types, "\n".join(parts), exc, tb)


def check_outcome(case: Case, out: Outcome, host_checks_combos: bool = False) -> list[str]:
    """Problems of an outcome against the case's expectation on this host (empty: as expected)."""
    problems = []
    stage, what, fix = case.expected(host_checks_combos)
    if case.node is None:
        if not out.ok:
            problems.append(f"expected success, got a {out.stage} error from {out.node_types}:\n{out.text}")
        return problems
    if out.ok:
        return [f"expected an error from {case.node}, but the prompt ran"]
    if stage != "any" and out.stage != stage:
        problems.append(f"expected a {stage} error, got a {out.stage} error")
    if case.node not in out.node_types:
        problems.append(f"expected the error on {case.node}, got it on {out.node_types}")
    for label, rx in (("what was wrong", what), ("the fix", fix)):
        if rx and not re.search(rx, out.text, re.I | re.S):
            problems.append(f"the message does not say {label} (/{rx}/):\n{out.text}")
    raw = [t for t in out.exception_types if not t.endswith("BoLIDError")]
    if out.stage == "execution" and raw:
        problems.append(f"a raw exception reached the user ({raw}), not a BoLIDError:\n{out.text}")
    return problems


# --- the file guard -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_HASHES: dict[tuple, str] = {}


def _hash_cached(p: Path, st: os.stat_result) -> str:
    """sha256 of a file, re-read whenever its inode, size, mtime or ctime moved (ctime cannot be set back by code)."""
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASHES:
        _HASHES[key] = _sha256(p)
    return _HASHES[key]


def snapshot(roots: dict[str, Path]) -> dict[str, tuple[int, str]]:
    """label/relative path -> (size, sha256) of every regular file under each root (symlinks not followed)."""
    out = {}
    for label, root in roots.items():
        root = Path(root)
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_symlink() or not p.is_file():
                    continue
                rel = f"{label}/{p.relative_to(root).as_posix()}"
                try:
                    st = p.stat()
                    out[rel] = (st.st_size, _hash_cached(p, st))
                except OSError as e:  # an unreadable file the case made on purpose
                    out[rel] = (-1, f"unreadable: {e.strerror}")
    return out


@dataclass
class FileDiff:
    new_outside: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    new_allowed: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.new_outside:
            out.append(f"files written outside their folder: {self.new_outside}")
        if self.changed:
            out.append(f"existing files changed: {self.changed}")
        if self.deleted:
            out.append(f"existing files deleted: {self.deleted}")
        return out


def diff(before: dict, after: dict, allowed: tuple[str, ...]) -> FileDiff:
    d = FileDiff()
    for rel in sorted(set(after) - set(before)):
        (d.new_allowed if any(fnmatch.fnmatch(rel, g) for g in allowed) else d.new_outside).append(rel)
    for rel in sorted(set(before) & set(after)):
        if before[rel] != after[rel]:
            d.changed.append(rel)
    d.deleted = sorted(set(before) - set(after))
    return d


# --- the model guard ------------------------------------------------------------------------------


def same(a, b) -> bool:
    """Deep equality for model_options: dicts, sequences, tensors by value, callables by identity."""
    import torch

    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if callable(a) or hasattr(a, "__dict__"):
        return a is b
    return a == b


def parameter_fingerprint(module) -> dict[str, tuple]:
    """name -> (storage pointer, version counter, shape, dtype, sha256 of the bytes) of every parameter and buffer.

    A content hash, not a float sum: sums depend on the reduction order, which changes with the thread count.
    """
    import torch

    out = {}
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
            out[name] = (t.data_ptr(), t._version, tuple(t.shape), t.dtype, hashlib.sha256(data.tobytes()).hexdigest())
    return out


class ModelGuard:
    """Remembers a ModelPatcher's state and tells what changed: options, patches, weights, output."""

    def __init__(self, patcher, cond_tokens: int = 2):
        import torch

        self.patcher = patcher
        gen = torch.Generator().manual_seed(1234)
        self.x = torch.randn(1, 4, 8, 8, generator=gen)
        self.t = torch.tensor([3.0])
        self.c = torch.randn(1, cond_tokens, 2048, generator=gen)
        self.y = torch.randn(1, 2816, generator=gen)
        self.options = copy.deepcopy(patcher.model_options)
        self.patches = {k: list(v) for k, v in patcher.patches.items()}
        self.object_patches = dict(patcher.object_patches)
        self.params = parameter_fingerprint(patcher.model)
        self._output = None

    def output(self):
        """The source model's UNet output on the fixed input, through its own model_options (patches included)."""
        import torch

        topts = self.patcher.model_options.get("transformer_options", {})
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # bit-exact comparisons need one reduction order (other code changes the count)
        try:
            with torch.inference_mode():
                return self.patcher.model.apply_model(self.x, self.t, c_crossattn=self.c, y=self.y,
                                                      transformer_options=copy.copy(topts)).clone()
        finally:
            torch.set_num_threads(threads)

    def reference_output(self):
        if self._output is None:
            self._output = self.output()
        return self._output

    def problems(self, *, with_output: bool) -> list[str]:
        import torch

        p = self.patcher
        out = []
        if not same(self.options, p.model_options):
            out.append(f"the source model's model_options changed: {self.options!r} -> {p.model_options!r}")
        if {k: list(v) for k, v in p.patches.items()} != self.patches:
            out.append("the source model's weight patches changed")
        if dict(p.object_patches) != self.object_patches:
            out.append("the source model's object patches changed")
        now = parameter_fingerprint(p.model)
        changed = [k for k in self.params if now.get(k) != self.params[k]]
        if changed or set(now) != set(self.params):
            out.append(f"the source model's parameters changed: {changed[:5]}")
        if with_output:
            ref = self.reference_output()
            got = self.output()
            if not torch.equal(ref, got):
                out.append(f"the source model's output changed (max abs diff {float((ref - got).abs().max()):.3g})")
        return out


# --- images ---------------------------------------------------------------------------------------


def write_png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0, kind: str = "noise") -> Path:
    """A small test picture: kind noise (random pixels), flat (one grey), person (a stick figure on grey)."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    if kind == "noise":
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
    else:
        img = Image.new("RGB", (w, h), (128, 128, 128))
        if kind == "person":
            d = ImageDraw.Draw(img)
            cx = w // 2
            d.ellipse([cx - w // 12, h // 10, cx + w // 12, h // 10 + w // 6], fill=(220, 180, 150))
            d.rectangle([cx - w // 10, h // 4, cx + w // 10, h * 6 // 10], fill=(40, 60, 160))
            d.line([cx - w // 16, h * 6 // 10, cx - w // 8, h * 9 // 10], fill=(30, 30, 30), width=max(1, w // 30))
            d.line([cx + w // 16, h * 6 // 10, cx + w // 8, h * 9 // 10], fill=(30, 30, 30), width=max(1, w // 30))
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# --- bad files ------------------------------------------------------------------------------------


class Canary:
    """A pickle payload that creates ``marker`` when unpickled: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_canary_pickle(path: Path, marker: Path) -> Path:
    """A torch.save zip whose unpickling creates ``marker`` (and does nothing else)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Canary(marker), "note": "BoLID reliability test: must never be unpickled"}, str(path))
    return path


def write_random_safetensors(path: Path, seed: int = 0) -> Path:
    """A valid safetensors file of no model kind: a few random tensors, no metadata."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.layer0.weight": torch.randn(16, 8, generator=gen), "decoder.bias": torch.randn(8, generator=gen)}, str(path))
    return path


def write_truncated(src: Path, path: Path, fraction: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


def write_zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_as(path: Path, text: str = "not a model\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pose_keypoint_json(width: int, height: int, points: dict[int, tuple[float, float]]) -> str:
    """A one-frame POSE_KEYPOINT (OpenPose-18) with the given OpenPose points (index -> x, y) visible."""
    flat = [0.0] * 54
    for i, (x, y) in points.items():
        flat[3 * i: 3 * i + 3] = [float(x), float(y), 1.0]
    return json.dumps([{"people": [{"pose_keypoints_2d": flat}], "canvas_width": width, "canvas_height": height}])


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2 ** 20
