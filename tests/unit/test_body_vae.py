"""Body-ID VAE: streaming aggregation = batch computation, flat memory in V, file round trips and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bolid_lib import files
from bolid_lib.method.body_vae import (GEOMETRY_DIM, BodyVAE, BodyVAEConfig, encode_body, keypoint_geometry, letterbox,
                                limb_ratios_from_keypoints, load_body_vae, person_crop, prepare_views, save_body_vae,
                                view_weights)
from bolid_lib.method.embedding import BodyEmbedding, save_body
from bolid_lib.errors import BoLIDError
from bolid_lib.method.keypoints import PoseBatch

TINY = BodyVAEConfig(input_size=32, latent_dim=12, widths=(8, 16, 16), feature_dim=24, pool_size=2, groups=4)
REPO = Path(__file__).resolve().parents[2]


def tiny_model(seed: int = 0, cfg: BodyVAEConfig = TINY) -> BodyVAE:
    torch.manual_seed(seed)
    return BodyVAE(cfg).eval()


def random_views(v: int, h: int = 40, w: int = 56, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(v, 3, h, w, generator=g)
    kp = torch.rand(v, 17, 3, generator=g)
    kp[..., 0] *= w
    kp[..., 1] *= h
    kp[..., 2] = 0.3 + 0.7 * kp[..., 2]
    kp[:, ::5] = 0  # some invisible keypoints
    return images, kp


@pytest.mark.parametrize("v", [1, 5, 13])
@pytest.mark.parametrize("chunk", [1, 4, 32])
def test_streaming_aggregation_equals_batch(v, chunk):
    model = tiny_model()
    images, kp = random_views(v)
    w = torch.rand(v, generator=torch.Generator().manual_seed(v)) + 0.1
    mean_s, logvar_s = model.encode_views(images, kp, w, chunk=chunk)
    mean_b, logvar_b = model.encode_views_batched(images, kp, w)
    assert mean_s.shape == logvar_s.shape == (TINY.latent_dim,)
    torch.testing.assert_close(mean_s, mean_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logvar_s, logvar_b, rtol=1e-5, atol=1e-6)


def test_aggregation_is_the_confidence_weighted_mean_of_view_features():
    model = tiny_model()
    images, kp = random_views(4)
    w = torch.tensor([0.9, 0.1, 0.5, 0.7])
    views, kpr = prepare_views(images, kp, TINY)
    with torch.no_grad():
        f = model.view_features(views, kpr)                     # (V, F)
        pooled = (f * w[:, None]).sum(0) / w.sum()
        want, _ = model.heads(pooled[None])
    got, _ = model.encode_views(images, kp, w, chunk=3)
    torch.testing.assert_close(got, want[0], rtol=1e-5, atol=1e-6)
    # A different weighting gives a different Body-ID (the weights are not ignored).
    other, _ = model.encode_views(images, kp, torch.tensor([0.1, 0.9, 0.5, 0.7]))
    assert not torch.allclose(other, got, atol=1e-6)


def test_zero_weight_view_changes_nothing():
    model = tiny_model()
    images, kp = random_views(5)
    w = torch.tensor([0.5, 0.0, 0.8, 0.3, 0.6])
    with_zero, _ = model.encode_views(images, kp, w, chunk=2)
    keep = w > 0
    without, _ = model.encode_views(images[keep], kp[keep], w[keep])
    torch.testing.assert_close(with_zero, without, rtol=1e-5, atol=1e-6)


def test_default_weights_are_mean_keypoint_confidence():
    _, kp = random_views(3)
    conf = kp[..., 2]
    want = torch.stack([conf[i][conf[i] > 0].mean() for i in range(3)])
    torch.testing.assert_close(view_weights(kp), want)
    model = tiny_model()
    images, _ = random_views(3)
    a, _ = model.encode_views(images, kp)
    b, _ = model.encode_views(images, kp, want)
    torch.testing.assert_close(a, b)


def test_progress_reports_every_chunk():
    model = tiny_model()
    images, kp = random_views(7)
    calls = []
    model.encode_views(images, kp, chunk=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_letterbox_keeps_proportions_and_moves_keypoints():
    img = torch.zeros(1, 3, 20, 40)
    img[0, :, 5, 30] = 1.0                          # a bright pixel at x = 30.5, y = 5.5 (pixel centre)
    kp = torch.zeros(1, 17, 3)
    kp[0, 0] = torch.tensor([30.5, 5.5, 0.9])
    out, kpo = letterbox(img, kp, 40)                # pad 10 rows on top and bottom, no resize
    assert out.shape == (1, 3, 40, 40)
    y, x = divmod(int(out[0, 0].argmax()), 40)
    assert (x + 0.5, y + 0.5) == (kpo[0, 0, 0].item(), kpo[0, 0, 1].item())
    assert kpo[0, 0, 2].item() == pytest.approx(0.9)
    assert kpo[0, 1].abs().sum() == 0                # invisible stays zero
    small, kps = letterbox(img, kp, 20)              # halve: keypoints scale with the image
    assert kps[0, 0, :2].tolist() == pytest.approx([15.25, 7.75])
    assert small.shape == (1, 3, 20, 20)


def test_person_crop_follows_the_keypoints():
    img = torch.zeros(2, 3, 200, 300)
    kp = torch.zeros(2, 17, 3)
    kp[:, 5:, 2] = 1.0
    g = torch.Generator().manual_seed(0)
    kp[0, 5:, 0] = 100 + 60 * torch.rand(12, generator=g)         # a person in x 100..160, y 40..160
    kp[0, 5:, 1] = 40 + 120 * torch.rand(12, generator=g)
    kp[1, 5:, 0] = 250 + 40 * torch.rand(12, generator=g)         # near the right edge: the crop pads with zeros
    kp[1, 5:, 1] = 10 + 50 * torch.rand(12, generator=g)
    for b in range(2):
        x, y = int(kp[b, 8, 0]), int(kp[b, 8, 1])
        img[b, :, y - 2:y + 3, x - 2:x + 3] = 1.0                  # a bright 5x5 square at keypoint 8
        kp[b, 8, :2] = torch.tensor([x + 0.5, y + 0.5])
    out, kpo = person_crop(img, kp, 64, margin=0.15)
    assert out.shape == (2, 3, 64, 64)
    for b in range(2):
        vis = kpo[b, 5:, :2]
        lo, hi = vis.min(0).values, vis.max(0).values
        assert float(lo.min()) >= 64 * 0.15 / 1.3 - 0.01 and float(hi.max()) <= 64 - 64 * 0.15 / 1.3 + 0.01
        assert float((hi - lo).max()) == pytest.approx(64 / 1.3, rel=1e-4)   # the longer side fills 1 / (1 + 2 margin)
        m = out[b, 0]
        centres = torch.arange(64, dtype=torch.float32) + 0.5
        cx, cy = float((m.sum(0) * centres).sum() / m.sum()), float((m.sum(1) * centres).sum() / m.sum())
        assert abs(cx - float(kpo[b, 8, 0])) <= 0.25 and abs(cy - float(kpo[b, 8, 1])) <= 0.25
    assert kpo[:, :5].abs().sum() == 0                                # invisible stays zero


def test_keypoint_geometry_is_scale_and_shift_free():
    _, kp = random_views(3)
    moved = kp.clone()
    moved[..., :2] = kp[..., :2] * 2.5 + torch.tensor([17.0, -4.0])
    moved = torch.where(kp[..., 2:3] > 0, moved, torch.zeros(()))
    a, b = keypoint_geometry(kp), keypoint_geometry(moved)
    assert a.shape == (3, GEOMETRY_DIM)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_limb_ratios_use_a_high_quantile_over_views():
    kp = torch.zeros(3, 17, 3)
    kp[..., 2] = 1.0
    # Torso 10 px (shoulders at y 0, hips at y 10); an upper arm of 5, 3 and 1 px in three views.
    for i, arm in enumerate([5.0, 3.0, 1.0]):
        kp[i, 5, :2] = torch.tensor([0.0, 0.0])
        kp[i, 6, :2] = torch.tensor([4.0, 0.0])
        kp[i, 11, :2] = torch.tensor([0.0, 10.0])
        kp[i, 12, :2] = torch.tensor([4.0, 10.0])
        kp[i, 7, :2] = torch.tensor([-arm, 0.0])
    r = limb_ratios_from_keypoints(kp, quantile=1.0)
    assert r[0].item() == pytest.approx(0.4)         # shoulder width / torso
    assert r[2].item() == pytest.approx(0.5)         # longest upper arm / torso
    kp[:, 9, 2] = 0                                  # left wrist never seen -> that forearm is unknown
    kp[:, 9, :2] = 0
    assert torch.isnan(limb_ratios_from_keypoints(kp)[4])


@pytest.mark.parametrize("bad", [
    dict(input_size=30), dict(widths=(8, 15)), dict(latent_dim=0), dict(heatmap_sigma=0.0), dict(beta=-1.0),
])
def test_config_refuses_bad_sizes(bad):
    with pytest.raises(BoLIDError):
        BodyVAEConfig(**{**TINY.to_dict(), **bad})


def test_encode_refuses_bad_input():
    model = tiny_model()
    images, kp = random_views(3)
    with pytest.raises(BoLIDError, match="at least one"):
        model.encode_views(images[:0], kp[:0])
    with pytest.raises(BoLIDError, match=r"\(3, 17, 3\)"):
        model.encode_views(images, kp[:2])
    with pytest.raises(BoLIDError, match="weight 0"):
        model.encode_views(images, kp, torch.zeros(3))
    with pytest.raises(BoLIDError, match="finite"):
        model.encode_views(images, kp, torch.tensor([1.0, float("nan"), 1.0]))


def _pose(kp: torch.Tensor, found: list[bool], size: tuple[int, int]) -> PoseBatch:
    f = torch.tensor(found)
    kp = torch.where(f[:, None, None], kp, torch.zeros(()))
    return PoseBatch(kp, torch.zeros(len(found), 4), f, size)


def test_encode_body_skips_views_without_a_person_and_counts_them():
    model = tiny_model()
    images, kp = random_views(4)
    pose = _pose(kp, [True, False, True, False], (40, 56))
    emb = encode_body(model, images, pose)
    assert emb.meta["views_used"] == 2 and emb.meta["views_skipped"] == 2
    assert emb.meta["vae_fingerprint"] == model.fingerprint()
    want, _ = model.encode_views(images[[0, 2]], kp[[0, 2]])
    torch.testing.assert_close(emb.mean, want)
    conf = pose.view_confidence()[[0, 2]].mean().item()
    assert emb.meta["mean_confidence"] == pytest.approx(conf)
    # Sampling is an option with a seed: deterministic per seed, differs from the mean.
    s1, s2 = encode_body(model, images, pose, sample_seed=5), encode_body(model, images, pose, sample_seed=5)
    assert torch.equal(s1.mean, s2.mean) and not torch.equal(s1.mean, emb.mean)
    with pytest.raises(BoLIDError, match="no person was found in any of the 4 views"):
        encode_body(model, images, _pose(kp, [False] * 4, (40, 56)))
    with pytest.raises(BoLIDError, match="size"):
        encode_body(model, images, _pose(kp, [True] * 4, (41, 56)))


def test_vae_file_round_trip_is_bit_exact(tmp_path):
    model = tiny_model(3)
    path = save_body_vae(model, tmp_path / "vae.safetensors")
    loaded = load_body_vae(path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.fingerprint() == model.fingerprint()
    images, kp = random_views(3)
    assert torch.equal(model.encode_views(images, kp)[0], loaded.encode_views(images, kp)[0])
    _, meta = files.read_safetensors(path)
    assert meta[files.FORMAT_KEY] == "bolid.body_vae" and meta[files.VERSION_KEY] == "2"
    assert json.loads(meta[files.CONFIG_KEY])["latent_dim"] == TINY.latent_dim


def test_fingerprint_follows_weights_and_config():
    a, b = tiny_model(0), tiny_model(0)
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.to_mean.bias[0] += 1e-6
    assert b.fingerprint() == a.fingerprint()                 # kept until asked to refresh
    assert a.fingerprint() != b.fingerprint(refresh=True)
    assert tiny_model(1).fingerprint() != a.fingerprint()


def test_load_refuses_a_file_of_another_kind(tmp_path):
    plain = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(2), "b": torch.ones(1)}, str(plain))
    with pytest.raises(BoLIDError, match=r"not a Body-ID VAE file.*safetensors file with 2 tensors"):
        load_body_vae(plain)
    body = save_body(BodyEmbedding(torch.zeros(4), torch.zeros(4)), tmp_path / "alice.safetensors")
    with pytest.raises(BoLIDError, match=r"looks like a bolid\.body file"):
        load_body_vae(body)


def test_load_refuses_truncated_damaged_and_nan_files(tmp_path):
    model = tiny_model()
    path = save_body_vae(model, tmp_path / "vae.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BoLIDError, match="truncated"):
        load_body_vae(cut)
    # Tensors that do not fit the stored config.
    sd = dict(model.state_dict())
    sd["to_mean.bias"] = torch.zeros(TINY.latent_dim + 1)
    files.save_safetensors_atomic(sd, tmp_path / "bad.safetensors", fmt="bolid.body_vae", version=2, config=TINY.to_dict())
    with pytest.raises(BoLIDError, match="wrong shape.*to_mean.bias"):
        load_body_vae(tmp_path / "bad.safetensors")
    sd = dict(model.state_dict())
    sd["to_mean.bias"] = torch.full((TINY.latent_dim,), float("nan"))
    files.save_safetensors_atomic(sd, tmp_path / "nan.safetensors", fmt="bolid.body_vae", version=2, config=TINY.to_dict())
    with pytest.raises(BoLIDError, match="NaN"):
        load_body_vae(tmp_path / "nan.safetensors")
    files.save_safetensors_atomic(dict(model.state_dict()), tmp_path / "old.safetensors", fmt="bolid.body_vae", version=1,
                                  config=TINY.to_dict())
    with pytest.raises(BoLIDError, match=r"format version 1, written by an older ComfyUI-BoLID.*train it again"):
        load_body_vae(tmp_path / "old.safetensors")
    files.save_safetensors_atomic(dict(model.state_dict()), tmp_path / "new.safetensors", fmt="bolid.body_vae", version=3,
                                  config=TINY.to_dict())
    with pytest.raises(BoLIDError, match="version 3"):
        load_body_vae(tmp_path / "new.safetensors")


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + "/tests")
    torch.set_num_threads(1)
    from memlib import peak_extra
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig
    cfg = BodyVAEConfig(input_size=64, latent_dim=16, widths=(16, 32, 32, 32), feature_dim=32, pool_size=2, groups=8)
    torch.manual_seed(0)
    model = BodyVAE(cfg).eval()
    v = 100
    images = torch.rand(v, 3, 128, 128)                     # the input exists before any measurement
    kp = torch.rand(v, 17, 3) * 100
    kp[..., 2] = 0.9
    model.encode_views(images[:2], kp[:2], chunk=4)          # warm up allocator and kernels
    out = {"v10": peak_extra(lambda: model.encode_views(images[:10], kp[:10], chunk=4))[1],
           "v100": peak_extra(lambda: model.encode_views(images, kp, chunk=4))[1],
           "batch": peak_extra(lambda: model.encode_views_batched(images, kp))[1]}   # the paper's way: every view at once
    print(json.dumps(out))
""")


def test_peak_memory_is_flat_in_the_number_of_views():
    """Peak extra resident memory of each call (tests/memlib.py), in a fresh process: 100 views streamed cost no
    more than 10, while 100 views stacked (the paper's way) must show growth, proving the measure sees it."""
    from memlib import MMAP_ENV

    env = {**os.environ, **MMAP_ENV}
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(REPO)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    assert m["v100"] <= m["v10"] + 4 * mib, f"streaming 100 views took {m['v100'] / mib:.1f} MiB of extra memory vs {m['v10'] / mib:.1f} MiB for 10"
    assert m["batch"] > 20 * mib, f"stacking 100 views should cost memory; the measure saw only {m['batch'] / mib:.1f} MiB"
