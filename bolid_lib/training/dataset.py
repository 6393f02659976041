"""Data of the adapter trainer: images with captions grouped by person, their Body-IDs, and the sample order.

Layout (one folder per person; a caption file next to each image, same stem)::

    data_dir/
      alice/  001.jpg 001.txt  002.png 002.txt ...   [body.safetensors: a ready Body-ID, optional]
      bob/    ...

Each person's Body-ID is the Body-ID VAE's mean over *all* of that person's photos (pose -> Gaussian weighting ->
encoder, the same pipeline as the nodes), so the body branch learns from an identity, not from a copy of the
target photo. It is computed once and cached as a BoLID Body-ID ``.safetensors`` in ``cache_dir``, keyed by the
VAE's fingerprint and the person's files.

Randomness is keyed, not streamed: the sample at global position p (step·G + j for a global batch G) gets the
dataset index ``order(p)`` and a seed ``sample_seed(p)``, from which its noise, timestep, condition dropout and
reference choice are drawn. The same run therefore sees the same samples with one process or several, with or
without gradient accumulation, and after a resume (tests/unit/test_ddp.py, test_adapter_training.py).

Shapes: R the training resolution; images (3, R, R) float in [0, 1].
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data.photos import read_image
from ..data.views import read_recipe_photo
from ..errors import BoLIDError

log = logging.getLogger("bolid")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BODY_FILE = "body.safetensors"


@dataclass(frozen=True)
class Item:
    person: int
    image: Path
    caption: str


def scan(data_dir: str | Path, default_caption: str | None = None) -> tuple[list[str], list[Item]]:
    """(person names, items) of a dataset folder, in sorted order. A missing caption raises, unless
    ``default_caption`` is given."""
    root = Path(data_dir)
    if not root.is_dir():
        raise BoLIDError(f"data_dir not found: {root} (expected one folder per person with images and .txt captions)")
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names: list[str] = []
    items: list[Item] = []
    for folder in people:
        images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            continue
        pid = len(names)
        names.append(folder.name)
        for f in images:
            cap = f.with_suffix(".txt")
            if cap.is_file():
                caption = cap.read_text(encoding="utf-8").strip()
            elif default_caption is not None:
                caption = default_caption
            else:
                raise BoLIDError(f"{f} has no caption file {cap.name}: write one next to it, or set default_caption")
            items.append(Item(pid, f, caption))
    if not items:
        raise BoLIDError(f"no images found in the person folders of {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return names, items


def load_image(path: Path, resolution: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """An image (read upright by the one photo reader) resized so its short side is ``resolution`` and
    centre-cropped to a square: ((3, R, R) float in [0, 1], SDXL's (orig_h, orig_w, crop_top, crop_left))."""
    x = read_image(path)[None]                                             # (1, 3, H, W), upright
    h, w = x.shape[-2:]
    s = resolution / min(h, w)
    nh, nw = max(resolution, round(h * s)), max(resolution, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    x = x[..., top:top + resolution, left:left + resolution].clamp(0, 1)
    return x[0], (h, w, round(top / s), round(left / s))


def sample_seed(seed: int, position: int) -> int:
    """The seed of the sample at global position ``position`` (a 63-bit hash of (seed, position))."""
    h = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def order(n: int, seed: int, position: int) -> int:
    """Dataset index at global ``position``: a fresh permutation of the n items per epoch."""
    epoch, i = divmod(position, n)
    g = torch.Generator().manual_seed(sample_seed(seed, -1 - epoch))
    return int(torch.randperm(n, generator=g)[i])


class KeyedSampler(torch.utils.data.Sampler):
    """Yields (dataset index, sample seed) for this process's share of every micro-batch, from ``start_step`` on.

    Global batch G = batch_size · world · accumulation; micro-batch k of step s on rank r holds global positions
    s·G + k·batch_size·world + r·batch_size + [0, batch_size).
    """

    def __init__(self, n: int, seed: int, batch_size: int, world: int, rank: int, accumulation: int,
                 start_step: int, max_steps: int):
        self.n, self.seed, self.b, self.world, self.rank = n, seed, batch_size, world, rank
        self.accum, self.start, self.stop = accumulation, start_step, max_steps

    def positions(self, step: int, micro: int) -> list[int]:
        g = self.b * self.world * self.accum
        base = step * g + micro * self.b * self.world + self.rank * self.b
        return list(range(base, base + self.b))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for s in range(self.start, self.stop):
            for k in range(self.accum):
                for p in self.positions(s, k):
                    yield order(self.n, self.seed, p), sample_seed(self.seed, p)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum * self.b


class AdapterDataset(torch.utils.data.Dataset):
    """Indexed by (index, sample_seed) pairs from ``KeyedSampler``.

    An item: image (3, R, R), ref_image (3, R, R) (the same image, or another photo of the same person with
    ref_source "other"), caption, body (D,) or None, time_ids (6,) float, seed.
    """

    def __init__(self, items: list[Item], resolution: int, bodies: torch.Tensor | None = None, ref_source: str = "same"):
        if ref_source not in ("same", "other"):
            raise BoLIDError(f"ref_source must be 'same' or 'other'; got {ref_source!r}")
        self.items, self.resolution, self.bodies, self.ref_source = items, resolution, bodies, ref_source
        self.by_person: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            self.by_person.setdefault(it.person, []).append(i)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        it = self.items[index]
        image, (oh, ow, top, left) = load_image(it.image, self.resolution)
        ref = image
        if self.ref_source == "other":
            others = [j for j in self.by_person[it.person] if j != index]
            if others:
                g = torch.Generator().manual_seed(seed ^ 0x5EED)
                j = others[int(torch.randint(len(others), (1,), generator=g))]
                ref, _ = load_image(self.items[j].image, self.resolution)
        r = self.resolution
        return {
            "image": image, "ref_image": ref, "caption": it.caption, "seed": seed,
            "body": None if self.bodies is None else self.bodies[it.person],
            "time_ids": torch.tensor([oh, ow, top, left, r, r], dtype=torch.float32),
        }


def collate(rows: list[dict]) -> dict:
    out = {"image": torch.stack([r["image"] for r in rows]), "ref_image": torch.stack([r["ref_image"] for r in rows]),
           "caption": [r["caption"] for r in rows], "seed": torch.tensor([r["seed"] for r in rows], dtype=torch.int64),
           "time_ids": torch.stack([r["time_ids"] for r in rows])}
    out["body"] = None if rows[0]["body"] is None else torch.stack([r["body"] for r in rows])
    return out


@dataclass(frozen=True)
class Dropout:
    """Probabilities of dropping each condition, each on its own, and of dropping all of them together
    (classifier-free guidance at inference). The unconditional row of CFG is exactly "everything dropped": with
    independent draws alone it is trained only text * body of the time (0.5% at 5% and 10%), so IP-Adapter also drops
    text and image together (5% each of text alone, image alone, both)."""

    text: float = 0.05
    ref: float = 0.05
    body: float = 0.05
    together: float = 0.0


def draw_dropout(seeds: torch.Tensor, p: Dropout) -> dict[str, torch.Tensor]:
    """Per row, whether text, ref and body are *kept*: {"text", "ref", "body"} -> (B,) bool, keyed by the seeds."""
    keep = {"text": [], "ref": [], "body": []}
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s) ^ 0xD209)
        u = torch.rand(3, generator=g)
        all_off = bool(torch.rand(1, generator=g)[0] < p.together)   # drawn after the three: together 0 keeps old draws
        keep["text"].append(bool(u[0] >= p.text) and not all_off)
        keep["ref"].append(bool(u[1] >= p.ref) and not all_off)
        keep["body"].append(bool(u[2] >= p.body) and not all_off)
    return {k: torch.tensor(v) for k, v in keep.items()}


