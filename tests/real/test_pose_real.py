"""The pose node with ultralytics' real YOLO11n-pose on real photos, through ComfyUI's executor.

Oracles: ultralytics' own ``predict`` on the same checkpoint and photo (which people there are, their boxes and
scores), and BlazePose (mediapipe 0.10.14, an independent model) for where the keypoints are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import reallib
from bolid_lib.method.keypoints import COCO_KEYPOINTS, pose_keypoint_to_pose_batch

pytestmark = [pytest.mark.real, pytest.mark.host]

# A crop of bus.jpg (x0, y0, x1, y1) where the largest person is not the most confident one, so the two
# policies pick different people (on the whole photo they coincide); checked against ultralytics below.
BUS_CROP = (200, 0, 810, 1080)
# ultralytics' scores closer than this are a tie: the pack's letterbox (torch, right/bottom padding) and
# ultralytics' (OpenCV, centred) feed the network slightly different pixels, so near-equal scores may swap.
SCORE_TIE = 0.01
MAX_PEOPLE = 8  # by_index nodes per photo in the BlazePose comparison (no photo here has more people)
# Agreement with BlazePose, relative to the person's size (the diagonal of the YOLO box):
MEDIAN_TOL = 0.05  # median over the person's keypoints visible in both: a scale, offset or left/right error fails
MAX_TOL = 0.30     # every such keypoint: one on another person or another body part fails
# People whose box is shorter than this are left out of the comparison: at ~50 px (messi5.jpg's background
# figures) neither model's keypoints mean much, and BlazePose often lands on something else in such a crop.
MIN_HEIGHT = 100


def ultra_predict(model, image: np.ndarray, conf: float = 0.25) -> dict:
    """ultralytics' own predictions on an RGB uint8 image: boxes (N, 4), scores (N,), keypoints (N, 17, 3)."""
    r = model.predict(np.ascontiguousarray(image[:, :, ::-1]), conf=conf, verbose=False)[0]  # (BGR, as cv2 reads)
    return {"boxes": r.boxes.xyxy.cpu().numpy(), "conf": r.boxes.conf.cpu().numpy(),
            "kp": r.keypoints.data.cpu().numpy()}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) with boxes b (N, 4), xyxy."""
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def pose_graph(image_name: str, model_name: str, picks: dict[str, tuple[str, int]], on_missing="skip") -> dict:
    """LoadImage -> one BoLIDPoseKeypoints per pick {node id: (person, person_index)}, sharing one loader."""
    g = {"img": {"class_type": "LoadImage", "inputs": {"image": image_name}},
         "loader": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": model_name}}}
    for node_id, (person, index) in picks.items():
        g[node_id] = {"class_type": "BoLIDPoseKeypoints", "inputs": {
            "image": ["img", 0], "pose_model": ["loader", 0], "conf": 0.25, "visibility": 0.5,
            "person": person, "person_index": index, "on_missing": on_missing}}
    return g


def cached(comfy, node_id: str, slot: int):
    return comfy.cached_output(node_id, slot)


def save_input(comfy, name: str, image: np.ndarray) -> str:
    Image.fromarray(image).save(comfy.input_dir / name)
    return name


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("crop", [None, BUS_CROP], ids=["bus", "bus_crop"])
def test_person_policies_pick_as_ultralytics_ranks(comfy, real_inputs, real_photos, real_model_name,
                                                   ultralytics_pose, crop):
    image = rgb(real_photos["bus.jpg"])
    name = real_inputs["bus.jpg"]
    if crop is not None:
        x0, y0, x1, y1 = crop
        image = np.ascontiguousarray(image[y0:y1, x0:x1])
        name = save_input(comfy, "bolid_real_bus_crop.png", image)
    truth = ultra_predict(ultralytics_pose, image)
    n = len(truth["conf"])
    area = np.prod(truth["boxes"][:, 2:] - truth["boxes"][:, :2], axis=1)
    largest, confident = int(area.argmax()), int(truth["conf"].argmax())
    if crop is None:
        assert n == 4  # bus.jpg: the four people on the pavement (ultralytics' own count)
    else:
        assert largest != confident, "the crop no longer separates the two policies"
    picks = {"largest": ("largest", 0), "confident": ("most_confident", 0)}
    if crop is None:  # (the crop cuts a person in two at its edge, scored near conf by both: no stable count)
        picks |= {f"idx{i}": ("by_index", i) for i in range(n + 1)}  # n: one past the last person
    result = comfy.run(pose_graph(name, real_model_name, picks))
    assert result.ok, result.error_text()

    def matched(node_id: str) -> int:
        """Which of ultralytics' people the node chose: the one its box overlaps most (IoU >= 0.8)."""
        pose = cached(comfy, node_id, 0)
        assert bool(pose.found[0]) and pose.image_size == image.shape[:2]
        overlap = iou(pose.boxes[0].numpy(), truth["boxes"])
        best = int(overlap.argmax())
        assert overlap[best] >= 0.8, (node_id, overlap)
        # The keypoints are the same person's as ultralytics': visible ones within 3% of the box diagonal.
        box = truth["boxes"][best]
        ours, theirs = pose.keypoints[0].numpy(), truth["kp"][best]
        both = (ours[:, 2] > 0) & (theirs[:, 2] >= 0.5)
        d = np.hypot(*(ours[both, :2] - theirs[both, :2]).T) / np.hypot(*(box[2:] - box[:2]))
        assert both.sum() == 0 or np.median(d) <= 0.03, (node_id, d)
        return best

    assert matched("largest") == largest
    assert matched("confident") == confident
    if crop is not None:
        return
    chosen = []
    for i in range(n):
        ties = set(np.flatnonzero(np.abs(truth["conf"] - truth["conf"][i]) < SCORE_TIE).tolist())
        chosen.append(matched(f"idx{i}"))
        assert chosen[-1] in ties, (i, chosen[-1], truth["conf"])
    assert sorted(chosen) == list(range(n))  # every person once
    beyond = cached(comfy, f"idx{n}", 0)
    assert not beyond.found.any() and not beyond.keypoints.any()

    result = comfy.run(pose_graph(name, real_model_name, {"idx": ("by_index", n)}, on_missing="error"))
    assert not result.ok
    assert f"person index {n} (by detection score) not found in image 0" in result.error_text()


