"""How much of a world-v2 training image the Body-ID could explain: a variance decomposition of the target latents
(what the diffusion loss regresses), measured on renders, no model trained (issue 25's diagnosis).

    python tests/tools/world_identity_signal.py [--people 20] [--prompts 24] [--repeats 4] [--size 32] [--seed 0]

For each of ``--prompts`` random prompts (pose class, top colour, bottom colour), each of ``--people`` people of
the world is rendered ``--repeats`` times (the render's own nuisance: yaw, position jitter, colour jitter, background
drawn afresh each time). The latents x (through the world's latent map) split, per pixel, into
  - prompt:   Var over prompts of E[x | prompt]                     (what the text can explain)
  - identity: E over prompts of Var over people of E[x | prompt, person]  (what only the Body-ID can explain)
  - nuisance: E Var[x | prompt, person]                             (what nothing conditions on)
given as fractions of the total. The identity part is the most the body branch can lower the diffusion loss by
(for a denoiser that already knows the prompt); the same split for the pose keypoints' pixel positions says how
much of it is body geometry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bolid_lib.experiments.world import render  # noqa: E402
from bolid_lib.experiments.world.latent import PatchLatentMap, to_latent  # noqa: E402


def decompose(x: torch.Tensor) -> dict[str, float]:
    """x: (prompts, people, repeats, ...) -> fractions of the total variance (summed over the trailing dims)."""
    x = x.double().flatten(3)
    repeats = x.shape[2]
    total = x.flatten(0, 2).var(0, unbiased=False).sum()
    cell = x.mean(2)                                                  # E[x | prompt, person]
    prompt = cell.mean(1)                                             # E[x | prompt]
    v_res = x.var(2, unbiased=True).mean((0, 1)).sum()
    # a cell mean of R repeats still carries nuisance / R: take it out of the people's spread
    v_id = cell.var(1, unbiased=False).mean(0).sum() - v_res / repeats
    v_prompt = prompt.var(0, unbiased=False).sum()
    return {"prompt": float(v_prompt / total), "identity": float(v_id / total), "nuisance": float(v_res / total)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jitter", type=float, help="override the render's position jitter (fraction of the side)")
    p.add_argument("--yaw", type=float, help="override the render's max yaw (degrees)")
    a = p.parse_args(argv)
    settings = render.WorldRender(size=a.size, palette="named")
    if a.jitter is not None or a.yaw is not None:
        import dataclasses
        settings = dataclasses.replace(settings, **({"jitter": a.jitter} if a.jitter is not None else {}),
                                       **({"max_yaw_deg": a.yaw} if a.yaw is not None else {}))
    shapes = render.pick_identities(a.people, a.seed)
    g = torch.Generator().manual_seed(a.seed)
    lat_map = PatchLatentMap()
    lats, kps = [], []
    for k in range(a.prompts):
        pose = int(torch.randint(0, len(render.POSES), (1,), generator=g))
        top, bottom = (int(c) for c in torch.randint(0, len(render.COLOURS), (2,), generator=g))
        n = a.people * a.repeats
        who = torch.arange(a.people).repeat_interleave(a.repeats)
        img, kp = render.render(shapes[who], torch.full((n,), pose), a.seed * 7919 + k, settings,
                                (torch.full((n,), top), torch.full((n,), bottom)))
        lats.append(to_latent(img, lat_map).reshape(a.people, a.repeats, -1))
        kps.append(kp[..., :2].reshape(a.people, a.repeats, -1))
    out = {"settings": {"people": a.people, "prompts": a.prompts, "repeats": a.repeats, "size": a.size,
                        "jitter": settings.jitter, "max_yaw_deg": settings.max_yaw_deg},
           "latents": decompose(torch.stack(lats)), "keypoints": decompose(torch.stack(kps))}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
