"""The reference branch is IP-Adapter: BoLID Apply gives the picture ComfyUI_IPAdapter_plus gives, in ComfyUI's SDXL UNet.

BoLID Apply with λ_ref = w, the body branch off and the middle block at 0, against IPAdapter_plus at weight w, on
the same random IP-Adapter SDXL file (public key names and shapes) and the same reference image encoded by the same
real ComfyUI CLIP vision model (the real ViT-H / ViT-bigG widths and 257 tokens; fewer layers, random weights), for
the plain layouts (ViT-H: image_embeds 1024; ViT-bigG: 1280) and the plus layout (Resampler over ViT-H's 1280-wide
penultimate hidden states). Each pack encodes the image itself, so what each takes as "no image" for the CFG
unconditional rows is compared, not assumed.

The middle block: IPAdapter_plus registers ("middle", 1, i), which SDXL's UNet in ComfyUI never calls (its middle
transformer is ("middle", 0, i)); BoLID patches ("middle", 0, i), so its middle block at 1 adds what IPAdapter_plus
was trained to add there and IPAdapter_plus in ComfyUI leaves out.

Tolerances are relative to IPAdapter_plus's own effect (|IPAdapter - unpatched|): a difference under 1e-3 of it is
float summation order; a different scale, projection, token layout, site order or "no image" input is far above it.
The figures are printed (run with -s) and recorded as test properties.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json

import pytest
import torch

import hostlib

from test_apply_node import WIDTHS, _sample, _site_patches  # noqa: F401
from tools.make_test_models import save_ip_adapter

pytestmark = [pytest.mark.host, pytest.mark.usefixtures("one_thread")]

W = 0.7                 # λ_ref of BoLID = weight of IPAdapter_plus
REL_TOL = 1e-3          # parity: |BoLID - IPAdapter_plus| < REL_TOL × |IPAdapter_plus - unpatched|
CLIP_LAYERS = 3         # CLIP vision tower depth (the real widths, token count and preprocessing; fewer layers)

# layout name -> (IP-Adapter kind, CLIP vision model, feature key the layout reads)
LAYOUTS = {
    "plain-vit-h": ("plain", "h", "image_embeds"),
    "plain-vit-bigg": ("plain", "g", "image_embeds"),
    "plus-vit-h": ("plus", "h", "penultimate_hidden_states"),
}


@pytest.fixture(autouse=True)
def _free_models():
    """Each test builds IPAdapter_plus's float32 copy of the adapter (the plus Resampler alone is 330 MB): free it
    before the next test instead of whenever the cycle collector runs."""
    yield
    gc.collect()


_CLIP: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _drop_clip_visions():
    """The CLIP vision models built once for this module go with it (each holds a ComfyUI ModelPatcher, which prints
    errors from its __del__ when left to the interpreter's exit)."""
    yield
    _CLIP.clear()
    _PLAIN.clear()


def _clip_vision(comfy, kind: str, tmp_dir):
    """A real ComfyUI ClipVisionModel from ComfyUI's own ViT-H / ViT-bigG config with CLIP_LAYERS layers, random
    weights (the full towers are 1.3 / 3.7 GB and slow on CPU; widths, 257 tokens and preprocessing are the real
    ones, which is what the adapters read)."""
    if kind not in _CLIP:
        import os

        import comfy.clip_vision

        name = {"h": "clip_vision_config_h.json", "g": "clip_vision_config_g.json"}[kind]
        with open(os.path.join(os.path.dirname(comfy.clip_vision.__file__), name)) as f:
            cfg = json.load(f)
        cfg["num_hidden_layers"] = CLIP_LAYERS
        path = tmp_dir / f"clip_vision_{kind}_{CLIP_LAYERS}layers.json"
        path.write_text(json.dumps(cfg))
        cv = comfy.clip_vision.ClipVisionModel(str(path))
        hostlib.fill_random_(cv.model, seed=3, std=0.05)
        _CLIP[kind] = cv
    return _CLIP[kind]


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request, comfy, pack, ipa_plus, sdxl_small, tmp_path_factory):
    """One IP-Adapter file loaded by both packs, the CLIP vision model its layout needs, and IPAdapter_plus's model
    for the reference image at weight W (built once: its float32 copy of a plus Resampler is 330 MB)."""
    name = request.param
    kind, clip, key = LAYOUTS[name]
    path = save_ip_adapter(comfy.models_dir / "ipadapter" / f"parity_{name}.safetensors", kind,
                           "bigg" if clip == "g" else "h", widths=WIDTHS, std=0.05, seed=31)
    out = {
        "name": name, "kind": kind, "key": key,
        "bolid": pack.adapter.load_adapter(path),
        "ipa": ipa_plus.ipadapter_model_loader(str(path)),
        "clip_vision": _clip_vision(comfy, clip, tmp_path_factory.mktemp("clipv")),
    }
    out["ipa_model"] = _ipadapter(ipa_plus, sdxl_small, out, _image())
    yield out
    out.clear()
    gc.collect()