@pytest.fixture(scope="module")
def nobody(comfy, real_photos, ultralytics_pose) -> tuple[str, np.ndarray]:
    """bus.jpg with its people painted over (every box ultralytics finds at conf 0.1, grown by 10%, filled with
    the photo's median colour): a real street scene without a person. Its input file name and pixels."""
    image = rgb(real_photos["bus.jpg"]).copy()
    h, w = image.shape[:2]
    fill = np.median(image.reshape(-1, 3), axis=0).astype(np.uint8)
    for x0, y0, x1, y1 in ultra_predict(ultralytics_pose, image, conf=0.1)["boxes"]:
        mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        image[int(max(0, y0 - my)):int(min(h, y1 + my)), int(max(0, x0 - mx)):int(min(w, x1 + mx))] = fill
    return save_input(comfy, "bolid_real_bus_nobody.png", image), image


def test_photo_without_a_person_is_skipped_or_refused(comfy, nobody, real_model_name, ultralytics_pose):
    name, image = nobody
    assert (image == np.median(image.reshape(-1, 3), axis=0).astype(np.uint8)).all(-1).mean() < 0.5  # mostly photo
    assert len(ultra_predict(ultralytics_pose, image)["conf"]) == 0  # ultralytics finds nobody there
    for person in ("largest", "most_confident"):
        result = comfy.run(pose_graph(name, real_model_name, {"pose": (person, 0)}))
        assert result.ok, result.error_text()
        pose = cached(comfy, "pose", 0)
        assert not pose.found.any() and not pose.keypoints.any()
        assert cached(comfy, "pose", 1)[0]["people"] == []
        result = comfy.run(pose_graph(name, real_model_name, {"pose": (person, 0)}, on_missing="error"))
        assert not result.ok
        assert "a person not found in image 0 of the batch (0-based; 0 detected)" in result.error_text()


