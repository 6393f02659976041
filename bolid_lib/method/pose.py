"""YOLO pose wrapper (ultralytics): load a pose model, run batches, pick one person per image (paper 4.2).

Legend: B batch, K = 17 COCO keypoints, H, W image size, N people detected in one image.

Loading: ultralytics ``.pt`` files are pickles, so ``YOLO(path)`` runs ``torch.load`` on them; this is the one
place the pack accepts a pickle (the README says why: ultralytics pose models are only published this way).
Only files from ComfyUI's ``models/ultralytics`` folder reach this function, and the file is first read with
``weights_only`` against ultralytics' allow-list of model classes, so a crafted ``.pt`` is refused before anything
in it can run. That read needs ultralytics >= 8.4.67 and torch >= 2.6; with an older one the file is refused with
the upgrade to make, never unpickled unvetted.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BoLIDError
from .body_id import DEFAULT_RECIPE
from .keypoints import NUM_KEYPOINTS, PoseBatch

log = logging.getLogger("bolid")

PERSON_POLICIES = ("largest", "most_confident")
ON_MISSING = ("skip", "error")
PersonPolicy = Union[str, int]

# ultralytics pads letterboxed images with this grey (114 / 255).
_PAD_VALUE = 114.0 / 255.0


@dataclass(frozen=True)
class _Letterbox:
    """How images were resized for the network: network pixel = original pixel * gain (+ no offset: pad right/bottom)."""

    gain: float
    size: tuple[int, int]  # (height, width) fed to the network


def _letterbox_plan(height: int, width: int, imgsz: int, stride: int) -> _Letterbox:
    """Scale the long side to imgsz (as ultralytics does), then pad right/bottom to multiples of the stride."""
    gain = imgsz / max(height, width)
    nh, nw = max(1, round(height * gain)), max(1, round(width * gain))
    ph, pw = -(-nh // stride) * stride, -(-nw // stride) * stride
    return _Letterbox(gain, (ph, pw))


def _letterbox(images: torch.Tensor, plan: _Letterbox) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H', W') resized by plan.gain and padded with ultralytics' grey; no copy if already fit.

    Plain bilinear, as ultralytics' own LetterBox resizes (cv2.INTER_LINEAR, no antialiasing): the network sees
    what ultralytics' predict would show it. (An antialiased shrink changed the scores on real photos by up to
    0.045, e.g. bus.jpg, and took twice as long.)
    """
    b, c, h, w = images.shape
    nh, nw = max(1, round(h * plan.gain)), max(1, round(w * plan.gain))
    x = images
    if (nh, nw) != (h, w) and x.device.type == "cpu":
        # OpenCV's INTER_LINEAR itself, on float32 (the same half-pixel bilinear as the branch below, a few times
        # faster on the CPU). A ComfyUI image permuted to BCHW is HWC in memory, so each view costs no copy.
        hwc = x.permute(0, 2, 3, 1)                                                  # (B, H, W, 3)
        x = torch.from_numpy(np.stack([
            cv2.resize(np.ascontiguousarray(im.numpy()), (nw, nh), interpolation=cv2.INTER_LINEAR) for im in hwc
        ])).permute(0, 3, 1, 2)                                                      # (B, 3, nh, nw)
    elif (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
    ph, pw = plan.size
    if (ph, pw) != (nh, nw):
        x = F.pad(x, (0, pw - nw, 0, ph - nh), value=_PAD_VALUE)
    return x


def _pick_person(boxes: torch.Tensor, scores: torch.Tensor, policy: PersonPolicy) -> int | None:
    """Index of the chosen person among N detections (boxes (N, 4) xyxy, scores (N,)), or None if there is none.

    "largest": the biggest box area; "most_confident": the highest detection score; an int i: the i-th
    detection in ultralytics' order (by decreasing score), None when there are fewer.
    """
    n = boxes.shape[0]
    if n == 0:
        return None
    if policy == "largest":
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        return int(area.argmax())
    if policy == "most_confident":
        return int(scores.argmax())
    return policy if policy < n else None


def _check_policy(person: PersonPolicy) -> PersonPolicy:
    if isinstance(person, bool) or not (person in PERSON_POLICIES or (isinstance(person, int) and person >= 0)):
        raise BoLIDError(f"person must be one of {PERSON_POLICIES} or a person index >= 0; got {person!r}")
    return person


def select_people(
    results: Sequence,
    *,
    policy: PersonPolicy = "largest",
    visibility: float = 0.5,
    on_missing: str = "skip",
    scale: float = 1.0,
    index_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One person per ultralytics result -> (keypoints (B, 17, 3), boxes (B, 4), found (B,)) on the CPU, float32.

    results: ultralytics Results (or anything with .boxes.xyxy/.boxes.conf and .keypoints.data), one per image.
    Keypoints with confidence < visibility are zeroed (paper 4.2: an invisible point is nullified).
    Coordinates are divided by ``scale`` (the letterbox gain) to refer to the original images.
    on_missing "error" raises naming the image (index_offset + position); "skip" leaves found False, zeros.
    """
    b = len(results)
    keypoints = torch.zeros(b, NUM_KEYPOINTS, 3)
    boxes = torch.zeros(b, 4)
    found = torch.zeros(b, dtype=torch.bool)
    for j, r in enumerate(results):
        kp_all = r.keypoints.data if r.keypoints is not None else torch.zeros(0, NUM_KEYPOINTS, 3)
        chosen = _pick_person(r.boxes.xyxy, r.boxes.conf, policy) if len(kp_all) else None
        if chosen is None:
            if on_missing == "error":
                asked = f"person index {policy} (by detection score)" if isinstance(policy, int) else "a person"
                raise BoLIDError(
                    f"{asked} not found in image {index_offset + j} of the batch (0-based; {len(kp_all)} "
                    "detected): lower 'conf', pick another image, or set on_missing to 'skip' to carry on without it"
                )
            continue
        kp = kp_all[chosen].detach().float().cpu().clone()     # (17, 3)
        kp[:, :2] /= scale
        kp[kp[:, 2] < visibility] = 0.0                        # invisible: all of x, y, c nullified
        keypoints[j] = kp
        boxes[j] = r.boxes.xyxy[chosen].detach().float().cpu() / scale
        found[j] = True
    return keypoints, boxes, found


@contextlib.contextmanager
def _torch_threads_kept():
    """Restore torch's CPU thread count afterwards: ultralytics' select_device calls torch.set_num_threads on CPU,
    which inside ComfyUI would change the thread count of every later node of the process (sampling included)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


# ultralytics' predictor adds to every model it runs a callback that posts an anonymous usage event to Google
# Analytics after each predict (ultralytics.utils.events; older releases did it from a HUB callback), on unless the
# user's ultralytics settings say sync=False. The pack's nodes must not touch the network, so its predictions run
# through a predictor that drops the callbacks of these modules, for the pack's own model only: ultralytics'
# settings, its module state and other packs' models are left as they are.
_ANALYTICS_MODULES = ("ultralytics.utils.events", "ultralytics.hub", "ultralytics.utils.callbacks.hub",
                      "ultralytics.utils.callbacks.platform")
_QUIET_PREDICTORS: dict[type, type] = {}


def _quiet_predictor(yolo) -> type:
    """The predictor class ultralytics would pick for this model, without its analytics callbacks."""
    base = yolo.task_map[yolo.task]["predictor"]
    if base not in _QUIET_PREDICTORS:

        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            for event in list(self.callbacks):
                self.callbacks[event] = [f for f in self.callbacks[event]
                                         if not getattr(f, "__module__", "").startswith(_ANALYTICS_MODULES)]

        _QUIET_PREDICTORS[base] = type(f"BoLIDQuiet{base.__name__}", (base,), {"__init__": __init__})
    return _QUIET_PREDICTORS[base]


# The restricted read below needs ultralytics' torch_safe_load(..., safe_only=True) as a weights_only load against the
# _SafeLoad allow-list (first in ultralytics 8.4.67) and torch >= 2.6 (torch.serialization.get_unsafe_globals_in_checkpoint; later ultralytics check it as
# _SafeLoad.SUPPORTED and otherwise fall back to a full, unpickling load without a word). requirements.txt asks
# for this ultralytics; torch is ComfyUI's, so an older torch can still be met, and then the pose file is refused.
ULTRALYTICS_MIN_SAFE_LOAD = "8.4.67"
TORCH_MIN_SAFE_LOAD = "2.6"


def _restricted_loader(safe_load=None, safe_load_class=None):
    """ultralytics' weights_only loader with its model-class allow-list, or None where this install has none.

    safe_load, safe_load_class: ``ultralytics.nn.tasks.torch_safe_load`` and ``_SafeLoad`` (the installed ones by
    default; a test passes stand-ins to play an older ultralytics).
    """
    if safe_load is None:
        try:
            from ultralytics.nn.tasks import torch_safe_load as safe_load
        except ImportError:
            return None
        try:
            from ultralytics.nn.tasks import _SafeLoad as safe_load_class
        except ImportError:
            safe_load_class = None
    if safe_load_class is None or "safe_only" not in inspect.signature(safe_load).parameters:
        # An ultralytics older than ULTRALYTICS_MIN_SAFE_LOAD. Up to 8.4.66 safe_only=True meant a pickle.Unpickler
        # that lets builtins through and stands in for unknown classes: no vetting, so it is not used either.
        return None
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint") or not getattr(safe_load_class, "SUPPORTED", True):
        return None  # torch < 2.6 (torch_safe_load would fall back to a full unpickling load without a word)
    return safe_load


def _no_restricted_loader_message(name: str) -> str:
    import importlib.metadata

    try:
        ultralytics_version = importlib.metadata.version("ultralytics")
    except importlib.metadata.PackageNotFoundError:
        ultralytics_version = "unknown"
    return (
        f"BoLID did not load {name}: a .pt file is a pickle that can run code, and this install cannot vet it first "
        f"(ultralytics {ultralytics_version}, torch {torch.__version__.split('+')[0]}; the restricted read needs "
        f"ultralytics >= {ULTRALYTICS_MIN_SAFE_LOAD} and torch >= {TORCH_MIN_SAFE_LOAD}): upgrade with "
        f"`pip install -U \"ultralytics>={ULTRALYTICS_MIN_SAFE_LOAD}\"` in ComfyUI's Python (and update ComfyUI's "
        f"torch to {TORCH_MIN_SAFE_LOAD} or newer if it is older), then restart ComfyUI"
    )


POSE_NEEDED = "a YOLO pose model is needed, e.g. yolo11n-pose.pt"


def _check_pickle(path: str, safe_load=None, safe_load_class=None, needed: str = POSE_NEEDED) -> None:
    """Read the .pt with weights_only against ultralytics' allow-list; refuse one that holds anything else.

    A file that passes holds only ultralytics/torch model classes and tensors, so the full load that follows
    (YOLO(path)) builds the same objects and runs nothing else. Damaged files raise here as they would there.
    Where this ultralytics/torch cannot do the restricted read, the file is refused, naming the upgrade
    (safe_load, safe_load_class: see _restricted_loader).
    """
    safe_load = _restricted_loader(safe_load, safe_load_class)
    if safe_load is None:
        raise BoLIDError(_no_restricted_loader_message(os.path.basename(path)))
    try:
        safe_load(path, safe_only=True)
    except TypeError as e:
        # torch's weights_only unpickler names a refused import "GLOBAL module.name"; other unpickling errors
        # are bytes that are no pickle at all. ultralytics words both alike, so tell them apart by the cause.
        if isinstance(e.__cause__, pickle.UnpicklingError) and "GLOBAL" not in str(e.__cause__):
            raise BoLIDError(
                f"cannot load {os.path.basename(path)}: its bytes are not an ultralytics checkpoint (a file of another "
                f"kind renamed .pt?); {needed}"
            ) from e
        if isinstance(e.__cause__, pickle.UnpicklingError):
            raise BoLIDError(
                f"{os.path.basename(path)} holds Python objects outside ultralytics' model format, so loading it could "
                f"run code, and BoLID did not load it: use a model from ultralytics' releases or one you trained "
                f"yourself ({needed})"
            ) from e
        raise


def load_yolo(path: str | os.PathLike, needed: str = POSE_NEEDED):
    """An ultralytics YOLO model from a ``.pt``, vetted first (``_check_pickle``): the one way the library loads a
    ``.pt``. needed: what the caller needs, named in the errors ("a YOLO pose model is needed, ...")."""
    path = str(path)
    if not os.path.isfile(path):
        raise BoLIDError(f"model file not found: {path}; {needed}")
    from ultralytics import YOLO

    try:
        with _torch_threads_kept():
            _check_pickle(path, needed=needed)
            return YOLO(path, verbose=False)
    except BoLIDError:
        raise
    except Exception as e:  # ultralytics raises many kinds on a foreign or damaged file
        raise BoLIDError(
            f"cannot load {os.path.basename(path)} as an ultralytics YOLO model ({type(e).__name__}: {e}); {needed}"
        ) from e


class PoseModel:
    """A loaded ultralytics YOLO pose model (COCO-17 keypoints), run on the device it sits on."""

    def __init__(self, yolo, name: str = "") -> None:
        self.yolo = yolo
        self.name = name

    @classmethod
    def load(cls, path: str, device: torch.device | str | None = None) -> "PoseModel":
        """Load a YOLO .pt; refuse detection, segmentation, classification or non-COCO-17 pose models."""
        if not os.path.isfile(path):
            raise BoLIDError(f"pose model file not found: {path}")
        yolo = load_yolo(path)
        head = yolo.model.model[-1] if hasattr(yolo.model, "model") else None
        kpt_shape = tuple(getattr(head, "kpt_shape", None) or ())
        if yolo.task != "pose" or kpt_shape != (NUM_KEYPOINTS, 3):
            what = f"a {yolo.task} model" if yolo.task != "pose" else f"a pose model with keypoint shape {kpt_shape}"
            raise BoLIDError(
                f"{os.path.basename(path)} is {what}; BoLID needs a YOLO pose model with the 17 COCO body keypoints "
                "and their visibility (keypoint shape (17, 3)), e.g. yolo11n-pose.pt or yolo11x-pose.pt in "
                "models/ultralytics/pose/"
            )
        if device is not None:
            yolo.model.to(torch.device(device))
        yolo.model.eval()
        return cls(yolo, os.path.basename(path))

    @property
    def device(self) -> torch.device:
        return next(self.yolo.model.parameters()).device

    @property
    def stride(self) -> int:
        return int(max(int(self.yolo.model.stride.max()), 32))

    def predict(
        self,
        images: torch.Tensor,
        *,
        conf: float = DEFAULT_RECIPE.conf,
        visibility: float = DEFAULT_RECIPE.visibility,
        person: PersonPolicy = "largest",
        on_missing: str = "skip",
        batch_size: int = 16,
        imgsz: int = 640,
        progress: Callable[[int, int], None] | None = None,
    ) -> PoseBatch:
        """images (B, 3, H, W) float in [0, 1] -> PoseBatch with one person per image, in original-image pixels.

        conf: detection confidence threshold; visibility: keypoints with confidence below it are zeroed;
        person: "largest", "most_confident" or an index into the detections ordered by score;
        on_missing: "skip" (found False, zero keypoints) or "error" (raise, naming the image index);
        imgsz: the network's long side (images are scaled so and padded to multiples of the stride, as
        ultralytics does; an NCHW-contiguous image already that size and a multiple of 32 goes in as it is,
        without a copy).
        Runs in chunks of batch_size on the model's device; progress(done, total) after each chunk.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise BoLIDError(f"images must be a tensor of shape (B, 3, H, W) with values in [0, 1]; got {shape}")
        if images.shape[0] == 0:
            raise BoLIDError("no images to find poses in: the batch is empty")
        if on_missing not in ON_MISSING:
            raise BoLIDError(f"on_missing must be one of {ON_MISSING}; got {on_missing!r}")
        policy = _check_policy(person)
        if not 0.0 <= conf <= 1.0 or not 0.0 <= visibility <= 1.0:
            raise BoLIDError(f"conf and visibility must lie in [0, 1]; got conf={conf}, visibility={visibility}")
        if batch_size < 1 or imgsz < 32:
            raise BoLIDError(f"batch_size must be >= 1 and imgsz >= 32; got {batch_size}, {imgsz}")
        b, _, h, w = images.shape
        plan = _letterbox_plan(h, w, imgsz, self.stride)
        device = self.device
        parts = []
        for start in range(0, b, batch_size):
            chunk = images[start : start + batch_size].to(device=device, dtype=torch.float32)
            if bool(chunk.amin() < 0) or bool(chunk.amax() > 1):
                chunk = chunk.clamp(0, 1)  # ultralytics would read values > 1 as 0..255 and divide them
            # NCHW-contiguous for the network: a ComfyUI image (BHWC) permuted to BCHW has channels-last strides,
            # which every convolution would keep (~20% slower on the CPU). Made so after the resize, which reads
            # the channels-last view about 4x faster than a full-size copy first would cost.
            chunk = _letterbox(chunk, plan).contiguous()                      # (b', 3, H', W')
            with torch.inference_mode(), _torch_threads_kept():
                results = self.yolo.predict(chunk, conf=conf, verbose=False, device=device, imgsz=plan.size,
                                            predictor=_quiet_predictor(self.yolo))
            parts.append(select_people(
                results, policy=policy, visibility=visibility, on_missing=on_missing,
                scale=plan.gain, index_offset=start,
            ))
            if progress is not None:
                progress(min(b, start + batch_size), b)
        keypoints, boxes, found = (torch.cat(t) for t in zip(*parts))
        if not bool(found.any()):
            log.warning("no person found in any of the %d images (conf=%s)", b, conf)
        meta = {"model": self.name, "conf": conf, "visibility": visibility, "person": person}
        return PoseBatch(keypoints, boxes, found, (h, w), meta)
