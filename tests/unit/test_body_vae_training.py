"""The Body-ID VAE trainer: loss goes down, exact resume, checkpoints, pose cache, command line, and a
small seeded learning test (marked slow: `pytest -m slow tests/unit/test_body_vae_training.py`)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from PIL import Image

from bolid_lib import files

from bolid_lib.data import synthetic
from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, load_body_vae
from bolid_lib.errors import BoLIDError
from bolid_lib.training.body_vae import (LIMB_CHAINS, TrainConfig, contrast_loss, view_contrast_loss, folder_viewset, foreshorten_limbs,
                                         compute_loss, load_checkpoint, sample_batch, synthetic_viewset, train_body_vae)

TINY = BodyVAEConfig(input_size=32, latent_dim=16, widths=(8, 16), feature_dim=32, pool_size=2, groups=4)


@pytest.fixture(scope="module")
def data():
    return synthetic_viewset(4, 6, TINY, seed=0, render_size=48)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism and speed on a shared 2-core machine
    yield
    torch.set_num_threads(before)


def test_viewset_shapes_and_limbs(data):
    assert data.views.shape == (24, 3, 32, 32) and data.views.dtype == torch.uint8
    assert data.keypoints.shape == (24, 17, 3) and data.weights.shape == (24,)
    assert data.limbs.shape == (4, 12) and torch.isfinite(data.limbs).all()
    assert data.trainable == [0, 1, 2, 3]


def test_loss_goes_down(data):
    cfg = TrainConfig(steps=30, batch_persons=4, lr=3e-3, warmup=2, log_every=100)
    _, hist = train_body_vae(TINY, cfg, data)
    first = sum(h["loss"] for h in hist[:5]) / 5
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert {"recon", "kl", "limb", "loss", "step"} <= set(hist[0])


def test_resume_continues_exactly(data, tmp_path):
    cfg = TrainConfig(steps=6, batch_persons=3, warmup=2, checkpoint_every=3, log_every=100)
    straight, _ = train_body_vae(TINY, cfg, data, checkpoint_dir=tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["step_0000003", "step_0000006"]
    assert sorted(p.name for p in (tmp_path / "a" / "step_0000003").iterdir()) == [
        "body_vae.safetensors", "optimizer.safetensors", "state.json"]
    # a checkpoint's weights are a Body-ID VAE file the nodes load as it is
    final = load_body_vae(tmp_path / "a" / "step_0000006" / "body_vae.safetensors")
    assert all(torch.equal(final.state_dict()[k], v) for k, v in straight.state_dict().items())
    # only the newest keep_checkpoints stay; resuming from what is left still works
    train_body_vae(TINY, dataclasses.replace(cfg, keep_checkpoints=1), data, checkpoint_dir=tmp_path / "k")
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["step_0000006"]
    resumed, hist = train_body_vae(TINY, cfg, data, resume=tmp_path / "a" / "step_0000003")
    assert [h["step"] for h in hist] == [3, 4, 5]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A folder resumes from its newest checkpoint: already at the end, nothing more to do.
    model, _, info = load_checkpoint(tmp_path / "a")
    assert info["step"] == 6 and all(torch.equal(model.state_dict()[k], a[k]) for k in a)


def test_resume_refuses_other_files_and_configs(data, tmp_path):
    cfg = TrainConfig(steps=2, batch_persons=2, warmup=1, log_every=100)
    train_body_vae(TINY, cfg, data, checkpoint_dir=tmp_path)
    other = BodyVAEConfig(**{**TINY.to_dict(), "latent_dim": 8})
    with pytest.raises(BoLIDError, match="resume with the same sizes"):
        train_body_vae(other, cfg, data, resume=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BoLIDError, match="no checkpoint"):
        train_body_vae(TINY, cfg, data, resume=tmp_path / "empty")
    files.save_safetensors_atomic({"x": torch.zeros(1)}, tmp_path / "x.safetensors", fmt="bolid.body", version=1)
    with pytest.raises(BoLIDError, match="not a Body-ID VAE training checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_refuses_views_of_the_wrong_size(data):
    with pytest.raises(BoLIDError, match="input_size"):
        train_body_vae(BodyVAEConfig(**{**TINY.to_dict(), "input_size": 64}), TrainConfig(steps=1), data)


def test_people_need_two_views():
    with pytest.raises(BoLIDError, match="at least 2 usable views"):
        synthetic_viewset(3, 1, TINY, seed=0)


def test_folder_dataset_runs_pose_once_and_caches(tmp_path, yolo_pose_pt):
    root = tmp_path / "people"
    shapes = synthetic.random_shapes(2, 0)
    for p in range(2):
        (root / f"p{p}").mkdir(parents=True)
        imgs, _ = synthetic.render_views(shapes[p:p + 1].repeat(3, 1), seed=p)
        for i, im in enumerate(imgs):
            Image.fromarray((im.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(root / f"p{p}" / f"{i}.png")
    (root / "p0" / "notes.txt").write_text("not an image")
    kw = dict(cache_dir=tmp_path / "cache", conf=0.0001, visibility=0.0)
    first = folder_viewset(root, str(yolo_pose_pt), TINY, **kw)
    assert first.names == ["p0", "p1"] and first.views.shape[1:] == (3, 32, 32)
    cache_files = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert [c.name for c in cache_files] == ["p0.safetensors", "p1.safetensors"]
    stamps = [(c.stat().st_ino, c.stat().st_mtime_ns) for c in cache_files]
    second = folder_viewset(root, str(yolo_pose_pt), TINY, **kw)
    assert torch.equal(first.views, second.views) and torch.equal(first.keypoints, second.keypoints)
    assert [(c.stat().st_ino, c.stat().st_mtime_ns) for c in cache_files] == stamps  # not re-run, not rewritten
    # A new photo invalidates that person's cache only.
    shutil.copyfile(root / "p1" / "0.png", root / "p1" / "3.png")
    third = folder_viewset(root, str(yolo_pose_pt), TINY, **kw)
    assert (cache_files[0].stat().st_ino, cache_files[0].stat().st_mtime_ns) == stamps[0]
    assert cache_files[1].stat().st_ino != stamps[1][0]
    assert third.views.shape[0] == first.views.shape[0] + 1


def test_command_line_trains_and_writes_a_loadable_vae(tmp_path):
    from bolid_lib.training.cli import main

    rc = main(["body-vae", "--synthetic", "3", "--views-per-person", "3", "--steps", "2", "--batch-persons", "2",
               "--input-size", "32", "--latent-dim", "8", "--widths", "8,16", "--feature-dim", "16", "--warmup", "1",
               "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    vae = load_body_vae(tmp_path / "body_vae.safetensors")
    assert vae.config.latent_dim == 8 and vae.config.widths == (8, 16)
    assert (tmp_path / "checkpoints" / "step_0000002" / "body_vae.safetensors").is_file()


def test_accelerate_path_trains(data):
    """The multi-GPU path (accelerate's Accelerator, DDP when launched on several processes) on one CPU process."""
    accelerate = pytest.importorskip("accelerate")
    acc = accelerate.Accelerator(cpu=True)
    model, hist = train_body_vae(TINY, TrainConfig(steps=3, batch_persons=2, warmup=1, log_every=100), data, accelerator=acc)
    assert len(hist) == 3 and all(torch.isfinite(p).all() for p in model.parameters())
    assert type(model).__name__ == "BodyVAE"


def test_foreshortening_keeps_directions_and_only_shortens_limbs(data):
    kp = data.keypoints[:8].clone()
    kp[0, 9] = 0                                   # an invisible wrist stays invisible and at zero
    out = foreshorten_limbs(kp, torch.Generator().manual_seed(0), prob=1.0, max_deg=60)
    limb_joints = {j for chain in LIMB_CHAINS for j in chain[1:]}
    others = [j for j in range(17) if j not in limb_joints]
    assert torch.equal(out[:, others], kp[:, others]) and torch.equal(out[..., 2], kp[..., 2])
    assert torch.equal(out[0, 9], torch.zeros(3))
    for chain in LIMB_CHAINS:
        for a, b in zip(chain, chain[1:]):
            ok = (kp[:, a, 2] > 0) & (kp[:, b, 2] > 0)
            before, after = kp[ok, b, :2] - kp[ok, a, :2], out[ok, b, :2] - out[ok, a, :2]
            ratio = after.norm(dim=-1) / before.norm(dim=-1)
            assert (ratio <= 1 + 1e-5).all() and (ratio >= 0.5 - 1e-5).all()          # cos(60 deg) = 0.5
            assert torch.allclose(after, before * ratio[:, None], atol=1e-4)          # same 2D direction
    assert torch.equal(foreshorten_limbs(kp, torch.Generator(), prob=0.0, max_deg=60), kp.float())


def test_contrast_pairs_two_disjoint_view_sets_per_person(data):
    cfg = TrainConfig(batch_persons=3, context_views=(1, 2), target_views=1)
    batch = sample_batch(data, cfg, torch.Generator().manual_seed(0))
    assert int(batch["slots"]) == 6 and batch["limbs"].shape == (6, 12)
    owner = batch["ctx_owner"]
    for slot in range(3):   # the two sets of a slot share no view (compared through their pixels and keypoints)
        a = batch["ctx_keypoints"][owner == slot][:, None]
        b = batch["ctx_keypoints"][owner == slot + 3][None]
        assert a.numel() and b.numel() and not (a == b).all(-1).all(-1).any()
    off = sample_batch(data, TrainConfig(batch_persons=3, contrast_weight=0.0), torch.Generator().manual_seed(0))
    assert int(off["slots"]) == 3 and int(off["ctx_owner"].max()) < 3
    # The term is low when each person's two Body-IDs coincide and far from the others', high when swapped.
    a = torch.eye(3) * 5
    person = torch.tensor([0, 1, 2])
    assert contrast_loss(a, a, person, 1.0) < 1e-3 < contrast_loss(a, a[[1, 2, 0]], person, 1.0)


def test_view_contrast_scores_each_view_against_the_other_subset():
    person = torch.tensor([0, 1, 2])
    slot_mean = torch.cat([torch.eye(3) * 5, torch.eye(3) * 5])            # slots 0-2 first subsets, 3-5 second
    owner = torch.tensor([0, 1, 2, 3, 4, 5])
    right = torch.cat([torch.eye(3) * 5, torch.eye(3) * 5])                # each view where its person's Body-ID is
    wrong = right[[1, 2, 0, 4, 5, 3]]                                       # each view where another person's is
    assert view_contrast_loss(right, owner, slot_mean, person, 1.0) < 1e-3 < view_contrast_loss(wrong, owner, slot_mean, person, 1.0)
    # A view is scored against the OTHER subset only: move the second subsets away and the first-subset views,
    # which sit on their own pools, now pay the loss, though they are exactly on the pool they are part of.
    moved = torch.cat([torch.eye(3) * 5, torch.eye(3)[[1, 2, 0]] * 5])
    assert view_contrast_loss(right[:3], owner[:3], moved, person, 1.0) > 1.0


def test_per_view_identity_term_trains_the_single_view_body_id(data):
    cfg = TrainConfig(batch_persons=3, context_views=(1, 2), target_views=1)
    batch = sample_batch(data, cfg, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = BodyVAE(TINY)
    noise = torch.zeros(int(batch["slots"]), TINY.latent_dim)
    loss_on, parts_on = compute_loss(model, batch, TINY, 3, noise, "cpu", cfg)
    loss_off, parts_off = compute_loss(model, batch, TINY, 3, noise, "cpu", dataclasses.replace(cfg, view_contrast_weight=0.0))
    assert "view_contrast" in parts_on and "view_contrast" not in parts_off
    assert float((loss_on - loss_off).detach()) == pytest.approx(parts_on["view_contrast"], rel=1e-4)
    # Its gradient reaches the per-view encoder (the image convolutions), not only the heads.
    model.zero_grad()
    view_contrast = loss_on - loss_off
    view_contrast.backward()
    assert model.encoder[0][0].weight.grad.abs().sum() > 0


def test_image_dropout_leaves_a_view_its_keypoint_geometry_only(data):
    torch.manual_seed(0)
    model = BodyVAE(TINY)
    cfg = TrainConfig(batch_persons=3, context_views=(1, 2), target_views=1)
    noise = torch.zeros(6, TINY.latent_dim)

    def pooled_means(drop: float, scramble: bool) -> torch.Tensor:
        batch = sample_batch(data, dataclasses.replace(cfg, image_dropout=drop), torch.Generator().manual_seed(3))
        if scramble:   # other pixels, same keypoints
            batch["ctx_views"] = torch.rand_like(batch["ctx_views"])
        with torch.no_grad():
            return model(batch["ctx_views"], batch["ctx_keypoints"], batch["ctx_weights"], batch["ctx_owner"], 6,
                         batch["tgt_keypoints"], batch["tgt_owner"], noise, image_keep=batch["ctx_image_keep"])["mean"]

    assert torch.equal(pooled_means(1.0, False), pooled_means(1.0, True))         # every image dropped: pixels do not matter
    assert not torch.allclose(pooled_means(0.0, False), pooled_means(0.0, True))  # none dropped: they do
    keep = sample_batch(data, dataclasses.replace(cfg, image_dropout=0.5), torch.Generator().manual_seed(3))["ctx_image_keep"]
    again = sample_batch(data, dataclasses.replace(cfg, image_dropout=0.5), torch.Generator().manual_seed(3))["ctx_image_keep"]
    assert torch.equal(keep, again) and set(keep.tolist()) <= {0.0, 1.0}          # drawn from the step's generator
    # Encoding (the node's path) never drops anything: the module's eval forward has no dropout.
    v = data.views[:4].float() / 255
    assert torch.equal(model.encode_views(v, data.keypoints[:4])[0], model.encode_views(v, data.keypoints[:4])[0])


@pytest.mark.slow
def test_learns_body_identity_small_seeded():
    """6 procedural identities, about 40 s: Body-IDs of unseen 4-view sets find their identity far above chance."""
    from bolid_lib.experiments.body_id_proof import ProofConfig, run_proof

    cfg = ProofConfig(ids=6, train_views=40, steps=160, time_limit_s=None, batch_persons=6, lr=3e-3, gallery_views=6,
                      query_views=4, queries_per_id=4, latent_dim=32, widths=(8, 16, 32), feature_dim=64, seed=1)
    res = run_proof(cfg)
    assert res["multi_view"] >= 0.75, res         # chance 1/6
    assert res["single_view"] >= 0.4, res


def test_tail_pooling_reads_the_longest_a_segment_appears(data):
    """The Body-ID sees, per segment ratio, the soft maximum over the pooled views: a limb turned towards
    the camera in some views does not pull the estimate of its length down."""
    from bolid_lib.method.body_vae import TAIL_DIM, TAIL_SHIFT, BodyVAE, keypoint_geometry

    model = BodyVAE(TINY).eval()
    assert model.pooled_dim == TINY.feature_dim + TAIL_DIM
    views = data.views[:6].float() / 255
    kp = foreshorten_limbs(data.keypoints[:6], torch.Generator().manual_seed(1), prob=1.0, max_deg=80)
    with torch.no_grad():
        f = model.view_features(views, kp)
    tail = f[:, TINY.feature_dim:].double().mean(0)
    soft_max = torch.log(tail.clamp(min=1e-300)) / TINY.tail_pool + TAIL_SHIFT
    ratios = keypoint_geometry(kp)[:, :TAIL_DIM].double()
    longest = ratios.amax(0)
    seen = longest > 0
    # log-mean-exp lies between max - log(V) / kappa and max
    assert (soft_max[seen] <= longest[seen] + 1e-4).all()
    assert (soft_max[seen] >= longest[seen] - torch.log(torch.tensor(6.0)) / TINY.tail_pool - 1e-4).all()
    # One view: the soft maximum is the view's own ratio; off (tail_pool = 0): no extra pooled features.
    with torch.no_grad():
        one = model.view_features(views[:1], kp[:1])[0, TINY.feature_dim:].double()
    r0 = ratios[0]
    torch.testing.assert_close((torch.log(one[r0 > 0]) / TINY.tail_pool + TAIL_SHIFT), r0[r0 > 0].clamp(max=4.0), rtol=0, atol=1e-4)
    off = BodyVAE(BodyVAEConfig(**{**TINY.to_dict(), "tail_pool": 0.0}))
    assert off.pooled_dim == TINY.feature_dim
    with pytest.raises(BoLIDError, match="tail_pool"):
        BodyVAEConfig(**{**TINY.to_dict(), "tail_pool": -1.0})


def test_tail_pooled_vae_streams_and_round_trips(data, tmp_path):
    from bolid_lib.method.body_vae import BodyVAE, save_body_vae

    torch.manual_seed(0)
    model = BodyVAE(TINY).eval()
    imgs = data.views[:7].float() / 255
    a, _ = model.encode_views(imgs, data.keypoints[:7], chunk=3)
    b, _ = model.encode_views_batched(imgs, data.keypoints[:7])
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    loaded = load_body_vae(save_body_vae(model, tmp_path / "vae.safetensors"))
    assert loaded.config.tail_pool == TINY.tail_pool
    torch.testing.assert_close(loaded.encode_views(imgs, data.keypoints[:7])[0], a)


def test_keypoint_classifier_diagnostic_runs_and_learns():
    """The diagnostic the training README quotes (bolid_lib.experiments.keypoint_classifier), on a small scale."""
    from bolid_lib.experiments.keypoint_classifier import run

    res = run(ids=4, train_views=60, test_views=8, iters=150, render_size=48)
    assert set(res) == {"training poses, 1 view", "training poses, 4 views", "held-out poses, 1 view", "held-out poses, 4 views"}
    # each figure counts whole queries: 4 ids x 8 single views, 4 ids x 2 groups of 4 views
    for k, v in res.items():
        n = 32 if "1 view" in k else 8
        assert v * n == round(v * n), (k, v)
    assert res["training poses, 1 view"] >= 0.75                     # chance 0.25; untrained 0.34 (measured)
    assert res["training poses, 1 view"] > res["held-out poses, 1 view"]   # poses never seen are harder (README)
