"""The per-site patch logic: exact plain attention when off, cond/uncond rows, stacking, caching, batch rules."""

import math

import pytest
import torch

from bolid_lib.method.adapter import AdapterConfig
from bolid_lib.method.attention import Branch, decoupled_attention, sdpa_attention
from bolid_lib.errors import BoLIDError
from bolid_lib.method.patch import ROLES_KEY, BoLIDPatch, PatchSettings, SitePatch, cond_roles, detach_patch, uncond_chunks
from bolid_lib.method.sdxl_layers import SITES
from tools.make_test_models import random_bolid_adapter

CFG = AdapterConfig(context_dim=32, widths=(8, 16), ref_kind="plain", clip_embed_dim=12, body_dim=10, body_hidden=16,
                    body_tokens=3, ref_tokens=4)
HEADS = 2


@pytest.fixture(scope="module")
def adapter():
    return random_bolid_adapter(CFG, seed=0, std=0.3)


def _patch(adapter, refs=1, body=True, **settings):
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(max(refs, 1), 12, generator=g)[:refs]      # always drawn: same c_body whatever refs is
    c_body = torch.randn(10, generator=g)
    feats = feats if refs else None
    c_body = c_body if body else None
    return BoLIDPatch(adapter, settings=PatchSettings(**settings), ref_features=feats, c_body=c_body)


def _inputs(site=0, b=2, n=6, seed=0, dtype=torch.float32):
    w = (8, 16)[SITES[site].level]
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, m, w, generator=g).to(dtype) for m in (n, 7, 7)]


def _extra(cond_or_uncond=(0,), sigma=1.0):
    return {"n_heads": HEADS, "cond_or_uncond": list(cond_or_uncond), "sigmas": torch.tensor([sigma])}


@pytest.mark.parametrize("settings", [dict(lambda_ref=0.0, lambda_body=0.0),
                                      dict(noise_start=0.5, noise_end=0.2),     # sigma 1.0 is before the start
                                      dict(noise_start=5.0, noise_end=2.0),
                                      dict(block_weights_ref=(0, 1, 1), block_weights_body=(0, 0, 0))])
def test_off_is_plain_attention_bit_for_bit(adapter, settings):
    p = _patch(adapter, **settings)
    q, k, v = _inputs(site=0)
    out = p.site(0)(q, k, v, _extra((0, 1)))
    assert torch.equal(out, sdpa_attention(q, k, v, HEADS))


@pytest.mark.parametrize("site", [0, 30, 65])
def test_on_equals_formula_with_cond_and_uncond_rows(adapter, site):
    p = _patch(adapter, lambda_ref=0.8, lambda_body=1.3)
    q, k, v = _inputs(site=site, b=4)
    out = p.site(site)(q, k, v, _extra((1, 0)))      # rows 0-1 uncond, rows 2-3 cond
    ref_c = adapter.ref_tokens(torch.randn(1, 12, generator=torch.Generator().manual_seed(5)))
    g = torch.Generator().manual_seed(5)
    torch.randn(1, 12, generator=g)
    c_body = torch.randn(10, generator=g)
    body_c = adapter.body_tokens(c_body)
    ref_u = adapter.ref_tokens(torch.zeros(1, 12))
    body_u = adapter.body_tokens(torch.zeros(1, 10))

    def want(rows, rt, bt):
        kr, vr = adapter.site_kv("ref", site, rt)
        kb, vb = adapter.site_kv("body", site, bt)
        return decoupled_attention(q[rows], k[rows], v[rows], [Branch(kr, vr, 0.8), Branch(kb, vb, 1.3)], HEADS)

    torch.testing.assert_close(out[:2], want(slice(0, 2), ref_u, body_u))
    torch.testing.assert_close(out[2:], want(slice(2, 4), ref_c, body_c))
    assert not torch.allclose(out, sdpa_attention(q, k, v, HEADS))


def test_cond_roles_name_the_negatives_of_any_guider():
    # KSampler's CFGGuider, ComfyUI's DualCFGGuider (middle marked prompt_type negative) and PerpNegGuider (empty marked)
    conds = {"positive": [{"uuid": "p1"}, {"uuid": "p2"}], "negative": [{"uuid": "n"}],
             "middle": [{"uuid": "m", "prompt_type": "negative"}], "empty_negative_prompt": [{"uuid": "e", "prompt_type": "negative"}],
             "other": [{"no_uuid": 1}]}
    assert cond_roles(conds) == {"p1": False, "p2": False, "n": True, "m": True, "e": True}
    assert cond_roles(None) == {} and cond_roles({"positive": None}) == {}


