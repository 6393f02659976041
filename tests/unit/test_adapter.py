"""Adapter module, BoLID file format round trips, IP-Adapter SDXL import and refusals."""

import pytest
import torch
from safetensors.torch import save_file

from bolid_lib.method.adapter import (AdapterConfig, BoLIDAdapter, bolid_ref_key, bolid_ref_state_to_ip_adapter, ip_adapter_config,
                               load_adapter, save_adapter)
from bolid_lib.errors import BoLIDError
from bolid_lib.files import save_safetensors_atomic
from bolid_lib.method.sdxl_layers import SITES
from tools.make_test_models import (fill_random_, ip_adapter_state, random_bolid_adapter, save_ip_adapter,
                                    sd15_ip_adapter_state)

TINY = dict(context_dim=32, widths=(8, 16), clip_embed_dim=12, clip_hidden_dim=12, resampler_dim=16, resampler_heads=2,
            resampler_dim_head=8, resampler_depth=2, body_dim=10, body_hidden=16, body_tokens=3)


@pytest.mark.parametrize("ref_kind,body_dim", [("plain", 10), ("plus", 10), (None, 10), ("plain", None), ("plus", None)])
def test_bolid_file_round_trip(tmp_path, ref_kind, body_dim):
    cfg = AdapterConfig(**{**TINY, "ref_kind": ref_kind, "body_dim": body_dim, "ref_tokens": 5})
    a = random_bolid_adapter(cfg, seed=3)
    path = save_adapter(a, tmp_path / "a.safetensors")
    b = load_adapter(path)
    assert b.config == cfg and b.source == "bolid"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(k.startswith(("ref.", "body.")) for k in sa)
    assert (ref_kind is None) == (b.ref is None) and (body_dim is None) == (b.body is None)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    if ref_kind:
        feats = torch.randn(2, 257, 12) if ref_kind == "plus" else torch.randn(2, 12)
        t = b.ref_tokens(feats)
        assert t.shape == (2, 5, 32)
        assert torch.equal(t, a.ref_tokens(feats))
    if body_dim:
        assert b.body_tokens(torch.randn(10)).shape == (1, 3, 32)


def test_site_kv_shapes_follow_site_widths():
    a = random_bolid_adapter(AdapterConfig(**{**TINY, "ref_kind": "plain"}))
    tok = torch.randn(1, 4, 32)
    for s in SITES:
        k, v = a.site_kv("ref", s.index, tok)
        assert k.shape == v.shape == (1, 4, (8, 16)[s.level])


@pytest.mark.parametrize("kind,clip,embed", [("plain", "h", 1024), ("plain", "bigg", 1280), ("plus", "h", 1280)])
def test_ip_adapter_import_detects_kind(tmp_path, kind, clip, embed):
    path = save_ip_adapter(tmp_path / "some_name.safetensors", kind, clip, widths=(8, 16), resampler_dim=64,
                           resampler_heads=2, resampler_depth=2)
    a = load_adapter(path)
    cfg = a.config
    assert a.source == "ip-adapter" and a.body is None
    assert cfg.ref_kind == kind and cfg.widths == (8, 16) and cfg.context_dim == 2048
    assert cfg.ref_input_dim == embed
    assert cfg.ref_tokens == (16 if kind == "plus" else 4)
    if kind == "plus":
        assert (cfg.resampler_dim, cfg.resampler_heads, cfg.resampler_depth, cfg.resampler_ff_mult) == (64, 2, 2, 4)
        feats = torch.randn(1, 257, embed)
    else:
        feats = torch.randn(1, embed)
    assert a.ref_tokens(feats).shape == (1, cfg.ref_tokens, 2048)


def test_ip_adapter_kind_read_from_keys_not_name(tmp_path):
    # a plus file named like a plain one is still read as plus
    path = save_ip_adapter(tmp_path / "ip-adapter_sdxl_vit-h.safetensors", "plus", "h", widths=(8, 16), resampler_dim=64,
                           resampler_heads=2, resampler_depth=1)
    assert load_adapter(path).config.ref_kind == "plus"


