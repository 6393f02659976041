"""Soak: a ComfyUI server started by the test runs 200 prompts of a small graph that uses every node family,
good and bad interleaved.

The server is ``main.py --listen 127.0.0.1 --port <free> --offline|--disable-api-nodes --cpu --base-directory <tmp>``
(the runner's ``server_args``: only flags this host's main.py lists),
started and stopped by its own PID (bolid_lib.runner.headless.ServerProcess). Its base directory is a temporary folder:
``custom_nodes`` holds a link to this pack and a test-only node package (tests/reliability/testonly_nodes.py,
which gives a reduced-width SDXL MODEL, CLIP vision and conditioning), ``models`` the random-weight files.
Nothing is written under the ComfyUI checkout.

Every good prompt must succeed, every bad one fail with its expected message (GET /history/<id> status
messages for execution errors, the 400 answer of POST /prompt for validation errors), the server must stay
alive, and its resident memory must stay flat. Run with -s to see the memory curve.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import torch

import catalogue as cat
from reliability_lib import history_outcome, rss_mb, snapshot, diff, write_png, write_truncated

pytestmark = [pytest.mark.host, pytest.mark.slow]

PACK = Path(__file__).resolve().parents[2]
PROMPTS = int(os.environ.get("BOLID_SOAK_PROMPTS", "200"))
SAMPLE_EVERY = 5            # every 5th good prompt changes λ, so the patch and the 1-step sampler run again
RSS_FLAT_MB = 150.0         # growth allowed between the warm-up sample and the last one
PROMPT_TIMEOUT = 300.0
LATENT_SHAPE = [1, 4, 8, 8]  # EmptyLatentImage 64x64, batch 1, as good_prompt samples it


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runner():
    """bolid_lib.runner.headless (the headless runner's server start/stop and HTTP client), imported as the library."""
    import bolid_lib.runner.headless as runner

    return runner


def _prepare_base(base: Path, yolo_pose_pt: Path, yolo_detect_pt: Path) -> None:
    """A ComfyUI base directory: custom_nodes (pack link + test-only nodes), models, input."""
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae
    from bolid_lib.method.embedding import FORMAT, VERSION, BodyEmbedding, save_body
    from bolid_lib.files import save_safetensors_atomic

    tools = _load("bolid_make_test_models", PACK / "tests" / "tools" / "make_test_models.py")
    cn = base / "custom_nodes"
    cn.mkdir(parents=True)
    (cn / "ComfyUI-BoLID").symlink_to(PACK, target_is_directory=True)
    testonly = cn / "bolid_testonly_nodes"
    testonly.mkdir()
    (testonly / "__init__.py").write_text(
        '"""Test-only nodes of ComfyUI-BoLID\'s soak test (never shipped)."""\n'
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('bolid_testonly_nodes_impl', {str(Path(__file__).with_name('testonly_nodes.py'))!r})\n"
        "_mod = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_mod)\n"
        "NODE_CLASS_MAPPINGS = _mod.NODE_CLASS_MAPPINGS\n"
        "NODE_DISPLAY_NAME_MAPPINGS = _mod.NODE_DISPLAY_NAME_MAPPINGS\n")
    m = base / "models"
    (m / "ultralytics" / "pose").mkdir(parents=True)
    shutil.copyfile(yolo_pose_pt, m / "ultralytics" / "pose" / "rel_pose.pt")
    shutil.copyfile(yolo_detect_pt, m / "ultralytics" / "rel_detect.pt")
    bolid, bodies = m / "bolid", m / "bolid" / "bodies"
    bodies.mkdir(parents=True)
    small = dict(widths=(64, 128), body_dim=32, body_tokens=2, body_hidden=32)
    tools.save_bolid_adapter(bolid / cat.ADAPTER_BODY, ref_kind=None, **small)
    write_truncated(bolid / cat.ADAPTER_BODY, bolid / "rel_truncated.safetensors")
    cfg = BodyVAEConfig(input_size=32, latent_dim=32, widths=(8, 16), feature_dim=16, pool_size=2, groups=8)
    torch.manual_seed(0)
    vae = BodyVAE(cfg)
    save_body_vae(vae, bolid / cat.VAE)
    gen = torch.Generator().manual_seed(0)
    save_body(BodyEmbedding(torch.randn(32, generator=gen), torch.zeros(32), {"vae_fingerprint": vae.fingerprint()}),
              bodies / cat.BODY, overwrite=True)
    save_body(BodyEmbedding(torch.randn(16, generator=gen), torch.zeros(16)), bodies / "rel_body16.safetensors", overwrite=True)
    meta = {"dim": 32, "vae_fingerprint": "", "views_used": 1, "views_skipped": 0, "mean_confidence": 1.0, "source": "encode"}
    nan = torch.zeros(32)
    nan[0] = float("nan")
    save_safetensors_atomic({"mean": nan, "logvar": torch.zeros(32)}, bodies / "rel_body_nan.safetensors",
                            fmt=FORMAT, version=VERSION, config=meta)
    inp = base / "input"
    write_png(inp / cat.IMG, (64, 64), seed=0)
    write_png(inp / cat.IMG_WIDE, (96, 64), seed=3)


# --- the graphs --------------------------------------------------------------------------------------


def good_prompt(k: int) -> dict:
    """Every node family: pose -> weighting -> Body-ID encode -> preview; body fidelity; adapter + Body-ID ->
    apply -> 1-step sampler. Widgets vary with k so ComfyUI re-runs the nodes instead of serving its cache."""
    g = cat.G()
    img = cat.load(g)
    pose = cat.pose_chain(g, img, person_index=k % 100)   # ignored with "largest", but a new cache key: YOLO runs again
    w = cat.weighting(g, img, pose=g[pose], sigma=round(0.05 + 0.001 * k, 4), alpha=0.2)
    enc = cat.encode(g, g[w, 0], g[pose])
    cat.preview_body(g, g[enc])
    loader = next(n for n, v in g.prompt.items() if v["class_type"] == "BoLIDPoseModelLoader")
    g.add("BoLIDBodyFidelity", images=g[w, 0], pose_model=g[loader], reference_pose=g[pose], conf=0.0, visibility=0.0)
    model = g.add("TestOnlyBoLIDSDXLModel")
    adapter = g.add("BoLIDAdapterLoader", adapter_name=cat.ADAPTER_BODY)
    body = g.add("BoLIDLoadBody", body_name=cat.BODY)
    lam = 0.5 + 0.1 * (k // SAMPLE_EVERY)
    patched = g.add("BoLIDApply", model=g[model], adapter=g[adapter], body=g[body], lambda_ref=0.0, lambda_body=round(lam, 3),
                    start_at=0.0, end_at=1.0)
    cond = g.add("TestOnlyBoLIDConditioning", seed=0)
    latent = g.add("EmptyLatentImage", width=64, height=64, batch_size=1)
    ks = g.add("KSampler", model=g[patched], seed=0, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal",
               positive=g[cond, 0], negative=g[cond, 1], latent_image=g[latent], denoise=1.0)
    g.add("TestOnlyBoLIDLatentStats", samples=g[ks])
    return g.prompt


def _bad(build, node, what, stage="execution"):
    return {"build": build, "node": node, "what": what, "stage": stage}


BAD = [
    _bad(lambda k: cat.p_pose_loader("rel_detect.pt")(None), "BoLIDPoseModelLoader", r"detect model.*pose model"),
    _bad(lambda k: cat.p_pose(lambda g: cat.load(g), conf=cat.NOBODY_CONF, on_missing="error")(None),
         "BoLIDPoseKeypoints", r"not found in image 0.*on_missing"),
    _bad(lambda k: cat.p_weighting(lambda g: cat.load(g, cat.IMG_WIDE), pose="other:" + cat.IMG)(None),
         "BoLIDGaussianWeighting", r"another aspect ratio.*find the pose on these same images"),
    _bad(lambda k: cat.p_encode(conf=cat.NOBODY_CONF)(None), "BoLIDBodyEncode", r"no person was found in any"),
    _bad(lambda k: cat.p_load_body("rel_body_nan.safetensors")(None), "BoLIDLoadBody", r"NaN or infinite.*encode the views again"),
    _bad(lambda k: cat.apply_graph(adapter="rel_truncated.safetensors"), "BoLIDAdapterLoader", r"not a valid safetensors file.*get the file again"),
    _bad(lambda k: cat.apply_graph(model="TestOnlyBoLIDSD15Model"), "BoLIDApply", r"SDXL"),
    _bad(lambda k: cat.apply_graph(body="rel_body16.safetensors"), "BoLIDApply", r"D=32.*Body-ID VAE this adapter was trained with"),
    _bad(lambda k: cat.apply_graph(start_at=0.9, end_at=0.1), "BoLIDApply", r"start_at.*after end_at", "validation"),
    _bad(lambda k: cat.p_save_body("../../escape")(None), "BoLIDSaveBody", r"would leave the folder", "validation"),
]


def _queue(client, prompt: dict) -> tuple[int, dict]:
    return client.post_json("/prompt", {"prompt": prompt, "client_id": "bolid-soak-" + uuid.uuid4().hex[:8]})


def _wait(client, prompt_id: str, server) -> dict:
    deadline = time.monotonic() + PROMPT_TIMEOUT
    while time.monotonic() < deadline:
        status, hist = client.get_json(f"/history/{prompt_id}")
        if status == 200 and hist and prompt_id in hist:
            return hist[prompt_id]
        assert server.proc.poll() is None, f"the server died (exit {server.proc.returncode}):\n{server.log_tail(40)}"
        time.sleep(0.1)
    raise AssertionError(f"prompt {prompt_id} did not finish within {PROMPT_TIMEOUT:.0f} s:\n{server.log_tail(40)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, yolo_pose_pt, yolo_detect_pt):
    from hostlib import find_comfyui

    root, why = find_comfyui()
    if root is None:
        pytest.skip(f"host tier: {why}")
    runner = _runner()
    base = tmp_path_factory.mktemp("soak_base")
    _prepare_base(base, yolo_pose_pt, yolo_detect_pt)
    port = runner.free_port()
    proc = runner.ServerProcess(comfyui=root, port=port, log_path=base / "server.log",
                                args=runner.server_args(runner.host_flags(root), port, cpu=True, base_directory=base))
    before_checkout = snapshot({sub: root / sub for sub in ("models", "input", "output", "temp", "user")})
    proc.start()
    try:
        proc.wait_ready(300.0, lambda s: None)
        yield proc, runner.Client(proc.url, timeout=60), base
    finally:
        pid = proc.proc.pid if proc.proc else None
        proc.stop()
        after_checkout = snapshot({sub: root / sub for sub in ("models", "input", "output", "temp", "user")})
        problems = diff(before_checkout, after_checkout, ()).problems()
        assert not problems, f"the soak server wrote into the ComfyUI checkout: {problems}"
        if pid is not None:
            import psutil

            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "server still running"


def test_soak_200_prompts(server):
    proc, client, base = server
    status, info = client.get_json("/object_info/BoLIDApply")
    assert status == 200 and "BoLIDApply" in info, "the pack's nodes are not registered in the server"
    status, info = client.get_json("/object_info/TestOnlyBoLIDSDXLModel")
    assert status == 200 and info, "the test-only nodes are not registered in the server"

    pid = proc.proc.pid
    curve: list[tuple[int, float]] = []
    counts = {"good": 0, "bad": 0, "bad_validation": 0, "sampled": 0}
    failures: list[str] = []
    times = {"good": 0.0, "bad": 0.0}
    t_start = time.monotonic()
    bad_i = 0
    for k in range(PROMPTS):
        t0 = time.monotonic()
        if k % 2 == 0:                                   # good and bad interleaved
            prompt = good_prompt(k // 2)
            status, body = _queue(client, prompt)
            if status != 200:
                failures.append(f"prompt {k} (good) refused by validation: {json.dumps(body)[:800]}")
            else:
                entry = _wait(client, body["prompt_id"], proc)
                out = history_outcome(entry, prompt)
                if not out.ok:
                    failures.append(f"prompt {k} (good) failed on {out.node_types}: {out.text[:800]}")
                else:
                    outputs = entry.get("outputs", {})
                    stats = [json.loads(v["text"][0]) for nid, v in outputs.items()
                             if prompt[nid]["class_type"] == "TestOnlyBoLIDLatentStats"]
                    if len(stats) != 1:
                        failures.append(f"prompt {k} (good): {len(stats)} latent stats outputs in its history, "
                                        f"expected 1: {sorted(outputs)}")
                    elif stats[0].get("shape") != LATENT_SHAPE or stats[0].get("finite") is not True:
                        failures.append(f"prompt {k} (good): the sampled latent is not a finite {LATENT_SHAPE}: "
                                        f"{stats[0]}")
                    else:
                        counts["sampled"] += 1
            counts["good"] += 1
            times["good"] += time.monotonic() - t0
        else:
            bad = BAD[bad_i % len(BAD)]
            bad_i += 1
            prompt = bad["build"](k)
            status, body = _queue(client, prompt)
            if bad["stage"] == "validation":
                counts["bad_validation"] += 1
                text = json.dumps(body)
                types = [v.get("class_type") for v in (body or {}).get("node_errors", {}).values()] if isinstance(body, dict) else []
                if status != 400 or bad["node"] not in types or not re.search(bad["what"], text, re.I | re.S):
                    failures.append(f"prompt {k} (bad, {bad['node']}): expected a validation error /{bad['what']}/; got {status} {text[:800]}")
            elif status != 200:
                failures.append(f"prompt {k} (bad, {bad['node']}) refused at validation: {json.dumps(body)[:800]}")
            else:
                out = history_outcome(_wait(client, body["prompt_id"], proc), prompt)
                raw = [t for t in out.exception_types if not t.endswith("BoLIDError")]
                if out.ok or bad["node"] not in out.node_types or not re.search(bad["what"], out.text, re.I | re.S) or raw:
                    failures.append(f"prompt {k} (bad, {bad['node']}): expected /{bad['what']}/; got ok={out.ok} "
                                    f"{out.node_types} {out.exception_types} {out.text[:800]}")
            counts["bad"] += 1
            times["bad"] += time.monotonic() - t0
        assert proc.proc.poll() is None, f"the server died at prompt {k}:\n{proc.log_tail(40)}"
        if (k + 1) % 10 == 0:
            curve.append((k + 1, rss_mb(pid)))
    elapsed = time.monotonic() - t_start
    status, _ = client.get_json("/system_stats")
    assert status == 200, "the server stopped answering"
    warm = curve[1][1] if len(curve) > 1 else curve[0][1]
    growth = curve[-1][1] - warm
    print(f"\nsoak: {PROMPTS} prompts in {elapsed:.0f} s ({counts['good']} good, each with a finite sampled latent "
          f"({counts['sampled']}); the patch + 1-step sampler re-ran on {-(-counts['good'] // SAMPLE_EVERY)} of them (a new λ), "
          f"pose/weighting/Body-ID/fidelity on all; {counts['bad']} bad, {counts['bad_validation']} refused at validation); "
          f"mean {times['good'] / max(1, counts['good']):.2f} s per good prompt, {times['bad'] / max(1, counts['bad']):.2f} s per bad one")
    print("soak: server RSS (MB) every 10 prompts: " + ", ".join(f"{k}:{r:.0f}" for k, r in curve)
          + f"; growth after warm-up (prompt {curve[1][0] if len(curve) > 1 else curve[0][0]}) {growth:+.1f} MB "
          f"(limit {RSS_FLAT_MB:.0f})")
    assert not failures, f"{len(failures)} prompts did not behave:\n" + "\n".join(failures[:20])
    assert counts["good"] == (PROMPTS + 1) // 2 and counts["sampled"] == counts["good"], counts
    assert growth < RSS_FLAT_MB, f"server memory grew {growth:.1f} MB over the soak"
