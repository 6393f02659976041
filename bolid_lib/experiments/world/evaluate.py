"""Evaluation of generated images with the independent classifiers, and the run's figures (JSON, plot, grid).

Every generated image is sampled from the frozen base with the adapter's body branch at lambda_body, decoded by the
world's latent map, and judged by classifiers trained on ground-truth renders only. Sample seeds depend on
(identity, pose, k) and not on lambda_body, so every lambda_body sees the same starting noise.
"""

from __future__ import annotations

import logging

import torch

from ...evaluation import metrics
from . import nets, render
from .latent import round_trip, to_image
from .sample import Sampler
from .text import TrainerText, prompt_for

log = logging.getLogger("bolid")


@torch.no_grad()
def keypoint_error(net, images: torch.Tensor, keypoints: torch.Tensor) -> float:
    pred = net.keypoints(images.to(_device(net))).cpu()
    return float((pred[..., :2] - keypoints[..., :2]).norm(dim=-1).mean())


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def retrieval(gallery: torch.Tensor, queries: torch.Tensor, ids: int) -> float:
    """Top-1 of identity-major queries (ids * Q, D) against the gallery (ids, D)."""
    truth = torch.arange(ids).repeat_interleave(queries.shape[0] // ids)
    return float((torch.cdist(queries, gallery).argmin(1) == truth).float().mean())


def plan(world, ids: list[int]) -> list[tuple[int, int, int]]:
    """(identity, pose, k) of every sample of these identities."""
    return [(i, p, k) for i in ids for p in range(len(render.POSES)) for k in range(world.cfg.eval_seeds)]


def sample_seed(world, i: int, p: int, k: int) -> int:
    return world.cfg.seed * 1_000_000 + i * 1000 + p * 10 + k


@torch.no_grad()
def generate(world, sampler: Sampler, rows: list[tuple[int, int, int]], body: torch.Tensor | None, lam: float,
             chunk: int = 24) -> torch.Tensor:
    """Images (B, 3, S, S) for the planned rows; body (B, D) per row or None."""
    out = []
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        lat = sampler([prompt_for(p) for _, p, _ in part], [sample_seed(world, *r) for r in part],
                      None if body is None else body[s:s + chunk], lam, world.cfg.sample_steps, world.cfg.cfg_scale,
                      body_guidance=world.cfg.body_guidance)
        out.append(to_image(lat, world.latent_map))
    return torch.cat(out)


def wilson(hits: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion hits / n."""
    if n == 0:
        return [0.0, 1.0]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


@torch.no_grad()
def judge(world, images: torch.Tensor, rows: list[tuple[int, int, int]]) -> dict[str, float]:
    ids = torch.tensor([r[0] for r in rows])
    poses = torch.tensor([r[1] for r in rows])
    images = images.to(_device(world.id_clf))
    id_pred = world.id_clf(images).argmax(1).cpu()
    id_hits = int((id_pred == ids).sum())
    pose_hits = int((world.pose_clf(images).argmax(1).cpu() == poses).sum())
    n = len(rows)
    # how the samples spread over the world's people: a base drawn to a few "average" bodies piles them on a few
    counts = torch.bincount(id_pred, minlength=world.cfg.ids)
    return {"identity_top1": id_hits / n, "identity_ci95": wilson(id_hits, n), "pose_accuracy": pose_hits / n,
            "pose_ci95": wilson(pose_hits, n), "n": n, "identities_predicted": int((counts > 0).sum()),
            "most_predicted_share": float(counts.max()) / n}


def quality(world, images: torch.Tensor) -> dict[str, float]:
    """FID against held-out ground-truth renders and IS, both on the identity classifier's features / logits (the
    world's stand-in for Inception, whose weights cannot be had here). FID depends on the number of images: the run
    reports it for as many fresh ground-truth renders too, the floor a perfect generator would reach."""
    dev = _device(world.id_clf)
    with torch.no_grad():
        real = world.id_clf.features(world.real_test.to(dev)).cpu()
        gen = world.id_clf.features(images.to(dev)).cpu()
        logits = world.id_clf(images.to(dev)).cpu()
    is_mean, is_std = metrics.inception_score(logits, splits=min(10, images.shape[0]))
    return {"fid": metrics.fid(real, gen), "is": is_mean, "is_std": is_std}


def sweep(world, tag: str, lambdas, groups: dict[str, list[int]], draw) -> tuple[dict, dict]:
    """The lambda_body sweep: ``draw(ids, lam) -> (images, judged)`` for each lambda_body and group, the figures
    saved after each lambda_body (a long evaluation shows its progress). Returns ({"lambda_sweep": ...}, images by
    (lambda_body, group))."""
    res: dict = {"lambda_sweep": {}}
    keep = {}
    for lam in lambdas:
        row = {}
        for name, ids in groups.items():
            keep[(lam, name)], row[name] = draw(ids, lam)
        res["lambda_sweep"][str(lam)] = row
        log.info("%s lambda_body %.2f: %s", tag, lam, row)
        world.figures[tag] = res
        world.save_figures()
    return res, keep


def quality_of_sweep(world, res: dict, keep: dict, groups: dict, base: torch.Tensor) -> None:
    """FID / IS of the base alone and of the sweep's images at lambda_body 0 and 1 (every group), against as many
    fresh ground-truth renders, into res["quality"]; and how far lambda_body 0 is from the base alone."""
    every = {lam: torch.cat([keep[(lam, name)] for name in groups]) for lam in (0.0, 1.0)}
    truth = round_trip(world.views(world.cfg.eval_seeds * len(render.POSES), 9)["images"], world.latent_map)[:len(base)]
    res["quality"] = {"ground_truth_renders": quality(world, truth), "base_alone": quality(world, base),
                      **{f"lambda_{lam}": quality(world, every[lam]) for lam in (0.0, 1.0)}}
    res["base_alone_vs_lambda_0_max_abs_diff"] = float((base - every[0.0]).abs().max())


def run_all(world, adapter, tag: str, lambdas=None) -> None:
    """Identity / pose accuracy per lambda_body (adapter identities and held-out ones apart), the image-referenced mode,
    FID / IS with the branch off and on; figures into ``world.figures[tag]``. World v2: ``run_all_v2``."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    if world.cfg.v2:
        return run_all_v2(world, adapter, tag, lambdas)

    cfg = world.cfg
    lambdas = tuple(lambdas or cfg.lambdas)
    # a world with no held-out people (the in-suite preset) has no such group: nothing to sample or judge there
    groups = {name: ids for name, ids in (("adapter_ids", world.train_ids), ("held_out_ids", world.held_ids)) if ids}
    with_quality = {0.0, 1.0} <= set(lambdas)                 # FID / IS: base alone, branch off and on
    if with_quality:
        world.unet.set_attn_processor(AttnProcessor2_0())      # the base alone: diffusers' own attention everywhere
        plain = Sampler(world.unet, TrainerText(world.text), nets.scheduler(), cfg.size)
        base = torch.cat([generate(world, plain, plan(world, ids), None, 0.0) for ids in groups.values()])
    sampler = Sampler(world.unet, TrainerText(world.text), nets.scheduler(), cfg.size, adapter)   # BoLID's processors
    def draw(ids: list[int], lam: float):
        rows = plan(world, ids)
        images = generate(world, sampler, rows, world.gallery[torch.tensor([r[0] for r in rows])], lam)
        return images, judge(world, images, rows)

    res, keep = sweep(world, tag, lambdas, groups, draw)
    res["image_referenced"] = {}
    for name, ids in groups.items():
        rows = plan(world, ids)
        per = len(render.POSES) * cfg.eval_seeds
        body = torch.stack([world.single[i * per + p * cfg.eval_seeds + k] for i, p, k in rows])
        res["image_referenced"][name] = judge(world, generate(world, sampler, rows, body, 1.0), rows)
    log.info("%s image-referenced (one view): %s", tag, res["image_referenced"])
    if with_quality:
        quality_of_sweep(world, res, keep, groups, base)
        world.samples = {lam: keep[(lam, "adapter_ids")] for lam in (0.0, 1.0)}
    world.figures[tag] = res
    world.save_figures()


def figures_out(world) -> None:
    """world_lambda_sweep.png (identity and pose accuracy against lambda_body) and world_samples.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = world.figures["main"]["lambda_sweep"]
    lams = sorted(float(k) for k in sweep)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6))
    present = next(iter(sweep.values()))
    for name, style in (("adapter_ids", "-o"), ("held_out_ids", "--s")):
        if name not in present:
            continue
        ident = [100 * sweep[str(l)][name]["identity_top1"] for l in lams]
        prompt = [100 * sweep[str(l)][name]["pose_accuracy"] for l in lams]
        ax.plot(lams, ident, style, label=f"identity top-1 ({name})")
        ax.plot(lams, prompt, style, alpha=0.5, label=f"prompt accuracy ({name})")
        if "swap_test" in present[name]:
            ax.plot(lams, [100 * sweep[str(l)][name]["swap_test"] for l in lams], style, alpha=0.7, label=f"swap test ({name})")
        bx.plot(prompt, ident, style, label=name)
        for l, x, y in zip(lams, prompt, ident):
            bx.annotate(f"λ={l:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for a in (ax, bx):
        chance = next(iter(present.values())).get("chance", 1 / world.cfg.ids)
        a.axhline(100 * chance, color="grey", lw=0.8, ls=":", label="chance (identity)")
        a.set_ylim(0, 102)
    ax.set_xlabel("λ_body")
    ax.set_ylabel("% of generated images")
    ax.legend(fontsize=6)
    bx.set_xlabel("prompt (pose) accuracy, %")
    bx.set_ylabel("identity top-1, %")
    bx.set_title("identity against prompt, one point per λ_body", fontsize=8)
    bx.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(world.out / "world_lambda_sweep.png", dpi=130)
    plt.close(fig)
    if getattr(world, "samples", None):
        save_grid_v2(world) if world.cfg.v2 else save_grid(world)


def save_grid(world) -> None:
    """Rows: adapter identities; columns: a ground-truth view, then per prompt the sample at lambda_body 0 and 1."""
    from PIL import Image

    cfg = world.cfg
    ids = world.train_ids
    gt = world.views(1, 8, ids)["images"]
    per = len(render.POSES) * cfg.eval_seeds
    cells = []
    for j, i in enumerate(ids):
        row = [gt[j]]
        for p in range(len(render.POSES)):
            for lam in (0.0, 1.0):
                row.append(world.samples[lam][j * per + p * cfg.eval_seeds])
        cells.append(torch.cat(row, dim=2))
    grid = torch.cat(cells, dim=1)
    arr = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    img = Image.fromarray(arr)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(world.out / "world_samples.png")


def probe(world, adapter, lambdas=(0.0, 1.5), seeds: int = 6, probe_steps: int = 500) -> dict:
    """Is the identity in the generated images, whether or not the ground-truth judge reads it? For each lambda_body:
    ``seeds`` samples per (adapter identity, pose); the judge's top-1; a linear probe on the judge's features fitted on
    the samples of the first half of the seeds and tested on the rest (the only place a generated image is fitted,
    and only for this diagnosis); and the nearest identity centroid of ground-truth renders in those features.
    A probe far above the judge would say the judge misses an identity the samples carry."""
    cfg = world.cfg
    sampler = Sampler(world.unet, TrainerText(world.text), nets.scheduler(), cfg.size, adapter)
    rows = [(i, p, k) for i in world.train_ids for p in range(len(render.POSES)) for k in range(seeds)]
    ids = torch.tensor([r[0] for r in rows])
    fit_rows = torch.tensor([r[2] for r in rows]) < seeds // 2
    gt = world.views(20, 77, world.train_ids)
    dev = _device(world.id_clf)
    with torch.no_grad():
        gt_f = world.id_clf.features(round_trip(gt["images"], world.latent_map).to(dev)).cpu()
    train = torch.tensor(world.train_ids)
    centroids = torch.stack([gt_f[gt["person"] == i].mean(0) for i in world.train_ids])
    out = {"seeds": seeds, "n": len(rows), "chance_among_adapter_ids": 1 / len(world.train_ids)}
    for lam in lambdas:
        images = generate(world, sampler, rows, world.gallery[ids], lam)
        with torch.no_grad():
            feats = world.id_clf.features(images.to(dev))
            judge_top1 = float((world.id_clf.out(feats).argmax(1).cpu() == ids).float().mean())
            f = feats.cpu()
        mu, sd = f[fit_rows].mean(0), f[fit_rows].std(0) + 1e-4
        z = (f - mu) / sd
        g = torch.Generator().manual_seed(cfg.seed)
        lin = torch.nn.Linear(z.shape[1], len(world.train_ids))
        with torch.no_grad():
            lin.weight.copy_(0.01 * torch.randn(lin.weight.shape, generator=g))
            lin.bias.zero_()
        target = torch.searchsorted(train, ids)            # identity -> its index among the adapter identities
        opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-3)
        with torch.enable_grad():
            for _ in range(probe_steps):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(lin(z[fit_rows]), target[fit_rows]).backward()
                opt.step()
        with torch.no_grad():
            linear = float((lin(z[~fit_rows]).argmax(1) == target[~fit_rows]).float().mean())
        nearest = float((train[torch.cdist(f, centroids).argmin(1)] == ids).float().mean())
        out[str(lam)] = {"judge_top1": judge_top1, "linear_probe_top1": linear, "nearest_ground_truth_centroid": nearest}
        log.info("probe lambda_body %.2f: %s", lam, out[str(lam)])
    return out


# --- world v2: the prompt names the clothes; zero-shot people; the swap test -------------------------------------

def top1_among(model, images: torch.Tensor, labels: torch.Tensor, ids: list[int]) -> float:
    """Top-1 of the identity judge on the images of ``ids``' people, among ``ids`` only (its logits of the other
    people ignored)."""
    from .fit import predict

    ids_t = torch.tensor(ids)
    mine = torch.isin(labels, ids_t)                    # the images of the group's own people only
    logits = predict(model, images[mine])[:, ids]
    truth = torch.searchsorted(ids_t, labels[mine])
    return float((logits.argmax(1) == truth).float().mean())


def r2(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Coefficient of determination (B, P) against (B, P), averaged over the P columns."""
    sse = (pred - truth).pow(2).sum(0)
    sst = (truth - truth.mean(0)).pow(2).sum(0).clamp(min=1e-12)
    return float((1 - sse / sst).mean())


def scenes(world) -> list[tuple[int, int, int, int]]:
    """(pose, top, bottom, seed) of the evaluation's scenes: every judged person is drawn in each, from the same
    starting noise, so two people's images of one scene differ only by their Body-IDs (the swap test's pairs)."""
    cfg = world.cfg
    n = cfg.eval_seeds * len(render.POSES)
    top, bottom = render.random_colours(n, torch.Generator().manual_seed(cfg.seed * 17 + 5))
    return [(j % len(render.POSES), int(top[j]), int(bottom[j]), cfg.seed * 1_000_000 + 700_000 + j) for j in range(n)]


@torch.no_grad()
def generate_scenes(world, sampler: Sampler, ids: list[int], body: torch.Tensor | None, lam: float,
                    chunk: int = 24) -> torch.Tensor:
    """Images (len(ids) * scenes, 3, S, S), person-major; body (len(ids) * scenes, D) per row or None."""
    cfg, sc = world.cfg, scenes(world)
    rows = [(i, j) for i in ids for j in range(len(sc))]
    out = []
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        lat = sampler([prompt_for(*sc[j][:3]) for _, j in part], [sc[j][3] for _, j in part],
                      None if body is None else body[s:s + chunk], lam, cfg.sample_steps, cfg.cfg_scale,
                      body_guidance=cfg.body_guidance)
        out.append(to_image(lat, world.latent_map))
    return torch.cat(out)


def _bootstrap(values: torch.Tensor, seed: int, draws: int = 2000) -> list[float]:
    """95% percentile interval of the mean of ``values`` (N, ...) resampled along dim 0 (whole rows: an image's
    comparisons stay together, since they share the image)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.shape[0], (draws, values.shape[0]), generator=g)
    means = values.float().reshape(values.shape[0], -1).mean(1)[idx].mean(1)
    return [round(float(means.quantile(0.025)), 4), round(float(means.quantile(0.975)), 4)]


@torch.no_grad()
def judge_scenes(world, images: torch.Tensor, ids: list[int]) -> dict:
    """The judges on person-major images of ``ids`` x scenes: identity top-1 among ``ids``; the swap test (each image
    against every other person of ``ids`` drawn in the same scene: does it land nearer its own person, by the
    identity judge's logits and by the shape regressor's distance); the shape regressor's R^2 against the true
    shapes of the people whose Body-IDs were given; pose and colour accuracy of the prompt."""
    from .fit import predict

    sc = scenes(world)
    n_p, n_s = len(ids), len(sc)
    logits = predict(world.id_clf, images)[:, ids].reshape(n_p, n_s, n_p)          # (person, scene, judged as)
    own = torch.arange(n_p)
    top1 = logits.argmax(-1) == own[:, None]                                        # (P, S)
    # swap: image of a in scene s, against person b != a: logit_a > logit_b
    diag = logits[own, :, own]                                                      # (P, S)
    swap = diag[:, :, None] > logits                                                # (P, S, P)
    off = ~torch.eye(n_p, dtype=torch.bool)[:, None, :].expand(n_p, n_s, n_p)
    swap_rows = torch.stack([swap[a, s][off[a, s]] for a in range(n_p) for s in range(n_s)])   # (P*S, P-1)
    truth = render.unit_shapes(world.shapes[ids])                                    # (P, 12)
    shape = predict(world.shape_reg, images).reshape(n_p, n_s, -1)
    dist = (shape[:, :, None, :] - truth[None, None]).norm(dim=-1)                   # (P, S, P)
    shape_swap = dist[own, :, own][:, :, None] < dist
    shape_rows = torch.stack([shape_swap[a, s][off[a, s]] for a in range(n_p) for s in range(n_s)])
    pose = torch.tensor([p for p, _, _, _ in sc]).repeat(n_p)
    top = torch.tensor([t for _, t, _, _ in sc]).repeat(n_p)
    bottom = torch.tensor([b for _, _, b, _ in sc]).repeat(n_p)
    n = n_p * n_s
    hits = {"pose": predict(world.pose_clf, images).argmax(1) == pose,
            "top_colour": predict(world.top_clf, images).argmax(1) == top,
            "bottom_colour": predict(world.bottom_clf, images).argmax(1) == bottom}
    seed = world.cfg.seed
    out = {"n": n, "people": n_p, "scenes": n_s, "chance": 1 / n_p,
           "identity_top1": float(top1.float().mean()), "identity_ci95": wilson(int(top1.sum()), n),
           "swap_test": float(swap_rows.float().mean()), "swap_ci95": _bootstrap(swap_rows, seed),
           "swap_pairs": n_p * (n_p - 1) // 2 * n_s,
           "swap_test_shape": float(shape_rows.float().mean()), "swap_shape_ci95": _bootstrap(shape_rows, seed + 1),
           "shape_r2": r2(shape.reshape(n, -1), truth.repeat_interleave(n_s, 0)),
           "identities_predicted": int(torch.unique(logits.argmax(-1)).numel())}
    for k, h in hits.items():
        out[f"{k}_accuracy"] = float(h.float().mean())
        out[f"{k}_ci95"] = wilson(int(h.sum()), n)
    return out


def run_all_v2(world, adapter, tag: str, lambdas=None) -> None:
    """World v2's figures into ``world.figures[tag]``: per lambda_body and group (the adapter's people, the zero-shot
    people), identity top-1 among the group, the swap test, shape R^2, prompt control; the image-referenced mode (a
    Body-ID from one view in unnamed colours); FID / IS with the identity judge's features."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    cfg = world.cfg
    lambdas = tuple(lambdas or cfg.lambdas)
    groups = {name: ids for name, ids in (("held_out_ids", world.held_ids), ("adapter_ids", world.train_ids)) if ids}
    n_s = len(scenes(world))
    with_quality = {0.0, 1.0} <= set(lambdas)
    if with_quality:
        world.unet.set_attn_processor(AttnProcessor2_0())      # the base alone: diffusers' own attention everywhere
        plain = Sampler(world.unet, TrainerText(world.text), nets.scheduler(), cfg.size)
        base = torch.cat([generate_scenes(world, plain, ids, None, 0.0) for ids in groups.values()])
    sampler = Sampler(world.unet, TrainerText(world.text), nets.scheduler(), cfg.size, adapter)
    def draw(ids: list[int], lam: float):
        images = generate_scenes(world, sampler, ids, world.gallery[torch.tensor(ids)].repeat_interleave(n_s, 0), lam)
        return images, judge_scenes(world, images, ids)

    res, keep = sweep(world, tag, lambdas, groups, draw)
    res["image_referenced"] = {}
    per = cfg.eval_seeds * len(render.POSES)
    for name, ids in groups.items():
        body = torch.stack([world.single[i * per + j] for i in ids for j in range(n_s)])
        res["image_referenced"][name] = judge_scenes(world, generate_scenes(world, sampler, ids, body, 1.0), ids)
    log.info("%s image-referenced (one view): %s", tag, res["image_referenced"])
    if with_quality:
        quality_of_sweep(world, res, keep, groups, base)
        world.samples = {lam: keep[(lam, "held_out_ids")] for lam in (0.0, 1.0) if (lam, "held_out_ids") in keep}
    world.figures[tag] = res
    world.save_figures()


def save_grid_v2(world, people: int = 8) -> None:
    """Rows: zero-shot people; columns: a view their Body-ID is encoded from (unnamed colours), then per scene the
    sample at lambda_body 0 and 1 (the same prompt and noise down each column pair)."""
    from PIL import Image

    ids = world.held_ids[:people]
    ref = world.views(1, 8, ids, ref=True)["images"]
    n_s = len(scenes(world))
    cells = []
    for j in range(len(ids)):
        row = [ref[j]]
        for s in range(min(n_s, 6)):
            for lam in (0.0, 1.0):
                row.append(world.samples[lam][j * n_s + s])
        cells.append(torch.cat(row, dim=2))
    grid = torch.cat(cells, dim=1)
    arr = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    img = Image.fromarray(arr)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(world.out / "world_samples.png")