def test_ip_adapter_import_maps_all_140_keys_to_their_sites(tmp_path):
    """Every ip_adapter.N.to_{k,v}_ip lands on site (N-1)/2: down blocks, up blocks, then mid."""
    sd = ip_adapter_state("plain", "h", widths=(8, 16), dtype=torch.float32)
    # tag every tensor with its own number and k/v, so a wrong mapping cannot go unnoticed
    for key in list(sd):
        if key.startswith("ip_adapter."):
            n = int(key.split(".")[1])
            sd[key] = torch.full_like(sd[key], n + (0.25 if "to_v" in key else 0.0))
    save_file(sd, str(tmp_path / "x.safetensors"))
    a = load_adapter(tmp_path / "x.safetensors")
    ip_keys = [k for k in sd if k.startswith("ip_adapter.")]
    assert len(ip_keys) == 140
    seen = set()
    for s in SITES:
        n = 2 * s.index + 1     # the numbering rule
        k = a.ref.attn[s.index].to_k_ref.weight
        v = a.ref.attn[s.index].to_v_ref.weight
        assert k.shape == ((8, 16)[s.level], 2048)
        assert torch.all(k == n) and torch.all(v == n + 0.25), s
        seen |= {f"ip_adapter.{n}.to_k_ip.weight", f"ip_adapter.{n}.to_v_ip.weight"}
    assert seen == set(ip_keys)
    # spot checks of the rule against the ComfyUI keys
    assert a.ref.attn[0].to_k_ref.weight[0, 0] == 1 and SITES[0].key == ("input", 4, 0)
    assert a.ref.attn[60].to_k_ref.weight[0, 0] == 121 and SITES[60].key == ("middle", 0, 0)
    # export back to IP-Adapter's layout gives the same tensors under the same keys
    back = bolid_ref_state_to_ip_adapter(a)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_import_keeps_half_precision_and_computes_in_float32(tmp_path):
    path = save_ip_adapter(tmp_path / "h.safetensors", "plain", "h", widths=(8, 16))
    a = load_adapter(path)
    assert a.ref.attn[0].to_k_ref.weight.dtype == torch.float16
    tokens = a.ref_tokens(torch.randn(1, 1024))
    assert tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
    k, v = a.site_kv("ref", 5, tokens)
    assert k.dtype == torch.float32


def test_refuses_pickle_bin(tmp_path):
    p = tmp_path / "ip-adapter_sdxl.bin"
    p.write_bytes(b"\x80\x04not really")
    with pytest.raises(BoLIDError, match=r"pickle.*\.safetensors"):
        load_adapter(p)


def test_refuses_sd15_ip_adapter(tmp_path):
    save_file(sd15_ip_adapter_state(), str(tmp_path / "x.safetensors"))
    with pytest.raises(BoLIDError, match=r"SD1\.5 IP-Adapter.*768.*16 cross-attention layers.*SDXL"):
        load_adapter(tmp_path / "x.safetensors")


def test_refuses_faceid(tmp_path):
    sd = ip_adapter_state("plain", "h", widths=(8, 16))
    sd["ip_adapter.0.to_q_lora.down.weight"] = torch.zeros(4, 8)
    save_file(sd, str(tmp_path / "x.safetensors"))
    with pytest.raises(BoLIDError, match="FaceID"):
        load_adapter(tmp_path / "x.safetensors")


def test_refuses_incomplete_ip_adapter(tmp_path):
    sd = ip_adapter_state("plain", "h", widths=(8, 16))
    del sd["ip_adapter.57.to_v_ip.weight"]
    save_file(sd, str(tmp_path / "x.safetensors"))
    with pytest.raises(BoLIDError, match=r"ip_adapter\.57 lacks"):
        load_adapter(tmp_path / "x.safetensors")


def test_refuses_random_tensors_with_a_description(tmp_path):
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(2, 2), "first_stage_model.x": torch.zeros(1)},
              str(tmp_path / "vae.safetensors"))
    with pytest.raises(BoLIDError, match=r"is not an adapter: it is a safetensors file with 2 tensors \(.*conv_in"):
        load_adapter(tmp_path / "vae.safetensors")


def test_refuses_other_bolid_format(tmp_path):
    save_safetensors_atomic({"mean": torch.zeros(756)}, tmp_path / "alice.safetensors", fmt="bolid.body", version=1)
    with pytest.raises(BoLIDError, match="is a bolid.body file.*not an adapter"):
        load_adapter(tmp_path / "alice.safetensors")


def test_refuses_damaged_bolid_file(tmp_path):
    a = random_bolid_adapter(AdapterConfig(**{**TINY, "ref_kind": "plain"}))
    sd = a.state_dict()
    del sd["body.attn.3.to_v_body.weight"]
    sd["ref.attn.0.to_k_ref.weight"] = torch.zeros(3, 3)
    save_safetensors_atomic(sd, tmp_path / "a.safetensors", fmt="bolid.adapter", version=1, config=a.config.to_dict())
    with pytest.raises(BoLIDError, match=r"1 missing \(body\.attn\.3\.to_v_body.*1 of the wrong shape"):
        load_adapter(tmp_path / "a.safetensors")


