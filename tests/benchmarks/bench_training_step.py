"""Time per adapter training step: L_diff only (baseline) versus the full objective of eq. 14 (x0 preview decoded by
AutoencoderTiny, differentiable YOLO pose decode, CLIP), measured in the same run on the same tiny models, steps
interleaved so machine load hits both alike. Also the shortcut (LCM-Lookahead) preview, which adds a second UNet
evaluation. Prints medians, the ratio to the baseline (target ≤ 1.6× on the tiny config) and peak memory.

    python tests/benchmarks/bench_training_step.py [--steps 8] [--batch 2] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bolid_lib.training import dataset as D                                       # noqa: E402
from bolid_lib.training.adapter import (AdapterTrainConfig, StepContext, build_adapter, compute_losses,  # noqa: E402
                                        prepare_data)
from bolid_lib.training.host import AdapterTrainingModule                       # noqa: E402
from bolid_lib.training.models import tiny_models, tiny_unet                   # noqa: E402


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bolid_bench_"))
    data = D.write_synthetic_dataset(tmp / "data", people=2, views=2, size=64)
    base = AdapterTrainConfig(data_dir=str(data), output_dir=str(tmp / "out"), tiny=True, resolution=64,
                              batch_size=args.batch, pose_imgsz=64, pose_conf=1e-6, visibility=0.0,
                              preview_timesteps=(0, 999), dropout_text=0, dropout_ref=0, dropout_body=0, dropout_together=0)
    models = tiny_models(base)
    models.shortcut_unet = tiny_unet(seed=99)
    for m in models.frozen_modules().values():
        m.to(dev)
    adapter, trainable = build_adapter(base, models, 16)
    # one module for all modes (the shortcut UNet only runs when the shortcut preview asks for it)
    module = AdapterTrainingModule(adapter, models.unet, models.shortcut_unet).to(dev)
    ds = prepare_data(base, models, True)
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    modes = {
        "L_diff only": dataclasses.replace(base, alpha_id=0.0, beta_clip=0.0),
        "full, x0 preview": dataclasses.replace(base, alpha_id=0.1, beta_clip=0.1),
        "full, shortcut preview": dataclasses.replace(base, alpha_id=0.1, beta_clip=0.1, preview="shortcut"),
    }
    ctxs = {k: StepContext(c, models, module, dev, "epsilon") for k, c in modes.items()}
    times = {k: [] for k in modes}
    peak = {}

    def step(name: str, i: int) -> float:
        batch = D.collate([ds[(j % len(ds), 1000 * i + j)] for j in range(args.batch)])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        terms = compute_losses(ctxs[name], batch)
        terms["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for name in modes:                      # warm-up, and peak memory of each mode on its own
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step(name, 0)
        peak[name] = torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda" else max_rss_mib()
    for i in range(1, args.steps + 1):
        for name in modes:
            times[name].append(step(name, i))
    base_t = statistics.median(times["L_diff only"])
    print(f"device {dev}, threads {args.threads}, batch {args.batch}, {args.steps} steps per mode (interleaved), tiny SDXL-layout UNet")
    what = "peak allocated (MiB)" if dev.type == "cuda" else "process max RSS after mode (MiB, cumulative)"
    print(f"{'mode':<24} {'median s/step':>14} {'ratio':>7}  {what}")
    for name in modes:
        t = statistics.median(times[name])
        print(f"{name:<24} {t:>14.3f} {t / base_t:>7.2f}  {peak[name]:.0f}")


if __name__ == "__main__":
    main()
