"""Gaussian keypoint weighting, paper eq. 11-13, against a direct per-pixel evaluation."""

import math

import pytest
import torch

from bolid_lib.method import weighting as wt
from bolid_lib.errors import BoLIDError


def direct_w_norm(kp: torch.Tensor, h: int, w: int, sigma_px: float) -> torch.Tensor:
    """Eq. 11-13 evaluated at every pixel in float64 (pixel centres at +0.5), the reference.

    No separability, no log-space shift: w_i at each pixel from the full 2-D distance, max, divide.
    """
    kp = kp.double()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    d2 = (xs - kp[:, :, 0, None, None]) ** 2 + (ys - kp[:, :, 1, None, None]) ** 2     # (B, K, H, W)
    w_i = torch.exp(-d2 / (2 * sigma_px**2))                                               # eq. 11
    w_i = torch.where(kp[:, :, 2, None, None] > 0, w_i, torch.zeros(()).double())          # invisible: out
    big_w = w_i.amax(dim=1)                                                                 # eq. 12
    peak = big_w.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, big_w / torch.where(peak > 0, peak, 1.0), 0.0)             # eq. 13


def test_direct_reference_matches_scalar_formula():
    """The vectorised reference against a scalar loop at a few pixels."""
    kp = random_keypoints(1, 17, 6, 7, seed=12)
    ref = direct_w_norm(kp, 6, 7, 1.3)
    raw = {}
    for y in range(6):
        for x in range(7):
            vals = [math.exp(-((x + 0.5 - float(kp[0, j, 0])) ** 2 + (y + 0.5 - float(kp[0, j, 1])) ** 2) / (2 * 1.3**2))
                    for j in range(17) if kp[0, j, 2] > 0]
            raw[y, x] = max(vals)
    top = max(raw.values())
    for (y, x), v in raw.items():
        assert abs(ref[0, y, x].item() - v / top) < 1e-12


def random_keypoints(b, k, h, w, seed, p_visible=0.7, margin=0.0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, k, 3, generator=g)
    kp[..., 0] = kp[..., 0] * (w + 2 * margin) - margin
    kp[..., 1] = kp[..., 1] * (h + 2 * margin) - margin
    kp[..., 2] = torch.where(torch.rand(b, k, generator=g) < p_visible, 0.3 + 0.7 * kp[..., 2], torch.zeros(()))
    return kp


@pytest.mark.parametrize("sigma_px", [0.4, 1.5, 4.0, 30.0])
@pytest.mark.parametrize("margin", [0.0, 6.0])
def test_weight_map_matches_direct_evaluation(sigma_px, margin):
    h, w = 11, 14
    kp = random_keypoints(3, 17, h, w, seed=int(sigma_px * 10 + margin), margin=margin)
    kp[2, :, 2] = 0  # an image with no visible keypoint at all
    got = wt.weight_map(kp, h, w, sigma_px, sigma_mode="pixels")
    ref = direct_w_norm(kp, h, w, sigma_px)
    assert got.shape == (3, h, w) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=2e-7, rtol=1e-6)
    assert torch.equal(got[2], torch.zeros(h, w))


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.75, 1.0])
def test_apply_weighting_matches_formula(sigma, alpha):
    h, w = 9, 13
    kp = random_keypoints(2, 17, h, w, seed=7)
    kp[1, :, 2] = 0
    images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    weighted, w_norm = wt.apply_weighting(images, kp, sigma=sigma, alpha=alpha, sigma_mode="relative")
    ref_w = direct_w_norm(kp, h, w, sigma * min(h, w))
    ref = images.double() * (alpha + (1 - alpha) * ref_w[:, None])
    torch.testing.assert_close(weighted.double(), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(w_norm.double(), ref_w, atol=2e-7, rtol=1e-6)
    # No visible keypoint: W_norm = 0, so I_w = alpha * I (no division by zero).
    torch.testing.assert_close(weighted[1], alpha * images[1])


def test_alpha_one_leaves_image_unchanged():
    images = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(2))
    kp = random_keypoints(3, 17, 16, 20, seed=3)
    weighted, _ = wt.apply_weighting(images, kp, sigma=0.1, alpha=1.0)
    assert torch.equal(weighted, images)


