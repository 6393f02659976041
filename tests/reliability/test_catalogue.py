"""The bad-input catalogue (catalogue.py) run through ComfyUI's real validate_prompt + PromptExecutor.

For every case: the expected node reports the error, its text says what was wrong and the fix, no raw
exception reaches the user, nothing is written outside its folder, no existing file changes, the canary
pickles are never unpickled, and the source MODEL is unchanged (options, patches, weights; its output bit for
bit for the cases that patch it).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import catalogue
import testonly_nodes
from reliability_lib import (ModelGuard, check_outcome, diff, outcome_of, snapshot, write_canary_pickle, write_png,
                             write_random_safetensors, write_text_as, write_truncated, write_zero)

pytestmark = pytest.mark.host

PACK = Path(__file__).resolve().parents[2]
if str(PACK) not in sys.path:
    sys.path.insert(0, str(PACK))


@dataclass
class Env:
    comfy: object
    base_dir: Path
    models_dir: Path
    input_dir: Path
    sentinel: Path
    guard: ModelGuard
    roots: dict
    checks_combos: bool    # the host refuses V3 combo values outside the options itself (ComfyUI 0.33: yes)


def host_checks_v3_combos(comfy) -> bool:
    """Ask the host, not its version: validate a V3 node's combo with a value outside its options."""
    probe = testonly_nodes.combo_probe_node()
    mappings = comfy.nodes.NODE_CLASS_MAPPINGS
    mappings[probe.__name__] = probe
    try:
        prompt = {"1": {"class_type": probe.__name__, "inputs": {"choice": "zzz"}}}
        _, errors, _ = asyncio.run(comfy.execution.validate_inputs("bolid-probe", prompt, "1", {}))
    finally:
        mappings.pop(probe.__name__, None)
    return any(e.get("type") == "value_not_in_list" for e in errors)


