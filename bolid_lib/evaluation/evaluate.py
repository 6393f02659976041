"""Evaluate generated images: FID and IS (paper section 5), body fidelity, CLIP-T and CLIP-I.

``python -m bolid_lib.evaluation --real DIR --generated DIR [--references DIR] [--prompts FILE] [--inception PATH]
[--clip PATH] [--pose PATH] [--runs DIR ...] --out DIR``

Writes ``eval_report.json``, ``eval_report.md`` (a table, one row per run) and ``eval_plot.png`` (one bar
chart per metric; with several runs that carry a λ_body, also FID and body distance against λ_body) into --out.

Runs. ``--generated DIR`` is one run, each ``--runs DIR`` another; all are compared with the same real
images, references and prompts. A run's λ_body comes from, in this order: a ``bolid_run.json`` file in the
run folder (``{"lambda_body": 0.6, "name": "optional label"}``; the older key ``lambda_body`` is read too), or the
folder name: ``lb0.6``, ``lb_0.6``, ``lambda_body=0.6``, ``lambda_b=0.6``, ``lambda-b-0.6`` (case-insensitive; e.g. ``sdxl_lb0.8_seed1``). A run without
either has no λ_body and is left out of the λ_body plot (the bars still show it).

Pairing. ``--references``: one image serves every generated image; otherwise each generated image is
paired with the reference of the same file stem, or else the longest reference stem it starts with
followed by ``_``, ``-`` or ``.`` (``alice_003.png`` -> ``alice.jpg``). An unpaired image is an error.
``--prompts``: a ``.json`` object ``{"file name or stem": "prompt", "*": "default"}``, or a ``.txt``
with one line (the prompt of every image) or one line per generated image in sorted file-name order.

Which metrics: FID and IS need ``--inception`` (or ``--no-fid`` to leave them out); body fidelity needs
``--pose`` and ``--references``; CLIP-T needs ``--clip`` and ``--prompts``; CLIP-I ``--clip`` and
``--references``. A metric without its inputs is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import BoLIDError
from . import metrics as M

log = logging.getLogger("bolid")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RUN_FILE = "bolid_run.json"
REPORT_JSON, REPORT_MD, REPORT_PNG = "eval_report.json", "eval_report.md", "eval_plot.png"
_LAMBDA_RE = re.compile(r"(?:^|[^a-z0-9])(?:lambda[_-]?body|lambda[_-]?b|lb)[=_-]?(\d+(?:\.\d+)?)(?![\d.])", re.IGNORECASE)

# images (B, 3, H, W) float [0, 1] -> (pool (B, D), logits (B, C))
FeatureFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# one image (1, 3, H, W) float [0, 1] -> PoseBatch of one
PoseFn = Callable[[torch.Tensor], "object"]
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class Run:
    name: str
    folder: Path
    lambda_body: float | None


def lambda_body_from_name(name: str) -> float | None:
    """λ_body written in a folder name (``lb0.6``, ``lambda_body=0.6``, ``lambda_b=0.6`` ...), or None."""
    m = _LAMBDA_RE.search(name)
    return float(m.group(1)) if m else None


def make_run(folder: str | os.PathLike) -> Run:
    folder = Path(folder)
    list_images(folder, "generated")
    info_file = folder / RUN_FILE
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text())
            lam = info.get("lambda_body", info.get("lambda_b"))
            lam = None if lam is None else float(lam)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise BoLIDError(f"{info_file} is not a JSON object like {{\"lambda_body\": 0.6}} ({e})") from e
        return Run(str(info.get("name") or folder.name), folder, lam)
    return Run(folder.name, folder, lambda_body_from_name(folder.name))


def list_images(folder: str | os.PathLike, what: str) -> list[Path]:
    """Image files directly in ``folder`` sorted by name; an error when the folder is absent or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BoLIDError(f"the {what} folder {folder} does not exist: check the path")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise BoLIDError(f"the {what} folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1], RGB, EXIF orientation applied: the one photo reader's (``data.photos``)."""
    from ..data.photos import read_image as read_photo

    try:
        return read_photo(path)
    except BoLIDError as e:
        raise BoLIDError(f"{path} cannot be read as an image ({e}): remove it or replace it") from e


def pair_references(generated: Sequence[Path], references: Sequence[Path]) -> list[Path]:
    """The reference of each generated image (see the module docstring for the rule)."""
    if len(references) == 1:
        return [references[0]] * len(generated)
    by_stem = {r.stem: r for r in references}
    pairs, unpaired = [], []
    for g in generated:
        ref = by_stem.get(g.stem)
        if ref is None:
            prefixes = [s for s in by_stem if any(g.stem.startswith(s + sep) for sep in "_-.")]
            ref = by_stem[max(prefixes, key=len)] if prefixes else None
        if ref is None:
            unpaired.append(g.name)
        pairs.append(ref)
    if unpaired:
        raise BoLIDError(f"{len(unpaired)} generated image(s) have no reference ({', '.join(unpaired[:5])}"
                         f"{' ...' if len(unpaired) > 5 else ''}): name them after a reference (alice.jpg -> "
                         "alice_001.png), or give a references folder holding one image")
    return pairs


def read_prompts(path: str | os.PathLike, generated: Sequence[Path]) -> list[str]:
    """The prompt of each generated image from a .json mapping or a .txt file (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise BoLIDError(f"prompts file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BoLIDError(f"{path} is not valid JSON ({e})") from e
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise BoLIDError(f"{path} must be a JSON object of file name (or stem) -> prompt text")
        out, missing = [], []
        for g in generated:
            prompt = table.get(g.name, table.get(g.stem, table.get("*")))
            if prompt is None:
                missing.append(g.name)
            out.append(prompt)
        if missing:
            raise BoLIDError(f"{path} has no prompt for {', '.join(missing[:5])}: add them or a \"*\" default")
        return out
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) == 1:
        return lines * len(generated)
    if len(lines) != len(generated):
        raise BoLIDError(f"{path} has {len(lines)} prompt lines for {len(generated)} generated images: give one "
                         "line for all, one per image (sorted by file name), or a .json mapping")
    return lines


def _same_size_groups(images: list[torch.Tensor]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, im in enumerate(images):
        if groups and images[groups[-1][0]].shape == im.shape:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _nanmean(values: list[float]) -> float | None:
    good = [v for v in values if v is not None and not math.isnan(v)]
    return sum(good) / len(good) if good else None


def _skipped_metrics(features: FeatureFn | None, pose: PoseFn | None, clip: M.ClipScorer | None,
                     prompts: str | os.PathLike | None, have_references: bool) -> dict[str, str]:
    """Metric -> why it is left out, for each metric whose inputs were not given."""
    skipped: dict[str, str] = {}
    if features is None:
        skipped["fid"] = skipped["is"] = "no Inception network (--inception) given"
    if pose is None or not have_references:
        skipped["body_fidelity"] = "needs --pose and --references"
    if clip is None or prompts is None:
        skipped["clip_t"] = "needs --clip and --prompts"
    if clip is None or not have_references:
        skipped["clip_i"] = "needs --clip and --references"
    return skipped


class _Scorers:
    """The networks of one evaluation and the per-image metrics they compute. Each reference image is read,
    posed and embedded once, however many generated images (of however many runs) it serves."""

    def __init__(self, features: FeatureFn | None, pose: PoseFn | None, clip: M.ClipScorer | None,
                 skipped: dict[str, str], batch_size: int):
        self.features, self.pose, self.clip, self.batch_size = features, pose, clip, batch_size
        self.body = "body_fidelity" not in skipped
        self.clip_t, self.clip_i = "clip_t" not in skipped, "clip_i" not in skipped
        self._references: dict[Path, tuple[torch.Tensor, object, torch.Tensor | None]] = {}

    def reference(self, path: Path) -> tuple[torch.Tensor, object, torch.Tensor | None]:
        """(image (3, H, W), its PoseBatch or None, its CLIP embedding (1, D) or None)."""
        if path not in self._references:
            image = read_image(path)
            ref_pose = self.pose(image[None]) if self.body else None
            ref_emb = self.clip.image_embeds([image]) if self.clip_i else None
            self._references[path] = (image, ref_pose, ref_emb)
        return self._references[path]

    def score(self, files: Sequence[Path], refs: Sequence[Path | None], texts: Sequence[str | None],
              rows: list[dict], update: Callable[[int], None]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fill each image's row with its clip_t, clip_i and body_distance; return the Inception pools (b, D)
        and logits (b, C) of every same-size group, in file order (empty lists without a feature network)."""
        pools, logits = [], []
        for start in range(0, len(files), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(files))))
            images = [read_image(files[i]) for i in chunk]
            if self.features is not None:
                for group in _same_size_groups(images):
                    p, lg = self.features(torch.stack([images[i] for i in group]))
                    pools.append(p.float().cpu())
                    logits.append(lg.float().cpu())
            if self.clip_t or self.clip_i:
                emb = self.clip.image_embeds(images)
                if self.clip_t:
                    t = (emb * self.clip.text_embeds([texts[i] for i in chunk])).sum(-1)
                    for i, v in zip(chunk, t.tolist()):
                        rows[i]["clip_t"] = v
                if self.clip_i:
                    r = torch.cat([self.reference(refs[i])[2] for i in chunk])
                    for i, v in zip(chunk, (emb * r).sum(-1).tolist()):
                        rows[i]["clip_i"] = v
            if self.body:
                for i, image in zip(chunk, images):
                    d = float(M.keypoint_distance(self.pose(image[None]), self.reference(refs[i])[1])[0])
                    rows[i]["body_distance"] = None if math.isnan(d) else d
            update(chunk[-1] + 1)
        return pools, logits