def test_invisible_keypoints_take_no_part():
    h, w = 12, 12
    kp = random_keypoints(1, 17, h, w, seed=4, p_visible=1.0)
    hidden = kp.clone()
    hidden[0, 3:9, 2] = 0
    # Moving an invisible point anywhere changes nothing.
    moved = hidden.clone()
    moved[0, 3:9, :2] = torch.tensor([0.0, 0.0])
    a = wt.weight_map(hidden, h, w, 2.0, "pixels")
    b = wt.weight_map(moved, h, w, 2.0, "pixels")
    assert torch.equal(a, b)
    assert not torch.equal(a, wt.weight_map(kp, h, w, 2.0, "pixels"))


def test_peak_is_one_at_the_most_central_keypoint():
    """Keypoints on pixel centres: W_norm = 1 there; the centre-most keypoint's pixel is a global max."""
    h, w = 21, 21
    kp = torch.zeros(1, 17, 3)
    kp[0, 0] = torch.tensor([10.5, 10.5, 0.9])   # image centre
    kp[0, 1] = torch.tensor([3.5, 17.5, 0.6])
    kp[0, 2] = torch.tensor([18.5, 2.5, 0.0])    # invisible
    w_norm = wt.weight_map(kp, h, w, 3.0, "pixels")
    assert w_norm[0, 10, 10] == 1.0
    assert w_norm.max() == 1.0
    assert torch.isclose(w_norm[0, 17, 3], torch.tensor(1.0))
    assert w_norm[0, 2, 18] < 1e-3  # nothing around the invisible point


def test_peak_normalised_when_keypoints_off_pixel_centres_or_outside():
    """Eq. 13 normalises by the map's own maximum: it is 1 even when no keypoint sits on a pixel centre."""
    kp = torch.tensor([[[-40.0, 5.3, 1.0], [30.0, -20.0, 0.5]] + [[0.0, 0.0, 0.0]] * 15])
    for sigma in (0.01, 0.5, 3.0):
        w_norm = wt.weight_map(kp, 10, 10, sigma, "pixels")
        assert torch.isfinite(w_norm).all()
        assert w_norm.max() == 1.0


def test_tiny_and_zero_sigma_give_a_one_pixel_peak():
    kp = torch.zeros(1, 17, 3)
    kp[0, 5] = torch.tensor([4.2, 6.9, 1.0])
    for sigma in (0.0, 1e-9):
        w_norm = wt.weight_map(kp, 10, 10, sigma, "pixels")
        assert w_norm[0, 6, 4] == 1.0
        assert w_norm.sum() == 1.0


def test_huge_sigma_weights_everything_fully():
    images = torch.rand(1, 3, 8, 8)
    kp = random_keypoints(1, 17, 8, 8, seed=5)
    weighted, w_norm = wt.apply_weighting(images, kp, sigma=1e6, alpha=0.0, sigma_mode="pixels")
    torch.testing.assert_close(w_norm, torch.ones_like(w_norm))
    torch.testing.assert_close(weighted, images)


def test_per_image_sigma_and_alpha():
    h, w = 10, 10
    kp = random_keypoints(2, 17, h, w, seed=6)
    images = torch.rand(2, 3, h, w)
    sig, alp = torch.tensor([1.0, 3.0]), torch.tensor([0.1, 0.6])
    weighted, w_norm = wt.apply_weighting(images, kp, sigma=sig, alpha=alp, sigma_mode="pixels")
    for i in range(2):
        wi, ni = wt.apply_weighting(images[i : i + 1], kp[i : i + 1], float(sig[i]), float(alp[i]), "pixels")
        torch.testing.assert_close(weighted[i : i + 1], wi)
        torch.testing.assert_close(w_norm[i : i + 1], ni)


