"""BoLID Apply inside ComfyUI's real SDXL UNet code (reduced widths, random weights) and its real executor."""

from __future__ import annotations


import pytest
import torch

from tools.make_test_models import save_bolid_adapter, save_ip_adapter

pytestmark = [pytest.mark.host, pytest.mark.usefixtures("one_thread")]

WIDTHS = (64, 128)      # sdxl_small: model_channels 32 -> levels of 64 and 128
BODY_DIM = 756




@pytest.fixture(scope="module")
def files(comfy):
    ipa = save_ip_adapter(comfy.models_dir / "ipadapter" / "ip-adapter_sdxl_vit-h.safetensors", "plain", "h",
                          widths=WIDTHS, std=0.05)
    bolid = save_bolid_adapter(comfy.models_dir / "bolid" / "bolid_test_adapter.safetensors", seed=1, std=0.05,
                               widths=WIDTHS, ref_kind=None, body_dim=BODY_DIM, body_hidden=64, body_tokens=4)
    return {"ipa": ipa, "bolid": bolid}


@pytest.fixture(scope="module")
def ipa(pack, files):
    return pack.adapter.load_adapter(files["ipa"])


@pytest.fixture(scope="module")
def bolid(pack, files):
    return pack.adapter.load_adapter(files["bolid"])


def _ref():
    return torch.randn(1, 1024, generator=torch.Generator().manual_seed(11))


def _body(pack):
    return pack.embedding.BodyEmbedding(torch.randn(BODY_DIM, generator=torch.Generator().manual_seed(12)) * 2, torch.zeros(BODY_DIM))


def _apply(pack, model, adapter, ref=None, body=None, start_at=0.0, end_at=1.0, **settings):
    ms = model.get_model_object("model_sampling")
    s = pack.patch.PatchSettings(noise_start=ms.percent_to_sigma(start_at), noise_end=ms.percent_to_sigma(end_at), **settings)
    with torch.inference_mode():
        return pack.nodes.apply_bolid(model, adapter, s, ref, None, None if body is None else body.mean)


def _sample(model, cond, steps=3, cfg=4.0, seed=0, callback=None, batch=1):
    import comfy.sample

    pos, neg = cond(0, 64, 64)
    latent = torch.zeros(batch, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent, seed=seed,
                                   callback=callback, disable_pbar=True)


