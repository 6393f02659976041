"""Record what the library computes on fixed inputs, to show a refactor changed nothing (issue 27).

    python tests/tools/record_behaviour.py OUT.json            # record
    python tests/tools/record_behaviour.py OUT.json --compare BEFORE.json

Each entry is a SHA-256 of the bytes of a result (bit-for-bit) and, for tensors, its sum and max |x| (to tell a
last-bit reordering from a real change). Every input is built here from seeds: a synthetic photo set, a tiny
Body-ID VAE, a tiny BoLID adapter and its patch, an adapter file, a few seeded steps of both trainers.
Settings are passed explicitly where a default was a fault (the weighting alpha of issue 27): the entries
measure the code, not its defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _digest(x) -> dict:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return {"sha": hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:20],
                "sum": float(t.double().sum()), "max": float(t.double().abs().max()) if t.numel() else 0.0}
    if isinstance(x, (bytes, bytearray)):
        return {"sha": hashlib.sha256(x).hexdigest()[:20]}
    return {"sha": hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:20], "value": x}


def _state(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.detach().float().reshape(-1) for _, v in sorted(module.state_dict().items())])


def record(work: Path) -> dict:
    from bolid_lib.data import synthetic
    from bolid_lib.method.adapter import AdapterConfig, load_adapter, save_adapter
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, encode_body
    from bolid_lib.method.keypoints import PoseBatch
    from bolid_lib.method.patch import BoLIDPatch, PatchSettings
    from bolid_lib.method.sdxl_layers import SITES
    from bolid_lib.method.weighting import apply_weighting, weight_map
    from bolid_lib.training.body_vae import TrainConfig, synthetic_viewset, train_body_vae
    from tools.make_test_models import random_bolid_adapter

    torch.set_num_threads(1)
    out: dict = {}
    # A fixed synthetic photo set: 6 views of 2 people, exact keypoints.
    data = synthetic.make_views(synthetic.random_shapes(2, 3), 3, 4, synthetic.RenderSettings(size=64))
    out["synthetic_views"] = _digest(data.images)
    out["weight_map"] = _digest(weight_map(data.keypoints, 64, 64, 0.1, "relative"))
    for alpha in (0.1, 0.2):
        w, _ = apply_weighting(data.images, data.keypoints, sigma=0.1, alpha=alpha, sigma_mode="relative")
        out[f"weighted_alpha{alpha}"] = _digest(w)
    # A Body-ID from those photos through a tiny seeded VAE.
    torch.manual_seed(0)
    vae = BodyVAE(BodyVAEConfig(input_size=32, latent_dim=12, widths=(8, 16), feature_dim=16))
    w, _ = apply_weighting(data.images, data.keypoints, sigma=0.1, alpha=0.1, sigma_mode="relative")
    pose = PoseBatch(data.keypoints.clone(), torch.zeros(6, 4), torch.ones(6, dtype=torch.bool), (64, 64), {})
    body = encode_body(vae, w, pose)
    out["body_id_mean"] = _digest(body.mean)
    out["body_id_logvar"] = _digest(body.logvar)
    out["vae_fingerprint"] = _digest(vae.fingerprint())
    # The patched attention of a tiny adapter at three sites (cond and uncond rows).
    cfg = AdapterConfig(context_dim=32, widths=(8, 16), ref_kind="plain", clip_embed_dim=12, body_dim=10,
                        body_hidden=16, body_tokens=3, ref_tokens=4)
    adapter = random_bolid_adapter(cfg, seed=0, std=0.3)
    g = torch.Generator().manual_seed(5)
    import inspect

    body_kw = "c_body" if "c_body" in inspect.signature(BoLIDPatch).parameters else "body"   # renamed in issue 27
    patch = BoLIDPatch(adapter, settings=PatchSettings(lambda_ref=0.8, lambda_body=1.3),
                       ref_features=torch.randn(1, 12, generator=g), **{body_kw: torch.randn(10, generator=g)})
    for site in (0, 30, 65):
        width = (8, 16)[SITES[site].level]
        gi = torch.Generator().manual_seed(site)
        q, k, v = (torch.randn(4, m, width, generator=gi) for m in (6, 7, 7))
        extra = {"n_heads": 2, "cond_or_uncond": [1, 0], "sigmas": torch.tensor([1.0])}
        out[f"patch_site{site}"] = _digest(patch.site(site)(q, k, v, extra))
    # The adapter file: bytes and a round trip.
    path = save_adapter(adapter, work / "adapter.safetensors")
    # The file's content: tensors and metadata (safetensors orders its header's metadata as a hash map does, so the
    # bytes differ from process to process while the content does not).
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        content = {"metadata": dict(sorted(f.metadata().items())),
                   "tensors": {k: _digest(f.get_tensor(k))["sha"] for k in sorted(f.keys())}}
    out["adapter_file"] = _digest(content)
    out["adapter_round_trip"] = _digest(_state(load_adapter(path)))
    # The Body-ID VAE trainer: a few seeded steps on a synthetic view set.
    vcfg = BodyVAEConfig(input_size=32, latent_dim=12, widths=(8, 16), feature_dim=16)
    views = synthetic_viewset(4, 4, vcfg, seed=1, sigma=0.1, alpha=0.1)
    out["viewset"] = _digest(views.views)
    tcfg = TrainConfig(steps=3, batch_persons=2, context_views=(1, 2), target_views=1, warmup=1, seed=7,
                       checkpoint_every=100, log_every=100)
    model, history = train_body_vae(vcfg, tcfg, views)
    out["vae_trainer_weights"] = _digest(_state(model))
    out["vae_trainer_losses"] = _digest([round(h["loss"], 6) for h in history])
    # The adapter trainer: two seeded steps on tiny random models of the real classes.
    from bolid_lib.training import dataset as D
    from bolid_lib.training.adapter import AdapterTrainConfig, train

    data_dir = D.write_synthetic_dataset(work / "data", people=2, views=2, size=64, seed=0)
    acfg = AdapterTrainConfig(data_dir=str(data_dir), output_dir=str(work / "run"), tiny=True, resolution=64,
                              batch_size=2, max_steps=2, pose_imgsz=64, pose_conf=1e-6, visibility=0.0,
                              preview_timesteps=(0, 999), lr=1e-3, alpha_id=1e-3, beta_clip=0.5, save_every=0,
                              log_every=1, tensorboard=False, branches="ref", cpu=True)
    result = train(acfg)
    out["adapter_trainer_weights"] = _digest(_state(result["adapter_module"]))
    out["adapter_trainer_losses"] = _digest([round(r["loss"], 6) for r in result["history"]])
    return out


def compare(now: dict, before: dict) -> int:
    bad = 0
    for key in sorted(set(now) | set(before)):
        a, b = before.get(key), now.get(key)
        same = a is not None and b is not None and a["sha"] == b["sha"]
        print(f"{'same' if same else 'DIFF'}  {key}" + ("" if same else f"  before {a}  after {b}"))
        bad += not same
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--compare", help="a JSON recorded before: print which entries differ")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        now = record(Path(tmp))
    Path(args.out).write_text(json.dumps(now, indent=1, sort_keys=True))
    if args.compare:
        return 1 if compare(now, json.loads(Path(args.compare).read_text())) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
