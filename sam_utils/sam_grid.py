"""Geometry between image pixels and SAM's padded input grids (embedding 64x64, low-res mask 256x256).

SAM resizes an HxW image so its longest side is `target_length` (1024) -> (h', w'), pads it
bottom/right to target_length x target_length, and its encoder yields a grid_size x grid_size
(64x64) embedding in which cell c covers padded-input pixels [16c, 16c+16). The mask decoder
works on a 256x256 grid covering the same padded square.

Pixel convention: pixel index u covers the continuous interval [u, u+1); its centre is u + 0.5.
A resize by s maps the continuous coordinate x to x * s (pixel centres onto pixel centres).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TARGET_LENGTH = 1024    # SAM's longest-side input size
GRID_SIZE = 64          # SAM's image-embedding grid
LOW_RES_SIZE = 256      # SAM's low-res mask grid
LOGIT_CLAMP = 10.0      # |logit| bound when turning probabilities into SAM mask_input logits
PROB_EPS = 1e-4


def sam_input_size(H: int, W: int, target_length: int = TARGET_LENGTH) -> tuple[int, int]:
    """(h', w') of the resized (unpadded) image, exactly as ResizeLongestSide.get_preprocess_shape."""
    scale = target_length * 1.0 / max(H, W)
    return int(H * scale + 0.5), int(W * scale + 0.5)


def pixels_to_resized(pixels_uv: torch.Tensor, H: int, W: int, target_length: int = TARGET_LENGTH,
                      pixel_center_offset: float = 0.5) -> torch.Tensor:
    """Continuous (x, y) in the resized/padded input of pixels (B,2) given as (u=col, v=row).

    pixel_center_offset: added to pixels_uv to get continuous coordinates; 0.5 for integer pixel
    indices, 0.0 when pixels_uv already are continuous positions (e.g. ray pixel centres u+0.5).
    """
    h, w = sam_input_size(H, W, target_length)
    scale = torch.tensor([w / W, h / H], dtype=torch.float32, device=pixels_uv.device)  # (2,) never integer
    return (pixels_uv.to(torch.float32) + pixel_center_offset) * scale   # (B, 2)


def pixels_to_embedding_grid(pixels_uv: torch.Tensor, H: int, W: int,
                             target_length: int = TARGET_LENGTH, grid_size: int = GRID_SIZE,
                             pixel_center_offset: float = 0.5) -> torch.Tensor:
    """Normalised coords (B,2) in [-1,1] for F.grid_sample(align_corners=False) on the embedding.

    With align_corners=False, -1 / +1 are the outer edges of the grid, i.e. padded-input
    coordinates 0 and target_length, so the mapping is linear in the resized coordinate.
    grid_size only fixes the grid's cell layout, which this mapping does not need (kept for
    callers that pass it explicitly).
    """
    del grid_size
    xy = pixels_to_resized(pixels_uv, H, W, target_length, pixel_center_offset)  # (B, 2)
    return xy * (2.0 / target_length) - 1.0


def sample_embedding(emb: torch.Tensor, pixels_uv: torch.Tensor, H: int, W: int,
                     target_length: int = TARGET_LENGTH,
                     pixel_center_offset: float = 0.5) -> torch.Tensor:
    """Bilinear sample of an embedding (C,64,64) (or (1,C,64,64)) at image pixels (B,2) -> (B,C)."""
    if emb.dim() == 4:
        emb = emb[0]
    grid = pixels_to_embedding_grid(pixels_uv, H, W, target_length, emb.shape[-1],
                                    pixel_center_offset)                 # (B, 2)
    out = F.grid_sample(emb[None].float(), grid[None, :, None, :].to(emb.device),
                        mode="bilinear", padding_mode="border", align_corners=False)  # (1,C,B,1)
    return out[0, :, :, 0].T                                             # (B, C)


def low_res_logits_to_image(logits: np.ndarray, H: int, W: int,
                            target_length: int = TARGET_LENGTH) -> np.ndarray:
    """SAM low-res logits (256,256) -> (H,W) float32 logits, as Sam.postprocess_masks does."""
    t = torch.as_tensor(np.asarray(logits, np.float32)).reshape(1, 1, *np.shape(logits)[-2:])
    t = F.interpolate(t, (target_length, target_length), mode="bilinear", align_corners=False)
    h, w = sam_input_size(H, W, target_length)
    t = F.interpolate(t[..., :h, :w], (H, W), mode="bilinear", align_corners=False)
    return t[0, 0].numpy()


def prob_to_low_res_logits(prob: np.ndarray, target_length: int = TARGET_LENGTH,
                           low_res: int = LOW_RES_SIZE, clamp: float = LOGIT_CLAMP) -> np.ndarray:
    """(H,W) probabilities in [0,1] -> (low_res,low_res) float32 logits laid out like SAM's mask_input.

    The map is resized like the image, zero-padded (padding = background) and area-downsampled;
    logits are clamped to +-clamp so an overconfident prior cannot dominate the decoder.
    """
    prob = np.asarray(prob, np.float32)
    H, W = prob.shape
    h, w = sam_input_size(H, W, target_length)
    t = torch.as_tensor(prob)[None, None]
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
    t = F.pad(t, (0, target_length - w, 0, target_length - h))
    t = F.adaptive_avg_pool2d(t, low_res)[0, 0].clamp(PROB_EPS, 1 - PROB_EPS)
    return torch.logit(t).clamp(-clamp, clamp).numpy()