def _site_patches(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def test_patch_fires_on_all_70_sites_once_per_forward(pack, sdxl_small, sdxl_cond, ipa):
    m = _apply(pack, sdxl_small, ipa, ref=_ref())
    reps = _site_patches(m)
    assert set(reps) == {s.key for s in pack.sdxl.SITES}
    patch = next(iter(reps.values())).patch
    _sample(m, sdxl_cond, steps=1, cfg=1.0)          # cfg 1: one UNet forward (cond only)
    assert patch.site_calls == [1] * 70
    _sample(m, sdxl_cond, steps=2, cfg=4.0)          # cond + uncond batched: one forward per step
    assert patch.site_calls == [3] * 70


def test_lambda_zero_is_unpatched_bit_for_bit(pack, sdxl_small, sdxl_cond, ipa, bolid):
    plain = _sample(sdxl_small, sdxl_cond)
    m = _apply(pack, sdxl_small, ipa, ref=_ref(), lambda_ref=0.0, lambda_body=0.0)
    assert torch.equal(_sample(m, sdxl_cond), plain)
    off = _apply(pack, sdxl_small, bolid, body=_body(pack), start_at=1.0, end_at=1.0)   # range never reached
    assert torch.equal(_sample(off, sdxl_cond), plain)


def test_original_model_unchanged(pack, sdxl_small, sdxl_cond, ipa, bolid):
    before_opts = repr(sdxl_small.model_options)
    before = _sample(sdxl_small, sdxl_cond)
    m = _apply(pack, sdxl_small, ipa, ref=_ref())
    m = _apply(pack, m, bolid, body=_body(pack))
    patched = _sample(m, sdxl_cond)
    assert repr(sdxl_small.model_options) == before_opts
    assert "patches_replace" not in sdxl_small.model_options.get("transformer_options", {})
    assert torch.equal(_sample(sdxl_small, sdxl_cond), before)
    assert not torch.equal(patched, before)


def test_both_branches_change_output(pack, sdxl_small, sdxl_cond, ipa, bolid):
    plain = _sample(sdxl_small, sdxl_cond)
    ref_only = _sample(_apply(pack, sdxl_small, ipa, ref=_ref()), sdxl_cond)
    body_only = _sample(_apply(pack, sdxl_small, bolid, body=_body(pack)), sdxl_cond)
    both = _sample(_apply(pack, _apply(pack, sdxl_small, ipa, ref=_ref()), bolid, body=_body(pack)), sdxl_cond)
    outs = [plain, ref_only, body_only, both]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(outs[i], outs[j], atol=1e-4), (i, j)
    assert all(torch.isfinite(o).all() for o in outs)


def _guide(model, guider_cls, conds, steps=3, seed=0, **cfg):
    """Sample with one of ComfyUI's guider classes directly (what SamplerCustomAdvanced runs)."""
    import comfy.sample
    import comfy.samplers

    guider = guider_cls(model)
    guider.set_conds(*conds)
    guider.set_cfg(**cfg)
    latent = torch.zeros(1, 4, 8, 8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    with torch.inference_mode():
        return guider.sample(comfy.sample.prepare_noise(latent, seed), latent, comfy.samplers.sampler_object("euler"),
                             sigmas, seed=seed, disable_pbar=True)


def test_other_guiders_give_the_body_to_the_positive_only(pack, sdxl_small, sdxl_cond, bolid):
    """ComfyUI's PerpNegGuider batches [positive, negative, empty] and DualCFGGuider [negative, middle, positive], so
    the chunk index (1 = negative under KSampler) does not say which prompt is a negative. With the roles the apply
    node registers, PerpNeg at neg_scale 0 is exactly CFG between the positive and the empty prompt, and DualCFG with
    the negative as its middle prompt is exactly CFG at cfg1; by index alone (the wrapper removed) neither is."""
    import comfy.samplers
    from comfy.patcher_extension import WrappersMP
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG
    from comfy_extras.nodes_perpneg import Guider_PerpNeg

    wrappers_before = repr(sdxl_small.wrappers)
    pos, neg = sdxl_cond(0, 64, 64)
    empty = sdxl_cond(3, 64, 64)[1]
    m = _apply(pack, sdxl_small, bolid, body=_body(pack), lambda_body=2.0)
    assert repr(sdxl_small.wrappers) == wrappers_before                   # the source model gets no wrapper
    by_index = m.clone()
    by_index.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, "bolid")
    assert m.get_all_wrappers(WrappersMP.OUTER_SAMPLE)                     # removed from the clone only

    cfg_empty = _guide(m, comfy.samplers.CFGGuider, (pos, empty), cfg=4.0)
    perp = _guide(m, Guider_PerpNeg, (pos, neg, empty), cfg=4.0, neg_scale=0.0)
    torch.testing.assert_close(perp, cfg_empty, atol=1e-5, rtol=0)
    perp_by_index = _guide(by_index, Guider_PerpNeg, (pos, neg, empty), cfg=4.0, neg_scale=0.0)
    assert (perp_by_index - cfg_empty).abs().max() > 100 * (perp - cfg_empty).abs().max() + 1e-3

    cfg_neg = _guide(m, comfy.samplers.CFGGuider, (pos, neg), cfg=4.0)
    dual = _guide(m, Guider_DualCFG, (pos, neg, neg), cfg1=4.0, cfg2=2.5)
    torch.testing.assert_close(dual, cfg_neg, atol=1e-5, rtol=0)
    dual_by_index = _guide(by_index, Guider_DualCFG, (pos, neg, neg), cfg1=4.0, cfg2=2.5)
    assert (dual_by_index - cfg_neg).abs().max() > 100 * (dual - cfg_neg).abs().max() + 1e-3
    # the roles live in one sampling's options only: nothing is left on the model
    assert pack.patch.ROLES_KEY not in repr(m.model_options) and pack.patch.ROLES_KEY not in repr(sdxl_small.model_options)
    # KSampler's own path is unchanged by the roles: the same result with and without the wrapper
    assert torch.equal(_guide(by_index, comfy.samplers.CFGGuider, (pos, neg), cfg=4.0), cfg_neg)


def test_stacks_over_an_existing_attn2_replace(pack, sdxl_small, sdxl_cond, ipa):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def other_pack_patch(q, k, v, extra):           # another pack's replace: scales the text attention
        calls.append(extra["block"])
        return optimized_attention(q, k, v, extra["n_heads"]) * 0.7

    other = sdxl_small.clone()
    for s in pack.sdxl.SITES:
        other.set_model_attn2_replace(other_pack_patch, s.block, s.block_id, s.transformer_index)
    only_other = _sample(other, sdxl_cond)
    calls.clear()
    stacked = _apply(pack, other, ipa, ref=_ref())
    both = _sample(stacked, sdxl_cond, steps=1, cfg=1.0)
    assert len(calls) == 70                           # the other patch still runs on every site
    only_bolid = _sample(_apply(pack, sdxl_small, ipa, ref=_ref()), sdxl_cond, steps=1, cfg=1.0)
    both = _sample(stacked, sdxl_cond)
    assert not torch.allclose(both, only_other, atol=1e-4)       # BoLID takes effect
    assert not torch.allclose(both, _sample(_apply(pack, sdxl_small, ipa, ref=_ref()), sdxl_cond), atol=1e-4)  # and the other too
    # with λ = 0 the stacked model is exactly the other pack's
    zero = _apply(pack, other, ipa, ref=_ref(), lambda_ref=0.0)
    assert torch.equal(_sample(zero, sdxl_cond), only_other)
    # the 2-tuple key form (block, id) of a previous patch is wrapped too
    two = sdxl_small.clone()
    two.set_model_attn2_replace(other_pack_patch, "input", 4)
    wrapped = _site_patches(_apply(pack, two, ipa, ref=_ref()))
    assert wrapped[("input", 4, 0)].previous is other_pack_patch and wrapped[("input", 5, 0)].previous is None
    del only_bolid


def _step_x0(model, cond, steps):
    xs = []
    _sample(model, cond, steps=steps, callback=lambda i, x0, x, total: xs.append(x0.clone()))
    return xs


def test_start_and_end_switch_branches_at_the_right_steps(pack, sdxl_small, sdxl_cond, ipa):
    import comfy.samplers

    steps = 6
    ms = sdxl_small.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", steps)[:-1].tolist()
    plain = _step_x0(sdxl_small, sdxl_cond, steps)
    always = _step_x0(_apply(pack, sdxl_small, ipa, ref=_ref()), sdxl_cond, steps)

    # start_at 0.4: steps before sigma(0.4) equal the unpatched model, the first one at or below it differs
    s_start = ms.percent_to_sigma(0.4)
    late = _step_x0(_apply(pack, sdxl_small, ipa, ref=_ref(), start_at=0.4), sdxl_cond, steps)
    first_on = next(i for i, s in enumerate(sigmas) if s <= s_start)
    assert 0 < first_on < steps
    for i in range(first_on):
        assert torch.equal(late[i], plain[i]), i
    assert not torch.equal(late[first_on], plain[first_on])

    # end_at 0.6: identical to "always on" while sigma >= sigma(0.6), then the branches are off
    s_end = ms.percent_to_sigma(0.6)
    early = _step_x0(_apply(pack, sdxl_small, ipa, ref=_ref(), end_at=0.6), sdxl_cond, steps)
    first_off = next(i for i, s in enumerate(sigmas) if s < s_end)
    assert 0 < first_off < steps
    for i in range(first_off):
        assert torch.equal(early[i], always[i]), i
    assert not torch.equal(early[first_off], always[first_off])


def test_refusals(pack, sdxl_small, ipa, bolid):
    BoLIDError = pack.errors.BoLIDError
    with pytest.raises(BoLIDError, match="at least one branch"):
        _apply(pack, sdxl_small, ipa)
    with pytest.raises(BoLIDError, match="no body branch"):
        _apply(pack, sdxl_small, ipa, body=_body(pack))
    with pytest.raises(BoLIDError, match="D=756"):
        _apply(pack, sdxl_small, bolid, body=pack.embedding.BodyEmbedding(torch.randn(512), torch.zeros(512)))
    with pytest.raises(BoLIDError, match=r"needs a ViT-H.*gives 1280-dim"):
        _apply(pack, sdxl_small, ipa, ref=torch.randn(1, 1280))
    # an adapter for full SDXL widths on a model of other widths
    full = pack.adapter.BoLIDAdapter(pack.adapter.AdapterConfig(ref_kind=None, body_dim=8, body_hidden=8))
    with pytest.raises(BoLIDError, match=r"widths \(640, 1280\).*\(64, 128\)"):
        _apply(pack, sdxl_small, full, body=pack.embedding.BodyEmbedding(torch.randn(8), torch.zeros(8)))


def test_refuses_non_sdxl_models(pack, ipa):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
           "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1, 1, 1],
           "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
           "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
           "transformer_depth_output": [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], "use_temporal_attention": False,
           "use_temporal_resblock": False}
    mc = comfy.supported_models.SD15(cfg)
    sd15 = comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(mc, device=torch.device("cpu")),
                                            load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with pytest.raises(pack.errors.BoLIDError, match="not an SDXL UNet"):
        _apply(pack, sd15, ipa, ref=_ref())


