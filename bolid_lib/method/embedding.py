"""Body-IDs: the Body-ID VAE's Gaussian for one person, its file format, blending and sampling.

A Body-ID is mean (D,) and logvar (D,) of q(z | views). The adapter's body branch reads ``mean``
(c_body, paper 4.2). Metadata says which VAE made it, so Body-IDs of different VAEs are never mixed.

Legend: D latent width, M number of Body-IDs blended.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import files
from ..errors import BoLIDError

FORMAT = "bolid.body"
VERSION = 1
_META_FIELDS = ("dim", "vae_fingerprint", "views_used", "views_skipped", "mean_confidence", "source")


@dataclass
class BodyEmbedding:
    """mean (D,) float32, logvar (D,) float32, meta: dim, vae_fingerprint, views_used, views_skipped,
    mean_confidence, source (how it was made: "encode", "blend", "slerp", "sample")."""

    mean: torch.Tensor
    logvar: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("mean", "logvar"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.numel() == 0:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise BoLIDError(f"a Body-ID's {name} must be a vector (D,); got {got}")
            if not torch.isfinite(t).all():
                raise BoLIDError(f"this Body-ID's {name} holds NaN or infinite values: the encoder or the file is broken; encode the views again")
        if self.mean.shape != self.logvar.shape:
            raise BoLIDError(f"a Body-ID's mean and logvar must have the same size; got {self.mean.numel()} and {self.logvar.numel()}")
        self.mean = self.mean.detach().float().cpu()
        self.logvar = self.logvar.detach().float().cpu()
        meta = {"dim": self.dim, "vae_fingerprint": "", "views_used": 0, "views_skipped": 0, "mean_confidence": 0.0, "source": "encode"}
        meta.update(self.meta)
        if int(meta["dim"]) != self.dim:
            raise BoLIDError(f"this Body-ID says it has {meta['dim']} dimensions but holds {self.dim}: the file is damaged; encode the views again")
        self.meta = meta

    @property
    def dim(self) -> int:
        return self.mean.numel()

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("vae_fingerprint", ""))

    def norm(self) -> float:
        return float(self.mean.norm())

    def sample(self, seed: int) -> "BodyEmbedding":
        """A draw z = mean + exp(logvar / 2) * eps with eps from ``seed``; returned as a Body-ID whose mean is
        z (what the adapter reads) and whose logvar is unchanged."""
        g = torch.Generator().manual_seed(int(seed) % (2 ** 63))
        eps = torch.randn(self.dim, generator=g)
        z = self.mean + torch.exp(0.5 * self.logvar) * eps
        return BodyEmbedding(z, self.logvar.clone(), {**self.meta, "source": f"sample(seed={int(seed)})"})

    def summary(self) -> str:
        """A few readable lines for a preview."""
        m = self.meta
        return (f"Body-ID: D={self.dim}, |mean|={self.norm():.3f}, mean sigma={float(torch.exp(0.5 * self.logvar).mean()):.3f}\n"
                f"views used {m['views_used']}, skipped {m['views_skipped']}, mean confidence {float(m['mean_confidence']):.3f}\n"
                f"VAE {m['vae_fingerprint'] or 'unknown'}, made by {m['source']}")


def _check_compatible(embeddings: list[BodyEmbedding]) -> None:
    dims = {e.dim for e in embeddings}
    if len(dims) != 1:
        raise BoLIDError(f"Body-IDs of different sizes cannot be mixed: got D = {sorted(dims)}; encode them with the same Body-ID VAE")
    prints = {e.fingerprint for e in embeddings if e.fingerprint}
    if len(prints) > 1:
        raise BoLIDError(f"these Body-IDs come from different Body-ID VAEs ({', '.join(sorted(prints))}); their spaces do not match: "
                         "encode all of them with one VAE")


def blend(embeddings: list[BodyEmbedding], weights: list[float] | torch.Tensor) -> BodyEmbedding:
    """Weighted mean of M Body-IDs. weights (M,) >= 0, not all 0; they are normalised to sum 1.

    mean = sum_i w_i mean_i. logvar = log(sum_i w_i exp(logvar_i)): the weighted mean of the variances,
    i.e. the mixture's spread around each component, without the spread between the means (which would
    grow the blend's variance just because the people differ, and make a sampled blend noisier than any
    of its inputs).
    """
    if not embeddings:
        raise BoLIDError("nothing to blend: connect at least one Body-ID")
    _check_compatible(embeddings)
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != len(embeddings):
        raise BoLIDError(f"got {len(embeddings)} Body-IDs but {w.numel()} weights: give one weight per Body-ID")
    if not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
        raise BoLIDError(f"blend weights must be >= 0 and not all 0; got {w.tolist()}")
    w = w / w.sum()
    means = torch.stack([e.mean.double() for e in embeddings])      # (M, D)
    var = torch.stack([e.logvar.double().exp() for e in embeddings])
    mean = (w[:, None] * means).sum(0)
    logvar = torch.log((w[:, None] * var).sum(0))
    meta = {
        "vae_fingerprint": embeddings[0].fingerprint,
        "views_used": sum(int(e.meta["views_used"]) for e in embeddings),
        "views_skipped": sum(int(e.meta["views_skipped"]) for e in embeddings),
        "mean_confidence": float(sum(wi * float(e.meta["mean_confidence"]) for wi, e in zip(w.tolist(), embeddings))),
        "source": "blend(" + ", ".join(f"{x:.3g}" for x in w.tolist()) + ")",
    }
    return BodyEmbedding(mean.float(), logvar.float(), meta)


def slerp(a: BodyEmbedding, b: BodyEmbedding, t: float) -> BodyEmbedding:
    """Spherical interpolation of two Body-IDs: t = 0 gives a, t = 1 gives b.

    The direction of the mean moves along the great circle, its length linearly (so the path keeps the
    typical norm of an embedding instead of cutting through the origin as a linear mix does); logvar is
    interpolated linearly. Nearly parallel means fall back to a linear mix.
    """
    _check_compatible([a, b])
    t = float(t)
    if not math.isfinite(t):
        raise BoLIDError(f"t must be a finite number; got {t}")
    ma, mb = a.mean.double(), b.mean.double()
    na, nb = ma.norm(), mb.norm()
    if float(na) < 1e-12 or float(nb) < 1e-12:
        mean = (1 - t) * ma + t * mb
    else:
        ua, ub = ma / na, mb / nb
        omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
        if float(omega) < 1e-6:
            direction = (1 - t) * ua + t * ub
        else:
            direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
        mean = direction * ((1 - t) * na + t * nb)
    logvar = (1 - t) * a.logvar.double() + t * b.logvar.double()
    meta = {
        "vae_fingerprint": a.fingerprint or b.fingerprint,
        "views_used": int(a.meta["views_used"]) + int(b.meta["views_used"]),
        "views_skipped": int(a.meta["views_skipped"]) + int(b.meta["views_skipped"]),
        "mean_confidence": (1 - t) * float(a.meta["mean_confidence"]) + t * float(b.meta["mean_confidence"]),
        "source": f"slerp(t={t:.3g})",
    }
    return BodyEmbedding(mean.float(), logvar.float(), meta)


# --- files -----------------------------------------------------------------------------------------

def save_body(embedding: BodyEmbedding, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a Body-ID as .safetensors (tensors mean, logvar; metadata: format, version, fields)."""
    meta = {k: embedding.meta[k] for k in _META_FIELDS}
    return files.save_safetensors_atomic({"mean": embedding.mean, "logvar": embedding.logvar}, path,
                                         fmt=FORMAT, version=VERSION, config=meta, overwrite=overwrite)


