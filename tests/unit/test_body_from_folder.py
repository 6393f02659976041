"""bolid_lib.data.body_from_folder: a folder to a Body-ID a few photos at a time equals the step-by-step path
(load the batch, find every pose, weight every photo, encode), and its memory does not depend on the folder.

A random-init YOLO11n-pose (conf ~0 so every photo carries a detection) and a tiny random Body-ID VAE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bolid_lib.data import body_from_folder as bff
from bolid_lib.data import photos as ph
from bolid_lib.errors import BoLIDError
from bolid_lib.method import body_vae as vae_lib
from bolid_lib.method import weighting as wt
from bolid_lib.method.pose import PoseModel

TINY = vae_lib.BodyVAEConfig(input_size=32, latent_dim=12, widths=(8, 16, 16), feature_dim=24, pool_size=2, groups=4)
RANDOM_POSE = {"conf": 0.0001, "visibility": 0.0}
SIZE = 128


def person(w: int, h: int, seed: int) -> Image.Image:
    from bolid_lib.data.synthetic import RenderSettings, random_shapes, render_views

    side = max(w, h)
    images, _ = render_views(random_shapes(1, seed=3), seed=seed, settings=RenderSettings(size=side))
    arr = (images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    top, left = (side - h) // 2, (side - w) // 2
    return Image.fromarray(np.ascontiguousarray(arr[top:top + h, left:left + w]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("input")
    d = base / "alice"
    d.mkdir()
    sizes = [(120, 180), (200, 150), (160, 160), (90, 200), (210, 140)]
    for i, (w, h) in enumerate(sizes):
        person(w, h, seed=i).save(d / f"p{i}.{'png' if i % 2 else 'jpg'}")
    (d / "notes.txt").write_text("not a photo")
    return base


@pytest.fixture(scope="module")
def pose_model(yolo_pose_pt):
    return PoseModel.load(str(yolo_pose_pt))


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return vae_lib.BodyVAE(TINY).eval()


def step_by_step(base, pose_model, vae, **kw):
    batch = ph.load_photos(base, "alice", SIZE)
    images = batch.images.contiguous()                                   # (B, 3, S, S) NCHW, as image_to_bchw gives
    pose = pose_model.predict(images, **RANDOM_POSE)
    weighted, _ = wt.apply_weighting(images, pose.keypoints, kw.get("sigma", wt.DEFAULT_SIGMA),
                                     kw.get("alpha", wt.DEFAULT_ALPHA), batch_size=16)
    return vae_lib.encode_body(vae, weighted, pose)


@pytest.mark.parametrize("per_step", [1, 2, 8])
def test_the_streamed_body_id_equals_the_step_by_step_one(folder, pose_model, vae, per_step):
    ref = step_by_step(folder, pose_model, vae)
    out = bff.body_from_folder(folder, "alice", pose_model, vae, size=SIZE, photos_per_step=per_step, **RANDOM_POSE)
    assert out.names == [f"p{i}.{'png' if i % 2 else 'jpg'}" for i in range(5)]
    assert [s.name for s in out.skipped] == ["notes.txt"]
    torch.testing.assert_close(out.body.mean, ref.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.body.logvar, ref.logvar, rtol=1e-4, atol=1e-5)
    for key in ("views_used", "views_skipped", "vae_fingerprint", "source"):
        assert out.body.meta[key] == ref.meta[key], key
    assert abs(out.body.meta["mean_confidence"] - ref.meta["mean_confidence"]) < 1e-5
    assert "read 5 photos" in out.report() and "notes.txt: not an image" in out.report()


def test_the_pool_fed_in_chunks_equals_encode_views_bit_for_bit(vae):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(7, 3, 64, 48, generator=g)
    kp = torch.cat([torch.rand(7, 17, 2, generator=g) * torch.tensor([48, 64]), torch.rand(7, 17, 1, generator=g)], -1)
    w = torch.tensor([0.5, 0.0, 1.0, 0.2, 0.9, 0.3, 0.7])
    mean, logvar = vae.encode_views(images, kp, w, chunk=3)
    pool = vae_lib.ViewPool(vae)
    for s in range(0, 7, 3):
        pool.add(images[s:s + 3], kp[s:s + 3], w[s:s + 3])
    m2, l2 = pool.result()
    assert torch.equal(mean, m2) and torch.equal(logvar, l2) and pool.views == 6
    with pytest.raises(BoLIDError, match="weight 0"):
        vae_lib.ViewPool(vae).result()


def test_the_contact_sheet_is_bounded_whatever_the_folder_holds(folder, pose_model, vae):
    out = bff.body_from_folder(folder, "alice", pose_model, vae, size=SIZE, photos_per_step=2, **RANDOM_POSE)
    t = bff.THUMBNAIL_SIDE
    assert out.sheet.shape == (3, 2 * t, 4 * t)                           # 5 thumbnails: 2 rows of 4
    calls = []
    bff.body_from_folder(folder, "alice", pose_model, vae, size=SIZE, max_photos=3, progress=lambda d, n: calls.append((d, n)),
                         **RANDOM_POSE)
    assert calls[-1] == (3, 3) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_no_person_anywhere_and_no_photo_at_all_say_the_fix(folder, pose_model, vae, tmp_path):
    with pytest.raises(BoLIDError, match="no person was found in any of the 5 views"):
        bff.body_from_folder(folder, "alice", pose_model, vae, size=SIZE, conf=1.0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(BoLIDError, match="no readable photo"):
        bff.body_from_folder(tmp_path, "empty", pose_model, vae, size=SIZE)
    with pytest.raises(BoLIDError, match="photos_per_step"):
        bff.body_from_folder(folder, "alice", pose_model, vae, photos_per_step=0)