def test_follows_model_management_moves(pack, sdxl_small, sdxl_cond, ipa):
    m = _apply(pack, sdxl_small, ipa, ref=_ref())
    patch = next(iter(_site_patches(m).values())).patch
    _sample(m, sdxl_cond, steps=1, cfg=1.0)
    assert patch._cache
    m.model_patches_to(torch.device("meta"))         # what ComfyUI does when it offloads the model
    assert patch._cache == {}
    m.model_patches_to(torch.float16)
    assert m.model_patches_models() == []
    assert isinstance(_site_patches(m)[("middle", 0, 0)], pack.patch.SitePatch)
    # clones share the precomputed K/V instead of copying them
    assert next(iter(_site_patches(m.clone()).values())).patch is patch


@pytest.fixture(scope="module")
def small_clip_vision(comfy, tmp_path_factory):
    """A real ComfyUI ClipVisionModel of reduced size: ViT-H's projection (1024-d image_embeds) on a 64-wide,
    2-layer tower (hidden states (B, 257, 64)); random weights."""
    import json

    import comfy.clip_vision

    cfg = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 64, "image_size": 224,
           "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 128, "layer_norm_eps": 1e-05,
           "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 2,
           "patch_size": 14, "projection_dim": 1024, "torch_dtype": "float32"}
    path = tmp_path_factory.mktemp("clipv") / "clip_vision_small.json"
    path.write_text(json.dumps(cfg))
    cv = comfy.clip_vision.ClipVisionModel(str(path))
    hostlib_fill(cv.model)
    return cv