def test_unconditional_chunks_by_role_then_by_index():
    roles = {"neg": True, "mid": True, "pos": False}
    # DualCFGGuider's batch [negative, middle, positive]: by index the negative would be a cond chunk
    dual = {"cond_or_uncond": [0, 1, 2], "uuids": ["neg", "mid", "pos"], ROLES_KEY: roles}
    assert uncond_chunks(dual) == [True, True, False]
    assert uncond_chunks({k: v for k, v in dual.items() if k != ROLES_KEY}) == [False, True, False]   # the index rule
    # a chunk the map does not know (a conditioning made after the guider started) follows the index rule
    assert uncond_chunks({"cond_or_uncond": [0, 1], "uuids": ["x", "y"], ROLES_KEY: roles}) == [False, True]
    # uuids that do not line up with the chunks are not trusted
    assert uncond_chunks({"cond_or_uncond": [0, 1], "uuids": ["pos"], ROLES_KEY: roles}) == [False, True]
    assert uncond_chunks({}) == [False]


def test_roles_decide_which_rows_get_the_body(adapter):
    """PerpNegGuider's batch [positive, empty]: chunk indices (0, 2). By index both rows would get the body; with the
    roles the empty prompt's row gets the zero embedding's, exactly what KSampler's (0, 1) batch gives."""
    p = _patch(adapter, lambda_ref=0.8, lambda_body=1.3)
    q, k, v = _inputs(site=30, b=2)
    ksampler = p.site(30)(q, k, v, _extra((0, 1)))
    perp = {**_extra((0, 2)), "uuids": ["pos", "empty"], ROLES_KEY: {"pos": False, "empty": True}}
    assert torch.equal(p.site(30)(q, k, v, perp), ksampler)
    by_index = p.site(30)(q, k, v, _extra((0, 2)))
    assert torch.equal(by_index[:1], ksampler[:1]) and not torch.allclose(by_index[1:], ksampler[1:])


def test_each_branch_changes_output(adapter):
    q, k, v = _inputs(site=3)
    plain = sdpa_attention(q, k, v, HEADS)
    only_ref = _patch(adapter, body=False).site(3)(q, k, v, _extra())
    only_body = _patch(adapter, refs=0).site(3)(q, k, v, _extra())
    both = _patch(adapter).site(3)(q, k, v, _extra())
    for a, b in [(only_ref, plain), (only_body, plain), (both, only_ref), (both, only_body)]:
        assert not torch.allclose(a, b)
    torch.testing.assert_close(both - plain, (only_ref - plain) + (only_body - plain))


def test_sigma_range_boundaries(adapter):
    p = _patch(adapter, noise_start=3.0, noise_end=1.0)
    q, k, v = _inputs()
    plain = sdpa_attention(q, k, v, HEADS)
    for sigma, on in [(5.0, False), (3.0, True), (2.0, True), (1.0, True), (0.5, False)]:
        out = p.site(0)(q, k, v, _extra(sigma=sigma))
        assert torch.equal(out, plain) != on, sigma
    # no sigmas given (a UNet call outside sampling): on
    assert not torch.equal(p.site(0)(q, k, v, {"n_heads": HEADS}), plain)


def test_stacks_over_previous_patch(adapter):
    p = _patch(adapter)
    q, k, v = _inputs()
    seen = []

    class Prev:
        def __call__(self, q_, k_, v_, extra):
            seen.append(extra["cond_or_uncond"])
            return sdpa_attention(q_, k_, v_, HEADS) + 1.0

        def to(self, x):
            seen.append(("to", x))
            return self

        def models(self):
            return ["prev-model"]

    prev = Prev()
    stacked = p.site(0, previous=prev)
    alone = p.site(0)(q, k, v, _extra())
    out = stacked(q, k, v, _extra())
    torch.testing.assert_close(out, alone + 1.0)
    assert stacked.models() == ["prev-model"] and p.site(0).models() == []
    assert stacked.to(torch.device("cpu")) is stacked and ("to", torch.device("cpu")) in seen
    # with the branches off, the previous patch still runs and its output is returned as is
    off = _patch(adapter, lambda_ref=0.0, lambda_body=0.0).site(0, previous=prev)
    torch.testing.assert_close(off(q, k, v, _extra()), sdpa_attention(q, k, v, HEADS) + 1.0)


