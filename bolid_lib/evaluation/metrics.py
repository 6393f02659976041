"""Evaluation metrics: FID (paper eq. 15), Inception Score, body fidelity, CLIP-T and CLIP-I.

Legend: B batch, N / M numbers of images, D feature width (2048 for Inception's pool), C classes (1008),
K = 17 keypoints, H, W image size.

FID and IS
----------
The *math* runs in torchmetrics (``FrechetInceptionDistance``, ``InceptionScore``), the *network* is
torch-fidelity's ``FeatureExtractorInceptionV3`` (the TensorFlow FID Inception ported bit-exactly; the
one torchmetrics builds itself). We run the network once per image and hand its two outputs (the 2048-d
pool features and the 1008 unbiased logits) to the torchmetrics metrics through a pass-through feature
module, so the 95 MB network is held once and each image is seen once. ``fid_from_features`` and
``inception_score_from_logits`` are direct implementations of the definitions, used to validate torchmetrics.

Inception weights are never downloaded. The file torch-fidelity/torchmetrics use is
``weights-inception-2015-12-05-6726825d.pth`` (pytorch-fid ships the same file, same hash, as
``pt_inception-2015-12-05-6726825d.pth``). It is a pickle, and this pack never ``torch.load``s a pickle a
user hands it at run time; so the metric reads a **.safetensors** conversion of it. The conversion is
one explicit command (``python -m bolid_lib.evaluation.metrics convert-inception SRC.pth DST.safetensors``), which
reads the .pth with ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors and plain
containers only, no code) and checks every key and shape. Why not accept the .pth directly: evaluation is
run over and over on files that sit in shared folders; the restricted unpickler is good but a checked,
code-free format is better, and the conversion costs one second once.

Body fidelity
-------------
The paper's ``L_id`` (sum over the 17 keypoints of squared distances) as a metric: per image, the mean
Euclidean distance between the generated and the reference keypoints visible in both, divided by the
reference body size = the diagonal of the box around the reference's visible keypoints. We chose the
keypoint-box diagonal over the torso length because the torso needs both shoulders and both hips, which
half-length portraits often lack, while the box exists whenever two keypoints do. Like ``L_id`` it is
not translation invariant: a body drawn elsewhere in the frame counts as unfaithful.

CLIP-T and CLIP-I
-----------------
Cosine similarity of CLIP embeddings (as the IP-Adapter paper reports them: plain cosine, not x100):
CLIP-T between each generated image and its prompt, CLIP-I between each generated image and its reference.
The CLIP model comes from a local Hugging Face folder, read with ``local_files_only`` and safetensors only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import BoLIDError
from ..method.keypoints import NUM_KEYPOINTS, PoseBatch

log = logging.getLogger("bolid")

INCEPTION_PTH_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_PTH_ALIAS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's name for the same file
INCEPTION_SAFETENSORS_NAME = "inception-2015-12-05-6726825d.safetensors"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_FORMAT = "bolid.inception_v3_fid"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_PTH_NAME
POOL_FEATURES = 2048
LOGIT_CLASSES = 1008


def inception_help(where: str | os.PathLike | None = None) -> str:
    """The instructions for getting the Inception weights, shared by every error about them."""
    target = Path(where) if where else Path("models") / "inception" / INCEPTION_SAFETENSORS_NAME
    return (f"FID and IS need the FID Inception weights: download {INCEPTION_PTH_NAME} (pytorch-fid calls the same "
            f"file {INCEPTION_PTH_ALIAS}) from {INCEPTION_URL} on a machine with internet, then convert it once "
            f"to safetensors: `python -m bolid_lib.evaluation.metrics convert-inception {INCEPTION_PTH_NAME} {target}`, "
            f"and pass --inception {target}")


# --- Inception network ---------------------------------------------------------------------------

def _fidelity_class():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise BoLIDError("FID and IS need the package torch-fidelity (the Inception network torchmetrics uses): "
                         "pip install torch-fidelity") from e
    return FeatureExtractorInceptionV3


FID_FEATURES = (2048, 768, 192, 64)  # the paper's FID uses 2048; the smaller ones are the usual low-sample variants


def _build_inception(state_dict: dict[str, torch.Tensor] | None, fid_features: int = 2048) -> nn.Module:
    """torch-fidelity's Inception holding ``state_dict``; ``None`` leaves PyTorch's random init (tests).
    It returns (pooled features of width ``fid_features``, 1008 unbiased logits).

    torch-fidelity's constructor insists on ``torch.load``ing its weights from a path or a URL. We give it an
    in-memory buffer holding a state dict we serialised ourselves from tensors read with safetensors, so
    no pickle from outside ever reaches ``torch.load`` and nothing is downloaded.
    """
    cls = _fidelity_class()
    if fid_features not in FID_FEATURES:
        raise BoLIDError(f"FID features must be one of {FID_FEATURES} (Inception layers); got {fid_features!r}")
    features = [str(fid_features), "logits_unbiased"]
    if state_dict is None:
        class _RandomInit(cls):  # keeps the constructor's layers, skips its weight loading
            def load_state_dict(self, *args, **kwargs):
                return None
        cls = _RandomInit
        state_dict = {}
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    try:
        return cls("inception-v3-compat", features, feature_extractor_weights_path=buffer)
    except RuntimeError as e:  # load_state_dict's strict key/shape check
        raise BoLIDError(f"the file does not hold the FID Inception v3 weights ({str(e).splitlines()[0]}). "
                         + inception_help()) from e


class InceptionFeatures(nn.Module):
    """The FID Inception v3: images (B, 3, H, W) -> (pool (B, D) float32, logits (B, 1008) float32).

    D = 2048 (the pool layer, standard FID) unless built with another ``fid_features``.

    Images are float in [0, 1] (the library's layout) or uint8 in [0, 255]; any size (the network resizes
    to 299x299 itself, the way TensorFlow's reference implementation did).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise BoLIDError(f"Inception expects images of shape (B, 3, H, W); got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        pool, logits = self.network(images)
        return pool.float(), logits.float()


def random_inception(fid_features: int = 2048) -> InceptionFeatures:
    """The real Inception architecture at random init: for tests of the pipeline, never for numbers."""
    return InceptionFeatures(_build_inception(None, fid_features))


def load_inception(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                   fid_features: int = 2048) -> InceptionFeatures:
    """Load the FID Inception from a safetensors conversion of ``weights-inception-2015-12-05-6726825d.pth``.

    fid_features: which layer FID compares: 2048 (pool, the standard and the paper's), or 768 / 192 / 64
    (earlier layers; FID over few images is better conditioned there, and far cheaper: torchmetrics takes
    a general eigen-decomposition of a D x D matrix, minutes on a small CPU at D = 2048).
    """
    from ..files import PICKLE_SUFFIXES, read_safetensors

    if path is None or str(path).strip() == "":
        raise BoLIDError("no Inception weights given. " + inception_help())
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise BoLIDError(f"{path} is a folder with {len(candidates)} .safetensors files; give the file itself. "
                             + inception_help(path / INCEPTION_SAFETENSORS_NAME))
        path = candidates[0]
    if not path.exists():
        raise BoLIDError(f"Inception weights not found at {path}. " + inception_help(path.with_suffix(".safetensors")))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BoLIDError(f"{path.name} is a pickle file; BoLID reads the Inception weights only as safetensors. Convert "
                         f"it once: `python -m bolid_lib.evaluation.metrics convert-inception {path} "
                         f"{path.with_suffix('.safetensors')}` and pass the .safetensors file")
    tensors, _meta = read_safetensors(path)
    network = _build_inception(tensors, fid_features)
    return InceptionFeatures(network).to(device)


def convert_inception_weights(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert the .pth Inception weights to safetensors, checking every key and shape. Returns ``dst``.

    This is the one place the pack unpickles a file, on the user's explicit command, with torch's
    ``weights_only=True`` loader (tensors and containers only; it refuses anything that would run code).
    """
    from ..files import save_safetensors_atomic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BoLIDError(f"{src} not found. " + inception_help(dst))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad or unsafe pickle; report them all the same way
        raise BoLIDError(f"{src.name} could not be read as a plain PyTorch state dict ({type(e).__name__}: {e}). "
                         + inception_help(dst)) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BoLIDError(f"{src.name} is not a state dict of tensors. " + inception_help(dst))
    _build_inception(state)  # strict key and shape check
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        log.warning("%s has the Inception layout but sha256 %s..., not %s...: FID values will not be comparable "
                    "with published ones", src.name, digest[:8], INCEPTION_SHA256_PREFIX)
    return save_safetensors_atomic(state, dst, fmt=INCEPTION_FORMAT, version=1,
                                   metadata={"source": src.name, "source_sha256": digest})


# --- FID and IS: torchmetrics -------------------------------------------------------------------

class _Passthrough(nn.Module):
    """A torchmetrics "feature extractor" that returns what it is given: features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_features(name: str, f: torch.Tensor | np.ndarray, min_rows: int = 2) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(f) if not isinstance(f, torch.Tensor) else f)
    if f.ndim != 2:
        raise BoLIDError(f"{name} features must have shape (N, D); got {tuple(f.shape)}")
    if f.shape[0] < min_rows:
        raise BoLIDError(f"{name}: at least {min_rows} images are needed; got {f.shape[0]}: add images to the folder")
    return f


def fid(real: torch.Tensor, generated: torch.Tensor) -> float:
    """FID between two feature sets through torchmetrics. real (N, D), generated (M, D); N, M >= 2."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, generated = _check_features("real", real), _check_features("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise BoLIDError(f"feature widths differ: real {real.shape[1]}, generated {generated.shape[1]}")
    metric = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS (mean, std over splits) from Inception logits (N, C) through torchmetrics.

    torchmetrics shuffles the images before splitting; the shuffle is seeded here so a report is
    reproducible (torch's global generator is restored afterwards).
    """
    from torchmetrics.image.inception import InceptionScore

    logits = _check_features("generated", logits, min_rows=1)
    _check_splits(len(logits), splits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_Passthrough(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # torchmetrics warns that it buffers all features (we hand it logits only) and, for one split,
        # that a std of one value is undefined (we report 0 then)
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def _check_splits(n: int, splits: int) -> None:
    if not isinstance(splits, int) or splits < 1:
        raise BoLIDError(f"splits must be a positive integer; got {splits!r}")
    if splits > n:
        raise BoLIDError(f"IS with {splits} splits needs at least {splits} images; got {n}: lower --is-splits")


# --- FID and IS: direct implementations (for validation) ----------------------------------------

def fid_from_features(real: np.ndarray | torch.Tensor, generated: np.ndarray | torch.Tensor) -> float:
    """Eq. 15 directly: ||mu_p - mu_q||^2 + Tr(S_p + S_q - 2 (S_p S_q)^(1/2)). real (N, D), generated (M, D).

    Float64 numpy. ``Tr((S_p S_q)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``S_p^(1/2) S_q S_p^(1/2)`` (similar to ``S_p S_q``, so the same eigenvalues):
    a different route from torchmetrics' general eigen-decomposition, which is what makes it a check.
    """
    p = np.asarray(_check_features("real", torch.as_tensor(np.asarray(real))), dtype=np.float64)
    q = np.asarray(_check_features("generated", torch.as_tensor(np.asarray(generated))), dtype=np.float64)
    mu_p, mu_q = p.mean(0), q.mean(0)
    s_p, s_q = np.cov(p, rowvar=False), np.cov(q, rowvar=False)  # unbiased (N - 1), as torchmetrics
    w, v = np.linalg.eigh(s_p)
    sqrt_p = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = sqrt_p @ s_q @ sqrt_p
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(((mu_p - mu_q) ** 2).sum() + np.trace(s_p) + np.trace(s_q) - 2 * tr_sqrt)


def inception_score_from_logits(logits: np.ndarray | torch.Tensor, splits: int = 10,
                                order: Sequence[int] | None = None) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; (mean, unbiased std) over splits. logits (N, C).

    Splits follow ``torch.chunk`` (as torchmetrics: ceil(N / splits) rows each); ``order`` permutes the
    rows first (torchmetrics shuffles; pass the same order to compare).
    """
    x = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise BoLIDError(f"logits must have shape (N, C) with N >= 1; got {x.shape}")
    _check_splits(len(x), splits)
    if order is not None:
        x = x[np.asarray(order)]
    x = x - x.max(1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
    p = np.exp(log_p)
    size = math.ceil(len(x) / splits)
    scores = []
    for start in range(0, len(x), size):
        ps, lps = p[start:start + size], log_p[start:start + size]
        p_y = ps.mean(0, keepdims=True)
        kl = (ps * (lps - np.log(p_y))).sum(1).mean()
        scores.append(math.exp(kl))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std(ddof=1)) if len(scores) > 1 else 0.0


# --- body fidelity ------------------------------------------------------------------------------

def _as_keypoints(x, name: str) -> tuple[torch.Tensor, tuple[int, int] | None]:
    if isinstance(x, PoseBatch):
        kp = x.keypoints.clone()
        kp[~x.found] = 0  # an image without a person has no visible keypoint
        return kp.float(), tuple(x.image_size)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        kp = torch.as_tensor(x).float()
        if kp.ndim == 2:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3):
            raise BoLIDError(f"{name} keypoints must have shape (B, 17, 3) (x, y, confidence); got {tuple(kp.shape)}")
        return kp, None
    raise BoLIDError(f"{name} must be a PoseBatch or a (B, 17, 3) tensor; got {type(x).__name__}")


def keypoint_distance(pred, ref, *, pred_size: tuple[int, int] | None = None,
                      ref_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Body fidelity: the normalised mean keypoint distance of each generated image to its reference.

    pred: PoseBatch or (B, 17, 3) x, y in pixels and confidence (0 = not visible).
    ref: PoseBatch or (B, 17, 3), or one reference (1, 17, 3) for the whole batch.
    pred_size / ref_size: (H, W) of the images the keypoints refer to (taken from a PoseBatch when given).
        When both are known and differ, ``pred`` is scaled into the reference's pixel frame.
    Returns (B,) float32: mean over keypoints visible in both of ||p_gen - p_ref||, divided by the diagonal
    of the box around the reference's visible keypoints. 0 for identical poses; NaN where no keypoint is
    visible in both (no person found) or the reference has fewer than 2 visible keypoints.
    """
    p, ps = _as_keypoints(pred, "generated")
    r, rs = _as_keypoints(ref, "reference")
    pred_size, ref_size = pred_size or ps, ref_size or rs
    if r.shape[0] not in (1, p.shape[0]):
        raise BoLIDError(f"{p.shape[0]} generated poses but {r.shape[0]} reference poses: give one reference, "
                         f"or one per generated image")
    r = r.expand(p.shape[0], -1, -1)
    if pred_size and ref_size and tuple(pred_size) != tuple(ref_size):
        scale = torch.tensor([ref_size[1] / pred_size[1], ref_size[0] / pred_size[0]])
        p = torch.cat([p[..., :2] * scale, p[..., 2:]], -1)
    vis_p, vis_r = p[..., 2] > 0, r[..., 2] > 0
    both = vis_p & vis_r                                                       # (B, K)
    dist = (p[..., :2] - r[..., :2]).norm(dim=-1)                              # (B, K)
    mean_dist = torch.where(both, dist, 0).sum(-1) / both.sum(-1).clamp(min=1)
    big = torch.finfo(torch.float32).max
    lo = torch.where(vis_r[..., None], r[..., :2], big).amin(1)               # (B, 2)
    hi = torch.where(vis_r[..., None], r[..., :2], -big).amax(1)
    diag = (hi - lo).norm(dim=-1)
    ok = both.any(-1) & (vis_r.sum(-1) >= 2) & (diag > 0)
    return torch.where(ok, mean_dist / diag.where(ok, torch.ones_like(diag)), torch.full_like(diag, float("nan")))


def body_fidelity(pose_model, generated: torch.Tensor, reference, *, conf: float = 0.25,
                  visibility: float = 0.5) -> tuple[torch.Tensor, PoseBatch, PoseBatch]:
    """Body fidelity of a generated batch against a reference, with a pose model (``bolid_lib.method.pose.PoseModel``).

    generated: (B, 3, H, W) float [0, 1]. reference: images (1 or B, 3, H', W') float [0, 1], or the
    reference's PoseBatch (1 or B). Returns (distances (B,) with NaN where no person was found, the
    generated poses, the reference poses); see ``keypoint_distance`` for the measure.
    """
    if not hasattr(pose_model, "predict"):
        raise BoLIDError(f"expected a loaded YOLO pose model; got {type(pose_model).__name__}: connect BoLID Load Pose Model")
    gen_pose = pose_model.predict(generated, conf=conf, visibility=visibility, on_missing="skip")
    if isinstance(reference, PoseBatch):
        ref_pose = reference
    elif isinstance(reference, torch.Tensor):
        ref_pose = pose_model.predict(reference, conf=conf, visibility=visibility, on_missing="skip")
    else:
        raise BoLIDError(f"the reference must be images or a pose; got {type(reference).__name__}")
    if len(ref_pose) not in (1, len(gen_pose)):
        raise BoLIDError(f"{len(gen_pose)} generated images but {len(ref_pose)} references: give one reference, "
                         "or one per generated image")
    if not bool(ref_pose.found.any()):
        raise BoLIDError("no person was found in the reference: use a reference where the body is visible, or lower conf")
    return keypoint_distance(gen_pose, ref_pose), gen_pose, ref_pose


def body_fidelity_table(distances: torch.Tensor, labels: Sequence[str] | None = None) -> tuple[float, str]:
    """(mean over images with a person (NaN if none), a plain-text table one row per image) for display."""
    values = [float(v) for v in distances]
    labels = list(labels) if labels is not None else [f"image {i}" for i in range(len(values))]
    good = [v for v in values if not math.isnan(v)]
    mean = sum(good) / len(good) if good else float("nan")
    width = max(len(x) for x in labels + ["image"])
    lines = ["body distance to the reference (0 = same pose; mean keypoint distance / body size)",
             f"{'image'.ljust(width)} | distance"]
    lines += [f"{lab.ljust(width)} | {'no person found' if math.isnan(v) else f'{v:.4f}'}" for lab, v in zip(labels, values)]
    lines.append(f"mean over {len(good)} of {len(values)} images: " + ("n/a" if not good else f"{mean:.4f}"))
    return mean, "\n".join(lines)


# --- CLIP-T and CLIP-I --------------------------------------------------------------------------

class ClipScorer:
    """CLIP embeddings from a local Hugging Face CLIP folder (config.json + model.safetensors + tokenizer
    and preprocessor files). Images (B, 3, H, W) float [0, 1]; prompts a list of B strings."""

    def __init__(self, model, tokenizer, processor, device: str | torch.device = "cpu"):
        self.model, self.tokenizer, self.processor, self.device = model.eval(), tokenizer, processor, torch.device(device)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> "ClipScorer":
        path = Path(path)
        if not path.is_dir():
            raise BoLIDError(f"CLIP model folder not found: {path}. Give a local Hugging Face CLIP folder (such as a "
                             "download of openai/clip-vit-large-patch14) holding config.json and model.safetensors")
        missing = [n for n in ("config.json", "preprocessor_config.json") if not (path / n).is_file()]
        if not any(path.glob("*.safetensors")):
            pickles = [p.name for p in path.glob("*.bin")]
            missing.append("model.safetensors" + (f" (found only {', '.join(pickles)}: BoLID loads safetensors only; "
                                                   "download the safetensors version of the model)" if pickles else ""))
        if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
            missing.append("tokenizer.json or vocab.json + merges.txt")
        if missing:
            raise BoLIDError(f"the CLIP folder {path} lacks {'; '.join(missing)}: download the whole model folder")
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        model = CLIPModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
        return cls(model.to(device), tokenizer, processor, device)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers < 5 returns the projected tensor; 5.x a BaseModelOutputWithPooling holding it
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) float [0, 1], or a list of B (3, H, W) of any sizes -> (B, D) unit vectors."""
        images = list(images)
        if not images or any(i.ndim != 3 or i.shape[0] != 3 for i in images):
            shapes = [tuple(i.shape) for i in images[:3]]
            raise BoLIDError(f"CLIP expects images of shape (B, 3, H, W) or a list of (3, H, W); got {shapes}")
        pixels = self.processor(images=[i.float().cpu() for i in images], return_tensors="pt",
                                do_rescale=False)["pixel_values"]
        emb = self._features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """B prompts -> (B, D) unit vectors (prompts longer than CLIP's context are truncated)."""
        max_len = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        emb = self._features(self.model.get_text_features(**tokens))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()

    def clip_t(self, images, prompts: Sequence[str]) -> torch.Tensor:
        """(B,) cosine between each image and its prompt."""
        if len(prompts) != len(images):
            raise BoLIDError(f"{len(images)} images but {len(prompts)} prompts: give one prompt per image")
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)

    def clip_i(self, images, references) -> torch.Tensor:
        """(B,) cosine between each image and its reference (one reference (1, 3, H, W) serves all).
        images, references: (B, 3, H, W) tensors or lists of (3, H, W)."""
        a, b = self.image_embeds(images), self.image_embeds(references)
        if b.shape[0] not in (1, a.shape[0]):
            raise BoLIDError(f"{a.shape[0]} images but {b.shape[0]} references: give one, or one per image")
        return (a * b).sum(-1)


# --- command line: weight conversion --------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bolid_lib.evaluation.metrics", description="Metric model utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-inception", help=f"convert {INCEPTION_PTH_NAME} to safetensors (one time)")
    conv.add_argument("src", help=f"the downloaded {INCEPTION_PTH_NAME} (or {INCEPTION_PTH_ALIAS})")
    conv.add_argument("dst", help="where to write the .safetensors file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert_inception_weights(args.src, args.dst)
    except BoLIDError as e:
        log.error("error: %s", e)
        return 2
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