def hostlib_fill(module):
    import hostlib

    hostlib.fill_random_(module, seed=7, std=0.05)


def _image(seed=0, b=1):
    return torch.rand(b, 96, 80, 3, generator=torch.Generator().manual_seed(seed))


def test_reference_image_through_clip_vision(pack, sdxl_small, sdxl_cond, ipa, small_clip_vision, comfy):
    cv = small_clip_vision
    # plain (ViT-H layout): image_embeds; unconditional rows use zeros (lib default)
    feats, uncond = pack.adapter.encode_reference(ipa, cv, _image(), None)
    assert feats.shape == (1, 1024) and uncond is None
    with torch.inference_mode():
        direct = cv.encode_image(_image())["image_embeds"]
    assert torch.equal(feats, direct.float())
    plain = _sample(sdxl_small, sdxl_cond)
    assert not torch.allclose(_sample(_apply(pack, sdxl_small, ipa, ref=feats), sdxl_cond), plain, atol=1e-4)
    # plus (Resampler on hidden states): the "no image" input is a black image, as IPAdapter_plus encodes it
    path = save_ip_adapter(comfy.models_dir / "ipadapter" / "plus_small.safetensors", "plus", "h", widths=WIDTHS,
                           clip_dim=64, resampler_dim=64, resampler_heads=2, resampler_depth=1, std=0.05)
    plus = pack.adapter.load_adapter(path)
    feats, uncond = pack.adapter.encode_reference(plus, cv, _image(), None)
    assert feats.shape == (1, 257, 64) and uncond.shape == (1, 257, 64)
    black = torch.zeros(1, 224, 224, 3)
    with torch.inference_mode():
        assert torch.allclose(uncond, cv.encode_image(black)["penultimate_hidden_states"].float())
    assert not torch.allclose(uncond, torch.zeros_like(uncond))
    # errors that say the fix
    BoLIDError = pack.errors.BoLIDError
    with pytest.raises(BoLIDError, match="needs a CLIP vision model"):
        pack.adapter.encode_reference(ipa, None, _image(), None)
    with pytest.raises(BoLIDError, match="not both"):
        pack.adapter.encode_reference(ipa, cv, _image(), cv.encode_image(_image()))
    with pytest.raises(BoLIDError, match="no reference image"):
        pack.adapter.encode_reference(ipa, cv, None, None)
    with pytest.raises(BoLIDError, match=r"needs a ViT-H \(1280-dim hidden states.*gives 64-dim"):
        full_plus = pack.adapter.BoLIDAdapter(pack.adapter.AdapterConfig(ref_kind="plus", ref_tokens=16, body_dim=None,
                                                                         widths=WIDTHS, resampler_depth=1))
        feats, uncond = pack.adapter.encode_reference(full_plus, cv, _image(), None)
        _apply(pack, sdxl_small, full_plus, ref=feats)


