"""sam_grid: pixel <-> SAM embedding / low-res grids, checked against segment_anything's transforms."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from sam_utils.sam_grid import (low_res_logits_to_image, pixels_to_embedding_grid, pixels_to_resized,
                                prob_to_low_res_logits, sam_input_size, sample_embedding)

SIZES = [(600, 800), (800, 600), (300, 1000)]   # (H, W), non-square
T, CELL = 1024, 16


def _pool(resized: np.ndarray) -> torch.Tensor:
    """(h', w', C) resized image -> zero-padded to 1024^2 -> 16x16 average -> (C, 64, 64)."""
    h, w, c = resized.shape
    padded = np.zeros((T, T, c), np.float64)
    padded[:h, :w] = resized
    return torch.as_tensor(padded.reshape(64, CELL, 64, CELL, c).mean((1, 3))).permute(2, 0, 1).float()


def _interior_pixels(H, W, n=400, seed=0):
    """Random pixels whose resized position is >= 1.5 cells inside the valid (unpadded) region."""
    h, w = sam_input_size(H, W)
    rng = np.random.default_rng(seed)
    uv = np.stack([rng.integers(0, W, 20 * n), rng.integers(0, H, 20 * n)], 1)
    xy = (uv + 0.5) * np.array([w / W, h / H])
    ok = (xy > 1.5 * CELL).all(1) & (xy[:, 0] < w - 1.5 * CELL) & (xy[:, 1] < h - 1.5 * CELL)
    return torch.as_tensor(uv[ok][:n], dtype=torch.float32)


@pytest.mark.parametrize("H,W", SIZES + [(1200, 1600), (1024, 1024), (37, 53)])
def test_input_size_matches_resize_longest_side(H, W):
    assert sam_input_size(H, W) == ResizeLongestSide.get_preprocess_shape(H, W, T)


@pytest.mark.parametrize("H,W", SIZES)
def test_sample_embedding_recovers_coordinates_float(H, W):
    """Exact float coordinate maps resized like SAM (PIL bilinear): sub-pixel agreement."""
    h, w = sam_input_size(H, W)
    u = np.tile(np.arange(W, dtype=np.float32), (H, 1))                  # (H, W) value = column
    v = np.tile(np.arange(H, dtype=np.float32)[:, None], (1, W))         # (H, W) value = row
    res = [np.asarray(Image.fromarray(a, mode="F").resize((w, h), Image.BILINEAR)) for a in (u, v)]
    emb = _pool(np.stack(res, -1))                                       # (2, 64, 64)
    uv = _interior_pixels(H, W)
    got = sample_embedding(emb, uv, H, W)                                # (B, 2)
    err = (got - uv).abs().max().item()
    assert err < 0.05, f"coordinate error {err:.3f} px (a half-pixel convention slip gives >= 0.5)"


@pytest.mark.parametrize("H,W", SIZES)
def test_sample_embedding_matches_sam_apply_image(H, W):
    """The real ResizeLongestSide.apply_image path (uint8 ramps; coarser tolerance)."""
    u = np.tile(np.arange(W) / (W - 1), (H, 1))
    v = np.tile((np.arange(H) / (H - 1))[:, None], (1, W))
    img = np.round(np.stack([u, v, np.zeros_like(u)], -1) * 255).astype(np.uint8)   # (H, W, 3)
    resized = ResizeLongestSide(T).apply_image(img).astype(np.float64)
    emb = _pool(resized)[:2]                                             # (2, 64, 64)
    uv = _interior_pixels(H, W)
    got = sample_embedding(emb[None], uv, H, W) / 255 * torch.tensor([W - 1, H - 1])
    err = (got - uv).abs().max().item()
    assert err < 0.01 * max(H, W), f"coordinate error {err:.2f} px"


@pytest.mark.parametrize("H,W", SIZES)
def test_resized_coords_agree_with_apply_coords(H, W):
    """SAM places point x at apply_coords(x) + 0.5 (its prompt encoder shifts to pixel centres)."""
    uv = _interior_pixels(H, W).numpy()
    ours = pixels_to_resized(torch.as_tensor(uv), H, W).numpy()
    sam = ResizeLongestSide(T).apply_coords(uv, (H, W)) + 0.5
    s = T / max(H, W)
    assert np.abs(ours - sam).max() <= 0.5 * abs(s - 1) + 1e-4
    grid = pixels_to_embedding_grid(torch.as_tensor(uv), H, W)
    assert grid.abs().max() <= 1 and np.allclose(grid.numpy(), ours * 2 / T - 1, atol=1e-6)


def test_grid_edges():
    """Pixel (0,0)'s centre sits half a resized pixel inside the grid's top-left corner."""
    g = pixels_to_embedding_grid(torch.tensor([[0.0, 0.0], [799.0, 599.0]]), 600, 800)
    assert torch.allclose(g[0], torch.tensor([-1 + 1.28 / T, -1 + 1.28 / T]), atol=1e-6)
    assert torch.allclose(g[1], torch.tensor([1 - 1.28 / T, -1 + 2 * 768 / T - 1.28 / T]), atol=1e-5)
    cont = pixels_to_embedding_grid(torch.tensor([[0.5, 0.5]]), 600, 800, pixel_center_offset=0.0)
    assert torch.allclose(cont, g[:1])


def test_low_res_round_trip_and_sam_postprocess():
    H, W = 150, 200
    yy, xx = np.mgrid[:H, :W]
    disc = ((xx - 120) ** 2 + (yy - 60) ** 2 < 40 ** 2).astype(np.float32)
    low = prob_to_low_res_logits(disc)                                   # (256, 256)
    assert low.shape == (256, 256) and low.dtype == np.float32
    assert low[200:, :].max() < 0, "padding below the image must read as background"
    back = low_res_logits_to_image(low, H, W) > 0
    iou = (back & (disc > 0)).sum() / (back | (disc > 0)).sum()
    assert iou > 0.95
    stub = SimpleNamespace(image_encoder=SimpleNamespace(img_size=T))
    ref = Sam.postprocess_masks(stub, torch.as_tensor(low)[None, None], sam_input_size(H, W), (H, W))
    assert np.allclose(ref[0, 0].numpy(), low_res_logits_to_image(low, H, W), atol=1e-5)


def test_integer_pixels_map_like_float_pixels():
    """Long pixel tensors (as ray batches carry them) must not truncate the resize factor."""
    from sam_utils.sam_grid import pixels_to_resized

    px = torch.tensor([[10, 20], [95, 71]])
    assert torch.allclose(pixels_to_resized(px, 72, 96), pixels_to_resized(px.float(), 72, 96))
    assert pixels_to_resized(px, 72, 96)[0, 0] == pytest.approx((10 + 0.5) * 1024 / 96)
