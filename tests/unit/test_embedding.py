"""Body-ID files (bit-exact round trip, clear refusals), blending, slerp, sampling, safe names."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from bolid_lib import files
from bolid_lib.method.embedding import BodyEmbedding, blend, load_body, save_body, save_body_in, slerp
from bolid_lib.errors import BoLIDError


def emb(seed: int, d: int = 8, fp: str = "abc123", **meta) -> BodyEmbedding:
    g = torch.Generator().manual_seed(seed)
    return BodyEmbedding(torch.randn(d, generator=g), torch.randn(d, generator=g) - 2,
                         {"vae_fingerprint": fp, "views_used": 3, "views_skipped": 1, "mean_confidence": 0.75, **meta})


def test_round_trip_is_bit_exact(tmp_path):
    e = emb(0, d=756)
    path = save_body(e, tmp_path / "alice.safetensors")
    back = load_body(path)
    assert torch.equal(back.mean, e.mean) and torch.equal(back.logvar, e.logvar)
    assert back.meta == e.meta
    _, meta = files.read_safetensors(path)
    assert meta[files.FORMAT_KEY] == "bolid.body" and meta[files.VERSION_KEY] == "1"


def test_save_never_overwrites_by_default(tmp_path):
    save_body(emb(0), tmp_path / "a.safetensors")
    with pytest.raises(BoLIDError, match="exists"):
        save_body(emb(1), tmp_path / "a.safetensors")


def test_load_refuses_another_kind_of_file(tmp_path):
    p = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.ones(1)}, str(p))
    with pytest.raises(BoLIDError, match=r"not a Body-ID file.*safetensors file with 1 tensors"):
        load_body(p)
    vae_like = files.save_safetensors_atomic({"x": torch.zeros(1)}, tmp_path / "vae.safetensors", fmt="bolid.body_vae", version=1)
    with pytest.raises(BoLIDError, match=r"looks like a bolid\.body_vae file"):
        load_body(vae_like)


def test_load_refuses_a_truncated_file(tmp_path):
    path = save_body(emb(0, d=64), tmp_path / "a.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-40])
    with pytest.raises(BoLIDError, match="truncated"):
        load_body(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(BoLIDError, match="empty"):
        load_body(empty)


def test_wrong_dimension_is_refused(tmp_path):
    path = save_body(emb(0, d=8), tmp_path / "a.safetensors")
    assert load_body(path, expected_dim=8).dim == 8
    with pytest.raises(BoLIDError, match="size 8, but 756 is needed"):
        load_body(path, expected_dim=756)
    # A file whose tensors disagree with its own stated size.
    files.save_safetensors_atomic({"mean": torch.zeros(8), "logvar": torch.zeros(7)}, tmp_path / "b.safetensors",
                                  fmt="bolid.body", version=1, config={"dim": 8})
    with pytest.raises(BoLIDError, match="two vectors of 8"):
        load_body(tmp_path / "b.safetensors")
    files.save_safetensors_atomic({"mean": torch.zeros(8)}, tmp_path / "c.safetensors", fmt="bolid.body", version=1, config={"dim": 8})
    with pytest.raises(BoLIDError, match="lacks the tensors"):
        load_body(tmp_path / "c.safetensors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["mean", "logvar"])
def test_nan_and_inf_are_refused(tmp_path, bad, which):
    t = {"mean": torch.zeros(8), "logvar": torch.zeros(8)}
    t[which][3] = bad
    files.save_safetensors_atomic(t, tmp_path / "x.safetensors", fmt="bolid.body", version=1, config={"dim": 8})
    with pytest.raises(BoLIDError, match=f"{which} holds NaN or infinite"):
        load_body(tmp_path / "x.safetensors")
    with pytest.raises(BoLIDError, match="NaN or infinite"):
        BodyEmbedding(t["mean"], t["logvar"])


def test_constructor_refuses_bad_shapes():
    with pytest.raises(BoLIDError, match="vector"):
        BodyEmbedding(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(BoLIDError, match="same size"):
        BodyEmbedding(torch.zeros(4), torch.zeros(5))


def test_blend_is_a_weighted_mean():
    a, b, c = emb(0), emb(1), emb(2)
    only_a = blend([a, b], [1.0, 0.0])
    torch.testing.assert_close(only_a.mean, a.mean)
    torch.testing.assert_close(only_a.logvar, a.logvar)
    m = blend([a, b, c], [1.0, 2.0, 1.0])
    torch.testing.assert_close(m.mean, 0.25 * a.mean + 0.5 * b.mean + 0.25 * c.mean)
    want_var = 0.25 * a.logvar.exp() + 0.5 * b.logvar.exp() + 0.25 * c.logvar.exp()
    torch.testing.assert_close(m.logvar, want_var.log())
    assert m.meta["views_used"] == 9 and m.meta["vae_fingerprint"] == "abc123"
    assert blend([a, b], [3.0, 3.0]).mean.allclose(blend([a, b], [1.0, 1.0]).mean)


def test_blend_refuses_mismatches():
    with pytest.raises(BoLIDError, match="different sizes"):
        blend([emb(0, d=8), emb(1, d=9)], [1, 1])
    with pytest.raises(BoLIDError, match="different Body-ID VAEs"):
        blend([emb(0, fp="aaa"), emb(1, fp="bbb")], [1, 1])
    with pytest.raises(BoLIDError, match="one weight per"):
        blend([emb(0), emb(1)], [1.0])
    with pytest.raises(BoLIDError, match="not all 0"):
        blend([emb(0), emb(1)], [0.0, 0.0])
    with pytest.raises(BoLIDError, match=">= 0"):
        blend([emb(0), emb(1)], [1.0, -0.5])
    with pytest.raises(BoLIDError, match="nothing to blend"):
        blend([], [])


def test_slerp_ends_and_midpoint():
    a, b = emb(0), emb(1)
    torch.testing.assert_close(slerp(a, b, 0.0).mean, a.mean)
    torch.testing.assert_close(slerp(a, b, 1.0).mean, b.mean, rtol=1e-5, atol=1e-5)
    mid = slerp(a, b, 0.5)
    # Norm interpolates linearly; direction halves the angle.
    assert mid.norm() == pytest.approx((a.norm() + b.norm()) / 2, rel=1e-5)
    ua, ub, um = a.mean / a.norm(), b.mean / b.norm(), mid.mean / mid.norm()
    angle = lambda x, y: math.acos(float((x * y).sum().clamp(-1, 1)))  # noqa: E731
    assert angle(ua, um) == pytest.approx(angle(ub, um), abs=1e-4)
    assert angle(ua, um) == pytest.approx(angle(ua, ub) / 2, abs=1e-4)
    torch.testing.assert_close(mid.logvar, (a.logvar + b.logvar) / 2)
    same = slerp(a, a, 0.3)
    torch.testing.assert_close(same.mean, a.mean)


def test_sample_is_seeded():
    e = emb(0)
    s1, s2, s3 = e.sample(7), e.sample(7), e.sample(8)
    assert torch.equal(s1.mean, s2.mean) and not torch.equal(s1.mean, s3.mean)
    eps = (s1.mean - e.mean) / torch.exp(0.5 * e.logvar)
    torch.testing.assert_close(eps, torch.randn(e.dim, generator=torch.Generator().manual_seed(7)), rtol=1e-4, atol=1e-4)
    tight = BodyEmbedding(e.mean, torch.full((e.dim,), -30.0))
    torch.testing.assert_close(tight.sample(1).mean, e.mean, atol=1e-5, rtol=0)


def test_summary_names_the_essentials():
    text = emb(0, d=16).summary()
    assert "D=16" in text and "abc123" in text and "views used 3" in text


@pytest.mark.parametrize("name", ["../../x", "../x", "/etc/x", "a/../../x", "..\\..\\x", "C:/x"])
def test_a_name_cannot_write_outside_the_folder(tmp_path, name):
    folder = tmp_path / "bodies"
    folder.mkdir()
    with pytest.raises(BoLIDError):
        save_body_in(emb(0), folder, name)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_save_in_increments_or_refuses(tmp_path):
    p1 = save_body_in(emb(0), tmp_path, "alice")
    p2 = save_body_in(emb(1), tmp_path, "alice")
    assert p1.name == "alice.safetensors" and p2.name == "alice_00001.safetensors"
    assert torch.equal(load_body(p1).mean, emb(0).mean)  # the first file is untouched
    with pytest.raises(BoLIDError, match="exists already"):
        save_body_in(emb(2), tmp_path, "alice", on_exists="refuse")
    sub = save_body_in(emb(3), tmp_path, "team/bob")
    assert sub == (tmp_path / "team" / "bob.safetensors").resolve()