def test_refuses_newer_version_and_unknown_config(tmp_path):
    a = random_bolid_adapter(AdapterConfig(**TINY))
    save_safetensors_atomic(a.state_dict(), tmp_path / "v9.safetensors", fmt="bolid.adapter", version=9, config=a.config.to_dict())
    with pytest.raises(BoLIDError, match="version 9.*update the pack"):
        load_adapter(tmp_path / "v9.safetensors")
    save_safetensors_atomic(a.state_dict(), tmp_path / "u.safetensors", fmt="bolid.adapter", version=1,
                            config={**a.config.to_dict(), "future_field": 1})
    with pytest.raises(BoLIDError, match="future_field.*update the pack"):
        load_adapter(tmp_path / "u.safetensors")


def test_refuses_truncated_file(tmp_path):
    path = save_ip_adapter(tmp_path / "t.safetensors", "plain", "h", widths=(8, 16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BoLIDError, match="truncated|not a valid"):
        load_adapter(path)


def test_config_validation():
    with pytest.raises(BoLIDError, match="at least one branch"):
        AdapterConfig(ref_kind=None, body_dim=None)
    with pytest.raises(BoLIDError, match="ref_kind"):
        AdapterConfig(ref_kind="full")
    with pytest.raises(BoLIDError, match="two numbers"):
        AdapterConfig(widths=(1, 2, 3))


def test_clip_vision_size_messages():
    a = random_bolid_adapter(AdapterConfig(ref_kind="plain", clip_embed_dim=1024, context_dim=32, widths=(8, 16), body_dim=None))
    with pytest.raises(BoLIDError, match=r"needs a ViT-H .*gives 1280-dim .*ViT-bigG"):
        a.ref_tokens(torch.randn(1, 1280))
    with pytest.raises(BoLIDError, match=r"image_embeds \(R, E\)"):
        a.ref_tokens(torch.randn(1, 257, 1024))
    with pytest.raises(BoLIDError, match="no body branch"):
        a.body_tokens(torch.randn(756))


def test_body_dim_message():
    a = random_bolid_adapter(AdapterConfig(**TINY))
    with pytest.raises(BoLIDError, match=r"D=10.*shape \(1, 756\)"):
        a.body_tokens(torch.randn(756))


def test_fill_is_deterministic():
    cfg = AdapterConfig(**TINY)
    a, b = random_bolid_adapter(cfg, seed=1), random_bolid_adapter(cfg, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = fill_random_(BoLIDAdapter(cfg), seed=2)
    assert not torch.equal(a.body.attn[0].to_k_body.weight, c.body.attn[0].to_k_body.weight)


def test_key_helpers():
    assert bolid_ref_key(60, "k") == "ref.attn.60.to_k_ref.weight"
    cfg = ip_adapter_config({k: tuple(v.shape) for k, v in ip_adapter_state("plain", "h", widths=(8, 16)).items()})
    assert cfg.ref_kind == "plain" and cfg.body_dim is None


def test_body_vae_fingerprint_round_trip_and_mismatch_warning(tmp_path):
    """An adapter file records the Body-ID VAE its body branch was trained with; a Body-ID of the right width
    from another VAE gets a warning that says the fix, the same VAE or an unknown one (older files) none."""
    from bolid_lib.method.adapter import load_adapter, save_adapter

    small = dict(ref_kind=None, body_dim=16, context_dim=32, widths=(8, 16))  # a full-width file would be 1.4 GB
    ad = random_bolid_adapter(**small)
    ad.body_vae_fingerprint = "0123456789abcdef"
    loaded = load_adapter(save_adapter(ad, tmp_path / "a.safetensors"))
    assert loaded.body_vae_fingerprint == "0123456789abcdef"
    assert loaded.body_vae_mismatch("0123456789abcdef") is None
    assert loaded.body_vae_mismatch("") is None
    msg = loaded.body_vae_mismatch("fedcba9876543210")
    assert msg and "0123456789abcdef" in msg and "fedcba9876543210" in msg and "encode the photos again" in msg
    older = load_adapter(save_adapter(random_bolid_adapter(**small), tmp_path / "b.safetensors"))
    assert older.body_vae_fingerprint == "" and older.body_vae_mismatch("fedcba9876543210") is None
