"""Learning proof: does the Body-ID VAE learn body identity?

    python -m bolid_lib.experiments.body_id_proof [--ids 20] [--time-limit 420]

Procedural people (bolid_lib.data.synthetic) whose identity is only their body shape: every view has a new
pose, scale, position, viewpoint, clothing, skin and background. The VAE is trained with the trainer's
own loop and defaults (reconstruction across views + beta KL + limb ratios + the cross-view and per-view
identity terms, image-branch dropout) on poses from the range [0, 0.6] of each joint's maximum
articulation. Then, on views never used in training:

- gallery: one Body-ID per identity from ``gallery_views`` fresh views (training pose range);
- queries: Body-IDs from ``query_views`` fresh views, and from a single view (the paper's
  image-referenced mode), both in the training pose range and in the held-out range [0.6, 1.0]
  (poses more articulated than any seen in training);
- each query is assigned the identity of the nearest gallery Body-ID (Euclidean distance of the means,
  c_body = mu); top-1 accuracy against chance 1 / ids.

Views are encoded through BodyVAE.encode_views, the same path the ComfyUI node uses.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import torch

from ..method.body_vae import BodyVAE, BodyVAEConfig
from ..data import synthetic
from ..training.body_vae import TrainConfig, synthetic_viewset, train_body_vae
from ..method.weighting import apply_weighting

log = logging.getLogger("bolid")

TRAIN_POSES = (0.0, 0.6)
HELD_OUT_POSES = (0.6, 1.0)


@dataclass(frozen=True)
class ProofConfig:
    ids: int = 20
    train_views: int = 1000      # about 2 ms a view to render and weight: more poses per identity, less to overfit (300: held-out 4-view 77-87%)
    size: int = 32              # R, the VAE's input side
    render_size: int = 64       # side the views are drawn at (letterboxed down to R by the VAE)
    steps: int = 2500            # 0.17-0.26 s a step on one thread: the time limit, not the steps, ends a slow machine's run
    time_limit_s: float | None = 480.0
    batch_persons: int = 16
    lr: float = 2e-3
    gallery_views: int = 8
    query_views: int = 4
    queries_per_id: int = 10
    seed: int = 0
    sigma: float = 0.1
    alpha: float = 0.1
    latent_dim: int = 756
    widths: tuple[int, ...] = (16, 32, 64)
    feature_dim: int = 128
    beta: float = 0.02          # KL weight: strong enough to push view-specific detail (colours, pose) out of z
    contrast_weight: float = TrainConfig.contrast_weight
    contrast_temperature: float = TrainConfig.contrast_temperature
    view_contrast_weight: float = TrainConfig.view_contrast_weight
    image_dropout: float = TrainConfig.image_dropout
    foreshorten_prob: float = TrainConfig.foreshorten_prob
    foreshorten_max_deg: float = TrainConfig.foreshorten_max_deg
    context_views: tuple[int, int] = TrainConfig.context_views
    tail_pool: float = BodyVAEConfig.tail_pool


def _weighted(shapes: torch.Tensor, views: int, seed: int, cfg: ProofConfig, pose_range) -> tuple[torch.Tensor, torch.Tensor]:
    """(N * views, 3, S, S) weighted images and keypoints, identity-major order."""
    data = synthetic.make_views(shapes, views, seed, synthetic.RenderSettings(size=cfg.render_size, pose_range=pose_range))
    w, _ = apply_weighting(data.images, data.keypoints, sigma=cfg.sigma, alpha=cfg.alpha)
    return w, data.keypoints


def _encode_groups(model: BodyVAE, images: torch.Tensor, keypoints: torch.Tensor, ids: int, per_id: int, group: int) -> torch.Tensor:
    """Body-ID means of consecutive groups of ``group`` views of each identity -> (ids, per_id, D)."""
    out = []
    for i in range(ids):
        row = []
        for q in range(per_id):
            s = (i * per_id + q) * group
            mean, _ = model.encode_views(images[s:s + group], keypoints[s:s + group])
            row.append(mean)
        out.append(torch.stack(row))
    return torch.stack(out)


def retrieval_top1(gallery: torch.Tensor, queries: torch.Tensor) -> float:
    """gallery (N, D), queries (N, Q, D) whose true identity is their first index -> top-1 accuracy."""
    n, q, d = queries.shape
    dist = torch.cdist(queries.reshape(n * q, d), gallery)          # (N*Q, N)
    truth = torch.arange(n).repeat_interleave(q)
    return float((dist.argmin(1) == truth).float().mean())


def evaluate(model: BodyVAE, shapes: torch.Tensor, cfg: ProofConfig, seed: int) -> dict[str, float]:
    """Top-1 retrieval accuracy for multi-view and single-view queries, seen and held-out pose ranges."""
    n = shapes.shape[0]
    model.eval()
    g_img, g_kp = _weighted(shapes, cfg.gallery_views, seed + 11, cfg, TRAIN_POSES)
    gallery = _encode_groups(model, g_img, g_kp, n, 1, cfg.gallery_views)[:, 0]    # (N, D)
    res = {}
    for name, rng, k in (("multi_view", TRAIN_POSES, cfg.query_views), ("single_view", TRAIN_POSES, 1),
                         ("held_out_poses_multi_view", HELD_OUT_POSES, cfg.query_views),
                         ("held_out_poses_single_view", HELD_OUT_POSES, 1)):
        img, kp = _weighted(shapes, cfg.queries_per_id * k, seed + 23 + len(res), cfg, rng)
        queries = _encode_groups(model, img, kp, n, cfg.queries_per_id, k)             # (N, Q, D)
        res[name] = retrieval_top1(gallery, queries)
    return res


def run_proof(cfg: ProofConfig = ProofConfig(), checkpoint_dir=None) -> dict:
    """Train on procedural identities, evaluate retrieval; returns the figures and timings."""
    t0, c0 = time.time(), time.process_time()
    shapes = synthetic.random_shapes(cfg.ids, cfg.seed)
    vae_cfg = BodyVAEConfig(input_size=cfg.size, latent_dim=cfg.latent_dim, widths=cfg.widths, feature_dim=cfg.feature_dim,
                            beta=cfg.beta, tail_pool=cfg.tail_pool)
    data = synthetic_viewset(cfg.ids, cfg.train_views, vae_cfg, cfg.seed, pose_range=TRAIN_POSES, shapes=shapes,
                             render_size=cfg.render_size, sigma=cfg.sigma, alpha=cfg.alpha)
    t_data = time.time() - t0
    train_cfg = TrainConfig(steps=cfg.steps, batch_persons=cfg.batch_persons, lr=cfg.lr, warmup=min(50, cfg.steps // 10 + 1),
                            seed=cfg.seed, log_every=50, checkpoint_every=10 ** 9, contrast_weight=cfg.contrast_weight,
                            contrast_temperature=cfg.contrast_temperature,
                            view_contrast_weight=cfg.view_contrast_weight, image_dropout=cfg.image_dropout,
                            foreshorten_prob=cfg.foreshorten_prob,
                            foreshorten_max_deg=cfg.foreshorten_max_deg,
                            context_views=tuple(cfg.context_views))
    model, history = train_body_vae(vae_cfg, train_cfg, data, checkpoint_dir=checkpoint_dir, time_limit_s=cfg.time_limit_s)
    t_train = time.time() - t0 - t_data
    figures = evaluate(model, shapes, cfg, cfg.seed + 1000)
    return {**figures, "chance": 1.0 / cfg.ids, "steps": len(history), "final_loss": history[-1]["loss"],
            "seconds_data": t_data, "seconds_train": t_train, "seconds_total": time.time() - t0,
            "cpu_seconds_total": time.process_time() - c0, "model": model}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ids", type=int, default=ProofConfig.ids)
    p.add_argument("--steps", type=int, default=ProofConfig.steps)
    p.add_argument("--time-limit", type=float, default=ProofConfig.time_limit_s)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a machine shared with other jobs, 1 thread beats 2: no spinning OpenMP workers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=ProofConfig.beta)
    p.add_argument("--view-contrast", type=float, default=ProofConfig.view_contrast_weight, help="weight of the per-view identity term")
    p.add_argument("--image-dropout", type=float, default=ProofConfig.image_dropout, help="image-branch dropout per view in training")
    p.add_argument("--foreshorten-max-deg", type=float, default=ProofConfig.foreshorten_max_deg,
                   help="largest out-of-plane turn of a limb bone in the keypoint augmentation")
    p.add_argument("--train-views", type=int, default=ProofConfig.train_views, help="views rendered per identity for training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    res = run_proof(ProofConfig(ids=args.ids, steps=args.steps, time_limit_s=args.time_limit, seed=args.seed, beta=args.beta,
                                 train_views=args.train_views, view_contrast_weight=args.view_contrast,
                                 image_dropout=args.image_dropout, foreshorten_max_deg=args.foreshorten_max_deg))
    chance = res["chance"]
    lines = [f"Body-ID learning proof: {args.ids} procedural identities, {args.threads} CPU threads",
             f"trained {res['steps']} steps in {res['seconds_train']:.0f} s (data {res['seconds_data']:.0f} s, total wall {res['seconds_total']:.0f} s, "
             f"process CPU {res['cpu_seconds_total']:.0f} s = {res['cpu_seconds_total'] / args.threads:.0f} s on {args.threads} busy cores)"]
    for k in ("multi_view", "single_view", "held_out_poses_multi_view", "held_out_poses_single_view"):
        lines.append(f"  top-1 {k:28s} {100 * res[k]:5.1f} %   ({res[k] / chance:.1f}x chance {100 * chance:.0f} %)")
    log.info("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