def test_relative_sigma_is_resolution_independent():
    """The same relative sigma at 2x resolution gives the 2x-sampled map (up to pixel-centre placement)."""
    kp = torch.zeros(1, 17, 3)
    kp[0, 0] = torch.tensor([8.0, 6.0, 1.0])
    kp[0, 1] = torch.tensor([3.0, 12.0, 1.0])
    small = wt.weight_map(kp, 16, 16, 0.15)
    kp2 = kp.clone()
    kp2[..., :2] *= 2
    big = wt.weight_map(kp2, 32, 32, 0.15)
    assert wt.sigma_to_pixels(0.15, 32, 32).item() == 2 * wt.sigma_to_pixels(0.15, 16, 16).item()
    # A keypoint's map at scale 2 sampled at (2p) equals the scale-1 map at p (exact Gaussian scaling).
    ref = wt.keypoint_gaussians(kp, 16, 16, 0.15 * 16).amax(1)
    ref2 = wt.keypoint_gaussians(kp2, 32, 32, 0.15 * 32).amax(1)
    assert torch.allclose(small, ref / ref.max(), atol=1e-6) and torch.allclose(big, ref2 / ref2.max(), atol=1e-6)
    torch.testing.assert_close(small.mean(), big.mean(), atol=0.01, rtol=0.05)


def test_keypoint_gaussians_eq11_and_invisible_zero():
    kp = random_keypoints(2, 17, 7, 9, seed=8)
    maps = wt.keypoint_gaussians(kp, 7, 9, torch.tensor([1.0, 2.5]))
    assert maps.shape == (2, 17, 7, 9)
    for b, s in ((0, 1.0), (1, 2.5)):
        for j in range(17):
            if kp[b, j, 2] <= 0:
                assert torch.equal(maps[b, j], torch.zeros(7, 9))
                continue
            ys, xs = torch.meshgrid(torch.arange(7) + 0.5, torch.arange(9) + 0.5, indexing="ij")
            ref = torch.exp(-((xs - kp[b, j, 0]) ** 2 + (ys - kp[b, j, 1]) ** 2) / (2 * s * s))
            torch.testing.assert_close(maps[b, j], ref, atol=1e-6, rtol=1e-5)