def test_pose_keypoint_of_a_real_photo_round_trips(comfy, real_inputs, real_model_name):
    prompt = pose_graph(real_inputs["bus.jpg"], real_model_name, {"pose": ("largest", 0)})
    for key, slot in (("wp", 0), ("wk", 1)):
        prompt[key] = {"class_type": "BoLIDGaussianWeighting", "inputs": {
            "image": ["img", 0], "pose" if slot == 0 else "pose_keypoint": ["pose", slot],
            "sigma": 0.1, "sigma_mode": "relative", "alpha": 0.2}}
    result = comfy.run(prompt)
    assert result.ok, result.error_text()
    pose, pose_kp = cached(comfy, "pose", 0), cached(comfy, "pose", 1)
    vis = pose.visible[0]
    assert vis.sum() >= 12  # a full-body person in daylight: most of the 17 points are seen
    # Through JSON, as other packs save and pass POSE_KEYPOINT: same points (c = 1 for visible ones), same canvas.
    back = pose_keypoint_to_pose_batch(json.loads(json.dumps(pose_kp)))
    assert back.image_size == pose.image_size and back.found.tolist() == [True]
    assert torch.equal(back.visible, pose.visible)
    torch.testing.assert_close(back.keypoints[0, vis, :2], pose.keypoints[0, vis, :2], rtol=0, atol=1e-3)
    assert (back.keypoints[0, vis, 2] == 1).all()
    # The weighting from either form is the same, and it sits on the person: W_norm is higher inside the box.
    assert torch.equal(cached(comfy, "wk", 1), cached(comfy, "wp", 1))
    torch.testing.assert_close(cached(comfy, "wk", 0), cached(comfy, "wp", 0), rtol=0, atol=0)
    w = cached(comfy, "wp", 1)[0]
    x0, y0, x1, y1 = (int(v) for v in pose.boxes[0].round())
    inside = torch.zeros_like(w, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert w[inside].mean() > 5 * w[~inside].mean()


def blazepose_table(comfy, real_inputs, real_photos, real_model_name, blazepose) -> list[dict]:
    """Per photo: every person the node finds (by_index 0..), BlazePose on a crop around each, and the match."""
    rows = []
    for photo, name in real_inputs.items():
        picks = {f"idx{i}": ("by_index", i) for i in range(MAX_PEOPLE)}
        result = comfy.run(pose_graph(name, real_model_name, picks))
        assert result.ok, result.error_text()
        poses = [cached(comfy, f"idx{i}", 0) for i in range(MAX_PEOPLE)]
        people = [(p.boxes[0].numpy(), p.keypoints[0].numpy()) for p in poses if bool(p.found[0])]
        assert not bool(poses[-1].found[0]), f"{photo}: more than {MAX_PEOPLE - 1} people; raise MAX_PEOPLE"
        jobs = []
        for box, _ in people:  # the box grown by 15% a side, so BlazePose sees the whole person
            m = 0.15 * (box[2:] - box[:2])
            jobs.append({"image": str(real_photos[photo]), "box": [*(box[:2] - m), *(box[2:] + m)]})
        tall = [i for i, (box, _) in enumerate(people) if box[3] - box[1] >= MIN_HEIGHT]
        found = blazepose([jobs[i] for i in tall])
        landmarks = [found[tall.index(i)] if i in tall else None for i in range(len(people))]
        rows.append({"photo": photo, "people": people, "landmarks": landmarks})
    return rows


def agreement(box: np.ndarray, kp: np.ndarray, landmarks) -> np.ndarray:
    """Distances of the node's keypoints to BlazePose's corresponding landmarks, over the box diagonal; NaN
    where either does not see the point (node: zeroed under the visibility threshold; BlazePose: < 0.5)."""
    lm = np.asarray(landmarks)[list(reallib.BLAZEPOSE_TO_COCO)]  # (17, 3) in COCO order
    d = np.hypot(*(kp[:, :2] - lm[:, :2]).T) / np.hypot(*(box[2:] - box[:2]))
    return np.where((kp[:, 2] > 0) & (lm[:, 2] >= 0.5), d, np.nan)


def test_keypoints_agree_with_blazepose(comfy, real_inputs, real_photos, real_model_name, blazepose):
    rows = blazepose_table(comfy, real_inputs, real_photos, real_model_name, blazepose)
    lines = [f"{'photo':16s}{'people':>7s}{'tall':>5s}{'BlazePose':>10s}{'compared':>9s}{'keypoints':>10s}{'median':>8s}"
             f"{'max':>7s}  worst keypoint"]
    failures = []
    for row in rows:
        people, compared = row["people"], []
        for i, lms in enumerate(row["landmarks"]):
            if lms is None:
                continue
            # Same person? BlazePose finds one person per crop; it is this one if its landmarks lie closest to
            # this person's keypoints among everyone the node found (a crop may hold two people).
            medians = [np.nanmedian(d) if np.isfinite(d := agreement(b, k, lms)).any() else np.inf for b, k in people]
            if int(np.argmin(medians)) != i:
                continue
            compared.append((i, agreement(*people[i], lms)))
        seen = sum(int(np.isfinite(d).sum()) for _, d in compared)
        worst = max(compared, key=lambda c: np.nanmax(c[1]), default=None)
        med = max((np.nanmedian(d) for _, d in compared), default=np.nan)
        mx = np.nanmax(worst[1]) if worst else np.nan
        where = f"person {worst[0]} {COCO_KEYPOINTS[int(np.nanargmax(worst[1]))]}" if worst else "-"
        found = sum(lms is not None for lms in row["landmarks"])
        tall = sum(b[3] - b[1] >= MIN_HEIGHT for b, _ in people)
        lines.append(f"{row['photo']:16s}{len(people):7d}{tall:5d}{found:10d}{len(compared):9d}{seen:10d}{med:8.3f}{mx:7.3f}"
                     f"  {where}")
        if not compared:
            failures.append(f"{row['photo']}: BlazePose and the node agree on nobody")
        for i, d in compared:
            if np.nanmedian(d) > MEDIAN_TOL or np.nanmax(d) > MAX_TOL:
                failures.append(f"{row['photo']} person {i}: median {np.nanmedian(d):.3f}, max {np.nanmax(d):.3f}")
    print(f"\nYOLO11n-pose (the node) vs BlazePose on people >= {MIN_HEIGHT} px tall, distances over the "
          "person's box diagonal (median: worst person's median; max: largest single keypoint):\n" + "\n".join(lines))
    assert not failures, failures