def _image(seed=5, b=1):
    # not square: both packs centre-crop to 224 (ComfyUI's clip_preprocess)
    return torch.rand(b, 200, 256, 3, generator=torch.Generator().manual_seed(seed))


def _ipadapter(ipa_plus, model, layout, image, weight=W, **kw):
    """IPAdapter_plus's IPAdapterAdvanced path (ipadapter_execute) on a clone: it encodes the image itself.
    (Its print about non-square images is silenced.)"""
    with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):
        return ipa_plus.ipadapter_execute(model.clone(), layout["ipa"], layout["clip_vision"], image=image,
                                          weight=weight, **kw)[0]


def _bolid(comfy, model, layout, image, lambda_ref=W, block_middle=0.0, **kw):
    """The real BoLID Apply node (its execute: the reference image encoded by encode_reference), body branch off."""
    with torch.inference_mode():
        return comfy.node("BoLIDApply").execute(
            model=model, adapter=layout["bolid"], lambda_ref=lambda_ref, lambda_body=0.0, start_at=0.0, end_at=1.0,
            clip_vision=layout["clip_vision"], image=image, block_input=1.0, block_middle=block_middle,
            block_output=1.0, blocks_for="ref", **kw).result[0]


_PLAIN: dict = {}


def _run(model, cond, steps=3):
    """(final latent, [model output (denoised) of every UNet forward, by cond_or_uncond]) of euler steps with CFG 4.

    The recording wrapper is set on ``model`` itself and removed after (a clone would copy IPAdapter_plus's patch,
    adapter included, on ComfyUI 0.3.x); the shared unpatched model is run once per step count, on a clone."""
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        chunks = out.chunk(len(args["cond_or_uncond"]))
        calls.append({c: o.clone() for c, o in zip(args["cond_or_uncond"], chunks)})
        return out

    assert "model_function_wrapper" not in model.model_options
    model.model_options["model_function_wrapper"] = wrapper
    try:
        latent = _sample(model, cond, steps=steps, cfg=4.0)
    finally:
        del model.model_options["model_function_wrapper"]
    return latent, calls


def _plain(sdxl_small, cond, steps=3):
    if steps not in _PLAIN:
        _PLAIN[steps] = _run(sdxl_small.clone(), cond, steps)
    return _PLAIN[steps]


def _max(t):
    return float(t.abs().max())


def _figures(bolid, ipa, plain):
    """diff / effect of the final latents and of every UNet forward, cond (0) and uncond (1) rows apart."""
    (lb, cb), (li, ci), (lp, cp) = bolid, ipa, plain
    out = {"latent": (_max(lb - li), _max(li - lp))}
    assert len(cb) == len(ci) == len(cp) > 0
    for step, (b, i, p) in enumerate(zip(cb, ci, cp)):
        assert set(b) == set(i) == {0, 1}, "CFG must run the cond and the uncond rows"
        for row in (0, 1):
            out[f"step{step}/{'cond' if row == 0 else 'uncond'}"] = (_max(b[row] - i[row]), _max(i[row] - p[row]))
    return out


def _report(record_property, name, figures):
    worst = max(d / e for d, e in figures.values())
    record_property(f"{name} worst diff/effect", worst)
    print(f"\n{name} (diff/effect): " + ", ".join(f"{k} {d:.2e}/{e:.3g}" for k, (d, e) in figures.items())
          + f"  (worst ratio {worst:.2e})")
    return worst


def test_ipadapter_plus_middle_block_never_fires(comfy, ipa_plus, layout, sdxl_small, sdxl_cond):
    """What the comparison rests on: IPAdapter_plus's 10 middle-block patches sit on keys the UNet never calls."""
    m = layout["ipa_model"]
    sites = _site_patches(m)
    keys = set(sites)
    middle = {k for k in keys if k[0] == "middle"}
    assert middle == {("middle", 1, i) for i in range(10)} and len(keys) == 70
    called = []
    saved = dict(sites)
    try:
        for k, patch in saved.items():
            def spy(q, k_, v, extra, _patch=patch):
                called.append((extra["block"][0], extra["block"][1], extra["block_index"]))
                return _patch(q, k_, v, extra)

            sites[k] = spy          # each of IPAdapter_plus's patch objects, behind a recording function
        _sample(m, sdxl_cond, steps=1, cfg=1.0)
    finally:
        sites.update(saved)
    assert len(called) == 60 and set(called) == keys - middle


def test_ref_branch_equals_ipadapter_plus(comfy, pack, ipa_plus, layout, sdxl_small, sdxl_cond, record_property):
    """BoLID Apply (λ_ref = w, middle 0, body off) = IPAdapter_plus (weight w): sampled latents and every UNet
    output, the CFG unconditional rows included, within 1e-3 of IPAdapter_plus's own effect."""
    ipa = _run(layout["ipa_model"], sdxl_cond)
    bolid = _run(_bolid(comfy, sdxl_small, layout, _image()), sdxl_cond)
    plain = _plain(sdxl_small, sdxl_cond)
    figures = _figures(bolid, ipa, plain)
    worst = _report(record_property, layout["name"], figures)
    d, e = figures["latent"]
    assert e > 1e-2 * _max(plain[0]), f"IPAdapter_plus's effect ({e:.3g}) is too small to compare against"
    for where, (d, e) in figures.items():
        assert d < REL_TOL * e, (f"{layout['name']} {where}: BoLID differs from IPAdapter_plus by {d:.3g}, "
                                 f"{d / e:.2e} of IPAdapter_plus's own effect {e:.3g} (tolerance {REL_TOL:g})")
    assert worst < REL_TOL


