"""The reference image for the adapter's ref branch: ComfyUI's IMAGE (or a CLIP_VISION_OUTPUT) to the CLIP features
the branch reads, and the "no image" features of its unconditional rows.

Shape letters: R reference images, H, W image size, E CLIP feature width.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from ..errors import BoLIDError
from .adapter_config import clip_vision_name

if TYPE_CHECKING:
    from .adapter import BoLIDAdapter

log = logging.getLogger("bolid")

# Which CLIP vision output each ref kind reads: "plain" (ImageProjModel) the pooled image_embeds (R, E), "plus"
# (Resampler) the penultimate hidden states (R, 257, E).
CLIP_FEATURE_KEYS = {"plain": "image_embeds", "plus": "penultimate_hidden_states"}
# Side of the black image whose encoding is a plus adapter's "no image", for an encoder that names no image_size.
DEFAULT_CLIP_IMAGE_SIZE = 224


def encode_reference(adapter: "BoLIDAdapter", clip_vision=None, image=None, clip_vision_output=None):
    """(features, uncond features) of the reference for the adapter's ref branch, or (None, None) for no reference.

    The reference is given either as ``image`` (a ComfyUI IMAGE (R, H, W, 3) in [0, 1]) with ``clip_vision`` (an
    encoder: ``encode_image(IMAGE)`` returns a mapping with ``image_embeds`` and ``penultimate_hidden_states``;
    ``image_size``, its input side, is optional) or as an already encoded ``clip_vision_output`` (such a mapping),
    never both. features: what the adapter's ref kind reads (``CLIP_FEATURE_KEYS``), float32 on the CPU: (R, E)
    for "plain", (R, 257, E) for "plus". uncond: None for "plain" (its "no image" is zero image_embeds, the
    patch's default, as in IPAdapter_plus); for "plus", the same key of the encoding of one black image (1, 257, E)
    when ``clip_vision`` is given, as ComfyUI_IPAdapter_plus and this pack's trainer encode "no image", else None
    (the patch then uses zeros) with a warning. Every wrong combination is a BoLIDError that names the fix.
    """
    if image is None and clip_vision_output is None:
        if clip_vision is not None:
            raise BoLIDError("a CLIP vision model is connected but no reference image: connect the image too, or "
                             "disconnect the CLIP vision model")
        return None, None
    if image is not None and clip_vision_output is not None:
        raise BoLIDError("connect the reference as an image (with a CLIP vision model) or as a CLIP_VISION_OUTPUT, not both")
    if adapter.ref is None:
        raise BoLIDError("a reference is connected but this adapter has no reference-image branch: disconnect it, "
                         "or load an IP-Adapter SDXL file (or a BoLID adapter with a ref branch)")
    kind = adapter.config.ref_kind
    key = CLIP_FEATURE_KEYS[kind]
    if image is not None:
        if clip_vision is None:
            raise BoLIDError("the reference image needs a CLIP vision model: connect a Load CLIP Vision node with "
                             f"{clip_vision_name(kind, adapter.config.ref_input_dim)}")
        clip_vision_output = clip_vision.encode_image(image)
    features = clip_vision_output[key]
    if features is None:
        raise BoLIDError(f"the CLIP vision output has no {key}, which this {kind} adapter reads: encode with a CLIP vision model")
    uncond = None
    if kind == "plus":
        # "No image" for the unconditional rows of a plus adapter: the hidden states of a black image, as
        # ComfyUI_IPAdapter_plus encodes it (a zero IMAGE, then CLIP's normalisation), so the weights users run
        # there give the same picture here (tests/host/test_ipadapter_parity.py).
        if clip_vision is not None:
            size = getattr(clip_vision, "image_size", DEFAULT_CLIP_IMAGE_SIZE)
            uncond = clip_vision.encode_image(torch.zeros(1, size, size, 3))[key]            # (1, 257, E)
        else:
            log.warning("BoLID: no CLIP vision model connected, so the unconditional reference of this 'plus' adapter is "
                        "a zero tensor instead of the encoding of a black image (what IPAdapter_plus uses); connect the CLIP "
                        "vision model too to get IPAdapter_plus's picture")
    return features.float().cpu(), None if uncond is None else uncond.float().cpu()


__all__ = ["CLIP_FEATURE_KEYS", "DEFAULT_CLIP_IMAGE_SIZE", "encode_reference"]
