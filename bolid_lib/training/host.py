"""The training host: diffusers' ``UNet2DConditionModel`` with a BoLID attention processor on its 70 ``attn2``.

The processor itself is the method's (``bolid_lib.method.diffusers_host``, beside ComfyUI's ``method.patch``): it
computes exactly what the ComfyUI patch computes, so the weights trained here are the weights that run in ComfyUI
(tests/unit/test_training_parity.py). Its names are re-exported here, their home until issue 27.

Branch tokens are computed once per UNet evaluation by ``AdapterTrainingModule.forward`` (the adapter is the only
module with trainable parameters) and read by the 70 processors through a shared ``BranchTokens`` holder. The
frozen UNet is kept outside the module's registered children, so DDP (``accelerate launch``) wraps and
synchronises the adapter alone and never broadcasts the UNet.

Shape letters: B batch, C latent channels, h, w latent size, N tokens, D Body-ID width, E CLIP feature width,
M context width (2048 for SDXL).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import BoLIDError
from ..method.adapter import BoLIDAdapter
from ..method.sdxl_layers import SITES
from ..method.diffusers_host import (  # noqa: F401 (re-exported: the world proof and tests import them from here)
    BoLIDAttnProcessor, BranchTokens, attn2_names, check_unet_matches, install_processors,
)


class AdapterTrainingModule(nn.Module):
    """The trainable part (the adapter) plus the frozen UNet(s) it runs in.

    Only ``adapter`` is a registered child; ``unet`` (and the optional one-step ``shortcut_unet`` of the LCM-Lookahead
    preview) are frozen and held outside the parameter tree.
    """

    def __init__(self, adapter: BoLIDAdapter, unet: nn.Module, shortcut_unet: nn.Module | None = None):
        super().__init__()
        self.adapter = adapter
        self.tokens = BranchTokens()
        object.__setattr__(self, "unet", unet)
        object.__setattr__(self, "shortcut_unet", shortcut_unet)
        self.attach()

    def attach(self) -> None:
        """Install this module's processors on its UNet(s); done again automatically by ``forward`` when another
        module (sharing the UNet) has installed its own since, so the adapter never silently loses its gradient."""
        self._first_sites = []
        for unet in (self.unet, self.shortcut_unet):
            if unet is not None:
                install_processors(unet, self.adapter, self.tokens)
                self._first_sites.append(dict(unet.named_modules())[SITES[0].diffusers])

    def branch_tokens(self, ref_features: torch.Tensor | None, c_body: torch.Tensor | None) -> None:
        """Compute the branch tokens of this batch (with gradient) into the shared holder.

        ref_features: CLIP vision features (B, E) or (B, 257, E) (zeros for a dropped reference);
        c_body: the Body-IDs (B, D) (zeros for a dropped Body-ID).
        """
        a = self.adapter
        self.tokens.ref = a.ref_tokens(ref_features) if (a.ref is not None and ref_features is not None) else None
        self.tokens.body = a.body_tokens(c_body) if (a.body is not None and c_body is not None) else None

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                time_ids: torch.Tensor, ref_features: torch.Tensor | None = None, c_body: torch.Tensor | None = None,
                shortcut_noisy: torch.Tensor | None = None, shortcut_timesteps: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """noisy (B, C, h, w), timesteps (B,), context (B, 77, M), pooled (B, P), time_ids (B, 6) ->
        (the UNet's prediction (B, C, h, w), the shortcut UNet's prediction at (shortcut_noisy, shortcut_timesteps)
        or None). Both evaluations see the same branch tokens, so the preview's gradient reaches the adapter."""
        if any(getattr(a.processor, "tokens", None) is not self.tokens for a in self._first_sites):
            self.attach()
        self.branch_tokens(ref_features, c_body)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        pred = self.unet(noisy, timesteps, encoder_hidden_states=context, added_cond_kwargs=added).sample
        short = None
        if shortcut_noisy is not None:
            if self.shortcut_unet is None:
                raise BoLIDError("preview 'shortcut' needs a shortcut UNet (shortcut_unet in the config)")
            short = self.shortcut_unet(shortcut_noisy, shortcut_timesteps, encoder_hidden_states=context,
                                       added_cond_kwargs=added).sample
        return pred, short
