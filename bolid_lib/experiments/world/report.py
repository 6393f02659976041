"""A markdown summary of finished world-proof runs (their ``figures.json``), one column per run:

    python -m bolid_lib.experiments.world_proof --report RUN_DIR|FIGURES.json [...]
"""

from __future__ import annotations

import json
from pathlib import Path


def _pct(d: dict | None) -> str:
    if not d:
        return "-"
    lo, hi = d.get("identity_ci95", [None, None])
    ci = f" [{100 * lo:.0f}-{100 * hi:.0f}]" if lo is not None else ""
    return f"{100 * d['identity_top1']:.1f}%{ci} (n={d['n']})"


def _pose(d: dict | None) -> str:
    return "-" if not d else f"{100 * d['pose_accuracy']:.1f}%"


def _swap(d: dict | None) -> str:
    if not d or "swap_test" not in d:
        return "-"
    lo, hi = d["swap_ci95"]
    return f"{100 * d['swap_test']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({d['swap_pairs']} pairs)"


def _prompt(d: dict | None) -> str:
    """pose / top colour / bottom colour accuracy (world v2), or the pose alone."""
    if not d:
        return "-"
    if "top_colour_accuracy" not in d:
        return _pose(d)
    return " / ".join(f"{100 * d[k]:.0f}%" for k in ("pose_accuracy", "top_colour_accuracy", "bottom_colour_accuracy"))


def _v2_rows(main: dict) -> list[tuple[str, str]]:
    """World v2: per lambda_body, zero-shot people first, then the adapter's."""
    out = []
    for lam, row in sorted(main.get("lambda_sweep", {}).items(), key=lambda kv: float(kv[0])):
        for name, label in (("held_out_ids", "zero-shot people"), ("adapter_ids", "adapter's people")):
            d = row.get(name)
            if d:
                out += [(f"λ_body {float(lam):g}, {label}: identity top-1 among the group [95% CI]", _pct(d)),
                        (f"λ_body {float(lam):g}, {label}: swap test [95% CI]", _swap(d)),
                        (f"λ_body {float(lam):g}, {label}: shape R² (regressor on the images)", f"{d['shape_r2']:.2f}"),
                        (f"λ_body {float(lam):g}, {label}: prompt control, pose / top / bottom", _prompt(d))]
    ref = main.get("image_referenced", {})
    out.append(("image-referenced (Body-ID of one view), zero-shot people: identity", _pct(ref.get("held_out_ids"))))
    out.append(("image-referenced, zero-shot people: swap test", _swap(ref.get("held_out_ids"))))
    return out


def rows(fig: dict) -> list[tuple[str, str]]:
    """(label, value) lines of one run's figures."""
    cfg, main = fig["config"], fig.get("main", {})
    chance = 100 / cfg["ids"]
    out = [("identities (adapter / held out), chance", f"{cfg['ids'] - cfg['held_out']} / {cfg['held_out']}, {chance:.1f}%"),
           ("identity classifier on held-out renders", f"{100 * fig['classifiers']['identity_top1_held_out_renders']:.1f}%"),
           ("pose classifier on held-out renders", f"{100 * fig['classifiers']['pose_accuracy_held_out_renders']:.1f}%")]
    if cfg.get("palette") == "named":
        out[0] = ("people judged (adapter's / zero-shot), chance among a group",
                  f"{cfg['ids'] - cfg['held_out']} / {cfg['held_out']}, {100 / max(1, cfg['held_out']):.1f}%")
        out += [("training people (base: one per view; VAE and adapter)", f"{cfg['base_views'] * cfg['ids']}; {cfg['adapter_extra_ids']}"),
                ("steps: base / adapter", f"{fig.get('base_steps', '-')} / {fig.get('adapter_steps', '-')}")]
        out += _v2_rows(main)
        main = {k: v for k, v in main.items() if k not in ("lambda_sweep", "image_referenced")}
    for lam, row in sorted(main.get("lambda_sweep", {}).items(), key=lambda kv: float(kv[0])):
        out.append((f"λ_body {float(lam):g}: identity top-1, adapter ids [95% CI]", _pct(row.get("adapter_ids"))))
        out.append((f"λ_body {float(lam):g}: identity top-1, held-out ids", _pct(row.get("held_out_ids"))))
        out.append((f"λ_body {float(lam):g}: prompt (pose) accuracy, adapter / held-out ids",
                    f"{_pose(row.get('adapter_ids'))} / {_pose(row.get('held_out_ids'))}"))
    if "image_referenced" in main:
        ref = main["image_referenced"]
        out.append(("image-referenced (Body-ID of one view): identity, adapter ids", _pct(ref.get("adapter_ids"))))
        out.append(("image-referenced: identity, held-out ids", _pct(ref.get("held_out_ids"))))
    for name, q in main.get("quality", {}).items():
        out.append((f"FID / IS, {name.replace('_', ' ')}", f"{q['fid']:.1f} / {q['is']:.2f}"))
    secs = fig.get("seconds", {})
    if secs:
        out.append(("minutes (all stages)", f"{sum(secs.values()) / 60:.0f} ({', '.join(f'{k} {v / 60:.0f}' for k, v in secs.items())})"))
    return out


def markdown(folders: list[str | Path]) -> str:
    figs = [json.loads((Path(f) if str(f).endswith(".json") else Path(f) / "figures.json").read_text()) for f in folders]
    table = [rows(f) for f in figs]
    labels = list(dict.fromkeys(label for t in table for label, _ in t))    # every run's rows, first seen first
    table = [dict(t) for t in table]
    head = "| | " + " | ".join(f"seed {f['config']['seed']}" for f in figs) + " |"
    lines = [head, "|---" * (len(figs) + 1) + "|"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(t.get(label, "-") for t in table) + " |")
    return "\n".join(lines)
