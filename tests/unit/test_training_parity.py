"""What is trained is what runs: the training host's attention processor (diffusers) and the ComfyUI patch
(bolid_lib.method.patch, called as ComfyUI calls an attn2 replace: q, k, v (B, N, H·d) and extra_options) give the same
attention output with the same adapter weights on the same inputs, site by site over all 70 sites."""

from __future__ import annotations

import pytest
import torch

from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter
from bolid_lib.method.patch import BoLIDPatch, PatchSettings
from bolid_lib.method.sdxl_layers import NUM_SITES, SITES
from bolid_lib.training.host import BoLIDAttnProcessor, BranchTokens, attn2_names, install_processors
from bolid_lib.training.models import TINY_BLOCKS, tiny_unet


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    unet = tiny_unet(seed=0)
    cfg = AdapterConfig(widths=(TINY_BLOCKS[1], TINY_BLOCKS[2]), ref_kind="plain", ref_tokens=4, clip_embed_dim=32,
                        body_dim=16, body_tokens=3, body_hidden=32)
    torch.manual_seed(1)
    adapter = BoLIDAdapter(cfg).eval()
    ref = torch.randn(1, 32)
    body = torch.randn(1, 16)
    return unet, adapter, ref, body


def _site_inputs(attn, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    width = attn.to_q.in_features
    hidden = torch.randn(batch, 16, width, generator=g)              # (B, N, C) latent tokens after norm2
    context = torch.randn(batch, 77, attn.to_k.in_features, generator=g)
    return hidden, context


@pytest.mark.parametrize("rows", [("cond",), ("cond", "uncond")])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0), (0.6, 0.0), (0.0, 1.3)])
def test_processor_equals_comfy_patch_at_every_site(setup, rows, lambdas):
    unet, adapter, ref, body = setup
    lam_ref, lam_body = lambdas
    patch = BoLIDPatch(adapter, settings=PatchSettings(lambda_ref=lam_ref, lambda_body=lam_body), ref_features=ref, c_body=body)
    # training host: uncond rows are rows whose conditions were dropped (zero embedding), as the patch treats them
    with torch.no_grad():
        ref_rows = torch.cat([ref if r == "cond" else torch.zeros_like(ref) for r in rows])
        body_rows = torch.cat([body if r == "cond" else torch.zeros_like(body) for r in rows])
        tokens = BranchTokens(ref=adapter.ref_tokens(ref_rows), body=adapter.body_tokens(body_rows),
                              lambda_ref=lam_ref, lambda_body=lam_body)
    modules = dict(unet.named_modules())
    b = len(rows)
    checked = 0
    for s in SITES:
        attn = modules[s.diffusers]
        proc = BoLIDAttnProcessor(s.index, adapter, tokens)
        hidden, context = _site_inputs(attn, b, seed=s.index)
        with torch.no_grad():
            q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
            extra = {"n_heads": attn.heads, "dim_head": q.shape[-1] // attn.heads,
                     "cond_or_uncond": [0 if r == "cond" else 1 for r in rows], "sigmas": torch.full((b,), 5.0),
                     "block": (s.block, s.block_id), "block_index": s.transformer_index}
            comfy_out = attn.to_out[0](patch.site(s.index)(q, k, v, extra))   # ComfyUI applies to_out after the patch
            host_out = proc(attn, hidden, context)
            host_pre = proc.attend(q, k, v, attn.heads)
        torch.testing.assert_close(host_out, comfy_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(host_pre, patch(s.index, q, k, v, extra), rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked == NUM_SITES


def test_processors_cover_all_sites_in_a_unet_forward(setup):
    unet, adapter, ref, body = setup
    x = torch.randn(1, 4, 8, 8)
    added = {"text_embeds": torch.randn(1, 32), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    ctx = torch.randn(1, 77, 2048)
    with torch.no_grad():
        stock = unet(x, torch.tensor([500]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    tokens = BranchTokens()
    procs = install_processors(unet, adapter, tokens)
    assert len(procs) == NUM_SITES and [p.site for p in procs] == list(range(NUM_SITES))
    names = attn2_names(unet)
    assert [unet.attn_processors[n] for n in names] == procs
    with torch.no_grad():
        plain = unet(x, torch.tensor([500]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        tokens.ref, tokens.body = adapter.ref_tokens(ref), adapter.body_tokens(body)
        on = unet(x, torch.tensor([500]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        tokens.lambda_ref = tokens.lambda_body = 0.0
        off = unet(x, torch.tensor([500]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    assert tokens.calls == 3 * NUM_SITES
    assert not torch.allclose(plain, on)
    assert torch.equal(plain, off)          # λ = 0 is the plain UNet bit for bit, as in the ComfyUI patch
    torch.testing.assert_close(plain, stock, rtol=1e-5, atol=1e-6)   # and equals diffusers' own processor