# --- the whole graph through ComfyUI's executor -------------------------------------------------

_OBJECTS: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _drop_objects():
    """The source nodes' objects go with this module's tests (models left to the interpreter's exit make ComfyUI
    print errors from ModelPatcher.__del__)."""
    yield
    _OBJECTS.clear()


def _source_node(type_name):
    class Source:
        CATEGORY = "testing"
        RETURN_TYPES = (type_name,)
        FUNCTION = "get"
        DESCRIPTION = "test-only source of a prepared object"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"key": ("STRING", {"default": ""})}}

        def get(self, key):
            return (_OBJECTS[key],)

    return Source


@pytest.fixture(scope="module")
def sources(comfy):
    names = {f"BoLIDTestSource_{t}": _source_node(t)
             for t in ("MODEL", "CONDITIONING", "CLIP_VISION_OUTPUT", "BOLID_BODY", "CLIP_VISION", "IMAGE")}
    comfy.nodes.NODE_CLASS_MAPPINGS.update(names)
    yield names
    for n in names:
        comfy.nodes.NODE_CLASS_MAPPINGS.pop(n, None)


def _graph(lambda_ref, lambda_body, ipa_name, bolid_name):
    return {
        "1": {"class_type": "BoLIDTestSource_MODEL", "inputs": {"key": "model"}},
        "2": {"class_type": "BoLIDAdapterLoader", "inputs": {"adapter_name": ipa_name}},
        "3": {"class_type": "BoLIDAdapterLoader", "inputs": {"adapter_name": bolid_name}},
        "4": {"class_type": "BoLIDTestSource_CLIP_VISION_OUTPUT", "inputs": {"key": "cvo"}},
        "5": {"class_type": "BoLIDTestSource_BOLID_BODY", "inputs": {"key": "body"}},
        "6": {"class_type": "BoLIDApply", "inputs": {"model": ["1", 0], "adapter": ["2", 0], "lambda_ref": lambda_ref,
                                                     "lambda_body": 0.0, "start_at": 0.0, "end_at": 1.0,
                                                     "clip_vision_output": ["4", 0]}},
        "7": {"class_type": "BoLIDApply", "inputs": {"model": ["6", 0], "adapter": ["3", 0], "lambda_ref": 0.0,
                                                     "lambda_body": lambda_body, "start_at": 0.0, "end_at": 1.0,
                                                     "body": ["5", 0], "block_middle": 1.5, "blocks_for": "body"}},
        "8": {"class_type": "BoLIDTestSource_CONDITIONING", "inputs": {"key": "pos"}},
        "9": {"class_type": "BoLIDTestSource_CONDITIONING", "inputs": {"key": "neg"}},
        "10": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "11": {"class_type": "KSampler", "inputs": {"model": ["7", 0], "seed": 3, "steps": 2, "cfg": 4.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "positive": ["8", 0],
                                                    "negative": ["9", 0], "latent_image": ["10", 0], "denoise": 1.0}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "bolid_test"}},
    }


