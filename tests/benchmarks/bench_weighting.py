"""Gaussian keypoint weighting (eq. 11-13) of one image versus one elementwise multiply of it, same run.

    python tests/benchmarks/bench_weighting.py [--size 1024] [--batch 1] [--repeats 30] [--device cpu|cuda] [--threads N]

On a busy shared CPU, --threads 1 gives steadier figures: idle OpenMP threads spin while waiting for a core
and that time is billed to every small operation.

Times, interleaved, median of the repeats (wall and CPU time of this process):
- baseline: ``image * w`` with a ready (1, 1, H, W) weight map: one elementwise multiply of the image,
  the least any weighting must do;
- weight map: ``weight_map`` (17 keypoints, W_norm only);
- apply_weighting: map plus I * (alpha + (1 - alpha) * W_norm), what the node runs. Target ratio <= 4.

Peak extra memory: each case runs once in a fresh child process (Linux); the growth of its resident-set
high-water mark (VmHWM, reset just before the call) over the resident set before it is the extra memory the
call needed, outputs included (on CUDA: the allocator's
peak over the inputs). For scale, the image is B*3*H*W*4 bytes and one (B, 17, H, W) float32 stack of
per-keypoint maps (what a naive eq. 12 would materialise) is B*17*H*W*4 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bolid_lib import weighting as wt  # noqa: E402
from memlib import MMAP_ENV, peak_extra  # noqa: E402

MIB = 1 << 20


def inputs(b: int, size: int, device: str):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, size, size, generator=g).to(device)
    kp = torch.rand(b, 17, 3, generator=g)
    kp[..., :2] *= size
    kp[..., 2] = 0.5 + 0.5 * kp[..., 2]
    kp[:, 3, 2] = 0  # one invisible point, as in real poses
    w = torch.rand(1, 1, size, size, generator=g).to(device)
    return images, kp.to(device), w


def cases(images, kp, w):
    return {
        "baseline": lambda: images * w,
        "weight_map": lambda: wt.weight_map(kp, images.shape[2], images.shape[3], 0.1),
        "apply_weighting": lambda: wt.apply_weighting(images, kp, 0.1, 0.2),
    }


def child(case: str, b: int, size: int, device: str) -> None:
    """Run one case once and print its peak extra memory in bytes (JSON)."""
    images, kp, w = inputs(b, size, device)
    fn = cases(images, kp, w)[case]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        print(json.dumps({"extra": torch.cuda.max_memory_allocated() - base}))
        return
    _, extra = peak_extra(fn)  # outputs count as extra memory
    print(json.dumps({"extra": extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.batch, args.size, args.device)
        return

    images, kp, w = inputs(args.batch, args.size, args.device)
    fns = cases(images, kp, w)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, f in fns.items():
            sync()
            t, c = time.perf_counter(), time.process_time()
            f()
            sync()
            times[k].append((time.perf_counter() - t, time.process_time() - c))
    wall = {k: statistics.median(x for x, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(x for _, x in v) for k, v in times.items()}
    peak = {}
    for k in fns:
        out = subprocess.run([sys.executable, __file__, "--child", k, "--batch", str(args.batch), "--size", str(args.size),
                              "--device", args.device], capture_output=True, text=True, check=True,
                             env={**os.environ, **MMAP_ENV})
        peak[k] = json.loads(out.stdout.strip().splitlines()[-1])["extra"]
    b, s = args.batch, args.size
    print(f"device {args.device}, batch {b}, {s}x{s}, 17 keypoints (16 visible), sigma 0.1 relative, "
          f"{args.repeats} repeats (median), torch threads {torch.get_num_threads()}")
    print(f"{'':20s}{'wall ms':>9s}{'ratio':>8s}{'CPU ms':>9s}{'ratio':>8s}{'peak extra MiB':>16s}")
    for k in fns:
        print(f"{k:20s}{wall[k] * 1e3:9.2f}{wall[k] / wall['baseline']:8.2f}{cpu[k] * 1e3:9.2f}"
              f"{cpu[k] / max(cpu['baseline'], 1e-9):8.2f}{peak[k] / MIB:16.1f}")
    print(f"target: apply_weighting / baseline <= 4.  For scale: image {b * 3 * s * s * 4 / MIB:.1f} MiB, "
          f"outputs of apply_weighting {b * 4 * s * s * 4 / MIB:.1f} MiB, a (B, 17, H, W) stack "
          f"{b * 17 * s * s * 4 / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
