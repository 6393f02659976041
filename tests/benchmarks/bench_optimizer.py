"""The trainers' optimizer step: ``training.loop.adamw`` (fused where torch has the kernel) against torch's default
AdamW (foreach), on the parameters the trainers update.

    python tests/benchmarks/bench_optimizer.py [--threads 1] [--steps 10]

Parameter sets:
- the world proof's base: the reduced-width SDXL-layout UNet (70 sites, 57 M parameters) and its text encoder;
- a BoLID adapter's body branch on that UNet (what the adapter trainer updates: the MLP and 70 x 2 K/V layers).

Each set gets random gradients once; then fused and default steps alternate (``--steps`` of each) and the median of
each is printed, with the fused step as a ratio of the default one measured in the same run. Target: fused <= 0.5x.
The update is a small part of a base step (a forward and backward at batch 16 takes about 0.8 s on 2 threads, more
on one): the figures say how much of the step the optimizer takes, not how much a whole run gains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[2])]

import torch  # noqa: E402


def parameter_sets() -> dict[str, list[torch.nn.Parameter]]:
    from bolid_lib.experiments.world import nets
    from bolid_lib.experiments.world.text import WorldTextEncoder
    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter

    unet, text = nets.build_unet(32, 8), WorldTextEncoder()
    # the world's adapter (world_proof: widths of the UNet's two attention levels, a 128-dim Body-ID, 4 tokens)
    adapter = BoLIDAdapter(AdapterConfig(widths=nets.unet_blocks(32)[1:], body_dim=128, body_tokens=4, body_hidden=256))
    return {"world base (UNet + text encoder)": [*unet.parameters(), *text.parameters()],
            "adapter body branch": [p for p in adapter.parameters() if p.requires_grad]}


def time_steps(opt: torch.optim.Optimizer) -> float:
    t0 = time.perf_counter()
    opt.step()
    return time.perf_counter() - t0


def main() -> None:
    from bolid_lib.training import loop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps of each, interleaved")
    print("| parameters | count | default AdamW s/step | loop.adamw s/step | ratio | fused |")
    print("|---|---|---|---|---|---|")
    for name, params in parameter_sets().items():
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        default = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        fused = loop.adamw(params, lr=1e-4, weight_decay=0.01)
        time_steps(default), time_steps(fused)              # state allocation out of the timings
        a, b = [], []
        for _ in range(args.steps):
            a.append(time_steps(default))
            b.append(time_steps(fused))
        da, db = statistics.median(a), statistics.median(b)
        count = sum(p.numel() for p in params)
        print(f"| {name} | {count / 1e6:.1f} M | {da:.4f} | {db:.4f} | {db / da:.2f} | {fused.defaults.get('fused')} |")


if __name__ == "__main__":
    main()
