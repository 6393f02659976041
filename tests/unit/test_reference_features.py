"""bolid_lib.method.adapter.encode_reference: what BoLID Apply feeds the ref branch, every branch.

A stand-in CLIP vision encoder (encode_image -> image_embeds (R, E), penultimate_hidden_states (R, 257, E), in half
precision, each row a function of its image) shows which input is encoded, how "no image" is made for a plus
adapter (a black image of the encoder's size), and that features come back float32 on the CPU.
"""

import logging

import pytest
import torch

from bolid_lib.errors import BoLIDError
from bolid_lib.method.adapter import (CLIP_FEATURE_KEYS, DEFAULT_CLIP_IMAGE_SIZE, AdapterConfig, BoLIDAdapter,
                                      clip_vision_name, encode_reference)

E = 12
TINY = dict(context_dim=32, widths=(8, 16), clip_embed_dim=E, clip_hidden_dim=E, resampler_dim=16, resampler_heads=2,
            resampler_dim_head=8, resampler_depth=1, body_dim=None, body_hidden=16, body_tokens=3)


class StandInClipVision:
    """encode_image(IMAGE (R, H, W, 3)) like ComfyUI's ClipVisionModel: a mapping of fp16 features."""

    def __init__(self, image_size=None):
        if image_size is not None:
            self.image_size = image_size
        self.calls = []

    def encode_image(self, image):
        self.calls.append(image.clone())
        level = image.mean(dim=(1, 2, 3)) + 1.0                                       # (R,): 1 for a black image
        embeds = level[:, None] * torch.arange(1, E + 1, dtype=torch.float32)        # (R, E)
        hidden = embeds[:, None, :] * torch.linspace(0.5, 1.5, 257)[None, :, None]   # (R, 257, E)
        return {"image_embeds": embeds.half(), "penultimate_hidden_states": hidden.half(), "last_hidden_state": None}


def _adapter(kind):
    cfg = {**TINY, "ref_kind": kind} if kind else {**TINY, "body_dim": 10}
    return BoLIDAdapter(AdapterConfig(**cfg))


@pytest.fixture(scope="module")
def plain():
    return _adapter("plain")


@pytest.fixture(scope="module")
def plus():
    return _adapter("plus")


def _image(r=2, seed=0):
    return torch.rand(r, 40, 32, 3, generator=torch.Generator().manual_seed(seed))


def test_no_reference_is_none(plain):
    assert encode_reference(plain) == (None, None)
    assert encode_reference(_adapter(None), None, None, None) == (None, None)   # a body-only adapter too


def test_clip_vision_without_an_image_is_refused(plain):
    with pytest.raises(BoLIDError, match="a CLIP vision model is connected but no reference image: connect the image too"):
        encode_reference(plain, StandInClipVision(), None, None)


def test_image_and_clip_vision_output_together_are_refused(plain):
    cv = StandInClipVision()
    with pytest.raises(BoLIDError, match="as an image .* or as a CLIP_VISION_OUTPUT, not both"):
        encode_reference(plain, cv, _image(), cv.encode_image(_image()))


def test_a_reference_for_an_adapter_without_ref_branch_is_refused():
    body_only = _adapter(None)
    with pytest.raises(BoLIDError, match="this adapter has no reference-image branch: disconnect it, or load an IP-Adapter"):
        encode_reference(body_only, StandInClipVision(), _image(), None)
    with pytest.raises(BoLIDError, match="no reference-image branch"):
        encode_reference(body_only, None, None, StandInClipVision().encode_image(_image()))


@pytest.mark.parametrize("kind", ["plain", "plus"])
def test_an_image_without_clip_vision_names_the_model_to_load(kind):
    adapter = _adapter(kind)
    want = clip_vision_name(kind, E)
    with pytest.raises(BoLIDError, match="the reference image needs a CLIP vision model: connect a Load CLIP Vision node with "
                                         + want.replace("(", r"\(").replace(")", r"\)")):
        encode_reference(adapter, None, _image(), None)


def test_plain_from_an_image_reads_image_embeds(plain):
    cv = StandInClipVision(image_size=64)
    image = _image()
    feats, uncond = encode_reference(plain, cv, image, None)
    assert uncond is None                              # plain "no image" is zero image_embeds, the patch's default
    assert len(cv.calls) == 1 and torch.equal(cv.calls[0], image)    # the image itself, once; no black image
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and feats.shape == (2, E)
    torch.testing.assert_close(feats, cv.encode_image(image)["image_embeds"].float())
    assert CLIP_FEATURE_KEYS["plain"] == "image_embeds"


def test_plain_from_a_clip_vision_output(plain):
    out = StandInClipVision().encode_image(_image(3))
    feats, uncond = encode_reference(plain, None, None, out)
    assert uncond is None and feats.dtype == torch.float32 and feats.shape == (3, E)
    torch.testing.assert_close(feats, out["image_embeds"].float())


def test_a_clip_vision_output_without_the_features_is_refused(plain, plus):
    out = {"image_embeds": None, "penultimate_hidden_states": None}
    with pytest.raises(BoLIDError, match="the CLIP vision output has no image_embeds, which this plain adapter reads"):
        encode_reference(plain, None, None, out)
    with pytest.raises(BoLIDError, match="has no penultimate_hidden_states, which this plus adapter reads"):
        encode_reference(plus, None, None, out)


@pytest.mark.parametrize("size", [64, None])
def test_plus_uncond_is_a_black_image_of_the_encoders_size(plus, size):
    cv = StandInClipVision(image_size=size)
    image = _image()
    feats, uncond = encode_reference(plus, cv, image, None)
    side = size or DEFAULT_CLIP_IMAGE_SIZE
    assert len(cv.calls) == 2 and torch.equal(cv.calls[0], image)
    assert torch.equal(cv.calls[1], torch.zeros(1, side, side, 3))                  # IMAGE layout, black
    assert feats.shape == (2, 257, E) and uncond.shape == (1, 257, E)
    assert feats.dtype == uncond.dtype == torch.float32 and uncond.device.type == "cpu"
    torch.testing.assert_close(feats, cv.encode_image(image)["penultimate_hidden_states"].float())
    torch.testing.assert_close(uncond, cv.encode_image(torch.zeros(1, side, side, 3))["penultimate_hidden_states"].float())
    assert not torch.equal(uncond, torch.zeros_like(uncond))


def test_plus_from_a_clip_vision_output_with_the_encoder_connected(plus):
    """An encoded reference plus the CLIP vision model: the reference is not encoded again, "no image" is."""
    cv = StandInClipVision(image_size=32)
    out = StandInClipVision().encode_image(_image(1))
    feats, uncond = encode_reference(plus, cv, None, out)
    assert len(cv.calls) == 1 and torch.equal(cv.calls[0], torch.zeros(1, 32, 32, 3))
    torch.testing.assert_close(feats, out["penultimate_hidden_states"].float())
    assert uncond.shape == (1, 257, E)


def test_plus_without_an_encoder_warns_and_leaves_uncond_to_the_patch(plus, caplog):
    out = StandInClipVision().encode_image(_image(1))
    with caplog.at_level(logging.WARNING, logger="bolid"):
        feats, uncond = encode_reference(plus, None, None, out)
    assert uncond is None and feats.shape == (1, 257, E)
    assert "unconditional reference of this 'plus' adapter is a zero tensor" in caplog.text
