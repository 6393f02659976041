"""YOLO pose wrapper on a random-init YOLO11n-pose built offline by ultralytics (no weights download).

At random weights every detection scores about 2e-4, so the tests use conf=1e-4 to get boxes (and
conf=1.0 to get none); keypoint confidences sit around 0.5, which exercises the visibility threshold.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bolid_lib.method import pose as P
from bolid_lib.errors import BoLIDError
from tools.make_test_models import save_canary_pt

LOW_CONF = 1e-4


@pytest.fixture(scope="module")
def model(yolo_pose_pt):
    return P.PoseModel.load(str(yolo_pose_pt))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 160, 160, generator=g)
    x[1] = torch.linspace(0, 1, 160)[None, None, :].expand(3, 160, 160)  # a gradient
    x[2, :, 40:120, 60:100] = 0.9                                          # a bright block
    return x


def raw_results(model, x, conf=LOW_CONF):
    return model.yolo.predict(x, conf=conf, verbose=False, device=model.device, imgsz=tuple(x.shape[2:]))


def test_loads_pose_model(model):
    assert model.yolo.task == "pose" and model.device == torch.device("cpu") and model.stride == 32


@pytest.mark.parametrize("kind", ["detect", "segment", "classify"])
def test_refuses_non_pose_models(kind, yolo_detect_pt, tmp_path):
    if kind == "detect":
        path = yolo_detect_pt
    else:
        from ultralytics import YOLO

        path = tmp_path / f"{kind}.pt"
        YOLO({"segment": "yolo11n-seg.yaml", "classify": "yolo11n-cls.yaml"}[kind]).save(str(path))
    with pytest.raises(BoLIDError, match=rf"is a {kind} model.*pose model.*yolo11n-pose\.pt"):
        P.PoseModel.load(str(path))


def test_refuses_a_file_that_is_not_yolo(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BoLIDError, match="pose model"):
        P.PoseModel.load(str(bad))
    with pytest.raises(BoLIDError, match="not found"):
        P.PoseModel.load(str(tmp_path / "missing.pt"))


def _watermark_detector(path: str):
    from bolid_lib.data.prepare import yolo_watermark_detector

    return yolo_watermark_detector(path)


@pytest.mark.parametrize("load", [P.PoseModel.load, _watermark_detector], ids=["pose_model", "watermark_filter"])
def test_refuses_a_pickle_that_would_run_code(tmp_path, load):
    """Every .pt goes through the one vetted loader (method.pose.load_yolo): the pose model, and the data-prep
    watermark filter, which before issue 27 called YOLO(path) on its .pt unvetted."""
    if P._restricted_loader() is None:
        pytest.skip("this ultralytics/torch has no weights_only loader (ultralytics >= 8.4, torch >= 2.6)")
    bad = tmp_path / "yolo11n-pose.pt"
    fired = tmp_path / "canary_fired"
    save_canary_pt(bad, fired)
    with pytest.raises(BoLIDError, match=r"yolo11n-pose\.pt holds Python objects outside ultralytics' model format.*did not load it"):
        load(str(bad))
    assert not fired.exists(), "the pickle's payload ran"


def test_load_and_predict_leave_the_torch_thread_count_alone(yolo_pose_pt, images):
    """ultralytics' select_device sets torch's thread count on CPU; inside ComfyUI that would change every later node."""
    saved = torch.get_num_threads()
    torch.set_num_threads(3)   # a count ultralytics would not choose, so a reset shows
    try:
        m = P.PoseModel.load(str(yolo_pose_pt))
        assert torch.get_num_threads() == 3
        m.predict(images, conf=LOW_CONF)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(saved)


def test_predict_matches_ultralytics_and_zeroes_invisible(model, images):
    pose = model.predict(images, conf=LOW_CONF, visibility=0.5, person="most_confident", imgsz=160)
    assert pose.keypoints.shape == (3, 17, 3) and pose.boxes.shape == (3, 4) and pose.image_size == (160, 160)
    assert pose.found.all()
    for i, r in enumerate(raw_results(model, images)):
        j = int(r.boxes.conf.argmax())
        kp = r.keypoints.data[j]
        vis = kp[:, 2] >= 0.5
        assert 0 < int(vis.sum()) < 17, "random weights should give a mix of visible and invisible points"
        assert torch.equal(pose.keypoints[i][vis], kp[vis])
        assert torch.equal(pose.keypoints[i][~vis], torch.zeros(int((~vis).sum()), 3))
        assert torch.equal(pose.boxes[i], r.boxes.xyxy[j])
    assert pose.meta["conf"] == LOW_CONF


def test_letterbox_maps_keypoints_back_to_original_pixels(model):
    """A 96 x 160 image goes in as 128 x 224 (gain 1.4, padded to the stride); results come back / gain."""
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    plan = P._letterbox_plan(96, 160, 224, 32)
    assert plan.size == (160, 224) and plan.gain == 1.4
    pose = model.predict(x, conf=LOW_CONF, visibility=0.0, person="most_confident", imgsz=224)
    net = F.pad(F.interpolate(x, size=(134, 224), mode="bilinear", align_corners=False), (0, 0, 0, 26), value=114 / 255)
    r = raw_results(model, net)[0]
    j = int(r.boxes.conf.argmax())
    torch.testing.assert_close(pose.keypoints[0, :, :2], r.keypoints.data[j, :, :2] / 1.4)
    torch.testing.assert_close(pose.boxes[0], r.boxes.xyxy[j] / 1.4)
    assert pose.image_size == (96, 160)


def test_no_person_skip_and_error(model, images):
    pose = model.predict(images, conf=1.0, on_missing="skip", imgsz=160)
    assert not pose.found.any() and torch.equal(pose.keypoints, torch.zeros(3, 17, 3))
    with pytest.raises(BoLIDError, match=r"image 0 of the batch.*on_missing"):
        model.predict(images, conf=1.0, on_missing="error", imgsz=160)


def test_chunks_equal_one_batch_and_report_progress(model, images):
    calls = []
    chunked = model.predict(images, conf=LOW_CONF, batch_size=2, imgsz=160, progress=lambda d, t: calls.append((d, t)))
    whole = model.predict(images, conf=LOW_CONF, batch_size=16, imgsz=160)
    assert calls == [(2, 3), (3, 3)]
    torch.testing.assert_close(chunked.keypoints, whole.keypoints, atol=1e-3, rtol=1e-4)
    assert torch.equal(chunked.found, whole.found)


# --- person selection and visibility on synthetic ultralytics-like results --------------------------

def fake_result(boxes, scores, kp_conf):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes.shape[0]
    kp = torch.zeros(n, 17, 3)
    for i in range(n):
        kp[i, :, 0] = 100.0 * (i + 1)   # person i has x = 100 (i + 1) for every keypoint
        kp[i, :, 1] = torch.arange(17, dtype=torch.float32)
        kp[i, :, 2] = torch.tensor(kp_conf[i], dtype=torch.float32)
    return SimpleNamespace(boxes=SimpleNamespace(xyxy=boxes, conf=torch.tensor(scores, dtype=torch.float32)),
                           keypoints=SimpleNamespace(data=kp))


THREE = fake_result(
    [[0, 0, 10, 10], [0, 0, 50, 40], [0, 0, 30, 30]],   # areas 100, 2000, 900
    [0.9, 0.5, 0.7],
    [[0.9] * 17, [0.2] * 8 + [0.8] * 9, [0.6] * 17],
)


@pytest.mark.parametrize("policy, person", [("largest", 1), ("most_confident", 0), (2, 2), (0, 0)])
def test_person_policy(policy, person):
    kp, boxes, found = P.select_people([THREE], policy=policy, visibility=0.0)
    assert found.tolist() == [True]
    assert kp[0, 0, 0].item() == 100.0 * (person + 1)
    assert torch.equal(boxes[0], THREE.boxes.xyxy[person])


def test_visibility_threshold_nullifies_points():
    kp, _, _ = P.select_people([THREE], policy="largest", visibility=0.5)
    assert torch.equal(kp[0, :8], torch.zeros(8, 3))
    assert (kp[0, 8:, 2] == 0.8).all() and (kp[0, 8:, 0] == 200.0).all()


def test_index_beyond_detections_is_missing():
    none = fake_result([], [], [])
    kp, boxes, found = P.select_people([THREE, none], policy=5, on_missing="skip")
    assert found.tolist() == [False, False] and not kp.any() and not boxes.any()
    with pytest.raises(BoLIDError, match=r"person index 5 .* not found in image 7 of the batch \(0-based; 3 detected"):
        P.select_people([THREE], policy=5, on_missing="error", index_offset=7)
    with pytest.raises(BoLIDError, match=r"a person not found in image 4 of the batch"):
        P.select_people([THREE, none], policy="largest", on_missing="error", index_offset=3)


def test_scale_divides_coordinates():
    kp, boxes, _ = P.select_people([THREE], policy="largest", visibility=0.0, scale=2.0)
    assert kp[0, 3, 0].item() == 100.0 and kp[0, 3, 1].item() == 1.5 and kp[0, 3, 2].item() == pytest.approx(0.2)
    assert boxes[0].tolist() == [0, 0, 25, 20]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(person="biggest"), "person must be"),
        (dict(person=-1), "person must be"),
        (dict(on_missing="ignore"), "on_missing"),
        (dict(conf=2.0), "conf"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(BoLIDError, match=match):
        model.predict(torch.rand(1, 3, 64, 64), **kwargs)


def test_bad_images(model):
    with pytest.raises(BoLIDError, match=r"\(B, 3, H, W\)"):
        model.predict(torch.rand(1, 64, 64, 3))
    with pytest.raises(BoLIDError, match="empty"):
        model.predict(torch.rand(0, 3, 64, 64))


@pytest.mark.gpu
def test_runs_on_cuda(yolo_pose_pt, images):
    m = P.PoseModel.load(str(yolo_pose_pt), device="cuda")
    assert m.device.type == "cuda"
    pose = m.predict(images.cuda(), conf=LOW_CONF, imgsz=160)
    cpu = P.PoseModel.load(str(yolo_pose_pt)).predict(images, conf=LOW_CONF, imgsz=160)
    assert pose.found.all() and pose.keypoints.device.type == "cpu"
    torch.testing.assert_close(pose.boxes, cpu.boxes, atol=0.5, rtol=1e-3)


def _ultralytics_8_3_torch_safe_load(weight):
    """The signature of ultralytics' torch_safe_load before safe_only: only a full (unpickling) load."""
    raise AssertionError("an unvetted loader was called")


