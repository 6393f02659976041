"""POSE_KEYPOINT (OpenPose-18, comfyui_controlnet_aux format) <-> PoseBatch (COCO-17)."""

import json

import pytest
import torch

from bolid_lib.method import keypoints as K
from bolid_lib.errors import BoLIDError


def make_pose(b=3, h=480, w=640, seed=0, p_visible=0.75) -> K.PoseBatch:
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, 17, 3, generator=g)
    kp[..., 0] *= w
    kp[..., 1] *= h
    vis = torch.rand(b, 17, generator=g) < p_visible
    kp[..., 2] = torch.where(vis, 0.5 + 0.5 * kp[..., 2], torch.zeros(()))
    kp[~vis] = 0
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0]]).repeat(b, 1)
    return K.PoseBatch(kp, boxes, torch.ones(b, dtype=torch.bool), (h, w))


def test_openpose_mapping_names_agree():
    assert len(K.OPENPOSE_KEYPOINTS) == 18 and K.OPENPOSE_FROM_COCO[K.OPENPOSE_NECK] is None
    for j, i in enumerate(K.OPENPOSE_FROM_COCO):
        if i is not None:
            assert K.COCO_KEYPOINTS[i] == K.OPENPOSE_KEYPOINTS[j]
    assert sorted(i for i in K.OPENPOSE_FROM_COCO if i is not None) == list(range(17))


def test_format_matches_controlnet_aux():
    pose = make_pose(2, seed=1, p_visible=1.0)
    pose.found[1] = False
    data = pose_kp = K.pose_batch_to_pose_keypoint(pose)
    json.dumps(data)  # plain JSON types only
    assert len(pose_kp) == 2
    frame = pose_kp[0]
    assert frame["canvas_width"] == 640 and frame["canvas_height"] == 480
    person = frame["people"][0]
    assert set(person) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"}
    flat = person["pose_keypoints_2d"]
    assert len(flat) == 54 and all(isinstance(v, float) for v in flat)
    op = torch.tensor(flat).reshape(18, 3)
    assert torch.equal(op[:, 2], torch.ones(18))  # every point visible -> c = 1.0
    # OpenPose index 2 is the right shoulder = COCO 6; index 15 is the left eye = COCO 1.
    assert op[2, 0].item() == pose.keypoints[0, 6, 0].item() and op[15, 1].item() == pose.keypoints[0, 1, 1].item()
    ls, rs = pose.keypoints[0, 5, :2].double(), pose.keypoints[0, 6, :2].double()
    torch.testing.assert_close(op[1, :2].double(), (ls + rs) / 2, rtol=0, atol=1e-4)
    assert pose_kp[1]["people"] == []