def test_takes_a_later_packs_term_through_add(adapter):
    """ComfyUI_IPAdapter_plus's protocol: a later pack calls existing.add(callback, **kwargs) on the site's patch
    (the real IPAdapter_plus runs against it in the host tier, tests/host/test_ipadapter_plus.py)."""
    p = _patch(adapter)
    q, k, v = _inputs()
    alone = p.site(0)(q, k, v, _extra(sigma=1.0))
    site = p.site(0)
    got = []

    def term(out, q_, k_, v_, extra, scale=1.0, **kw):
        got.append((out.shape, kw))
        return torch.full_like(out, scale)

    site.add(term, scale=2.0, sigma_start=3.0, sigma_end=0.5, tag="x")
    torch.testing.assert_close(site(q, k, v, _extra(sigma=1.0)), alone + 2.0)
    assert got == [(alone.shape, {"sigma_start": 3.0, "sigma_end": 0.5, "tag": "x"})]   # every keyword, as IPAdapter_plus passes them
    torch.testing.assert_close(site(q, k, v, _extra(sigma=4.0)), p.site(0)(q, k, v, _extra(sigma=4.0)))  # outside its range
    site.add(term, scale=0.5)                                             # no range given: always on
    torch.testing.assert_close(site(q, k, v, _extra(sigma=1.0)), alone + 2.5)
    assert p.site(0).added == []                                          # other sites and copies are untouched


def test_a_copied_site_patch_owns_its_added_terms(adapter):
    """What a model clone holds (ComfyUI 0.33 shares non-container objects between clones): the copy computes the
    same output, shares the fixed conditioning, and a term added to one never reaches the other."""
    p = _patch(adapter)
    q, k, v = _inputs()
    site = p.site(0)
    site.add(lambda out, *a, **kw: torch.ones_like(out))
    twin = site.copy()
    assert twin is not site and twin.patch is site.patch and twin.previous is site.previous
    torch.testing.assert_close(twin(q, k, v, _extra(sigma=1.0)), site(q, k, v, _extra(sigma=1.0)))
    twin.add(lambda out, *a, **kw: torch.full_like(out, 5.0))
    assert len(twin.added) == 2 and len(site.added) == 1
    torch.testing.assert_close(twin(q, k, v, _extra(sigma=1.0)), site(q, k, v, _extra(sigma=1.0)) + 5.0)


def test_detach_patch_copies_what_a_later_add_could_change(adapter):
    """A patch BoLID stacks on is copied with its own containers (as IPAdapter_plus's Attn2Replace keeps its terms
    in lists), so an ``add`` on the source model's object does not reach the BoLID model; plain functions and
    the shared tensors inside are kept as they are."""

    class Replace:                       # the shape of IPAdapter_plus's Attn2Replace
        def __init__(self):
            self.callback, self.kwargs, self.weights = [1], [{"w": torch.ones(1)}], torch.zeros(3)

        def add(self, callback, **kwargs):
            self.callback.append(callback)
            self.kwargs.append(kwargs)

        def __call__(self, q, k, v, extra):
            return q

    src = Replace()
    own = detach_patch(src)
    src.add(2, w=0)
    src.kwargs[0]["w"] = None
    assert type(own) is Replace and own.callback == [1] and len(own.kwargs) == 1 and own.kwargs[0]["w"] is not None
    assert own.weights is src.weights                   # tensors are not copied
    fn = lambda q, k, v, extra: q                       # noqa: E731
    assert detach_patch(fn) is fn
    site = _patch(adapter).site(0)
    copied = detach_patch(site)
    assert isinstance(copied, SitePatch) and copied is not site and copied.patch is site.patch


