"""BoLID adapter nodes: load an adapter (BoLID file or public IP-Adapter SDXL file) and apply it to an SDXL MODEL.

The patch is an ``attn2`` replace on all 70 SDXL cross-attention sites of a clone of the MODEL
(paper 4.3: Z' = Attn(Q,K_t,V_t) + λ_ref·Attn(Q,K_ref,V_ref) + λ_body·Attn(Q,K_b,V_b)); the logic lives in
``bolid_lib.method.patch``. Another pack's patch already on a site (e.g. IPAdapter_plus) computes the text term, so
both take effect; applying BoLID twice stacks too (e.g. an IP-Adapter for the image, a BoLID adapter for the body).
"""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..bolid_lib.method.adapter import BoLIDAdapter
from ..bolid_lib.method.adapter_files import load_adapter
from ..bolid_lib.method.reference import encode_reference
from ..bolid_lib.errors import BoLIDError
from ..bolid_lib.method.patch import (
    ROLES_KEY, BoLIDPatch, PatchSettings, SitePatch, check_unet, cond_roles, detach_patch,
)
from ..bolid_lib.method.sdxl_layers import SITES
from ._comfy import (
    BODIES_SUBFOLDER, CATEGORY, FOLDER_BOLID, FOLDER_IPADAPTER, Adapter, Body, check_model_choice, list_models, model_path,
)

log = logging.getLogger("bolid")

IPADAPTER_PREFIX = "[ipadapter] "      # marks files of the shared ipadapter folder in the one combo
REF_BATCH = {"average": "average", "one per latent": "per_latent"}
BLOCKS_FOR = ("both", "body", "ref")


def adapter_choices() -> list[str]:
    """models/bolid (without its bodies/ folder) first, then the ipadapter folder, marked."""
    names = list(list_models(FOLDER_BOLID, exclude_prefix=BODIES_SUBFOLDER + "/"))
    names += [IPADAPTER_PREFIX + n for n in list_models(FOLDER_IPADAPTER)]
    return names


def adapter_path(choice: str) -> str:
    if choice.startswith(IPADAPTER_PREFIX):
        return model_path(FOLDER_IPADAPTER, choice[len(IPADAPTER_PREFIX):])
    return model_path(FOLDER_BOLID, choice)


class BoLIDAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDAdapterLoader",
            display_name="BoLID Load Adapter",
            category=CATEGORY,
            description=(
                "Loads a BoLID adapter (models/bolid) or a public IP-Adapter SDXL file (models/ipadapter, marked "
                "[ipadapter]) for BoLID Apply. IP-Adapter files (ip-adapter_sdxl, _vit-h, -plus_, -plus-face_) give the "
                "reference-image branch; a BoLID adapter may also carry the body branch. The kind is read from the "
                "file's keys, not its name. Only .safetensors are read (.bin files can run code when opened)."
            ),
            inputs=[
                io.Combo.Input("adapter_name", options=adapter_choices(),
                               tooltip="The adapter file: from models/bolid, or from models/ipadapter (marked [ipadapter])."),
            ],
            outputs=[Adapter.Output(display_name="adapter",
                                    tooltip="The loaded adapter (its branches and the CLIP vision model it needs).")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name=None) -> bool | str:
        # Naming the combo here makes the host skip its own "Value not in list" for it: the user learns the fix.
        if isinstance(adapter_name, str) and adapter_name.startswith(IPADAPTER_PREFIX):
            name = adapter_name[len(IPADAPTER_PREFIX):]
            return check_model_choice(FOLDER_IPADAPTER, name, list_models(FOLDER_IPADAPTER))
        return check_model_choice(FOLDER_BOLID, adapter_name, list_models(FOLDER_BOLID, exclude_prefix=BODIES_SUBFOLDER + "/"))

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        adapter = load_adapter(adapter_path(adapter_name))
        log.info("BoLID adapter %s: %s", adapter_name, adapter.describe())
        return io.NodeOutput(adapter)


