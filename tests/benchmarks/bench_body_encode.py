"""Benchmark: encode 100 views of 1024 x 1024 into one Body-ID, streaming vs stacking every view at once.

    python tests/benchmarks/bench_body_encode.py [--views 100] [--size 1024] [--chunk 8] [--threads 1]

Both ways run the default Body-ID VAE (R = 256, D = 756) on the same random weighted views, each in a fresh
child process, so each peak is its own: peak memory is the growth of the resident set's high-water mark over
the resident set once the input views are made and the model warmed up (tests/memlib.py).
The baseline is the paper's way (all views in one tensor through the encoder); the figures are ratios
against it, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from memlib import MMAP_ENV, peak_extra  # noqa: E402


def child(mode: str, views: int, size: int, chunk: int, threads: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BodyVAE(BodyVAEConfig()).eval()
    images = torch.rand(views, 3, size, size)              # weighted views as a ComfyUI IMAGE batch holds them
    kp = torch.rand(views, 17, 3) * size
    kp[..., 2] = 0.5 + 0.5 * torch.rand(views, 17)

    model.encode_views(images[:1], kp[:1])                  # warm-up: kernels, allocator pools
    t = time.perf_counter()
    if mode == "stream":
        (mean, _), extra = peak_extra(lambda: model.encode_views(images, kp, chunk=chunk))
    else:
        (mean, _), extra = peak_extra(lambda: model.encode_views_batched(images, kp))
    seconds = time.perf_counter() - t
    return {"mode": mode, "seconds": seconds, "views_per_s": views / seconds, "peak_extra_bytes": extra,
            "input_bytes": images.numel() * 4, "mean_head": mean[:4].tolist()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=100)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", choices=["stream", "batch"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.views, a.size, a.chunk, a.threads)))
        return 0
    res = {}
    for mode in ("batch", "stream"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--views", str(a.views), "--size", str(a.size),
                              "--chunk", str(a.chunk), "--threads", str(a.threads)], capture_output=True, text=True, check=True,
                             env={**os.environ, **MMAP_ENV})
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    b, s = res["batch"], res["stream"]
    mib = 1024 ** 2
    same = max(abs(x - y) for x, y in zip(b["mean_head"], s["mean_head"]))
    print(f"Body-ID encode, {a.views} views of {a.size}x{a.size} (input {b['input_bytes'] / mib:.0f} MiB), "
          f"default VAE (R=256, D=756), {a.threads} thread(s)")
    print(f"  stacked (paper's way, baseline): {b['views_per_s']:6.2f} views/s, peak +{b['peak_extra_bytes'] / mib:7.1f} MiB over the input")
    print(f"  streaming, chunks of {a.chunk:3d}:      {s['views_per_s']:6.2f} views/s, peak +{s['peak_extra_bytes'] / mib:7.1f} MiB over the input")
    print(f"  streaming / stacked: speed x{s['views_per_s'] / b['views_per_s']:.2f}, "
          f"peak memory x{s['peak_extra_bytes'] / max(1, b['peak_extra_bytes']):.3f}; |mean difference| {same:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