def test_weight_map_equals_max_of_keypoint_gaussians_on_large_batch():
    """The row-blocked running max equals the materialised max (blocks smaller than the image)."""
    kp = random_keypoints(3, 17, 70, 50, seed=9, margin=10)
    old = wt._ROW_BLOCK_ELEMENTS
    try:
        wt._ROW_BLOCK_ELEMENTS = 3 * 50 * 8  # 8 rows per block, 70 rows: a ragged last block
        got = wt.weight_map(kp, 70, 50, 6.0, "pixels")
    finally:
        wt._ROW_BLOCK_ELEMENTS = old
    maps = wt.keypoint_gaussians(kp, 70, 50, 6.0).amax(1)
    ref = maps / maps.amax(dim=(1, 2), keepdim=True).clamp(min=1e-30)
    ref[~(kp[..., 2] > 0).any(1)] = 0
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=-1.0), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(sigma=float("inf")), "sigma"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(sigma_mode="percent"), "sigma_mode"),
        (dict(sigma=torch.tensor([0.1, 0.2, 0.3])), "one per image"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    images = torch.rand(2, 3, 8, 8)
    kp = random_keypoints(2, 17, 8, 8, seed=10)
    with pytest.raises(BoLIDError, match=match):
        wt.apply_weighting(images, kp, **kwargs)


def test_shape_errors():
    with pytest.raises(BoLIDError, match=r"\(B, K, 3\)"):
        wt.weight_map(torch.zeros(2, 17, 2), 8, 8)
    with pytest.raises(BoLIDError, match="keypoints for 3"):
        wt.apply_weighting(torch.rand(2, 3, 8, 8), torch.zeros(3, 17, 3))
    with pytest.raises(BoLIDError, match="height, width"):
        wt.weight_map(torch.zeros(1, 17, 3), 0, 8)


def test_heatmap_overlay_shape_and_range():
    images = torch.rand(2, 3, 10, 12)
    kp = random_keypoints(2, 17, 10, 12, seed=11)
    _, w_norm = wt.apply_weighting(images, kp)
    over = wt.heatmap_overlay(images, w_norm)
    assert over.shape == (2, 3, 10, 12)
    assert over.min() >= 0 and over.max() <= 1
    hot, cold = wt.colorize(torch.ones(1, 1, 1))[0, :, 0, 0], wt.colorize(torch.zeros(1, 1, 1))[0, :, 0, 0]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red high, blue low
    grey = wt.heatmap_overlay(images[:, :1], w_norm)
    assert grey.shape == (2, 3, 10, 12)


def test_batched_steps_equal_one_step_and_report_progress():
    images = torch.rand(5, 3, 12, 10, generator=torch.Generator().manual_seed(13))
    kp = random_keypoints(5, 17, 12, 10, seed=14)
    kp[3, :, 2] = 0
    whole = wt.apply_weighting(images, kp, sigma=torch.linspace(0.05, 0.4, 5), alpha=0.3)
    calls = []
    parts = wt.apply_weighting(images, kp, sigma=torch.linspace(0.05, 0.4, 5), alpha=0.3, batch_size=2,
                               progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert torch.equal(whole[0], parts[0]) and torch.equal(whole[1], parts[1])


# --- the browser's live preview (js/bolid_weighting.js) computes the same eq. 11-13 -----------------

def _run_js_weight_map(cases):
    """Evaluate weightMap() from js/bolid_weighting.js with Node.js on each case; list of flat arrays."""
    import json
    import re
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js not found: the JS weight map is checked where node is installed")
    src = (Path(__file__).resolve().parents[2] / "js" / "bolid_weighting.js").read_text()
    m = re.search(r"export function weightMap\(.*?\n}\n", src, re.S)
    assert m, "weightMap() not found in js/bolid_weighting.js"
    script = m.group(0).replace("export ", "") + (
        f"const cases = {json.dumps(cases)};\n"
        "console.log(JSON.stringify(cases.map(c => Array.from(weightMap(c.kp, c.size, c.preview, c.sigma)))));\n"
    )
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_js_live_preview_matches_python():
    kp = random_keypoints(3, 17, 20, 30, seed=15, margin=4)
    kp[2, :, 2] = 0
    cases = [
        {"kp": kp[0].tolist(), "size": [20, 30], "preview": [20, 30], "sigma": 3.0},   # same size: identical map
        {"kp": kp[1].tolist(), "size": [20, 30], "preview": [10, 15], "sigma": 4.0},   # half-size preview
        {"kp": kp[2].tolist(), "size": [20, 30], "preview": [10, 15], "sigma": 4.0},   # nothing visible
        {"kp": kp[0].tolist(), "size": [20, 30], "preview": [20, 30], "sigma": 1e-3},  # tiny sigma, no 0/0
    ]
    js = [torch.tensor(v, dtype=torch.float64) for v in _run_js_weight_map(cases)]
    torch.testing.assert_close(js[0].reshape(20, 30), wt.weight_map(kp[:1], 20, 30, 3.0, "pixels")[0].double(), atol=1e-6, rtol=1e-5)
    # The preview samples original pixel (2x + 1): the direct formula on keypoints and sigma scaled by 1/2.
    half = kp[1:2].clone()
    half[..., :2] /= 2
    torch.testing.assert_close(js[1].reshape(10, 15), direct_w_norm(half, 10, 15, 2.0)[0], atol=1e-6, rtol=1e-6)  # Float32Array
    assert not js[2].any()
    torch.testing.assert_close(js[3].reshape(20, 30), wt.weight_map(kp[:1], 20, 30, 0.0, "pixels")[0].double())


@pytest.mark.parametrize("tile", [3, 8, 32])
@pytest.mark.parametrize("sigma_px", [0.7, 5.0, 40.0])
def test_tile_pruning_is_exact(tile, sigma_px):
    """Only the keypoints that can win a tile are evaluated there: the result equals the full max (eq. 12)."""
    g = torch.Generator().manual_seed(int(sigma_px * 10) + tile)
    h, w = 61, 90
    kp = random_keypoints(4, 17, h, w, seed=tile, margin=15)
    kp[1, :5, :2] = torch.tensor([40.0, 20.0]) + torch.randn(5, 2, generator=g)  # a tight cluster (a face)
    kp[2, :, 2] = 0
    kp[3, 1:, 2] = 0  # a single visible keypoint
    old = wt._TILE
    try:
        wt._TILE = tile
        got = wt.weight_map(kp, h, w, sigma_px, "pixels")
    finally:
        wt._TILE = old
    torch.testing.assert_close(got.double(), direct_w_norm(kp, h, w, sigma_px), atol=2e-7, rtol=1e-6)
    need = wt._tile_candidates(kp, h, w, tile)
    assert need.sum(1).float().mean() < (kp[..., 2] > 0).sum(1).float().mean()  # something was pruned
