"""The variance split of tests/tools/world_identity_signal.py recovers known parts of a made-up signal."""

from __future__ import annotations

import torch

from tools.world_identity_signal import decompose


def test_decompose_recovers_the_prompt_identity_and_nuisance_parts():
    g = torch.Generator().manual_seed(0)
    prompts, people, repeats, dims = 60, 40, 6, 50
    x = (torch.randn(prompts, 1, 1, dims, generator=g) * 2.0           # prompt: variance 4
         + torch.randn(prompts, people, 1, dims, generator=g) * 1.0    # identity (per prompt and person): 1
         + torch.randn(prompts, people, repeats, dims, generator=g) * 1.5)   # nuisance: 2.25
    got = decompose(x)
    want = {"prompt": 4 / 7.25, "identity": 1 / 7.25, "nuisance": 2.25 / 7.25}
    for k in want:
        assert abs(got[k] - want[k]) < 0.03, (k, got, want)
    # without an identity part the split finds none (the repeats' nuisance is taken out of the people's spread)
    flat = decompose(torch.randn(prompts, 1, 1, dims, generator=g) * 2.0
                     + torch.randn(prompts, people, repeats, dims, generator=g) * 1.5)
    assert abs(flat["identity"]) < 0.01, flat