def test_absent_points_are_zero_and_neck_needs_both_shoulders():
    pose = make_pose(1, seed=2, p_visible=1.0)
    pose.keypoints[0, 6] = 0  # right shoulder invisible
    pose.keypoints[0, 0] = 0  # nose
    op = torch.tensor(K.pose_batch_to_pose_keypoint(pose)[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    assert torch.equal(op[0], torch.zeros(3)) and torch.equal(op[2], torch.zeros(3))
    assert torch.equal(op[1], torch.zeros(3))  # no neck without both shoulders


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_exact_for_visible_points(seed):
    pose = make_pose(4, seed=seed)
    pose.found[2] = False
    pose.keypoints[2] = 0
    back = K.pose_keypoint_to_pose_batch(K.pose_batch_to_pose_keypoint(pose))
    assert back.image_size == pose.image_size
    assert torch.equal(back.found, pose.found)
    vis = pose.visible
    assert torch.equal(back.visible, vis)
    assert torch.equal(back.keypoints[..., :2][vis], pose.keypoints[..., :2][vis])  # bit-exact x, y
    assert torch.equal(back.keypoints[..., 2][vis], torch.ones(int(vis.sum())))     # c = 1.0 by the format
    assert torch.equal(back.keypoints[~vis], torch.zeros(int((~vis).sum()), 3))
    # A second trip is the identity.
    again = K.pose_keypoint_to_pose_batch(K.pose_batch_to_pose_keypoint(back))
    assert torch.equal(again.keypoints, back.keypoints) and torch.equal(again.boxes, back.boxes)


def test_normalised_coordinates_are_scaled_to_pixels():
    pose = make_pose(2, h=100, w=200, seed=3, p_visible=1.0)
    data = K.pose_batch_to_pose_keypoint(pose)
    for frame in data:
        for person in frame["people"]:
            flat = person["pose_keypoints_2d"]
            for i in range(0, 54, 3):
                if flat[i + 2] > 0:
                    flat[i] /= 200
                    flat[i + 1] /= 100
    back = K.pose_keypoint_to_pose_batch(data)
    torch.testing.assert_close(back.keypoints[..., :2], pose.keypoints[..., :2], atol=1e-4, rtol=1e-6)
    # Normalised input without canvas: the image size gives the scale.
    for frame in data:
        del frame["canvas_width"], frame["canvas_height"]
    back2 = K.pose_keypoint_to_pose_batch(data, image_size=(100, 200))
    torch.testing.assert_close(back2.keypoints, back.keypoints)


def test_pixel_coordinates_rescaled_to_image_size():
    """DWPose run at another resolution: pixel coordinates follow the canvas to the images' size."""
    pose = make_pose(1, h=256, w=512, seed=4, p_visible=1.0)
    back = K.pose_keypoint_to_pose_batch(K.pose_batch_to_pose_keypoint(pose), image_size=(512, 1024))
    assert back.image_size == (512, 1024)
    torch.testing.assert_close(back.keypoints[..., :2], pose.keypoints[..., :2] * 2)


def test_first_person_and_frames_without_people():
    pose = make_pose(2, seed=5, p_visible=1.0)
    data = K.pose_batch_to_pose_keypoint(pose)
    other = K.pose_batch_to_pose_keypoint(make_pose(1, seed=6))[0]["people"][0]
    data[0]["people"].append(other)  # a second person: ignored
    data.append({"people": [], "canvas_width": 640, "canvas_height": 480})
    back = K.pose_keypoint_to_pose_batch(data)
    assert len(back) == 3 and back.found.tolist() == [True, True, False]
    assert torch.equal(back.keypoints[0, :, :2], pose.keypoints[0, :, :2])
    assert torch.equal(back.keypoints[2], torch.zeros(17, 3)) and torch.equal(back.boxes[2], torch.zeros(4))
    vk = pose.keypoints[0]
    assert back.boxes[0].tolist() == [vk[:, 0].min().item(), vk[:, 1].min().item(), vk[:, 0].max().item(), vk[:, 1].max().item()]


def test_single_dict_accepted():
    pose = make_pose(1, seed=7)
    back = K.pose_keypoint_to_pose_batch(K.pose_batch_to_pose_keypoint(pose)[0])
    assert len(back) == 1


@pytest.mark.parametrize(
    "data, match",
    [
        ([], "non-empty"),
        ("x", "non-empty"),
        ([{"people": [{"pose_keypoints_2d": [1.0] * 51}], "canvas_width": 10, "canvas_height": 10}], "54 numbers"),
        ([{"people": []}], "canvas"),
        ([{"people": [], "canvas_width": 10, "canvas_height": 10}, {"people": [], "canvas_width": 20, "canvas_height": 10}], "canvas"),
        ([{"nobody": 1, "canvas_width": 10, "canvas_height": 10}], "'people'"),
    ],
)
def test_bad_pose_keypoint_is_a_clear_error(data, match):
    with pytest.raises(BoLIDError, match=match):
        K.pose_keypoint_to_pose_batch(data)


# --- skeleton drawing (bolid_lib/method/draw.py) -----------------------------------------------------------

def test_draw_skeleton_marks_visible_limbs_only():
    from bolid_lib.method.draw import draw_skeleton

    h, w = 64, 48
    images = torch.full((2, 3, h, w), 0.25)
    kp = torch.zeros(2, 17, 3)
    kp[0, 5] = torch.tensor([10.0, 20.0, 0.9])   # left shoulder
    kp[0, 7] = torch.tensor([10.0, 50.0, 0.8])   # left elbow: limb (5, 7) is drawn
    kp[0, 16] = torch.tensor([40.0, 60.0, 0.0])  # invisible: nothing there
    pose = K.PoseBatch(kp, torch.zeros(2, 4), torch.tensor([True, False]), (h, w))
    out = draw_skeleton(images, pose)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out[0, :, 35, 10], images[0, :, 35, 10])    # on the limb
    assert torch.equal(out[0, :, 60, 40], images[0, :, 60, 40])        # at the invisible point
    assert torch.equal(out[0, :, 5:15, 30:], images[0, :, 5:15, 30:])  # far from everything
    assert torch.equal(out[1], images[1])                              # no person found: unchanged
    with pytest.raises(BoLIDError, match="size"):
        draw_skeleton(images[:, :, :32], pose)


def test_draw_skeleton_strokes_reach_past_the_keypoint_box_and_image_edges():
    """Drawing is done in the box around the visible keypoints: a point on the image edge or outside it still
    gets its full anti-aliased disc inside the image, a limb leaving the image is drawn up to the edge, and a
    second image's drawing does not spill into the first."""
    from bolid_lib.method.draw import draw_skeleton

    h, w = 80, 60
    images = torch.zeros(2, 3, h, w)
    kp = torch.zeros(2, 17, 3)
    kp[0, 0] = torch.tensor([0.0, 0.0, 1.0])       # nose exactly on the corner
    kp[0, 5] = torch.tensor([30.0, 40.0, 1.0])     # left shoulder
    kp[0, 7] = torch.tensor([90.0, 40.0, 1.0])     # left elbow outside the image: limb (5, 7) runs to the edge
    kp[1, 9] = torch.tensor([-30.0, -30.0, 1.0])   # only keypoint far outside: nothing to draw
    pose = K.PoseBatch(kp, torch.zeros(2, 4), torch.tensor([True, True]), (h, w))
    out = draw_skeleton(images, pose, thickness=2)
    assert out[0, :, 0:2, 0:2].min() > 0.5                         # the corner disc (radius 3) is drawn
    assert out[0, :, 40, 59].max() > 0.3                           # the limb reaches the right edge
    assert out[0, :, 40, 45].max() > 0.3
    assert torch.equal(out[0, :, 60:, :], images[0, :, 60:, :])     # below everything: untouched
    assert torch.equal(out[1], images[1])
