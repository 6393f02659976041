"""BoLID Apply stacked with the real ComfyUI_IPAdapter_plus, in both orders, inside ComfyUI's SDXL UNet.

IPAdapter_plus is not a requirement of this pack. The tests run when it is found, at $BOLID_IPADAPTER_PLUS, or
in ComfyUI's custom_nodes (as ComfyUI-Manager installs it); otherwise they skip and say where to put it.
IPAdapter_plus patches a site either by creating its own replace object or, when the site already has a replace
patch, by calling ``existing.add(callback, ...)``: BoLID Apply then IPAdapter used to fail with an AttributeError.
"""

from __future__ import annotations

import pytest
import torch


from test_apply_node import WIDTHS, _apply, _ref, _sample, _site_patches  # noqa: F401  (fixtures below come from there too)
from test_apply_node import files, ipa  # noqa: F401  (pack comes from conftest)
from tools.make_test_models import save_ip_adapter

pytestmark = [pytest.mark.host, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def ipa_plus_model(ipa_plus, comfy):
    # The same random IP-Adapter SDXL ViT-H file layout as the real one (image_proj.* / ip_adapter.*), read by
    # IPAdapter_plus's own loader.
    path = save_ip_adapter(comfy.models_dir / "ipadapter" / "ipa_plus_test_sdxl_vit-h.safetensors", "plain", "h",
                           widths=WIDTHS, std=0.05, seed=5)
    return ipa_plus.ipadapter_model_loader(str(path))


def _ipadapter(ipa_plus, model_in, ipa_model, **settings):
    """IPAdapter_plus's IPAdapterEmbeds path: a clone of the model, an image embedding given directly; settings
    are ipadapter_execute's (weight, start_at, end_at, ...)."""
    embed = torch.randn(1, 1024, generator=torch.Generator().manual_seed(21))
    with torch.inference_mode():
        return ipa_plus.ipadapter_execute(model_in.clone(), ipa_model, None, pos_embed=embed, **settings)[0]


def test_bolid_and_ipadapter_plus_stack_in_either_order(pack, sdxl_small, sdxl_cond, ipa, ipa_plus, ipa_plus_model):
    only_ipa = _ipadapter(ipa_plus, sdxl_small, ipa_plus_model)
    only_bolid = _apply(pack, sdxl_small, ipa, ref=_ref())
    bolid_before = _sample(only_bolid, sdxl_cond)
    ipa_alone = _sample(only_ipa, sdxl_cond)

    ipa_then_bolid = _apply(pack, only_ipa, ipa, ref=_ref())
    bolid_then_ipa = _ipadapter(ipa_plus, only_bolid, ipa_plus_model)   # used to raise AttributeError: no 'add'
    a, b = _sample(ipa_then_bolid, sdxl_cond), _sample(bolid_then_ipa, sdxl_cond)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    # Both terms are added to the text attention, so the order does not matter (up to float summation order).
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    plain = _sample(sdxl_small, sdxl_cond)
    for other in (plain, ipa_alone, bolid_before):
        assert not torch.allclose(a, other, atol=1e-4)                   # each pack still takes effect
    # IPAdapter_plus changed only its own clone: the BoLID-only model samples as before, the source has no patch.
    assert torch.equal(_sample(only_bolid, sdxl_cond), bolid_before)
    assert all(not p.added for p in _site_patches(only_bolid).values())
    assert "patches_replace" not in sdxl_small.model_options.get("transformer_options", {})


def test_lambda_zero_with_ipadapter_plus_is_ipadapter_alone(pack, sdxl_small, sdxl_cond, ipa, ipa_plus, ipa_plus_model):
    ipa_alone = _sample(_ipadapter(ipa_plus, sdxl_small, ipa_plus_model), sdxl_cond)
    after = _apply(pack, _ipadapter(ipa_plus, sdxl_small, ipa_plus_model), ipa, ref=_ref(), lambda_ref=0.0)
    before = _ipadapter(ipa_plus, _apply(pack, sdxl_small, ipa, ref=_ref(), lambda_ref=0.0), ipa_plus_model)
    assert torch.equal(_sample(after, sdxl_cond), ipa_alone)
    assert torch.allclose(_sample(before, sdxl_cond), ipa_alone, atol=1e-5, rtol=1e-5)


def test_ipadapter_plus_start_end_are_kept_after_bolid(pack, sdxl_small, sdxl_cond, ipa, ipa_plus, ipa_plus_model):
    """IPAdapter_plus's own sigma range still gates its term when it is stacked on BoLID."""
    only_bolid = _apply(pack, sdxl_small, ipa, ref=_ref())
    never = _ipadapter(ipa_plus, only_bolid, ipa_plus_model, start_at=1.0, end_at=1.0)
    assert torch.equal(_sample(never, sdxl_cond), _sample(only_bolid, sdxl_cond))


def test_stacking_reruns_never_reach_another_model(pack, sdxl_small, sdxl_cond, ipa, ipa_plus, ipa_plus_model):
    """Both orders, each node re-run 5 times on the same input models (as a user re-queues a graph whose upstream
    is cached): every run gives the same sample, and the BoLID-only, IPAdapter-only and source models stay bit for
    bit as they were. ComfyUI 0.33's clone() shares patch objects between a model and its clones; before the
    pack gave each clone its own site patches, IPAdapter_plus's ``add`` on a BoLID patch reached the BoLID-only
    model, and every re-run added its term once more."""
    plain = _sample(sdxl_small, sdxl_cond)
    only_bolid = _apply(pack, sdxl_small, ipa, ref=_ref())
    only_ipa = _ipadapter(ipa_plus, sdxl_small, ipa_plus_model)
    bolid_before, ipa_before = _sample(only_bolid, sdxl_cond), _sample(only_ipa, sdxl_cond)

    runs = {"bolid then ipadapter": [], "ipadapter then bolid": []}
    for _ in range(5):
        runs["bolid then ipadapter"].append(_sample(_ipadapter(ipa_plus, only_bolid, ipa_plus_model), sdxl_cond))
        runs["ipadapter then bolid"].append(_sample(_apply(pack, only_ipa, ipa, ref=_ref()), sdxl_cond))
    for order, samples in runs.items():
        for i, s in enumerate(samples[1:], 2):
            assert torch.equal(s, samples[0]), f"{order}: run {i} differs from run 1 by {(s - samples[0]).abs().max():.3g}"
    a, b = runs["bolid then ipadapter"][0], runs["ipadapter then bolid"][0]
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    assert not torch.allclose(a, bolid_before, atol=1e-4) and not torch.allclose(a, ipa_before, atol=1e-4)
    assert torch.equal(_sample(only_bolid, sdxl_cond), bolid_before), "the BoLID-only model changed"
    assert torch.equal(_sample(only_ipa, sdxl_cond), ipa_before), "the IPAdapter-only model changed"
    assert torch.equal(_sample(sdxl_small, sdxl_cond), plain), "the source model changed"
    assert all(not p.added for p in _site_patches(only_bolid).values())
    assert "patches_replace" not in sdxl_small.model_options.get("transformer_options", {})


def test_every_clone_of_a_patched_model_owns_its_site_patches(pack, sdxl_small, ipa):
    """The clone rule itself, on whichever host runs it: no BoLID site patch object is shared between a patched
    model and any clone of it (or a clone of a clone), so nothing done to one can reach another."""
    m = _apply(pack, sdxl_small, ipa, ref=_ref())
    c1 = m.clone()
    c2 = c1.clone()
    for a, b in ((m, c1), (m, c2), (c1, c2)):
        pa, pb = _site_patches(a), _site_patches(b)
        assert pa.keys() == pb.keys()
        assert all(pa[k] is not pb[k] for k in pa), "a site patch object is shared between two models"
        assert all(pa[k].patch is pb[k].patch for k in pa)   # the fixed conditioning K/V are shared, not copied
    # a term added on one clone exists on that clone only
    key = next(iter(_site_patches(c1)))
    _site_patches(c1)[key].add(lambda out, q, k, v, extra, **kw: out * 0)
    assert len(_site_patches(c1)[key].added) == 1
    assert not _site_patches(m)[key].added and not _site_patches(c2)[key].added


def test_bolid_keeps_its_own_copy_of_a_patch_it_stacks_on(pack, sdxl_small, sdxl_cond, ipa, ipa_plus, ipa_plus_model):
    """IPAdapter then BoLID, then IPAdapter applied once more to the IPAdapter-only model (another branch of the
    graph). On ComfyUI 0.33 that second IPAdapter changes the IPAdapter-only model itself (IPAdapter_plus ``add``s
    to the patch object its clone shares with its input: IPAdapter_plus's own behaviour, not this pack's), but it
    must not reach the BoLID model stacked on it: BoLID Apply keeps its own copy of the patch it wraps."""
    only_ipa = _ipadapter(ipa_plus, sdxl_small, ipa_plus_model)
    stacked = _apply(pack, only_ipa, ipa, ref=_ref())
    before = _sample(stacked, sdxl_cond)
    _ipadapter(ipa_plus, only_ipa, ipa_plus_model)
    assert torch.equal(_sample(stacked, sdxl_cond), before)