def _fid_and_is(real_pool: torch.Tensor, gen_pool: torch.Tensor, gen_logits: torch.Tensor, is_splits: int) -> dict:
    """A run's FID against the real pools (N, D) and its Inception Score from its logits (B, C)."""
    entry: dict = {"fid": M.fid(real_pool, gen_pool) if len(gen_pool) >= 2 else None}
    splits = min(is_splits, len(gen_logits))
    entry["is_mean"], entry["is_std"] = M.inception_score(gen_logits, splits=splits)
    entry["is_splits"] = splits
    if entry["fid"] is None:
        entry["fid_note"] = "FID needs at least 2 generated images"
    return entry


def _evaluate_run(run: Run, ref_files: Sequence[Path], prompts: str | os.PathLike | None, scorers: _Scorers,
                  real_pool: torch.Tensor | None, is_splits: int, bar: ProgressFactory) -> dict:
    """One run's report entry: the run's metrics, then one row per generated image (``per_image``)."""
    gen_files = list_images(run.folder, "generated")
    refs = pair_references(gen_files, ref_files) if ref_files else [None] * len(gen_files)
    texts = read_prompts(prompts, gen_files) if scorers.clip_t else [None] * len(gen_files)
    rows = [{"file": g.name, "reference": r.name if r else None} for g, r in zip(gen_files, refs)]
    entry: dict = {"name": run.name, "folder": str(run.folder), "lambda_body": run.lambda_body, "images": len(gen_files)}
    pools, logits = scorers.score(gen_files, refs, texts, rows, bar(run.name, len(gen_files)))
    if scorers.features is not None:
        entry.update(_fid_and_is(real_pool, torch.cat(pools), torch.cat(logits), is_splits))
    if scorers.body:
        d = [r.get("body_distance") for r in rows]
        entry["body_distance"] = _nanmean(d)
        entry["body_missing"] = sum(v is None for v in d)
    if scorers.clip_t:
        entry["clip_t"] = _nanmean([r["clip_t"] for r in rows])
    if scorers.clip_i:
        entry["clip_i"] = _nanmean([r["clip_i"] for r in rows])
    entry["per_image"] = rows
    return entry