def test_tokens_and_site_kv_equal_ipadapter_plus(comfy, pack, ipa_plus, layout, sdxl_small):
    """The parts, where the pictures would hide a cause: the projected image tokens of the reference and of "no
    image" (IPAdapter_plus's cond / uncond) and K, V of every site in IP-Adapter's numbering."""
    image = _image()
    ipa_sites = _site_patches(layout["ipa_model"])
    bolid_sites = _site_patches(_bolid(comfy, sdxl_small, layout, image, block_middle=1.0))
    bolid_patch = next(iter(bolid_sites.values())).patch
    kw = next(iter(ipa_sites.values())).kwargs[0]
    adapter = layout["bolid"]
    with torch.inference_mode():                    # as the executor runs nodes (and no autograd graph is kept)
        features, uncond_features = pack.adapter.encode_reference(adapter, layout["clip_vision"], image, None)
        tokens = adapter.ref_tokens(features)
        uncond = adapter.ref_tokens(uncond_features if uncond_features is not None else torch.zeros_like(features))
    n = 16 if layout["kind"] == "plus" else 4
    assert tokens.shape == kw["cond"].shape == (1, n, 2048)
    torch.testing.assert_close(tokens, kw["cond"].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(uncond, kw["uncond"].float(), rtol=1e-5, atol=1e-5)
    to_kvs = kw["ipadapter"].ip_layers.to_kvs
    for s in pack.sdxl.SITES:
        k_c, v_c, k_u, v_u = bolid_patch._base["ref"][s.index]
        n_ip = s.ip_adapter_number
        with torch.inference_mode():
            want = [to_kvs[f"{n_ip}_to_{kv}_ip"](t.float()) for kv, t in (("k", kw["cond"]), ("v", kw["cond"]),
                                                                         ("k", kw["uncond"]), ("v", kw["uncond"]))]
        # our K/V come from our tokens, theirs from theirs: the tokens agree to 1e-5 (above), not bit for bit, and
        # each site's 2048-wide projection carries that on (1.1e-5 seen at a plus ViT-H site on one CPU; a wrong
        # weight or token would be off by orders more)
        for got, exp in zip((k_c, v_c, k_u, v_u), want):
            torch.testing.assert_close(got, exp, rtol=1e-5, atol=5e-5, msg=lambda m: f"site {s.key}: {m}")


def test_several_references_average_like_ipadapter_plus(comfy, ipa_plus, layout, sdxl_small, sdxl_cond, record_property):
    """Two reference images: BoLID's "average" = IPAdapter_plus's combine_embeds "average" (the CLIP features are
    averaged before the projection)."""
    image = torch.cat([_image(5), _image(6)])
    ipa = _run(_ipadapter(ipa_plus, sdxl_small, layout, image, combine_embeds="average"), sdxl_cond, steps=2)
    bolid = _run(_bolid(comfy, sdxl_small, layout, image, ref_batch="average"), sdxl_cond, steps=2)
    plain = _plain(sdxl_small, sdxl_cond, steps=2)
    figures = _figures(bolid, ipa, plain)
    _report(record_property, layout["name"] + " (2 refs averaged)", figures)
    for where, (d, e) in figures.items():
        assert d < REL_TOL * e, f"{layout['name']} {where}: {d:.3g} vs effect {e:.3g}"


def test_middle_block_adds_what_ipadapter_plus_leaves_out(comfy, pack, ipa_plus, layout, sdxl_small, sdxl_cond,
                                                         record_property):
    """BoLID's middle block at 1 fires (IPAdapter_plus's never does): a measured, not tiny, departure from it."""
    ipa = _run(layout["ipa_model"], sdxl_cond)
    m = _bolid(comfy, sdxl_small, layout, _image(), block_middle=1.0)
    with_middle = _run(m, sdxl_cond)
    plain = _plain(sdxl_small, sdxl_cond)
    d, e = _max(with_middle[0] - ipa[0]), _max(ipa[0] - plain[0])
    ratio = d / e
    record_property(f"{layout['name']} middle/effect", ratio)
    print(f"\n{layout['name']}: middle block at 1 departs from IPAdapter_plus by {d:.3g} = {ratio:.3f} of its effect {e:.3g}")
    patch = next(iter(_site_patches(m).values())).patch
    assert all(patch.site_calls[s.index] > 0 for s in pack.sdxl.SITES if s.block == "middle")
    assert ratio > 100 * REL_TOL, f"the middle block adds only {ratio:.2e} of the effect: does it fire?"
