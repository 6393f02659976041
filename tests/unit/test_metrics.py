"""Metrics: torchmetrics FID/IS against direct implementations of their definitions, body fidelity,
Inception loading (safetensors only, clear errors), CLIP-T/CLIP-I with a tiny random local CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bolid_lib.evaluation import metrics as M
from bolid_lib.errors import BoLIDError
from bolid_lib.method.keypoints import PoseBatch


def _features(seed, n, d, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    # correlated features, as real network features are
    mix = torch.randn(d, d, generator=g) / d ** 0.5
    return (torch.randn(n, d, generator=g) @ mix) * scale + shift


# --- FID -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,m,d,shift,scale", [(50, 40, 8, 0.5, 1.3), (30, 60, 16, 0.0, 2.0), (120, 100, 32, -1.0, 0.7)])
def test_fid_torchmetrics_matches_eq15(n, m, d, shift, scale):
    real, gen = _features(1, n, d), _features(2, m, d, shift, scale)
    direct = M.fid_from_features(real, gen)
    via_torchmetrics = M.fid(real, gen)
    assert direct > 0.1
    assert via_torchmetrics == pytest.approx(direct, rel=1e-4)


def test_fid_eq15_closed_form_for_known_gaussians():
    # Same covariance, means differ by a vector: FID = ||mu_p - mu_q||^2 exactly (trace terms cancel).
    real = _features(3, 200, 6).double()
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert M.fid_from_features(real, real + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-9)
    assert M.fid(real, real + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-4)


def test_fid_of_a_set_with_itself_is_zero():
    real = _features(4, 64, 16)
    assert abs(M.fid_from_features(real, real)) < 1e-8
    assert abs(M.fid(real, real)) < 1e-6


def test_fid_grows_with_shift():
    real = _features(5, 80, 8)
    values = [M.fid(real, real + s) for s in (0.1, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] > 0


def test_fid_refuses_too_few_images_and_bad_shapes():
    with pytest.raises(BoLIDError, match="at least 2 images"):
        M.fid(torch.zeros(1, 4), torch.zeros(5, 4))
    with pytest.raises(BoLIDError, match=r"\(N, D\)"):
        M.fid_from_features(torch.zeros(5), torch.zeros(5, 4))
    with pytest.raises(BoLIDError, match="widths differ"):
        M.fid(torch.zeros(3, 4), torch.zeros(3, 5))


# --- IS ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("splits", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 7])
def test_inception_score_torchmetrics_matches_definition(splits, seed):
    logits = _features(10 + seed, 40, 12, scale=3.0)
    torch.manual_seed(seed)
    order = torch.randperm(len(logits)).numpy()  # the shuffle torchmetrics draws under the same seed
    mean, std = M.inception_score(logits, splits=splits, seed=seed)
    d_mean, d_std = M.inception_score_from_logits(logits, splits=splits, order=order)
    assert mean == pytest.approx(d_mean, rel=1e-4)
    assert std == pytest.approx(d_std, rel=1e-4, abs=1e-12)


def test_inception_score_extremes():
    # One confident class per image, classes evenly spread: IS = number of classes. All alike: IS = 1.
    c = 5
    confident = torch.full((c * 4, c), -50.0)
    confident[torch.arange(c * 4), torch.arange(c * 4) % c] = 50.0
    assert M.inception_score_from_logits(confident, splits=1)[0] == pytest.approx(c, rel=1e-6)
    assert M.inception_score(confident, splits=1)[0] == pytest.approx(c, rel=1e-4)
    same = torch.randn(1, c).expand(20, c)
    assert M.inception_score_from_logits(same, splits=2)[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_seeded_and_restores_global_rng():
    logits = _features(3, 30, 8, scale=2.0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = M.inception_score(logits, splits=5, seed=1)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert M.inception_score(logits, splits=5, seed=1) == a


def test_inception_score_refuses_more_splits_than_images():
    with pytest.raises(BoLIDError, match="lower --is-splits"):
        M.inception_score_from_logits(torch.zeros(3, 4), splits=5)


# --- Inception loading --------------------------------------------------------------------------

def test_missing_inception_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(BoLIDError) as e:
        M.load_inception(tmp_path / "nope.safetensors")
    msg = str(e.value)
    assert M.INCEPTION_PTH_NAME in msg and "convert-inception" in msg and "not found" in msg
    with pytest.raises(BoLIDError, match=M.INCEPTION_PTH_NAME):
        M.load_inception("")


def test_inception_pth_is_refused_with_conversion_note(tmp_path):
    pth = tmp_path / M.INCEPTION_PTH_NAME
    pth.write_bytes(b"not really a pickle")
    with pytest.raises(BoLIDError, match="convert-inception"):
        M.load_inception(pth)


def test_inception_wrong_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(BoLIDError, match="FID Inception"):
        M.load_inception(bad)


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """A random-init Inception of the real architecture, saved the way a user's download would be (.pth),
    converted through the command line, and loaded back: ~95 MB, built once for the module."""
    d = tmp_path_factory.mktemp("inception")
    torch.manual_seed(0)
    net = M.random_inception()
    pth = d / M.INCEPTION_PTH_NAME
    torch.save(net.network.state_dict(), pth)
    st = d / M.INCEPTION_SAFETENSORS_NAME
    assert M.main(["convert-inception", str(pth), str(st)]) == 0
    return net, pth, st


def test_inception_convert_and_load_round_trip(inception_files):
    net, _pth, st = inception_files
    loaded = M.load_inception(st)
    images = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    pool_a, logits_a = net(images)
    pool_b, logits_b = loaded(images)
    assert pool_a.shape == (1, M.POOL_FEATURES) and logits_a.shape == (1, M.LOGIT_CLASSES)
    assert torch.equal(pool_a, pool_b) and torch.equal(logits_a, logits_b)
    # a folder holding exactly one .safetensors file is accepted too
    from_folder = M.load_inception(st.parent).network.state_dict()
    assert all(torch.equal(v, from_folder[k]) for k, v in net.network.state_dict().items())


def test_inception_convert_refuses_a_non_state_dict(tmp_path):
    src = tmp_path / "x.pth"
    torch.save([1, 2, 3], src)
    with pytest.raises(BoLIDError, match="not a state dict"):
        M.convert_inception_weights(src, tmp_path / "x.safetensors")
    assert M.main(["convert-inception", str(tmp_path / "missing.pth"), str(tmp_path / "y.safetensors")]) == 2


# --- body fidelity -------------------------------------------------------------------------------

def _pose(seed=0, b=1, visible=17):
    g = torch.Generator().manual_seed(seed)
    kp = torch.zeros(b, 17, 3)
    kp[..., 0] = 100 + 300 * torch.rand(b, 17, generator=g)
    kp[..., 1] = 50 + 600 * torch.rand(b, 17, generator=g)
    kp[:, :visible, 2] = 0.5 + 0.5 * torch.rand(b, visible, generator=g)
    kp[:, visible:, :] = 0
    return kp


def test_keypoint_distance_zero_for_identical_poses():
    kp = _pose(b=3)
    assert torch.equal(M.keypoint_distance(kp, kp), torch.zeros(3))


@pytest.mark.parametrize("dx,dy", [(3.0, 0.0), (0.0, -7.0), (5.0, 5.0)])
def test_keypoint_distance_of_a_shift_is_shift_over_body_diagonal(dx, dy):
    ref = _pose(1)
    vis = ref[0, :, 2] > 0
    pts = ref[0, vis, :2]
    diag = float((pts.amax(0) - pts.amin(0)).norm())
    pred = ref.clone()
    pred[..., 0] += dx
    pred[..., 1] += dy
    got = float(M.keypoint_distance(pred, ref)[0])
    assert got == pytest.approx((dx ** 2 + dy ** 2) ** 0.5 / diag, rel=1e-5)


def test_keypoint_distance_grows_with_displacement_and_is_scale_free():
    ref = _pose(2)
    noise = torch.randn(1, 17, 2, generator=torch.Generator().manual_seed(3))
    values = []
    for amount in (0.0, 1.0, 2.0, 5.0, 20.0):
        pred = ref.clone()
        pred[..., :2] += amount * noise
        values.append(float(M.keypoint_distance(pred, ref)[0]))
    assert values[0] == 0 and all(a < b for a, b in zip(values, values[1:]))
    # scaling both poses scales distances and body size alike: the metric does not change
    pred = ref.clone()
    pred[..., :2] += 5 * noise
    big_p, big_r = pred.clone(), ref.clone()
    big_p[..., :2] *= 3
    big_r[..., :2] *= 3
    assert float(M.keypoint_distance(big_p, big_r)[0]) == pytest.approx(float(M.keypoint_distance(pred, ref)[0]), rel=1e-5)


def test_keypoint_distance_uses_only_points_visible_in_both():
    ref = _pose(4)
    pred = ref.clone()
    pred[0, 3, :2] += 1000.0      # a huge error on a point ...
    pred[0, 3, 2] = 0.0           # ... that the generated image does not show: ignored
    assert float(M.keypoint_distance(pred, ref)[0]) == 0.0
    pred[0, 3, 2] = 0.9           # shown: counted
    assert float(M.keypoint_distance(pred, ref)[0]) > 0.1


def test_keypoint_distance_nan_when_nothing_to_compare_and_broadcast_reference():
    ref = _pose(5)
    pred = torch.cat([ref, torch.zeros(1, 17, 3)])            # second image: no person
    d = M.keypoint_distance(pred, ref)                         # one reference for both
    assert d[0] == 0 and torch.isnan(d[1])


def test_keypoint_distance_posebatch_and_size_mapping():
    ref_kp = _pose(6)
    ref = PoseBatch(ref_kp, torch.zeros(1, 4), torch.tensor([True]), (800, 600))
    # the generated image is twice as large: the same pose in its pixels is twice the coordinates
    gen_kp = ref_kp.clone()
    gen_kp[..., :2] *= 2
    gen = PoseBatch(gen_kp, torch.zeros(1, 4), torch.tensor([True]), (1600, 1200))
    assert float(M.keypoint_distance(gen, ref)[0]) == pytest.approx(0.0, abs=1e-6)
    missing = PoseBatch(gen_kp, torch.zeros(1, 4), torch.tensor([False]), (1600, 1200))
    assert torch.isnan(M.keypoint_distance(missing, ref)[0])


def test_keypoint_distance_refuses_bad_shapes():
    with pytest.raises(BoLIDError, match=r"\(B, 17, 3\)"):
        M.keypoint_distance(torch.zeros(2, 18, 3), torch.zeros(1, 17, 3))
    with pytest.raises(BoLIDError, match="one per generated image"):
        M.keypoint_distance(torch.zeros(3, 17, 3), torch.zeros(2, 17, 3))


# --- CLIP ----------------------------------------------------------------------------------------

def make_tiny_clip(folder):
    """A random tiny CLIP saved as a Hugging Face folder (safetensors + a character-level tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=52, eos_token_id=53, pad_token_id=53),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(folder))
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_clip_scores_are_cosines(tiny_clip):
    scorer = M.ClipScorer.load(tiny_clip)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 36, generator=g)
    same = scorer.clip_i(images, images)
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    other = scorer.clip_i(images, torch.rand(1, 3, 50, 50, generator=g))
    assert other.shape == (3,) and (other <= 1 + 1e-6).all() and (other >= -1 - 1e-6).all()
    t = scorer.clip_t(images, ["a person walking", "a person sitting", "zebra"])
    assert t.shape == (3,) and (t.abs() <= 1 + 1e-6).all()
    # the score is the cosine of the model's own projected embeddings
    tok = scorer.tokenizer(["zebra"], return_tensors="pt")
    with torch.no_grad():
        text = scorer.model.text_projection(scorer.model.text_model(input_ids=tok["input_ids"]).pooler_output)
    assert torch.allclose(scorer.text_embeds(["zebra"])[0], torch.nn.functional.normalize(text, dim=-1)[0], atol=1e-5)


def test_clip_refuses_missing_folder_pickles_and_mismatched_counts(tiny_clip, tmp_path):
    with pytest.raises(BoLIDError, match="CLIP model folder not found"):
        M.ClipScorer.load(tmp_path / "absent")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "preprocessor_config.json", "vocab.json"):
        (pickled / name).write_text((tiny_clip / name).read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(BoLIDError, match="safetensors only"):
        M.ClipScorer.load(pickled)
    scorer = M.ClipScorer.load(tiny_clip)
    with pytest.raises(BoLIDError, match="one prompt per image"):
        scorer.clip_t(torch.rand(2, 3, 32, 32), ["one"])


def test_direct_fid_is_numpy_only_and_symmetric():
    a, b = _features(8, 30, 5).numpy(), _features(9, 25, 5, shift=0.3).numpy()
    assert isinstance(a, np.ndarray)
    assert M.fid_from_features(a, b) == pytest.approx(M.fid_from_features(b, a), rel=1e-9)


def test_fid_features_must_be_an_inception_layer():
    with pytest.raises(BoLIDError, match="FID features must be one of"):
        M.random_inception(fid_features=100)