def _comfy_attention(q, k, v, heads, extra_options):
    """ComfyUI's attention as CrossAttention calls it, so a site with no active branch is bit for bit unpatched."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                               transformer_options=extra_options)


def apply_bolid(model, adapter: BoLIDAdapter, settings: PatchSettings, ref_features=None, ref_uncond=None, c_body=None):
    """A clone of ``model`` with the BoLID patch on all 70 sites (stacked over existing attn2 replaces)."""
    check_unet(model.get_model_object("diffusion_model"), adapter.config)
    patch = BoLIDPatch(adapter, settings=settings, ref_features=ref_features, ref_uncond_features=ref_uncond,
                       c_body=c_body, attention=_comfy_attention)
    out = model.clone()
    existing = out.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    stacked = 0
    for s in SITES:
        previous = existing.get(s.key)
        if previous is None:    # ComfyUI falls back to the (block, id) key when no 3-part key is set
            previous = existing.get((s.block, s.block_id))
        stacked += previous is not None
        if previous is not None:
            previous = detach_patch(previous)   # a later add() on the source model's patch must not reach ours
        out.set_model_attn2_replace(patch.site(s.index, previous), s.block, s.block_id, s.transformer_index)
    if stacked:
        log.info("BoLID: stacked over %d existing attn2 patches (they compute the text term)", stacked)
    _own_patches_on_clone(out)
    _tell_cond_roles(out)
    return out


def mark_cond_roles(executor, *args, **kwargs):
    """``WrappersMP.OUTER_SAMPLE``: before a guider samples, tell the BoLID sites which conditionings are negatives.

    The guider (``executor.class_obj``) holds its conditionings by name, each with the uuid ComfyUI gives it; the
    map {uuid: unconditional} goes into the guider's model options for this sampling only (the guider clones its
    options for each ``sample`` call), and every UNet call passes it to the sites beside the chunks' ``uuids``. So
    ComfyUI's DualCFGGuider and PerpNegGuider, which do not put the negative at chunk index 1, give the body to
    their positive prompt and none to their negatives.
    """
    guider = executor.class_obj
    options = getattr(guider, "model_options", None)
    if isinstance(options, dict):
        roles = cond_roles(getattr(guider, "conds", None))
        if roles:
            options.setdefault("transformer_options", {})[ROLES_KEY] = roles
    return executor(*args, **kwargs)


def _tell_cond_roles(model) -> None:
    """Register ``mark_cond_roles`` once on ``model`` (wrappers are copied to every clone by the host)."""
    from comfy.patcher_extension import WrappersMP

    if mark_cond_roles not in model.get_all_wrappers(WrappersMP.OUTER_SAMPLE):
        model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "bolid", mark_cond_roles)


def _attn2_sites(model) -> dict:
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})


def own_site_patches(old, new) -> None:
    """``CallbacksMP.ON_CLONE``: give a clone its own BoLID site patches.

    ComfyUI 0.33's ``ModelPatcher.clone()`` rebuilds the dicts and lists of ``model_options`` but shares every
    other object, so a clone and its source would hold the same ``SitePatch``; a later pack that ``add``s its term
    to one (ComfyUI_IPAdapter_plus does) would change both. Each clone gets a copy of every patch it shares with
    its source. On ComfyUI 0.3.x (which deep-copies) nothing is shared and this does nothing; called twice, the
    second call finds nothing shared either. A registered callback travels with every later clone.
    """
    old_sites, new_sites = _attn2_sites(old), _attn2_sites(new)
    for key, fn in list(new_sites.items()):
        if isinstance(fn, SitePatch) and old_sites.get(key) is fn:
            new_sites[key] = fn.copy()


def _own_patches_on_clone(model) -> None:
    """Register ``own_site_patches`` once on ``model`` (callbacks are copied to every clone by the host)."""
    from comfy.patcher_extension import CallbacksMP

    if own_site_patches not in model.get_all_callbacks(CallbacksMP.ON_CLONE):
        model.add_callback_with_key(CallbacksMP.ON_CLONE, "bolid", own_site_patches)


def _check_apply_settings(start_at, end_at, ref_batch, blocks_for) -> str | None:
    """What is wrong with these BoLID Apply settings, with the fix; None when they are fine (None = linked)."""
    for name, v in (("start_at", start_at), ("end_at", end_at)):
        if v is not None and not 0.0 <= v <= 1.0:
            return f"{name} ({v}) must lie between 0 and 1 (a fraction of the sampling schedule)"
    if start_at is not None and end_at is not None and start_at > end_at:
        return f"start_at ({start_at}) is after end_at ({end_at}): make start_at smaller than end_at"
    if ref_batch is not None and ref_batch not in REF_BATCH:
        return f"ref_batch {ref_batch!r} is not one of the choices: {', '.join(map(repr, REF_BATCH))}"
    if blocks_for is not None and blocks_for not in BLOCKS_FOR:
        return f"blocks_for {blocks_for!r} is not one of the choices: {', '.join(map(repr, BLOCKS_FOR))}"
    return None


class BoLIDApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDApply",
            display_name="BoLID Apply",
            category=CATEGORY,
            description=(
                "Applies the BoLID adapter to an SDXL model: every cross-attention adds λ_ref × attention to the reference "
                "image and λ_body × attention to the Body-ID (paper 4.3). Text-only mode: a Body-ID and no image. "
                "Image mode: a reference image with a CLIP vision model (or a CLIP_VISION_OUTPUT). The input model is not "
                "changed; patches already on the model (e.g. IPAdapter) keep working. Several references: averaged, "
                "or one per latent. Works with KSampler and ComfyUI's other guiders (DualCFG, PerpNeg): only positive "
                "prompts get the branches, negatives never do."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model (base or a fine-tune)."),
                Adapter.Input("adapter", tooltip="From BoLID Load Adapter."),
                io.Float.Input("lambda_ref", default=1.0, min=-1.0, max=3.0, step=0.05,
                               tooltip="λ_ref: weight of the reference-image branch (0 switches it off)."),
                io.Float.Input("lambda_body", default=1.0, min=-1.0, max=3.0, step=0.05,
                               tooltip="λ_body (the paper's λ_b): weight of the body branch (0 switches it off)."),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling schedule where the branches start (0 = first step)."),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling schedule where the branches stop (1 = last step)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model that encodes the reference image (ViT-H for *_vit-h adapters, "
                                            "ViT-bigG for ip-adapter_sdxl)."),
                io.Image.Input("image", optional=True, tooltip="Reference image(s) of the person (needs clip_vision)."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="An already encoded reference (CLIP Vision Encode), instead of image."),
                Body.Input("body", optional=True, tooltip="The person's Body-ID (BoLID Build/Load Body-ID) for the body branch."),
                io.Combo.Input("ref_batch", options=list(REF_BATCH), default="average", optional=True,
                               tooltip="Several reference images: average them into one, or give reference i to latent i "
                                       "(needs as many references as latents)."),
                io.Float.Input("block_input", default=1.0, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Multiplier of λ in the UNet's input (down) blocks."),
                io.Float.Input("block_middle", default=1.0, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Multiplier of λ in the middle block (composition)."),
                io.Float.Input("block_output", default=1.0, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Multiplier of λ in the output (up) blocks (detail)."),
                io.Combo.Input("blocks_for", options=list(BLOCKS_FOR), default="body", optional=True,
                               tooltip="Which branch the block multipliers apply to."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A patched copy of the model; the input model is unchanged.")],
        )

    @classmethod
    def validate_inputs(cls, start_at=0.0, end_at=1.0, ref_batch="average", blocks_for="body"):
        # Named inputs only: with **kwargs ComfyUI would skip its own min/max checks of every input (the λs);
        # the inputs named here lose them, so their ranges are checked here. ComfyUI 0.3.64 does not check V3
        # combo values against their options, so the two choices are checked here too. A linked input is None.
        return _check_apply_settings(start_at, end_at, ref_batch, blocks_for) or True

    @classmethod
    def execute(cls, model, adapter, lambda_ref, lambda_body, start_at, end_at, clip_vision=None, image=None,
                clip_vision_output=None, body=None, ref_batch="average", block_input=1.0, block_middle=1.0,
                block_output=1.0, blocks_for="body") -> io.NodeOutput:
        problem = _check_apply_settings(start_at, end_at, ref_batch, blocks_for)
        if problem:
            raise BoLIDError(problem)
        ref, ref_uncond = encode_reference(adapter, clip_vision, image, clip_vision_output)
        c_body = None if body is None else body.mean.detach().float().cpu()
        mismatch = None if body is None else adapter.body_vae_mismatch(body.fingerprint)
        if mismatch:
            log.warning("BoLID Apply: %s", mismatch)
        if ref is None and c_body is None:
            raise BoLIDError("BoLID needs at least one branch: connect a Body-ID (body), or a reference image with a "
                             "CLIP vision model (image + clip_vision), or a clip_vision_output")
        sampling = model.get_model_object("model_sampling")
        blocks = (block_input, block_middle, block_output)
        settings = PatchSettings(
            lambda_ref=lambda_ref, lambda_body=lambda_body,
            noise_start=sampling.percent_to_sigma(start_at), noise_end=sampling.percent_to_sigma(end_at),
            block_weights_ref=blocks if blocks_for in ("both", "ref") else (1.0, 1.0, 1.0),
            block_weights_body=blocks if blocks_for in ("both", "body") else (1.0, 1.0, 1.0),
            ref_batch=REF_BATCH[ref_batch])
        return io.NodeOutput(apply_bolid(model, adapter, settings, ref, ref_uncond, c_body))


NODES = [BoLIDAdapterLoader, BoLIDApply]