def _saved_latent(comfy, result):
    import safetensors.torch

    files = result.outputs["12"]["latents"]
    return safetensors.torch.load_file(str(comfy.output_dir / files[0]["subfolder"] / files[0]["filename"]))["latent_tensor"]


def test_ksampler_graph_with_loader_and_apply_nodes(comfy, pack, sources, files, sdxl_small, sdxl_cond):
    choices = pack.nodes.adapter_choices()
    ipa_name = "[ipadapter] ip-adapter_sdxl_vit-h.safetensors"
    assert ipa_name in choices and "bolid_test_adapter.safetensors" in choices
    pos, neg = sdxl_cond(0, 64, 64)
    _OBJECTS.update(model=sdxl_small, pos=pos, neg=neg, body=_body(pack))
    from comfy.clip_vision import Output

    cvo = Output()
    cvo["image_embeds"] = _ref()
    _OBJECTS["cvo"] = cvo

    on = comfy.run(_graph(0.8, 1.0, ipa_name, "bolid_test_adapter.safetensors"))
    assert on.ok, on.error_text()
    off = comfy.run(_graph(0.0, 0.0, ipa_name, "bolid_test_adapter.safetensors"))
    assert off.ok, off.error_text()
    lat_on, lat_off = _saved_latent(comfy, on), _saved_latent(comfy, off)
    assert lat_on.shape == (1, 4, 8, 8) and torch.isfinite(lat_on).all()
    assert not torch.allclose(lat_on, lat_off, atol=1e-4)
    # with both λ = 0 the graph gives the unpatched model's latent (up to SaveLatent's storage)
    plain = _sample(sdxl_small, sdxl_cond, steps=2, seed=3)
    assert torch.equal(lat_off, plain.to(lat_off.dtype))


def test_graph_with_reference_image_and_clip_vision(comfy, pack, sources, files, sdxl_small, sdxl_cond, small_clip_vision):
    pos, neg = sdxl_cond(0, 64, 64)
    _OBJECTS.update(model=sdxl_small, pos=pos, neg=neg, body=_body(pack), clipv=small_clip_vision, image=_image(b=2))
    g = _graph(0.8, 1.0, "[ipadapter] ip-adapter_sdxl_vit-h.safetensors", "bolid_test_adapter.safetensors")
    del g["6"]["inputs"]["clip_vision_output"]
    g["13"] = {"class_type": "BoLIDTestSource_CLIP_VISION", "inputs": {"key": "clipv"}}
    g["14"] = {"class_type": "BoLIDTestSource_IMAGE", "inputs": {"key": "image"}}
    g["6"]["inputs"].update(clip_vision=["13", 0], image=["14", 0], ref_batch="average")
    res = comfy.run(g)
    assert res.ok, res.error_text()
    # two references for one latent with "one per latent" is refused at sampling, with the rule in the message
    g["6"]["inputs"]["ref_batch"] = "one per latent"
    res = comfy.run(g)
    assert not res.ok and "2 reference images for a batch of 1 latents" in res.error_text()


