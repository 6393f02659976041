"""Decoupled attention (paper 4.3) against a direct softmax evaluation; λ = 0 is the plain attention bit for bit."""

import pytest
import torch

from bolid_lib.method.attention import Branch, decoupled_attention, reference_attention, sdpa_attention


def _qkv(b=2, n=7, m=5, heads=3, d=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    c = heads * d
    return [torch.randn(b, x, c, generator=g).to(dtype) for x in (n, m, m)]


def _formula(q, k_t, v_t, branches, heads):
    """Z' = Attn(Q,K_t,V_t) + Σ λ·Attn(Q,K,V), each softmax(QKᵀ/√d)V written out in float64."""
    out = reference_attention(q, k_t, v_t, heads)
    for k, v, lam in branches:
        out = out + lam * reference_attention(q, k.expand(q.shape[0], -1, -1), v.expand(q.shape[0], -1, -1), heads)
    return out


@pytest.mark.parametrize("heads,d", [(1, 8), (3, 4), (8, 2)])
@pytest.mark.parametrize("lams", [(0.7,), (1.0, 0.5), (-0.3, 2.0)])
@pytest.mark.parametrize("branch_batch", [1, 2])
def test_equals_direct_softmax_formula(heads, d, lams, branch_batch):
    q, k_t, v_t = _qkv(heads=heads, d=d)
    g = torch.Generator().manual_seed(1)
    c = heads * d
    raw = [(torch.randn(branch_batch, 4 + i, c, generator=g), torch.randn(branch_batch, 4 + i, c, generator=g), lam)
           for i, lam in enumerate(lams)]
    got = decoupled_attention(q, k_t, v_t, [Branch(*r) for r in raw], heads)
    want = _formula(q, k_t, v_t, raw, heads)
    assert got.shape == q.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_sdpa_matches_formula():
    q, k, v = _qkv(heads=4, d=3)
    torch.testing.assert_close(sdpa_attention(q, k, v, 4).double(), reference_attention(q, k, v, 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("zero", [0, 0.0, torch.zeros(2)])
def test_lambda_zero_is_plain_attention_bit_for_bit(dtype, zero):
    q, k_t, v_t = _qkv(dtype=dtype)
    kb, vb = torch.randn(1, 4, q.shape[-1]).to(dtype), torch.randn(1, 4, q.shape[-1]).to(dtype)
    plain = sdpa_attention(q, k_t, v_t, 3)
    out = decoupled_attention(q, k_t, v_t, [Branch(kb, vb, zero), Branch(kb, vb, zero)], 3)
    assert out.dtype == dtype
    assert torch.equal(out, plain)
    assert torch.equal(decoupled_attention(q, k_t, v_t, [], 3), plain)


def test_branch_on_changes_output():
    q, k_t, v_t = _qkv()
    kb, vb = torch.randn(1, 4, q.shape[-1]), torch.randn(1, 4, q.shape[-1])
    assert not torch.allclose(decoupled_attention(q, k_t, v_t, [Branch(kb, vb, 0.1)], 3), sdpa_attention(q, k_t, v_t, 3))


def test_pluggable_attention_and_text_out():
    q, k_t, v_t = _qkv()
    kb, vb = torch.randn(1, 4, q.shape[-1]), torch.randn(1, 4, q.shape[-1])
    calls = []

    def my_attn(q_, k_, v_, heads):
        calls.append((tuple(q_.shape), tuple(k_.shape), heads))
        return reference_attention(q_, k_, v_, heads).float()

    out = decoupled_attention(q, k_t, v_t, [Branch(kb, vb, 0.5)], 3, attn_fn=my_attn)
    assert calls == [((2, 7, 12), (2, 5, 12), 3), ((2, 7, 12), (2, 4, 12), 3)]
    torch.testing.assert_close(out.double(), _formula(q, k_t, v_t, [(kb, vb, 0.5)], 3), rtol=1e-5, atol=1e-5)
    # a given text term (another patch's output) replaces Attn(Q, K_t, V_t)
    text = torch.full_like(q, 3.0)
    out2 = decoupled_attention(q, k_t, v_t, [Branch(kb, vb, 0.5)], 3, text_out=text)
    torch.testing.assert_close(out2.double(), 3.0 + 0.5 * reference_attention(q, kb.expand(2, -1, -1), vb.expand(2, -1, -1), 3),
                               rtol=1e-5, atol=1e-5)


def test_per_row_scale():
    q, k_t, v_t = _qkv()
    kb, vb = torch.randn(2, 4, q.shape[-1]), torch.randn(2, 4, q.shape[-1])
    out = decoupled_attention(q, k_t, v_t, [Branch(kb, vb, torch.tensor([0.0, 2.0]))], 3)
    plain = sdpa_attention(q, k_t, v_t, 3)
    torch.testing.assert_close(out[0], plain[0])
    torch.testing.assert_close(out[1].double(), _formula(q[1:], k_t[1:], v_t[1:], [(kb[1:], vb[1:], 2.0)], 3)[0], rtol=1e-5, atol=1e-5)