def load_body(path: str | os.PathLike, *, expected_dim: int | None = None) -> BodyEmbedding:
    """Read a Body-ID file with clear errors: another kind of file, truncated, wrong D, NaN/inf."""
    path = Path(path)
    tensors, meta = files.read_safetensors(path)
    if meta.get(files.FORMAT_KEY) != FORMAT:
        raise BoLIDError(f"{path.name} is not a Body-ID file ({FORMAT}): it looks like {files.describe_safetensors(path)}; "
                         "pick a file saved by 'BoLID Save Body-ID'")
    _, config = files.read_format(meta, path, fmt=FORMAT, max_version=VERSION)
    missing = [k for k in ("mean", "logvar") if k not in tensors]
    if missing:
        raise BoLIDError(f"{path.name} lacks the tensors {missing}: the file is damaged; save the Body-ID again")
    mean, logvar = tensors["mean"], tensors["logvar"]
    dim = int(config.get("dim", mean.numel()))
    if mean.ndim != 1 or mean.shape != logvar.shape or mean.numel() != dim:
        raise BoLIDError(f"{path.name} should hold two vectors of {dim} numbers; got mean {tuple(mean.shape)} and "
                         f"logvar {tuple(logvar.shape)}: the file is damaged; save the Body-ID again")
    if expected_dim is not None and dim != expected_dim:
        raise BoLIDError(f"{path.name} is a Body-ID of size {dim}, but {expected_dim} is needed here: "
                         f"use a Body-ID encoded with the Body-ID VAE this adapter was trained with")
    for name, t in (("mean", mean), ("logvar", logvar)):
        if not torch.isfinite(t).all():
            raise BoLIDError(f"{path.name}: the Body-ID's {name} holds NaN or infinite values; encode the views again")
    return BodyEmbedding(mean, logvar, {k: config[k] for k in _META_FIELDS if k in config})


ON_EXISTS = ("increment", "refuse")


def save_body_in(embedding: BodyEmbedding, folder: str | os.PathLike, name: str, *, on_exists: str = "increment") -> Path:
    """Save under ``folder`` with a user-given ``name`` (sub-folders allowed, never outside ``folder``).

    on_exists: "increment" writes name_00001.safetensors (and so on) next to an existing file; "refuse" raises.
    An existing file is never overwritten.
    """
    if on_exists not in ON_EXISTS:
        raise BoLIDError(f"on_exists must be one of {ON_EXISTS}; got {on_exists!r}")
    path = files.resolve_inside(folder, name, suffix=".safetensors")
    if path.exists():
        if on_exists == "refuse":
            raise BoLIDError(f"a Body-ID named {path.name} exists already in {path.parent}: choose another name, or set 'if exists' to increment")
        path = files.next_free_path(path)
    return save_body(embedding, path, overwrite=False)