def _make_test_models():
    """tests/tools/make_test_models.py, loaded by path (ComfyUI's own ``tests`` package shadows ours on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bolid_make_test_models", PACK / "tests" / "tools" / "make_test_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _place_files(comfy, yolo_pose_pt: Path, yolo_detect_pt: Path, sentinel: Path) -> list[Path]:
    """Every file the catalogue needs, under the booted ComfyUI's models and input folders. Returns what to remove."""
    import torch

    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae
    from bolid_lib.method.embedding import FORMAT as BODY_FORMAT, VERSION as BODY_VERSION, BodyEmbedding, save_body
    from bolid_lib.files import save_safetensors_atomic
    tools = _make_test_models()
    save_bolid_adapter, save_ip_adapter, sd15_ip_adapter_state = tools.save_bolid_adapter, tools.save_ip_adapter, tools.sd15_ip_adapter_state
    from safetensors.torch import save_file

    m, i = comfy.models_dir, comfy.input_dir
    placed: list[Path] = []

    def put(path: Path) -> Path:
        placed.append(path)
        return path

    # pose models
    ul = m / "ultralytics"
    (ul / "pose").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(yolo_pose_pt, put(ul / "pose" / "rel_pose.pt"))
    shutil.copyfile(yolo_detect_pt, put(ul / "rel_detect.pt"))
    torch.save({"weights": torch.zeros(3)}, str(put(ul / "rel_tensors.pt")))
    write_truncated(yolo_pose_pt, put(ul / "rel_truncated.pt"))
    write_zero(put(ul / "rel_zero.pt"))
    write_text_as(put(ul / "rel_text.pt"))
    write_canary_pickle(put(ul / "rel_canary.pt"), sentinel / "CANARY_FIRED_pose_pt")
    # adapters (reduced widths (64, 128): those of the test UNet)
    bolid, ipa, bodies = m / "bolid", m / "ipadapter", m / "bolid" / "bodies"
    for d in (bolid, ipa, bodies):
        d.mkdir(parents=True, exist_ok=True)
    small = dict(widths=(64, 128), body_dim=32, body_tokens=2, body_hidden=32)
    save_bolid_adapter(put(bolid / "rel_adapter_body.safetensors"), ref_kind=None, **small)
    save_bolid_adapter(put(bolid / "rel_adapter_both.safetensors"), ref_kind="plain", clip_embed_dim=1024, **small)
    save_bolid_adapter(put(bolid / "rel_adapter_narrow.safetensors"), ref_kind=None, **{**small, "widths": (32, 64)})
    save_ip_adapter(put(ipa / "rel_ip_plain_h.safetensors"), "plain", "h", widths=(64, 128))
    save_file(sd15_ip_adapter_state(), str(put(ipa / "rel_sd15.safetensors")))
    write_canary_pickle(put(ipa / "rel_canary.bin"), sentinel / "CANARY_FIRED_ipadapter_bin")
    write_random_safetensors(put(bolid / "rel_random.safetensors"))
    write_truncated(bolid / "rel_adapter_body.safetensors", put(bolid / "rel_truncated.safetensors"))
    write_zero(put(bolid / "rel_zero.safetensors"))
    # Body-ID VAEs and Body-IDs
    cfg = BodyVAEConfig(input_size=32, latent_dim=32, widths=(8, 16), feature_dim=16, pool_size=2, groups=8)
    torch.manual_seed(0)
    vae = BodyVAE(cfg)
    save_body_vae(vae, put(bolid / "rel_body_vae.safetensors"))
    torch.manual_seed(1)
    other = BodyVAE(cfg)
    gen = torch.Generator().manual_seed(0)

    def body(dim, fingerprint):
        return BodyEmbedding(torch.randn(dim, generator=gen), torch.zeros(dim), {"vae_fingerprint": fingerprint, "views_used": 3})

    save_body(body(32, vae.fingerprint()), put(bodies / "rel_body32.safetensors"), overwrite=True)
    save_body(body(32, other.fingerprint()), put(bodies / "rel_body32_other_vae.safetensors"), overwrite=True)
    save_body(body(16, vae.fingerprint()), put(bodies / "rel_body16.safetensors"), overwrite=True)
    save_body(body(32, vae.fingerprint()), put(bodies / "rel_exists.safetensors"), overwrite=True)
    save_body(body(32, vae.fingerprint()), put(bolid / "rel_body_as_adapter.safetensors"), overwrite=True)
    meta = {"dim": 32, "vae_fingerprint": vae.fingerprint(), "views_used": 1, "views_skipped": 0, "mean_confidence": 1.0, "source": "encode"}
    for name, value in (("rel_body_nan", float("nan")), ("rel_body_inf", float("inf"))):
        mean = torch.zeros(32)
        mean[3] = value
        save_safetensors_atomic({"mean": mean, "logvar": torch.zeros(32)}, put(bodies / f"{name}.safetensors"),
                                fmt=BODY_FORMAT, version=BODY_VERSION, config=meta)
    write_truncated(bodies / "rel_body32.safetensors", put(bodies / "rel_body_truncated.safetensors"), 0.6)
    write_zero(put(bodies / "rel_body_zero.safetensors"))
    shutil.copyfile(bolid / "rel_adapter_body.safetensors", put(bodies / "rel_adapter_as_body.safetensors"))
    link = put(bodies / "rel_link_out")
    link.symlink_to(sentinel, target_is_directory=True)
    # images
    write_png(put(i / "rel_noise64.png"), (64, 64), seed=0)
    write_png(put(i / "rel_noise64b.png"), (64, 64), seed=1)
    write_png(put(i / "rel_noise128.png"), (128, 128), seed=2)
    write_png(put(i / "rel_wide96x64.png"), (96, 64), seed=3)
    write_png(put(i / "rel_grey64.png"), (64, 64), mode="L", seed=4)
    write_png(put(i / "rel_rgba64.png"), (64, 64), mode="RGBA", seed=5, kind="person")
    return placed


