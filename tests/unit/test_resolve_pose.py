"""bolid_lib.method.weighting.resolve_pose: the pose the Gaussian Weighting node weights a batch with.

Every branch: neither / both inputs connected; BOLID_POSE as it is, rescaled to another resolution of the same
images, refused for another aspect ratio (and accepted within the tolerance); POSE_KEYPOINT read at the images'
size; one pose repeated for a batch; a count that fits neither.
"""

import pytest
import torch

from bolid_lib.errors import BoLIDError
from bolid_lib.method.keypoints import NUM_KEYPOINTS, PoseBatch
from bolid_lib.method.weighting import ASPECT_TOLERANCE, resolve_pose


def _pose(b=2, size=(100, 80), seed=0) -> PoseBatch:
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, NUM_KEYPOINTS, 3, generator=g)
    kp[..., 0] *= size[1]
    kp[..., 1] *= size[0]
    boxes = torch.tensor([[5.0, 10.0, 60.0, 90.0]]).repeat(b, 1)
    found = torch.ones(b, dtype=torch.bool)
    found[-1] = b == 1
    return PoseBatch(kp, boxes, found, size, {"model": "m"})


def _frame(width, height, x, y):
    flat = [0.0] * (18 * 3)
    flat[0:3] = [x, y, 1.0]                   # OpenPose nose = COCO 0
    return {"people": [{"pose_keypoints_2d": flat}], "canvas_width": width, "canvas_height": height}


@pytest.mark.parametrize("pose, kp, which", [(None, None, "neither is"), (_pose(), [{}], "both are")])
def test_exactly_one_input(pose, kp, which):
    with pytest.raises(BoLIDError, match=rf"exactly one of 'pose'.*'pose_keypoint'.*{which} connected"):
        resolve_pose(pose, kp, (100, 80), 2)


def test_same_size_is_returned_as_is():
    pose = _pose()
    assert resolve_pose(pose, None, (100, 80), 2) is pose


def test_other_resolution_rescales_keypoints_and_boxes():
    pose = _pose(size=(100, 80))
    out = resolve_pose(pose, None, (200, 160), 2)
    assert out.image_size == (200, 160) and out.meta == pose.meta and out.meta is not pose.meta
    torch.testing.assert_close(out.keypoints[..., :2], pose.keypoints[..., :2] * 2)
    torch.testing.assert_close(out.keypoints[..., 2], pose.keypoints[..., 2])          # confidences kept
    torch.testing.assert_close(out.boxes, pose.boxes * 2)
    assert torch.equal(out.found, pose.found)
    assert not torch.equal(pose.keypoints[..., :2], out.keypoints[..., :2])          # the input is not changed


def test_anisotropic_scale_within_tolerance():
    """Rounding makes a resized image's aspect ratio differ a little: within the tolerance each axis scales alone."""
    pose = _pose(size=(100, 80))
    out = resolve_pose(pose, None, (301, 240), 2)                                   # 0.33% off in aspect ratio
    torch.testing.assert_close(out.keypoints[..., 0], pose.keypoints[..., 0] * 3)
    torch.testing.assert_close(out.keypoints[..., 1], pose.keypoints[..., 1] * 3.01)
    torch.testing.assert_close(out.boxes, pose.boxes * torch.tensor([3, 3.01, 3, 3.01]))


def test_other_aspect_ratio_is_refused():
    pose = _pose(size=(100, 80))
    w = round(100 * 0.8 * (1 + 3 * ASPECT_TOLERANCE))                               # 3x the tolerance wider
    with pytest.raises(BoLIDError, match=rf"the pose refers to images of 80x100 but the images are {w}x100 "
                                         r"\(another aspect ratio\): find the pose on these same images"):
        resolve_pose(pose, None, (100, w), 2)


def test_pose_keypoint_is_read_at_the_image_size():
    frames = [_frame(40, 50, 20.0, 25.0), _frame(40, 50, 10.0, 5.0)]
    out = resolve_pose(None, frames, (100, 80), 2)
    assert out.image_size == (100, 80) and out.meta == {"source": "POSE_KEYPOINT"}
    torch.testing.assert_close(out.keypoints[:, 0], torch.tensor([[40.0, 50.0, 1.0], [20.0, 10.0, 1.0]]))
    assert out.found.tolist() == [True, True]


def test_one_pose_is_repeated_for_the_batch():
    pose = _pose(b=1)
    out = resolve_pose(pose, None, (100, 80), 3)
    assert len(out) == 3
    for i in range(3):
        assert torch.equal(out.keypoints[i], pose.keypoints[0]) and torch.equal(out.boxes[i], pose.boxes[0])
    assert out.found.all()
    # ...after rescaling too, and from a single POSE_KEYPOINT frame
    assert len(resolve_pose(pose, None, (50, 40), 3)) == 3
    assert len(resolve_pose(None, _frame(80, 100, 30.0, 30.0), (100, 80), 4)) == 4


def test_one_pose_for_one_image():
    pose = _pose(b=1)
    assert resolve_pose(pose, None, (100, 80), 1) is pose


@pytest.mark.parametrize("poses, batch", [(2, 3), (3, 2), (2, 1)])
def test_a_count_that_fits_neither_is_refused(poses, batch):
    with pytest.raises(BoLIDError, match=rf"got {batch} images but {poses} poses: give one pose per image \(or one for all\)"):
        resolve_pose(_pose(b=poses), None, (100, 80), batch)