def _safe_load_with_safe_only(weight, safe_only=None):
    raise AssertionError("a loader whose restricted read is unsupported was called")


class _SafeLoadOnOldTorch:
    """ultralytics' _SafeLoad where torch < 2.6: torch_safe_load(safe_only=True) would fall back to a full load."""

    SUPPORTED = False


class _SafeLoadOnNewTorch:
    SUPPORTED = True


# No _SafeLoad (None): before 8.4.67 (up to 8.4.66 safe_only=True was a pickle.Unpickler that lets builtins through).
@pytest.mark.parametrize("safe_load, safe_load_class", [(_ultralytics_8_3_torch_safe_load, None),
                                                         (_safe_load_with_safe_only, None),
                                                         (_safe_load_with_safe_only, _SafeLoadOnOldTorch)],
                         ids=["ultralytics-without-safe_only", "ultralytics-8.4.66-safe_only", "torch-without-restricted-read"])
def test_refuses_to_load_unvetted_where_the_restricted_read_is_missing(tmp_path, safe_load, safe_load_class):
    """Without the restricted read the .pt is refused, naming the upgrade, and nothing in it runs."""
    bad = tmp_path / "yolo11n-pose.pt"
    fired = tmp_path / "canary_fired"
    save_canary_pt(bad, fired)
    assert P._restricted_loader(safe_load, safe_load_class) is None
    with pytest.raises(BoLIDError, match=r"did not load yolo11n-pose\.pt: a \.pt file is a pickle that can run code.*"
                                         r"needs ultralytics >= 8\.4\.67 and torch >= 2\.6.*pip install -U \"ultralytics>=8\.4\.67\""):
        P._check_pickle(str(bad), safe_load, safe_load_class)
    assert not fired.exists()


def test_the_installed_ultralytics_has_the_restricted_read():
    """requirements.txt asks for ultralytics >= ULTRALYTICS_MIN_SAFE_LOAD; with torch >= 2.6 the real loader is used."""
    from ultralytics.nn.tasks import torch_safe_load

    assert P._restricted_loader() is torch_safe_load
    assert P._restricted_loader(_safe_load_with_safe_only, _SafeLoadOnNewTorch) is _safe_load_with_safe_only
    reqs = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    assert f"ultralytics>={P.ULTRALYTICS_MIN_SAFE_LOAD}\n" in reqs