def test_graph_errors_say_the_fix(comfy, sources, files, sdxl_small, sdxl_cond):
    pos, neg = sdxl_cond(0, 64, 64)
    _OBJECTS.update(model=sdxl_small, pos=pos, neg=neg)
    g = _graph(0.8, 1.0, "[ipadapter] ip-adapter_sdxl_vit-h.safetensors", "bolid_test_adapter.safetensors")
    g["6"]["inputs"]["start_at"] = 0.9
    g["6"]["inputs"]["end_at"] = 0.1
    res = comfy.run(g)
    assert not res.ok and "start_at" in res.error_text()
    g = _graph(0.8, 1.0, "[ipadapter] ip-adapter_sdxl_vit-h.safetensors", "bolid_test_adapter.safetensors")
    del g["6"]["inputs"]["clip_vision_output"]
    res = comfy.run(g)
    assert not res.ok and "at least one branch" in res.error_text()


def test_loader_refuses_bin_with_the_fix(comfy, sources, sdxl_small, sdxl_cond):
    _OBJECTS.update(model=sdxl_small, pos=sdxl_cond(0, 64, 64)[0])
    p = comfy.models_dir / "ipadapter" / "ip-adapter_sdxl.bin"
    p.write_bytes(b"\x80\x04 pickle")
    try:
        g = {"1": {"class_type": "BoLIDAdapterLoader", "inputs": {"adapter_name": "[ipadapter] ip-adapter_sdxl.bin"}},
             "2": {"class_type": "BoLIDApply", "inputs": {"model": ["3", 0], "adapter": ["1", 0], "lambda_ref": 1.0,
                                                          "lambda_body": 1.0, "start_at": 0.0, "end_at": 1.0}},
             "3": {"class_type": "BoLIDTestSource_MODEL", "inputs": {"key": "model"}},
             "4": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 3, "steps": 1, "cfg": 1.0,
                                                        "sampler_name": "euler", "scheduler": "normal", "positive": ["5", 0],
                                                        "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
             "5": {"class_type": "BoLIDTestSource_CONDITIONING", "inputs": {"key": "pos"}},
             "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "7": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "bolid_test"}}}
        res = comfy.run(g)
        assert not res.ok and "pickle" in res.error_text() and ".safetensors" in res.error_text()
    finally:
        p.unlink()


def test_body_from_another_vae_warns_with_the_fix(comfy, pack, sdxl_small, bolid, caplog):
    """BoLID Apply, the real node class: a Body-ID of the right width made by another Body-ID VAE than the one the
    adapter's file names runs (a warning, not an error: a fine-tuned VAE may stay close) and says the fix."""
    import logging

    body = _body(pack)
    body.meta["vae_fingerprint"] = "bbbbbbbbbbbbbbbb"
    node = comfy.node("BoLIDApply")
    saved = bolid.body_vae_fingerprint
    try:
        for trained_with, warned in (("aaaaaaaaaaaaaaaa", True), ("bbbbbbbbbbbbbbbb", False), ("", False)):
            bolid.body_vae_fingerprint = trained_with
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="bolid"), torch.inference_mode():
                out = node.execute(model=sdxl_small, adapter=bolid, lambda_ref=1.0, lambda_body=1.0, start_at=0.0,
                                   end_at=1.0, body=body).result[0]
            assert out is not sdxl_small
            assert ("encode the photos again with the VAE the adapter was trained with" in caplog.text) == warned, trained_with
    finally:
        bolid.body_vae_fingerprint = saved
