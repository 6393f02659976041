"""Isolation and leaks: apply and drop the BoLID patch 100 times on the same MODEL in one process.

The source model's output stays bit-identical, its options/patches/weights untouched, each dropped patch is
freed (weak reference dead after gc), and resident memory grows by less than 50 MB. Run with -s to see the
figures (RSS every 10 cycles).
"""

from __future__ import annotations

import gc
import time
import importlib.util
import weakref
from pathlib import Path

import pytest
import torch

from reliability_lib import ModelGuard, rss_mb

pytestmark = pytest.mark.host

CYCLES = 100
RSS_LIMIT_MB = 50.0
PACK = Path(__file__).resolve().parents[2]


def _tools():
    spec = importlib.util.spec_from_file_location("bolid_make_test_models", PACK / "tests" / "tools" / "make_test_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def patch_inputs(comfy):
    """The adapter (both branches, widths of the test UNet) and a Body-ID, loaded by the pack's own loader nodes."""
    from bolid_lib.method.embedding import BodyEmbedding, save_body

    tools = _tools()
    bolid = comfy.models_dir / "bolid"
    bodies = bolid / "bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    adapter_file = tools.save_bolid_adapter(bolid / "iso_adapter.safetensors", ref_kind="plain", clip_embed_dim=1024,
                                            widths=(64, 128), body_dim=32, body_tokens=2, body_hidden=32, seed=3)
    body_file = bodies / "iso_body.safetensors"
    gen = torch.Generator().manual_seed(5)
    save_body(BodyEmbedding(torch.randn(32, generator=gen), torch.zeros(32)), body_file, overwrite=True)
    adapter = comfy.node("BoLIDAdapterLoader").execute(adapter_name="iso_adapter.safetensors").result[0]
    body = comfy.node("BoLIDLoadBody").execute(body_name="iso_body.safetensors").result[0]
    ref = torch.randn(1, 1024, generator=gen)          # a CLIP ViT-H image embedding of the "reference"
    yield adapter, body, ref
    adapter_file.unlink(missing_ok=True)
    body_file.unlink(missing_ok=True)


def _patched_output(patched, guard: ModelGuard) -> torch.Tensor:
    topts = patched.model_options.get("transformer_options", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order, as ModelGuard.output does
    try:
        with torch.inference_mode():
            return patched.model.apply_model(guard.x, guard.t, c_crossattn=guard.c, y=guard.y, transformer_options=dict(topts)).clone()
    finally:
        torch.set_num_threads(threads)


def test_apply_and_drop_100_times(comfy, sdxl_small, patch_inputs):
    from comfy.clip_vision import Output

    adapter, body, ref = patch_inputs
    apply = comfy.node("BoLIDApply")
    guard = ModelGuard(sdxl_small)
    reference = guard.reference_output()
    clip_out = Output()
    clip_out["image_embeds"] = ref

    def cycle(i: int, run_forward: bool):
        patched = apply.execute(model=sdxl_small, adapter=adapter, lambda_ref=0.8, lambda_body=1.2, start_at=0.0, end_at=1.0,
                                clip_vision_output=clip_out, body=body).result[0]
        assert patched is not sdxl_small
        site = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values()))
        probe = weakref.ref(site.patch)
        out = _patched_output(patched, guard) if run_forward else None
        del patched, site
        return probe, out

    with torch.inference_mode():
        probe, first = cycle(0, True)          # warm-up: allocator pools, attention backend, lazy imports
    assert not torch.equal(first, reference), "the patch changed nothing: the isolation test would prove nothing"
    gc.collect()
    assert probe() is None, "a dropped patch is still referenced (leak through the source model or a global)"
    base = rss_mb()
    curve = [(0, base)]
    t0 = time.monotonic()
    probes = []
    for i in range(1, CYCLES + 1):
        with torch.inference_mode():
            probe, out = cycle(i, run_forward=(i % 25 == 0))
        probes.append(probe)
        if out is not None:
            assert torch.equal(out, first), f"cycle {i}: the patched output differs from the first cycle's"
            assert torch.equal(guard.output(), reference), f"cycle {i}: the source model's output changed"
        if i % 10 == 0:          # a full gc is slow in a process holding ComfyUI: every 10 cycles, before sampling RSS
            gc.collect()
            curve.append((i, rss_mb()))
    dead = sum(p() is None for p in probes)
    growth = curve[-1][1] - base
    elapsed = time.monotonic() - t0
    print(f"\nisolation: {CYCLES} apply/drop cycles on one MODEL in {elapsed:.0f} s; RSS (MB) by cycle: "
          + ", ".join(f"{i}:{r:.1f}" for i, r in curve) + f"; growth {growth:+.1f} MB (limit {RSS_LIMIT_MB:.0f})")
    problems = guard.problems(with_output=True)
    assert not problems, "\n".join(problems)
    assert dead == CYCLES, f"only {dead} of {CYCLES} dropped patches were freed"
    assert growth < RSS_LIMIT_MB, f"RSS grew by {growth:.1f} MB over {CYCLES} cycles"
