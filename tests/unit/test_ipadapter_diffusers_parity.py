"""The ref branch against diffusers' IP-Adapter, an implementation independent of both BoLID and IPAdapter_plus.

- One SDXL cross-attention site of full width (1280 channels, 20 heads of 64): diffusers' ``Attention`` with its
  ``IPAdapterAttnProcessor2_0`` against BoLID's decoupled attention (``bolid_lib.method.attention``) with the same
  ``to_k_ip`` / ``to_v_ip`` weights, for the plain (4) and plus (16) token counts and several scales w.
- An IP-Adapter SDXL state dict (public key names) loaded by diffusers' own loader into a diffusers UNet of SDXL's
  layout (tiny widths) and by ``bolid_lib.method.adapter.load_adapter``: the image tokens of diffusers' projection
  (``ImageProjection``, ``IPAdapterPlusImageProjection``) equal BoLID's, and every one of the 70 sites of
  ``bolid_lib.method.patch`` (called as ComfyUI calls an attn2 replace) equals diffusers' processor there, which checks
  the site numbering (``ip_adapter.{1,3,...,139}``) as diffusers reads it.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from bolid_lib.method.adapter import _SiteKV, load_adapter  # noqa: E402
from bolid_lib.method.attention import Branch, decoupled_attention  # noqa: E402
from bolid_lib.method.patch import BoLIDPatch, PatchSettings  # noqa: E402
from bolid_lib.method.sdxl_layers import CONTEXT_DIM, NUM_SITES, SITES  # noqa: E402
from bolid_lib.training.models import TINY_BLOCKS, tiny_unet  # noqa: E402
from tools.make_test_models import ip_adapter_state  # noqa: E402

SCALES = (0.7, 1.0, 1.6)


pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(gen, *shape, std=1.0):
    return torch.randn(*shape, generator=gen) * std


@pytest.mark.parametrize("tokens", [4, 16], ids=["plain-4", "plus-16"])
@pytest.mark.parametrize("scale", SCALES)
def test_one_full_width_site_equals_diffusers_processor(tokens, scale):
    gen = torch.Generator().manual_seed(tokens)
    width, heads = 1280, 20
    attn = Attention(query_dim=width, cross_attention_dim=CONTEXT_DIM, heads=heads, dim_head=width // heads, out_bias=True)
    proc = IPAdapterAttnProcessor2_0(hidden_size=width, cross_attention_dim=CONTEXT_DIM, num_tokens=(tokens,), scale=scale)
    site = _SiteKV(CONTEXT_DIM, width, "ref")
    with torch.no_grad():
        for p in list(attn.parameters()) + list(proc.parameters()):
            p.copy_(_rand(gen, *p.shape, std=0.02))
        site.to_k_ref.weight.copy_(proc.to_k_ip[0].weight)
        site.to_v_ref.weight.copy_(proc.to_v_ip[0].weight)
    attn.set_processor(proc)
    # a CFG batch: row 0 cond, row 1 uncond, each with its own image tokens (as both pipelines feed them)
    hidden = _rand(gen, 2, 64, width)                       # (B, N, C) latent tokens after norm2
    context = _rand(gen, 2, 77, CONTEXT_DIM)                # text
    image_tokens = _rand(gen, 2, tokens, CONTEXT_DIM)       # projected image tokens (cond, uncond)
    with torch.no_grad():
        want = attn(hidden, encoder_hidden_states=(context, [image_tokens]))
        q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
        k_ip, v_ip = site.kv(image_tokens)
        got = attn.to_out[0](decoupled_attention(q, k, v, [Branch(k_ip, v_ip, scale)], heads))
        text_only = attn.to_out[0](decoupled_attention(q, k, v, [], heads))
    effect = (want - text_only).abs().max()
    assert effect > 1e-2 * want.abs().max()                # the image term is not negligible
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


# --- the whole adapter, loaded by diffusers' loader and by BoLID's ----------------------------------

WIDTHS = (TINY_BLOCKS[1], TINY_BLOCKS[2])                    # (32, 64): the tiny UNet's two cross-attention levels


def _state(kind: str) -> dict[str, torch.Tensor]:
    # plus: a Resampler of 2 heads of 64 (diffusers reads heads as to_q rows // 64) and depth 4 (diffusers'
    # converter names layers 0..3); the real ViT-H input width 1280 and 16 queries
    extra = dict(resampler_dim=128, resampler_heads=2, resampler_depth=4) if kind == "plus" else {}
    return ip_adapter_state(kind, "h", widths=WIDTHS, seed=3, std=0.05, **extra)


@pytest.fixture(scope="module", params=["plain", "plus"])
def loaded(request, tmp_path_factory):
    kind = request.param
    state = _state(kind)
    path = tmp_path_factory.mktemp("ipa") / f"ip-adapter-{kind}_sdxl_vit-h.safetensors"
    save_file(state, str(path))
    unet = tiny_unet(seed=0)
    split = {"image_proj": {k[len("image_proj."):]: v for k, v in state.items() if k.startswith("image_proj.")},
             "ip_adapter": {k[len("ip_adapter."):]: v for k, v in state.items() if k.startswith("ip_adapter.")}}
    unet._load_ip_adapter_weights([split], low_cpu_mem_usage=False)    # what pipeline.load_ip_adapter calls
    gen = torch.Generator().manual_seed(9)
    if kind == "plus":
        feats = _rand(gen, 1, 257, 1280)                     # penultimate_hidden_states of the reference
        uncond = _rand(gen, 1, 257, 1280)                    # ... and of "no image" (an encoded blank image)
    else:
        feats = _rand(gen, 1, 1024)                          # image_embeds
        uncond = torch.zeros_like(feats)                     # "no image": zero embeds, as diffusers and IPAdapter_plus
    return {"kind": kind, "unet": unet, "adapter": load_adapter(path), "feats": feats, "uncond": uncond}


def test_image_tokens_equal_diffusers_projection(loaded):
    proj = loaded["unet"].encoder_hid_proj.image_projection_layers[0]
    n = 16 if loaded["kind"] == "plus" else 4
    with torch.no_grad():
        for f in (loaded["feats"], loaded["uncond"]):
            want = proj(f)
            got = loaded["adapter"].ref_tokens(f)
            assert got.shape == want.shape == (1, n, CONTEXT_DIM)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_every_site_equals_diffusers_processor(loaded, scale):
    unet, adapter = loaded["unet"], loaded["adapter"]
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    patch = BoLIDPatch(adapter, settings=PatchSettings(lambda_ref=scale), ref_features=loaded["feats"],
                       ref_uncond_features=loaded["uncond"])
    with torch.no_grad():
        image_tokens = torch.cat([proj(loaded["feats"]), proj(loaded["uncond"])])    # rows: cond, uncond
    modules = dict(unet.named_modules())
    checked = 0
    for s in SITES:
        attn = modules[s.diffusers]
        assert isinstance(attn.processor, IPAdapterAttnProcessor2_0)
        attn.processor.scale = [scale]
        gen = torch.Generator().manual_seed(s.index)
        hidden = _rand(gen, 2, 16, attn.to_q.in_features)
        context = _rand(gen, 2, 77, CONTEXT_DIM)
        with torch.no_grad():
            want = attn.processor(attn, hidden, encoder_hidden_states=(context, [image_tokens]))
            q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
            extra = {"n_heads": attn.heads, "dim_head": q.shape[-1] // attn.heads, "cond_or_uncond": [0, 1],
                     "sigmas": torch.full((2,), 5.0), "block": (s.block, s.block_id), "block_index": s.transformer_index}
            got = attn.to_out[0](patch.site(s.index)(q, k, v, extra))     # ComfyUI applies to_out after the patch
            text_only = attn.to_out[0](decoupled_attention(q, k, v, [], attn.heads))
        assert (want - text_only).abs().max() > 1e-3 * want.abs().max(), f"site {s.index}: the image term vanishes"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()),
                                   msg=lambda m: f"site {s.index} {s.key} (ip_adapter.{s.ip_adapter_number}): {m}")
        checked += 1
    assert checked == NUM_SITES
