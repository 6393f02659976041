"""The canonical order of the 70 SDXL cross-attention sites, their ComfyUI keys and IP-Adapter numbers."""

from collections import Counter

import pytest

from bolid_lib.errors import BoLIDError
from bolid_lib.method.sdxl_layers import (NUM_SITES, SITE_BY_IP_NUMBER, SITE_BY_KEY, SITES, site_of_ip_number,
                                   site_widths)


def test_seventy_sites_with_unique_keys_and_numbers():
    assert len(SITES) == NUM_SITES == 70
    assert len(SITE_BY_KEY) == 70
    assert [s.ip_adapter_number for s in SITES] == list(range(1, 140, 2))
    assert sorted(SITE_BY_IP_NUMBER) == list(range(1, 140, 2))


def test_comfy_keys_per_block():
    counts = Counter((s.block, s.block_id) for s in SITES)
    assert counts == {("input", 4): 2, ("input", 5): 2, ("input", 7): 10, ("input", 8): 10,
                      ("middle", 0): 10,
                      ("output", 0): 10, ("output", 1): 10, ("output", 2): 10,
                      ("output", 3): 2, ("output", 4): 2, ("output", 5): 2}
    # the middle block is ("middle", 0) in ComfyUI; ("middle", 1) never fires
    assert ("middle", 1, 0) not in SITE_BY_KEY
    for s in SITES:
        assert s.transformer_index < {2: 2, 1: 10}[2 if s.width == 640 else 1]


def test_diffusers_processor_order():
    """down (4 x 640, 20 x 1280), up (30 x 1280, 6 x 640), then mid (10 x 1280)."""
    widths = [s.width for s in SITES]
    assert widths == [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
    blocks = [s.block for s in SITES]
    assert blocks == ["input"] * 24 + ["output"] * 36 + ["middle"] * 10
    assert SITES[0].key == ("input", 4, 0) and SITES[0].ip_adapter_number == 1
    assert SITES[23].key == ("input", 8, 9) and SITES[23].ip_adapter_number == 47
    assert SITES[24].key == ("output", 0, 0) and SITES[24].ip_adapter_number == 49
    assert SITES[59].key == ("output", 5, 1) and SITES[59].ip_adapter_number == 119
    assert SITES[60].key == ("middle", 0, 0) and SITES[60].ip_adapter_number == 121
    assert SITES[69].key == ("middle", 0, 9) and SITES[69].ip_adapter_number == 139
    assert all(s.heads * 64 == s.width for s in SITES)


def test_order_matches_diffusers_unet():
    """Against diffusers' own UNet2DConditionModel.attn_processors (SDXL block layout, tiny widths)."""
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 32), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=24, attention_head_dim=(2, 4, 8), norm_num_groups=8,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 24, use_linear_projection=True)
    names = list(unet.attn_processors)
    assert len(names) == 140
    modules = dict(unet.named_modules())
    for number, name in enumerate(names):
        if number % 2 == 0:
            assert ".attn1." in name
            continue
        site = SITE_BY_IP_NUMBER[number]
        assert name == site.diffusers + ".processor"
        # level 0 is the 640 level (here 16 wide), level 1 the 1280 level (here 32)
        assert modules[site.diffusers].to_q.out_features == (16, 32)[site.level]


def test_site_widths_scale_with_levels():
    assert site_widths((64, 128)) == tuple((64, 128)[s.level] for s in SITES)
    assert site_widths()[0] == 640 and site_widths()[24] == 1280


@pytest.mark.parametrize("bad", [0, 2, 141, -1])
def test_bad_ip_number(bad):
    with pytest.raises(BoLIDError, match="odd number in 1..139"):
        site_of_ip_number(bad)
