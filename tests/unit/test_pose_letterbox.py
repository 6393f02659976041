"""The pose wrapper's letterbox against ultralytics' own (ultralytics.data.augment.LetterBox): the network must
see the pixels ultralytics' predict would show it, or its scores and keypoints drift (on real photos the
antialiased shrink the wrapper used before moved bus.jpg's detection scores by up to 0.045)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bolid_lib.method import pose as P


def ultralytics_letterbox(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H', W') float as ultralytics' predictor builds it, padded right/bottom as the
    pack pads (center=False; where the padding goes is the one difference the pack keeps on purpose)."""
    from ultralytics.data.augment import LetterBox

    out = LetterBox(new_shape=size, auto=False, scaleup=True, center=False, padding_value=114)(image=image)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("hw", [(1080, 810), (720, 1280), (342, 548), (97, 161)])
def test_letterbox_equals_ultralytics(hw):
    """High-frequency content (noise) shows any difference in the resampling filter."""
    h, w = hw
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plan = P._letterbox_plan(h, w, 640, 32)
    ours = P._letterbox(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, plan)
    theirs = ultralytics_letterbox(image, plan.size)
    assert ours.shape == theirs.shape
    # OpenCV interpolates uint8 in fixed point and rounds: within 1/255 plus its rounding.
    assert (ours - theirs).abs().max() <= 2.5 / 255
    if plan.gain < 1:  # what an antialiased shrink gives differs by far more (the filter the pack used before)
        nh, nw = round(h * plan.gain), round(w * plan.gain)
        aa = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, size=(nh, nw),
                           mode="bilinear", align_corners=False, antialias=True)
        assert (aa - theirs[..., :nh, :nw]).abs().max() > 20 / 255



@pytest.mark.parametrize("hw", [(1080, 810), (342, 548)])  # a shrink and an enlargement
@pytest.mark.parametrize("layout", ["permuted_bhwc", "nchw"])
def test_cpu_resize_equals_the_torch_branch(hw, layout):
    """On the CPU the letterbox resizes with OpenCV; elsewhere with torch's bilinear (align_corners=False, no
    antialiasing). The two are the same filter: any input layout gives the same pixels within 1e-4 (OpenCV
    rounds its interpolation weights), far below one 8-bit step (1/255 = 3.9e-3)."""
    h, w = hw
    g = torch.Generator().manual_seed(1)
    bhwc = torch.rand(2, h, w, 3, generator=g)
    images = bhwc.permute(0, 3, 1, 2) if layout == "permuted_bhwc" else bhwc.permute(0, 3, 1, 2).contiguous()
    plan = P._letterbox_plan(h, w, 640, 32)
    nh, nw = round(h * plan.gain), round(w * plan.gain)
    ours = P._letterbox(images, plan)
    torch_branch = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
    assert ours.shape == (2, 3, *plan.size)
    torch.testing.assert_close(ours[..., :nh, :nw], torch_branch, rtol=0, atol=1e-4)
    assert (ours[..., nh:, :] == P._PAD_VALUE).all() and (ours[..., :, nw:] == P._PAD_VALUE).all()


def test_network_gets_nchw_contiguous_input(yolo_pose_pt, monkeypatch):
    """The node edge permutes ComfyUI's BHWC image to BCHW (channels-last strides); a tensor already of the
    network's size goes in without a resize, and channels-last strides would run every convolution in that
    slower layout. The network must get NCHW-contiguous input, with the same results."""
    model = P.PoseModel.load(str(yolo_pose_pt))
    original, seen = model.yolo.predict, []

    def spy(x, **kwargs):
        seen.append(x.is_contiguous())
        return original(x, **kwargs)

    monkeypatch.setattr(model.yolo, "predict", spy)
    images = torch.rand(2, 64, 96, 3, generator=torch.Generator().manual_seed(0)).permute(0, 3, 1, 2)
    assert not images.is_contiguous() and P._letterbox_plan(64, 96, 96, model.stride).size == (64, 96)
    strided = model.predict(images, conf=1e-4, imgsz=96)
    plain = model.predict(images.contiguous(), conf=1e-4, imgsz=96)
    assert seen == [True, True]
    assert torch.equal(strided.found, plain.found)
    torch.testing.assert_close(strided.keypoints, plain.keypoints, rtol=1e-4, atol=1e-3)