def evaluate(real: str | os.PathLike, runs: Sequence[Run], *, references: str | os.PathLike | None = None,
             prompts: str | os.PathLike | None = None, features: FeatureFn | None = None,
             pose: PoseFn | None = None, clip: M.ClipScorer | None = None, is_splits: int = 10,
             batch_size: int = 8, progress: ProgressFactory | None = None) -> dict:
    """Compute every metric whose inputs are given; returns the report as a dict (see module docstring).

    features: FID/IS network (``metrics.load_inception(...)`` or any images -> (pool, logits) callable).
    pose: one image (1, 3, H, W) -> PoseBatch (body fidelity). clip: a loaded ``ClipScorer``.
    progress(label, total) -> update(done): one bar per folder.
    """
    if not runs:
        raise BoLIDError("no generated images to evaluate: give --generated DIR and/or --runs DIR ...")
    real_files = list_images(real, "real") if features is not None else []
    ref_files = list_images(references, "references") if references is not None else []
    skipped = _skipped_metrics(features, pose, clip, prompts, bool(ref_files))
    scorers = _Scorers(features, pose, clip, skipped, batch_size)

    def bar(label: str, total: int) -> Callable[[int], None]:
        return progress(label, total) if progress is not None else (lambda done: None)

    real_pool = None
    if features is not None:
        real_pool, _ = _extract(real_files, features, batch_size, bar("real", len(real_files)))
    report_runs = [_evaluate_run(run, ref_files, prompts, scorers, real_pool, is_splits, bar) for run in runs]
    return {
        "real": {"folder": str(real), "images": len(real_files)} if features is not None else None,
        "references": str(references) if references else None,
        "prompts": str(prompts) if prompts else None,
        "skipped": skipped,
        "runs": report_runs,
    }


