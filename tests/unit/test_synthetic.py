"""Procedural people: determinism, valid keypoints, identity only in shape, pose range, speed."""

from __future__ import annotations

import time

import pytest
import torch

from bolid_lib.data import synthetic
from bolid_lib.errors import BoLIDError


def test_shapes_lie_in_their_ranges_and_are_seeded():
    s = synthetic.random_shapes(50, 3)
    lo = torch.tensor([p[1] for p in synthetic.SHAPE_PARAMS])
    hi = torch.tensor([p[2] for p in synthetic.SHAPE_PARAMS])
    assert s.shape == (50, synthetic.NUM_SHAPE_PARAMS)
    assert bool(((s >= lo) & (s <= hi)).all())
    assert torch.equal(s, synthetic.random_shapes(50, 3)) and not torch.equal(s, synthetic.random_shapes(50, 4))


def test_render_is_deterministic_per_seed():
    shapes = synthetic.random_shapes(3, 0).repeat_interleave(2, 0)
    a = synthetic.render_views(shapes, seed=5)
    b = synthetic.render_views(shapes, seed=5)
    c = synthetic.render_views(shapes, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("size", [64, 96])
def test_images_and_keypoints_are_valid(size):
    shapes = synthetic.random_shapes(8, 1).repeat_interleave(4, 0)
    images, kp = synthetic.render_views(shapes, seed=2, settings=synthetic.RenderSettings(size=size))
    assert images.shape == (32, 3, size, size) and kp.shape == (32, 17, 3)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    vis = kp[..., 2] > 0
    assert bool(vis[:, 5:].all())                       # body joints are always given
    xy = kp[..., :2][vis]
    assert float(xy.min()) >= -1 and float(xy.max()) <= size + 1
    assert bool((kp[~vis] == 0).all())                  # invisible points are zeroed, as the pose step does
    assert bool(((kp[..., 2][vis] >= 0.6) & (kp[..., 2][vis] <= 1)).all())
    # A back view hides the face: some views have invisible eyes/nose, others show them.
    assert bool((~vis[:, 0]).any()) and bool(vis[:, 0].any())


def test_the_body_is_drawn_at_its_keypoints():
    """Body parts are flat colours while the background carries per-pixel noise, so a pixel on the body has
    a neighbour of exactly its colour and a background pixel almost surely not. The middle of each thigh
    (between hip and knee keypoints) must be on the body; another part in front of it is still body."""
    shapes = synthetic.random_shapes(1, 0).repeat(16, 1)
    images, kp = synthetic.render_views(shapes, seed=3, settings=synthetic.RenderSettings(size=96))
    on_body = 0
    for b in range(16):
        for hip, knee in ((11, 13), (12, 14)):
            mid = (kp[b, hip, :2] + kp[b, knee, :2]) / 2
            x, y = int(mid[0].clamp(1, 94)), int(mid[1].clamp(1, 94))
            c = images[b, :, y, x]
            neighbours = [images[b, :, y + dy, x + dx] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
            on_body += any(torch.equal(c, n) for n in neighbours)
    assert on_body == 32
    # And the background is noisy: a corner pixel far from the body has no equal neighbour in most views.


def test_colours_change_per_view_but_identity_is_shape_only():
    one = synthetic.random_shapes(1, 0).repeat(64, 1)
    images, _ = synthetic.render_views(one, seed=9)
    means = images.mean(dim=(2, 3))                       # (64, 3) mean colour per view
    assert float(means.std(0).min()) > 0.05               # the same person looks different in colour each time
    a = synthetic.make_views(synthetic.random_shapes(2, 0), 8, seed=1)
    assert a.person.tolist() == [0] * 8 + [1] * 8
    assert a.images.shape[0] == 16


def test_pose_range_controls_articulation():
    """pose_range (0, 0): arms hang straight (shoulder, elbow, wrist collinear in 3D, so in 2D too);
    a held-out range (0.6, 1) bends every elbow by at least 0.6 * 140 degrees."""
    shapes = synthetic.random_shapes(4, 2).repeat_interleave(8, 0)

    def elbow_bend(settings):
        _, kp = synthetic.render_views(shapes, seed=4, settings=settings)
        a, e, w = kp[:, 5, :2], kp[:, 7, :2], kp[:, 9, :2]
        u, v = e - a, w - e
        cross = (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs() / (u.norm(dim=1) * v.norm(dim=1)).clamp(min=1e-6)
        return cross

    straight = elbow_bend(synthetic.RenderSettings(pose_range=(0.0, 0.0)))
    assert float(straight.max()) < 1e-3
    bent = elbow_bend(synthetic.RenderSettings(pose_range=(0.6, 1.0)))
    assert float(bent.median()) > 0.3


def test_bad_arguments_are_refused():
    with pytest.raises(BoLIDError):
        synthetic.render_views(torch.zeros(2, 3), seed=0)
    with pytest.raises(BoLIDError):
        synthetic.render_views(synthetic.random_shapes(1, 0), seed=0, settings=synthetic.RenderSettings(pose_range=(0.5, 0.2)))
    with pytest.raises(BoLIDError):
        synthetic.random_shapes(0, 0)


def test_a_thousand_views_render_in_seconds():
    torch.set_num_threads(2)
    t = time.perf_counter()
    data = synthetic.make_views(synthetic.random_shapes(10, 0), 100, seed=0, settings=synthetic.RenderSettings(size=64))
    elapsed = time.perf_counter() - t
    assert data.images.shape == (1000, 3, 64, 64)
    assert elapsed < 30, f"1000 views took {elapsed:.1f} s"