def test_kv_computed_once_and_reused(adapter):
    p = _patch(adapter)
    q, k, v = _inputs(site=10)
    p.site(10)(q, k, v, _extra((0, 1)))
    cached = dict(p._cache)
    assert set(cached) == {("ref", torch.device("cpu"), torch.float32, 10), ("body", torch.device("cpu"), torch.float32, 10)}
    for step in range(3):
        p.site(10)(q, k, v, _extra((0, 1), sigma=5.0 - step))
    assert all(p._cache[key] is cached[key] for key in cached)
    # a new dtype gets its own cast copy; an offload to another device drops copies elsewhere
    p.site(10)(*(t.to(torch.bfloat16) for t in (q, k, v)), _extra())
    assert len(p._cache) == 4
    assert p.to(torch.float16) is p and len(p._cache) == 4
    p.to(torch.device("meta"))
    assert p._cache == {}
    assert p.memory_bytes() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(adapter, dtype):
    p = _patch(adapter)
    q, k, v = _inputs(site=2, dtype=dtype)
    out = p.site(2)(q, k, v, _extra())
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = p.site(2)(q.float(), k.float(), v.float(), _extra())
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_reference_batch_rules(adapter):
    q, k, v = _inputs(site=1, b=4)
    # average: 3 references become one
    avg = _patch(adapter, refs=3, body=False)
    assert avg.n_refs == 1
    # one per latent: 2 references for 2 latents (cond and uncond chunks of 2)
    per = _patch(adapter, refs=2, body=False, ref_batch="per_latent")
    out = per.site(1)(q, k, v, _extra((0, 1)))
    feats = torch.randn(2, 12, generator=torch.Generator().manual_seed(5))
    for r in range(2):
        one = BoLIDPatch(adapter, settings=PatchSettings(), ref_features=feats[r:r + 1])
        single = one.site(1)(q[r:r + 1], k[r:r + 1], v[r:r + 1], _extra((0,)))
        torch.testing.assert_close(out[r:r + 1], single)
    # uncond rows use the zero embedding whatever the reference
    unc = BoLIDPatch(adapter, settings=PatchSettings(), ref_features=feats[:1]).site(1)(q[2:], k[2:], v[2:], _extra((1,)))
    torch.testing.assert_close(out[2:], unc)
    bad = _patch(adapter, refs=3, body=False, ref_batch="per_latent")
    with pytest.raises(BoLIDError, match="3 reference images for a batch of 2 latents"):
        bad.site(1)(q, k, v, _extra((0, 1)))


def test_block_weights_scale_branch(adapter):
    q, k, v = _inputs(site=60)      # a middle-block site
    plain = sdpa_attention(q, k, v, HEADS)
    full = _patch(adapter, refs=0).site(60)(q, k, v, _extra())
    half = _patch(adapter, refs=0, block_weights_body=(1, 0.5, 1)).site(60)(q, k, v, _extra())
    torch.testing.assert_close(half - plain, 0.5 * (full - plain))
    zero = _patch(adapter, refs=0, block_weights_body=(1, 0, 1))
    assert zero._base["body"][60] is None and zero._base["body"][0] is not None


def test_settings_and_inputs_are_checked(adapter):
    with pytest.raises(BoLIDError, match="at least one branch"):
        BoLIDPatch(adapter, settings=PatchSettings())
    with pytest.raises(BoLIDError, match="end .* before they start"):
        PatchSettings(noise_start=1.0, noise_end=2.0)
    with pytest.raises(BoLIDError, match="NaN"):
        PatchSettings(lambda_ref=math.nan)
    with pytest.raises(BoLIDError, match="ref_batch"):
        PatchSettings(ref_batch="concat")
    with pytest.raises(BoLIDError, match="D=10"):
        BoLIDPatch(adapter, settings=PatchSettings(), c_body=torch.randn(756))
    no_body = random_bolid_adapter(AdapterConfig(context_dim=32, widths=(8, 16), ref_kind="plain", clip_embed_dim=12, body_dim=None))
    with pytest.raises(BoLIDError, match="no body branch"):
        BoLIDPatch(no_body, settings=PatchSettings(), c_body=torch.randn(10))
    for index in (-1, len(SITES)):               # -1 would silently be the last site if indexing were Python's
        with pytest.raises(BoLIDError, match="site index"):
            _patch(adapter).site(index)


def test_the_last_site_uses_its_own_weights(adapter):
    """Site 69, the last valid index, computes the formula with site 69's K/V projections (not a neighbour's)."""
    last = len(SITES) - 1
    p = _patch(adapter, lambda_ref=0.8, lambda_body=1.3)
    q, k, v = _inputs(site=last)
    out = p.site(last)(q, k, v, _extra())
    g = torch.Generator().manual_seed(5)
    ref_c = adapter.ref_tokens(torch.randn(1, 12, generator=g))
    body_c = adapter.body_tokens(torch.randn(10, generator=g))

    def formula(site):
        kr, vr = adapter.site_kv("ref", site, ref_c)
        kb, vb = adapter.site_kv("body", site, body_c)
        return decoupled_attention(q, k, v, [Branch(kr, vr, 0.8), Branch(kb, vb, 1.3)], HEADS)

    torch.testing.assert_close(out, formula(last))
    assert SITES[last - 1].level == SITES[last].level and not torch.allclose(out, formula(last - 1))