def _extract(files: Sequence[Path], features: FeatureFn, batch_size: int, update) -> tuple[torch.Tensor, torch.Tensor]:
    pools, logits = [], []
    for start in range(0, len(files), batch_size):
        images = [read_image(p) for p in files[start:start + batch_size]]
        for group in _same_size_groups(images):
            p, lg = features(torch.stack([images[i] for i in group]))
            pools.append(p.float().cpu())
            logits.append(lg.float().cpu())
        update(min(start + batch_size, len(files)))
    return torch.cat(pools), torch.cat(logits)


# --- outputs -------------------------------------------------------------------------------------------

METRIC_COLUMNS = (
    ("fid", "FID ↓"), ("is_mean", "IS ↑"), ("body_distance", "body distance ↓"),
    ("clip_t", "CLIP-T ↑"), ("clip_i", "CLIP-I ↑"),
)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(report: dict) -> str:
    cols = [(k, t) for k, t in METRIC_COLUMNS if any(r.get(k) is not None for r in report["runs"])]
    lines = ["# BoLID evaluation", ""]
    if report.get("real"):
        lines.append(f"Real images: {report['real']['images']} from `{report['real']['folder']}`.")
    lines += ["", "| run | λ_body | images | " + " | ".join(t for _, t in cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    for r in report["runs"]:
        cells = [_fmt(r.get(k)) + (f" ± {r['is_std']:.3g}" if k == "is_mean" and (r.get("is_std") or 0) > 1e-9 else "")
                 for k, _ in cols]
        lines.append(f"| {r['name']} | {_fmt(r['lambda_body'])} | {r['images']} | " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items())]
    missing = [(r["name"], r["body_missing"]) for r in report["runs"] if r.get("body_missing")]
    if missing:
        lines += ["", "No person found (left out of the body distance): "
                  + ", ".join(f"{n}: {m} image(s)" for n, m in missing)]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | os.PathLike) -> Path:
    """Per-metric bar charts (one bar per run) and, when 2+ runs carry a λ_body, FID / body distance vs λ_body."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    cols = [(k, t) for k, t in METRIC_COLUMNS if any(r.get(k) is not None for r in runs)]
    with_lambda = sorted((r for r in runs if r.get("lambda_body") is not None), key=lambda r: r["lambda_body"])
    lam_metrics = [(k, t) for k, t in (("fid", "FID"), ("body_distance", "body distance"))
                   if sum(r.get(k) is not None for r in with_lambda) >= 2]
    panels = len(cols) + (1 if lam_metrics else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(3.2 * max(panels, 1), 3.2), squeeze=False)
    axes = axes[0]
    names = [r["name"] for r in runs]
    for ax, (key, title) in zip(axes, cols):
        values = [r.get(key) if r.get(key) is not None else float("nan") for r in runs]
        ax.bar(range(len(runs)), values, color="#4c72b0")
        ax.set_xticks(range(len(runs)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    if lam_metrics:
        ax = axes[len(cols)]
        handles = []
        for i, (key, title) in enumerate(lam_metrics):
            target = ax if i == 0 else ax.twinx()   # FID and the body distance have unrelated scales
            color, style, marker = (("#c44e52", "-", "o"), ("#55a868", "--", "s"))[i]
            pts = [(r["lambda_body"], r[key]) for r in with_lambda if r.get(key) is not None]
            handles += target.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, marker=marker,
                                   color=color, label=title)
            target.set_ylabel(title, fontsize=8, color=color)
            target.tick_params(axis="y", labelsize=7, colors=color)
        ax.legend(handles=handles, fontsize=7, loc="best")
        ax.set_xlabel("λ_body", fontsize=8)
        ax.set_title(" and ".join(t for _, t in lam_metrics) + " vs λ_body", fontsize=9)
    if not cols and not lam_metrics:
        axes[0].text(0.5, 0.5, "no metric computed", ha="center", va="center")
        axes[0].set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "markdown": out / REPORT_MD, "plot": out / REPORT_PNG}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    plot(report, paths["plot"])
    return paths


# --- command line --------------------------------------------------------------------------------------

def _tqdm_factory(label: str, total: int) -> Callable[[int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="img")

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def pose_from_path(path: str | os.PathLike, *, conf: float = 0.25, visibility: float = 0.5, device=None) -> PoseFn:
    """Body-fidelity pose function from a YOLO pose .pt via ``bolid_lib.method.pose.PoseModel``."""
    from ..method.pose import PoseModel

    model = PoseModel.load(str(path), device)
    return lambda image: model.predict(image, conf=conf, visibility=visibility, on_missing="skip")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bolid_lib.evaluation", description=__doc__.split("\n\n")[0],
                                epilog="λ_body of a run: bolid_run.json {\"lambda_body\": x} in its folder, or the "
                                       "folder name (lb0.6, lambda_body=0.6).")
    p.add_argument("--real", required=True, help="folder of real images (FID's reference distribution)")
    p.add_argument("--generated", help="folder of generated images (one run)")
    p.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="more generated folders, one per run")
    p.add_argument("--references", help="reference images for body fidelity and CLIP-I (one, or one per stem)")
    p.add_argument("--prompts", help="prompts for CLIP-T: .json {file: prompt} or .txt (one line, or one per image)")
    p.add_argument("--inception", help=f"FID Inception weights as safetensors (converted from {M.INCEPTION_PTH_NAME})")
    p.add_argument("--no-fid", action="store_true", help="compute neither FID nor IS (no --inception needed)")
    p.add_argument("--fid-features", type=int, default=2048, choices=M.FID_FEATURES,
                   help="Inception layer FID compares: 2048 (standard, the paper) or 768/192/64 (few images)")
    p.add_argument("--clip", help="local Hugging Face CLIP folder (safetensors) for CLIP-T / CLIP-I")
    p.add_argument("--pose", help="YOLO pose .pt for body fidelity")
    p.add_argument("--pose-conf", type=float, default=0.25, help="person detection threshold for body fidelity")
    p.add_argument("--visibility", type=float, default=0.5, help="keypoints below this confidence are not compared")
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (lowered to the image count when larger)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="torch device for the networks")
    p.add_argument("--out", required=True, help="folder for eval_report.json, eval_report.md, eval_plot.png")
    return p


def main(argv: Sequence[str] | None = None, *, features: FeatureFn | None = None) -> int:
    """CLI entry. ``features`` replaces the Inception network (tests; never for reported numbers)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runs = [make_run(d) for d in ([args.generated] if args.generated else []) + list(args.runs)]
        if not runs:
            raise BoLIDError("give the generated images: --generated DIR and/or --runs DIR ...")
        if features is None and not args.no_fid:
            if not args.inception:
                raise BoLIDError("FID and IS need the Inception network; pass --inception PATH, or --no-fid to "
                                 "compute only the other metrics. " + M.inception_help())
            features = M.load_inception(args.inception, device=args.device, fid_features=args.fid_features)
        if args.no_fid:
            features = None
        if args.clip and not (args.prompts or args.references):
            raise BoLIDError("--clip was given but neither --prompts (CLIP-T) nor --references (CLIP-I): add one")
        if args.pose and not args.references:
            raise BoLIDError("--pose was given but no --references: body fidelity compares generated bodies with "
                             "reference bodies; add --references DIR")
        clip = M.ClipScorer.load(args.clip, device=args.device) if args.clip else None
        pose = pose_from_path(args.pose, conf=args.pose_conf, visibility=args.visibility,
                                     device=args.device) if args.pose else None
        report = evaluate(args.real, runs, references=args.references, prompts=args.prompts, features=features,
                          pose=pose, clip=clip, is_splits=args.is_splits, batch_size=args.batch_size,
                          progress=_tqdm_factory)
        if args.inception and features is not None:
            report["inception"] = {"weights": str(args.inception), "fid_features": args.fid_features}
        paths = write_outputs(report, args.out)
    except BoLIDError as e:
        log.error("error: %s", e)
        return 2
    log.info("%s", to_markdown(report))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
