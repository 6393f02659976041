"""The 70 cross-attention (``attn2``) sites of the SDXL UNet, in one canonical order.

The canonical order is the order of diffusers' ``UNet2DConditionModel.attn_processors`` restricted to
``attn2``, which is also the numbering of the public IP-Adapter SDXL files: site ``i`` (0..69) is
``ip_adapter.{2*i + 1}`` (the even numbers are the self-attention processors, which hold no weights):

- down blocks: 4 sites of width 640 (ComfyUI ``("input", 4|5, 0..1)``), 20 of width 1280 (``("input", 7|8, 0..9)``),
- up blocks: 30 of width 1280 (``("output", 0..2, 0..9)``), 6 of width 640 (``("output", 3..5, 0..1)``),
- then the mid block: 10 of width 1280 (``("middle", 0, 0..9)``; ComfyUI names it 0, not 1).

A site's ComfyUI key ``(block, block_id, transformer_index)`` is what ``ModelPatcher.set_model_attn2_replace``
takes. Widths here are the full SDXL ones; a reduced-width UNet of the same layout (for tests) keeps the
two levels: ``level`` 0 is the 640 level, 1 the 1280 level.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BoLIDError

NUM_SITES = 70
CONTEXT_DIM = 2048          # SDXL's text context width (CLIP-L 768 + OpenCLIP-bigG 1280)
SDXL_WIDTHS = (640, 1280)   # width of the level-0 and level-1 sites
SDXL_HEAD_DIM = 64


@dataclass(frozen=True)
class Site:
    """One ``attn2`` site of the SDXL UNet.

    index: canonical position 0..69; block/block_id/transformer_index: the ComfyUI key;
    level: 0 (width 640 in SDXL) or 1 (width 1280); diffusers: the diffusers module path of the attention.
    """

    index: int
    block: str
    block_id: int
    transformer_index: int
    level: int
    diffusers: str

    @property
    def key(self) -> tuple[str, int, int]:
        """The ComfyUI ``attn2`` replace key."""
        return (self.block, self.block_id, self.transformer_index)

    @property
    def ip_adapter_number(self) -> int:
        """N in the IP-Adapter keys ``ip_adapter.N.to_k_ip.weight``."""
        return 2 * self.index + 1

    @property
    def width(self) -> int:
        """Width (query and output channels) of this site in the full SDXL UNet."""
        return SDXL_WIDTHS[self.level]

    @property
    def heads(self) -> int:
        """Number of attention heads of this site in the full SDXL UNet (heads of 64 channels)."""
        return self.width // SDXL_HEAD_DIM


def _build_sites() -> tuple[Site, ...]:
    sites: list[Site] = []

    def add(block: str, block_id: int, depth: int, level: int, diffusers_prefix: str) -> None:
        for t in range(depth):
            sites.append(Site(len(sites), block, block_id, t, level,
                              f"{diffusers_prefix}.transformer_blocks.{t}.attn2"))

    # diffusers down_blocks.1 (2 attentions of depth 2) and down_blocks.2 (2 of depth 10)
    for a in range(2):
        add("input", 4 + a, 2, 0, f"down_blocks.1.attentions.{a}")
    for a in range(2):
        add("input", 7 + a, 10, 1, f"down_blocks.2.attentions.{a}")
    # diffusers up_blocks.0 (3 attentions of depth 10) and up_blocks.1 (3 of depth 2)
    for a in range(3):
        add("output", a, 10, 1, f"up_blocks.0.attentions.{a}")
    for a in range(3):
        add("output", 3 + a, 2, 0, f"up_blocks.1.attentions.{a}")
    add("middle", 0, 10, 1, "mid_block.attentions.0")
    return tuple(sites)


SITES: tuple[Site, ...] = _build_sites()
SITE_BY_KEY: dict[tuple[str, int, int], Site] = {s.key: s for s in SITES}
SITE_BY_IP_NUMBER: dict[int, Site] = {s.ip_adapter_number: s for s in SITES}

assert len(SITES) == NUM_SITES and [s.index for s in SITES] == list(range(NUM_SITES))


def site_widths(widths: tuple[int, int] = SDXL_WIDTHS) -> tuple[int, ...]:
    """Per-site widths (70,) in canonical order for a UNet whose two levels have ``widths``."""
    return tuple(widths[s.level] for s in SITES)


def site_of_ip_number(number: int) -> Site:
    """The site of ``ip_adapter.N``; N must be odd and in 1..139."""
    try:
        return SITE_BY_IP_NUMBER[number]
    except KeyError:
        raise BoLIDError(f"ip_adapter.{number} is not an SDXL cross-attention number: expected an odd number in 1..139") from None


# --- finding the sites in a UNet (duck-typed: ComfyUI's openaimodel.UNetModel layout) -----------------

def _spatial_transformer(block):
    """The child of a UNet block that holds ``transformer_blocks`` (ComfyUI's SpatialTransformer)."""
    for child in block:
        if hasattr(child, "transformer_blocks"):
            return child
    return None


def find_attn2(unet, site: Site):
    """The cross-attention module of ``site`` in a UNet with ComfyUI's layout (``input_blocks``,
    ``middle_block``, ``output_blocks``), or None when the UNet has no such site."""
    if site.block == "input":
        blocks = getattr(unet, "input_blocks", None)
    elif site.block == "output":
        blocks = getattr(unet, "output_blocks", None)
    else:
        blocks = [getattr(unet, "middle_block", None)] if getattr(unet, "middle_block", None) is not None else None
    if blocks is None or site.block_id >= len(blocks):
        return None
    st = _spatial_transformer(blocks[site.block_id])
    if st is None or site.transformer_index >= len(st.transformer_blocks):
        return None
    return getattr(st.transformer_blocks[site.transformer_index], "attn2", None)


def unet_sites(unet) -> tuple[tuple[int, int, int], ...]:
    """(width, context width, heads) of every canonical site of ``unet``, in canonical order.

    Raises BoLIDError naming the first missing site when the UNet does not have the SDXL layout.
    """
    found = []
    for s in SITES:
        attn = find_attn2(unet, s)
        if attn is None:
            raise BoLIDError(
                f"the model has no cross-attention at {s.key} (SDXL has 70 such sites): it is not an SDXL UNet; "
                "load an SDXL checkpoint (SDXL base or a fine-tune of it)")
        found.append((attn.to_q.out_features, attn.to_k.in_features, attn.heads))
    return tuple(found)
