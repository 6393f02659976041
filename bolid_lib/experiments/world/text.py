"""A tiny text encoder with SDXL's output shapes: prompt -> context (77, 2048) and pooled (1280).

A prompt is a few words of ``VOCAB``; each word has a learned embedding, tokens are [start, words..., end, end...]
as CLIP pads, plus a learned position embedding up to the first end token (the padding rows after it are all alike,
so the UNet's context projections need only a prompt's few distinct rows, ``nets.share_context_projections``); a small MLP and two linear maps give the 2048-wide context and the
1280-wide pooled vector (from the mean of the word tokens). Trained with the base model, then frozen.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...errors import BoLIDError
from ...method.sdxl_layers import CONTEXT_DIM
from .render import COLOUR_NAMES, POSES

TOKENS = 77
POOLED_DIM = 1280
VOCAB = ("<start>", "<end>", "a", "person", "arms") + POSES
# world v2 (palette "named"): the prompt also names the colours of the top and the bottom
VOCAB_V2 = VOCAB + ("top", "bottom") + COLOUR_NAMES


def vocab_for(palette: str) -> tuple[str, ...]:
    return VOCAB_V2 if palette == "named" else VOCAB


def prompt_for(pose: int, top: int | None = None, bottom: int | None = None) -> str:
    """"a person arms up" (today's palettes), or with the clothes named: "a person arms up red top blue bottom"."""
    text = f"a person arms {POSES[pose]}"
    if top is not None:
        text += f" {COLOUR_NAMES[top]} top {COLOUR_NAMES[bottom]} bottom"
    return text


class WorldTextEncoder(nn.Module):
    def __init__(self, width: int = 64, vocab: tuple[str, ...] = VOCAB):
        super().__init__()
        self.vocab = vocab
        self.words = nn.Embedding(len(vocab), width)
        self.position = nn.Parameter(torch.zeros(TOKENS, width))
        self.mix = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.to_context = nn.Linear(width, CONTEXT_DIM)
        self.to_pooled = nn.Linear(width, POOLED_DIM)
        nn.init.normal_(self.position, std=0.02)

    def token_ids(self, caption: str) -> list[int]:
        words = caption.split()
        bad = [w for w in words if w not in self.vocab[2:]]
        if bad:
            raise BoLIDError(f"the world's text encoder knows the words {self.vocab[2:]}; got {bad}")
        ids = [0] + [self.vocab.index(w) for w in words][:TOKENS - 2] + [1]
        return ids + [1] * (TOKENS - len(ids))

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> context (B, 77, 2048), pooled (B, 1280)."""
        ids = torch.tensor([self.token_ids(c) for c in captions], device=self.position.device)
        n_words = torch.tensor([len(c.split()) for c in captions], device=ids.device)
        placed = torch.arange(TOKENS, device=ids.device)[None] <= n_words[:, None] + 1       # start, words, first end
        h = self.words(ids) + self.position * placed[..., None]
        h = h + self.mix(h)
        mask = (torch.arange(TOKENS, device=h.device)[None] >= 1) & (torch.arange(TOKENS, device=h.device)[None] <= n_words[:, None])
        mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.to_context(h), self.to_pooled(mean)

    def encode_unique(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as forward, computed once per distinct caption and gathered (gradient intact)."""
        uniq = list(dict.fromkeys(captions))
        ctx, pooled = self(uniq)
        idx = torch.tensor([uniq.index(c) for c in captions], device=ctx.device)
        return ctx[idx], pooled[idx]


class TrainerText:
    """What the adapter trainer reads as ``ModelSet.text``: ``encode(captions)`` without gradient, and the two
    encoder modules it moves to the device (the second is empty: one encoder plays both of SDXL's)."""

    def __init__(self, encoder: WorldTextEncoder):
        self.encoder_1 = encoder.eval().requires_grad_(False)
        self.encoder_2 = nn.Identity()

    def to(self, device) -> "TrainerText":
        self.encoder_1.to(device)
        return self

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ctx, pooled = self.encoder_1.encode_unique(list(captions))
        return ctx.float(), pooled.float()
