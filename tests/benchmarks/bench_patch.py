"""Per-step cost of the BoLID patch on the real, full-width ComfyUI SDXL UNet (random weights).

    COMFYUI_PATH=/path/to/ComfyUI python tests/benchmarks/bench_patch.py [--size 512] [--reps 2] [--device cpu]

Measures one sampling step (euler, CFG: cond + uncond in one UNet forward) of: the unpatched model, BoLID with
both branches (an IP-Adapter-layout ref branch + a BoLID body branch), BoLID with one branch; prints each as a
ratio to the unpatched step measured in the same run (runs interleaved, best of --reps). Also the memory the
patch adds (its K/V tensors; RSS growth on CPU, or CUDA peak on GPU). Targets: both branches <= 1.05x on CPU,
<= 1.03x on GPU. Where ComfyUI_IPAdapter_plus is installed (BOLID_IPADAPTER_PLUS=folder, or in ComfyUI's
custom_nodes), the same IP-Adapter file through its own patch is timed too: BoLID's one branch should be no slower.

The full SDXL UNet in float32 takes about 10 GB of RAM: run this once, deliberately, on a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[2]), str(HERE.parents[1])]

import torch  # noqa: E402

import hostlib  # noqa: E402
from tools.make_test_models import random_bolid_adapter, save_ip_adapter  # noqa: E402


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak, self._stop = rss(), False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latent side = size / 8)")
    ap.add_argument("--reps", type=int, default=2, help="timed rounds per configuration (interleaved)")
    ap.add_argument("--channels", type=int, default=320, help="model_channels (320 = full SDXL; smaller for a dry run)")
    ap.add_argument("--heads", type=int, default=64, help="head channels (64 = full SDXL)")
    ap.add_argument("--body-dim", type=int, default=756)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 gives steadier figures on a machine shared with other jobs)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    host = hostlib.boot()
    sys.path.insert(0, str(hostlib.PACK_DIR.parent))
    import comfy.sample
    import comfy.samplers

    node_mod = sys.modules[host.node("BoLIDApply").__module__]
    root = node_mod.__name__.rsplit(".nodes.", 1)[0]
    lib_adapter = sys.modules[root + ".bolid_lib.method.adapter"]
    lib_patch = sys.modules[root + ".bolid_lib.method.patch"]

    t0 = time.perf_counter()
    model = hostlib.build_sdxl_model(model_channels=args.channels, head_channels=args.heads, seed=0)
    widths = (2 * args.channels, 4 * args.channels)
    print(f"SDXL UNet model_channels={args.channels} (widths {widths}) built in {time.perf_counter() - t0:.0f} s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    tmp = Path(tempfile.mkdtemp(prefix="bolid_bench_"))
    # ref branch: an IP-Adapter SDXL ViT-H file of the real layout (float16, like the public files)
    ipa = lib_adapter.load_adapter(save_ip_adapter(tmp / "ipa.safetensors", "plain", "h", widths=widths))
    # body branch: a BoLID adapter, stored in float16 as well
    body_ad = random_bolid_adapter(widths=widths, ref_kind=None, body_dim=args.body_dim).half()
    lib_adapter.save_adapter(body_ad, tmp / "body.safetensors")
    del body_ad
    body_ad = lib_adapter.load_adapter(tmp / "body.safetensors")
    ref = torch.randn(1, 1024)
    c_body = torch.randn(args.body_dim)

    ms = model.get_model_object("model_sampling")

    def settings(**kw):
        return lib_patch.PatchSettings(noise_start=ms.percent_to_sigma(0.0), noise_end=ms.percent_to_sigma(1.0), **kw)

    rss0 = rss()
    t0 = time.perf_counter()
    with torch.inference_mode():
        one = node_mod.apply_bolid(model, ipa, settings(), ref, None, None)
        both = node_mod.apply_bolid(one, body_ad, settings(), None, None, c_body)
    apply_s = time.perf_counter() - t0
    patches = {id(p.patch): p.patch for m in (one, both)
               for p in m.model_options["transformer_options"]["patches_replace"]["attn2"].values()
               if isinstance(p, lib_patch.SitePatch)}
    kv_bytes = sum(p.memory_bytes() for p in patches.values())
    del ipa, body_ad
    gc.collect()
    print(f"apply (tokens + K/V of 70 sites, both branches) took {apply_s:.1f} s; K/V held: {kv_bytes / 2**20:.1f} MiB; "
          f"RSS after apply and freeing the adapters: {(rss() - rss0) / 2**20:+.0f} MiB")

    side = args.size // 8
    pos, neg = hostlib.sdxl_conditioning(0, args.size, args.size)
    latent = torch.zeros(1, 4, side, side)
    noise = comfy.sample.prepare_noise(latent, 0)

    def step(m):
        with torch.inference_mode():
            t = time.perf_counter()
            comfy.sample.sample(m, noise, 1, 4.0, "euler", "normal", pos, neg, latent, seed=0, disable_pbar=True)
            return time.perf_counter() - t

    configs = {"unpatched": model, "BoLID one branch (ref)": one, "BoLID both branches": both}
    ipa_plus = hostlib.load_ipadapter_plus(host.root)
    if ipa_plus is not None:
        # The same IP-Adapter file and image embedding through ComfyUI_IPAdapter_plus's own patch.
        with torch.inference_mode():
            configs["IPAdapter_plus (ref)"] = ipa_plus.ipadapter_execute(
                model.clone(), ipa_plus.ipadapter_model_loader(str(tmp / "ipa.safetensors")), None, pos_embed=ref)[0]
    else:
        print("ComfyUI_IPAdapter_plus not found (BOLID_IPADAPTER_PLUS or ComfyUI/custom_nodes): no comparison with it")
    times = {k: [] for k in configs}
    peaks = {k: 0 for k in configs}
    for m in configs.values():
        step(m)  # warm-up of each configuration (first-call allocations, model management's load of each clone)
    for r in range(args.reps):
        for name, m in configs.items():
            with PeakRSS() as pk:
                times[name].append(step(m))
            peaks[name] = max(peaks[name], pk.peak)
            print(f"  round {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)

    base = min(times["unpatched"])
    print(f"\n{args.size}x{args.size}, one euler step with CFG (batch 2), best of {args.reps}:")
    for name in configs:
        best = min(times[name])
        print(f"  {name:26s} {best:7.2f} s   {best / base:.3f}x unpatched   (median {statistics.median(times[name]):.2f} s)")
    med = {name: statistics.median(times[name]) for name in configs}
    print("  medians as ratios: " + ", ".join(f"{name} {med[name] / med['unpatched']:.3f}x" for name in configs if name != "unpatched"))
    if "IPAdapter_plus (ref)" in configs:
        print(f"  BoLID one branch / IPAdapter_plus (same file, same embedding): median {med['BoLID one branch (ref)'] / med['IPAdapter_plus (ref)']:.3f}x, "
              f"best {min(times['BoLID one branch (ref)']) / min(times['IPAdapter_plus (ref)']):.3f}x (target <= 1)")
    for name in configs:
        print(f"  peak RSS {name:26s} {(peaks[name] - peaks['unpatched']) / 2**20:+8.1f} MiB vs unpatched")


if __name__ == "__main__":
    main()