@pytest.fixture(scope="module")
def env(comfy, sdxl_small, yolo_pose_pt, yolo_detect_pt):
    sentinel = comfy.base_dir.parent / "rel_sentinel"
    sentinel.mkdir(exist_ok=True)
    (sentinel / "keep.txt").write_text("a file outside ComfyUI's folders that no case may touch\n")
    placed = _place_files(comfy, yolo_pose_pt, yolo_detect_pt, sentinel)
    testonly_nodes._CACHE["sdxl"] = sdxl_small
    mappings = comfy.nodes.NODE_CLASS_MAPPINGS
    added = [k for k in testonly_nodes.NODE_CLASS_MAPPINGS if k not in mappings]
    for k in added:
        mappings[k] = testonly_nodes.NODE_CLASS_MAPPINGS[k]
    roots = {"base": comfy.base_dir, "sentinel": sentinel}
    for sub in ("models", "input", "output", "temp", "user"):  # the real checkout must never be written
        roots[f"comfyui_{sub}"] = Path(comfy.root) / sub
    guard = ModelGuard(sdxl_small)
    guard.reference_output()
    checks = host_checks_v3_combos(comfy)
    print(f"\nthis host checks V3 combo values itself: {checks}")
    yield Env(comfy, comfy.base_dir, comfy.models_dir, comfy.input_dir, sentinel, guard, roots, checks)
    for k in added:
        mappings.pop(k, None)
    testonly_nodes._CACHE.pop("sdxl", None)
    for p in reversed(placed):
        if p.is_symlink() or p.is_file():
            p.unlink()
    for leftover in ("rel_exists_00001.safetensors",):
        (comfy.models_dir / "bolid" / "bodies" / leftover).unlink(missing_ok=True)
    shutil.rmtree(comfy.models_dir / "bolid" / "bodies" / "rel_team", ignore_errors=True)


def run_case(env: Env, case) -> list[str]:
    """Run one case inside the guards; the list of everything that went wrong (empty: the case passes)."""
    undo = case.setup(env) if case.setup else None
    try:
        before = snapshot(env.roots)
        prompt = case.prompt(env)
        # validate_prompt's node errors are kept even when other outputs still run (ComfyUI's partial execution)
        valid = asyncio.run(env.comfy.execution.validate_prompt(f"pre-{case.id}", prompt, None))
        result = env.comfy.run(prompt)
        after = snapshot(env.roots)
    finally:
        if undo:
            undo()
    out = outcome_of(result, prompt, node_errors=valid[3])
    problems = check_outcome(case, out, env.checks_combos)
    allowed = ("base/temp/*",) + tuple(f"base/{g}" for g in case.writes)
    problems += diff(before, after, allowed).problems()
    problems += [f"a canary pickle was unpickled: {p.name}" for p in env.sentinel.glob("CANARY_FIRED_*")]
    problems += env.guard.problems(with_output=case.model)
    if case.check and out.ok:
        try:
            case.check(result, prompt, env)
        except AssertionError as e:
            problems.append(f"check failed: {e}")
    print(f"\n[{case.id}] {out.stage}: {out.node_types} {out.text.strip()[:400]!r}")
    return problems


@pytest.mark.parametrize("case", catalogue.CASES, ids=[c.id for c in catalogue.CASES])
def test_catalogue_case(env, case):
    problems = run_case(env, case)
    for marker in env.sentinel.glob("CANARY_FIRED_*"):
        marker.unlink()  # reported above; do not let it fail the next cases
    if case.finding:
        if problems:
            pytest.xfail(f"known finding: {case.finding}\n" + "\n".join(problems))
        pytest.fail(f"{case.id} passes now: the finding ({case.finding}) is fixed; remove finding= from the case")
    assert not problems, f"{case.id}:\n" + "\n".join(problems)


def test_catalogue_size_and_coverage():
    """At least 40 cases, and every pack node family and every loader is exercised."""
    cases = catalogue.CASES
    assert len(cases) >= 40
    errors = [c for c in cases if c.node]
    nodes = {c.node for c in errors}
    for loader in ("BoLIDPoseModelLoader", "BoLIDBodyVAELoader", "BoLIDLoadBody", "BoLIDAdapterLoader"):
        assert loader in nodes, loader
    for node in ("BoLIDPoseKeypoints", "BoLIDGaussianWeighting", "BoLIDBodyEncode", "BoLIDSaveBody", "BoLIDBlendBodies",
                 "BoLIDApply", "BoLIDBodyFidelity"):
        assert node in nodes, node


def test_pose_nodes_leave_the_torch_thread_count_alone(env):
    """Another kind of leak between packs: process-wide settings changed by a node."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(3)  # a count ultralytics would not pick here, so any reset shows
    try:
        result = env.comfy.run(catalogue.p_fidelity()(env))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)
    assert result.ok, result.error_text()
    # ultralytics' select_device calls torch.set_num_threads on CPU; bolid_lib.method.pose restores the count.
    assert after == 3, f"running the pose nodes changed the process's torch thread count: 3 -> {after}"