def draw_noise(seeds: torch.Tensor, shape: tuple[int, ...], num_timesteps: int,
               preview_range: tuple[int, int], train_range: tuple[int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: noise (B, *shape), a training timestep (B,) uniform in [0, T) (or in ``train_range`` [lo, hi]),
    and a preview timestep (B,) uniform in preview_range [lo, hi] (used by the shortcut preview), all keyed by the
    seeds."""
    noise, t, t2 = [], [], []
    lo, hi = preview_range
    t_lo, t_hi = (0, num_timesteps - 1) if train_range is None else train_range
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        noise.append(torch.randn(shape, generator=g))
        t.append(int(torch.randint(t_lo, t_hi + 1, (1,), generator=g)))
        t2.append(int(torch.randint(lo, hi + 1, (1,), generator=g)))
    return torch.stack(noise), torch.tensor(t), torch.tensor(t2)


# --- Body-IDs --------------------------------------------------------------------------------------

def _files_key(items: list[Item], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for it in items:
        st = it.image.stat()
        h.update(f"{it.image.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def person_body_ids(names: list[str], items: list[Item], data_dir: str | Path, cache_dir: str | Path,
                    body_vae, pose_model, resolution: int | None = None, pose_conf: float | None = None,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Body-ID means (P, D) of every person, from ``body.safetensors`` in the person's folder, from the cache, or
    computed as the nodes compute one (photos read and posed and weighted as the VAE's recipe says, then the
    Body-ID VAE: ``method.body_id.encode_photos``) and cached.

    body_vae: a ``bolid_lib.method.body_vae.BodyVAE``; pose_model: a ``bolid_lib.method.pose.PoseModel``;
    pose_conf: the detection threshold, None for the recipe's. resolution: not used (the photos are read at the
    recipe's working size); kept for callers that pass it.
    """
    from dataclasses import replace

    from ..method.body_id import encode_photos, recipe_of
    from ..method.embedding import BodyEmbedding, load_body, save_body

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    dim = int(body_vae.config.latent_dim) if body_vae is not None else None
    out = []
    for pid, name in enumerate(names):
        ready = Path(data_dir) / name / BODY_FILE
        if ready.is_file():
            out.append(load_body(ready, expected_dim=dim).mean)
            continue
        if body_vae is None or pose_model is None:
            raise BoLIDError(f"person {name!r} has no {BODY_FILE} and no Body-ID VAE / pose model is configured to compute one: "
                             "set body_vae and pose_model, or put a Body-ID file in the person's folder")
        mine = [it for it in items if it.person == pid]
        recipe = recipe_of(body_vae)
        if pose_conf is not None:
            recipe = replace(recipe, conf=pose_conf)
        key = _files_key(mine, f"{body_vae.fingerprint()}:{recipe.to_json()}:{pose_model.name}")
        path = cache / f"{name}.{key}.body.safetensors"
        if path.is_file():
            out.append(load_body(path, expected_dim=dim).mean)
        else:
            images = [read_recipe_photo(it.image, recipe) for it in mine]                  # (3, S, S) each
            if recipe.working_size is None and len({tuple(x.shape) for x in images}) > 1:
                raise BoLIDError(f"the Body-ID VAE records no working size and {name}'s photos differ in size: "
                                 "use a VAE trained with a recorded recipe, or photos of one size")
            emb: BodyEmbedding = encode_photos(body_vae, torch.stack(images), pose_model, recipe)
            save_body(emb, path, overwrite=True)
            log.info("Body-ID of %s from %d views cached at %s", name, emb.meta["views_used"], path)
            out.append(emb.mean)
        if progress is not None:
            progress(pid + 1, len(names))
    return torch.stack(out)


def write_synthetic_dataset(folder: str | Path, people: int = 2, views: int = 3, size: int = 64, seed: int = 0) -> Path:
    """A dataset folder of procedural people (``bolid_lib.data.synthetic``) with captions, for smoke runs and tests:
    ``folder/person_i/view_j.png`` + ``.txt``. Returns ``folder``."""
    from PIL import Image

    from ..data.synthetic import RenderSettings, make_views, random_shapes

    folder = Path(folder)
    views_set = make_views(random_shapes(people, seed), views, seed, RenderSettings(size=size))
    words = ("standing", "walking", "posing", "waving")
    for i in range(views_set.images.shape[0]):
        p, j = int(views_set.person[i]), i % views
        d = folder / f"person_{p}"
        d.mkdir(parents=True, exist_ok=True)
        arr = (views_set.images[i].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(d / f"view_{j}.png")
        (d / f"view_{j}.txt").write_text(f"a photo of person {p} {words[(p + j) % len(words)]}", encoding="utf-8")
    return folder
