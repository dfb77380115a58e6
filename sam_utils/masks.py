"""Mask helpers shared by the segmenters, the lifting and the evaluation: IoU, boxes, packing, pixels."""
from __future__ import annotations

import cv2
import numpy as np


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks of equal shape; both empty -> 1.0."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: pred {pred.shape} vs gt {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a (H,W) bool mask's pixels, inclusive; None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def grow_box(box: tuple[int, int, int, int], margin: float, height: int, width: int) -> np.ndarray:
    """A box grown by `margin` times its size on each side, clipped to the image -> float64 (4,)."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
    return np.array([max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, width - 1), min(y1 + my, height - 1)],
                    dtype=np.float64)


def pack_masks(masks: np.ndarray) -> dict:
    """(..., H, W) bool -> a compact, checkpointable dict (bits along the rows)."""
    masks = np.asarray(masks, bool)
    return {"bits": np.packbits(masks, axis=-1), "shape": tuple(masks.shape)}


def unpack_masks(packed: dict) -> np.ndarray:
    """Inverse of pack_masks."""
    shape = tuple(packed["shape"])
    return np.unpackbits(packed["bits"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


def pixel_indices(xy: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous pixel coordinates (K,2) x, y -> integer (cols, rows) of the pixels they fall in, clipped."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    cols = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, height - 1)
    return cols, rows


def downsample_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N,H,W) bool -> (N,height,width) bool: a cell is set when at least half of it is."""
    if masks.shape[1:] == (height, width):
        return masks
    return np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) >= 0.5
                     for m in masks])


def disagreement(lifted: np.ndarray, prompt_mask: np.ndarray) -> str:
    """Why the prompt view's lifted mask and the prompt's own mask (H,W) bool differ, in the user's words:
    which one holds what the other lacks. A lifted mask inside the prompt's is either a part of the target
    or the right answer to a prompt mask that spilled past the object; one reaching past it either took in
    a neighbour or completed what the prompt mask missed: the masks alone cannot tell, the user can."""
    lifted, prompt_mask = np.asarray(lifted, bool), np.asarray(prompt_mask, bool)
    both = float((lifted & prompt_mask).sum())
    kept = both / max(float(prompt_mask.sum()), 1.0)          # share of the prompt's mask the lifted one keeps
    inside = both / max(float(lifted.sum()), 1.0)             # share of the lifted mask inside the prompt's
    if inside >= 0.9 and kept < 0.9:
        return (f"it keeps {kept:.0%} of your prompt's mask: either that mask spilled past the object (then the "
                f"lifted one is right) or the result is a part of the target")
    if kept >= 0.9 and inside < 0.9:
        return (f"{1 - inside:.0%} of it lies outside your prompt's mask: either that mask missed part of the "
                f"object (then the lifted one is right) or the result took in a neighbour")
    return f"they overlap in {both:.0f} pixels only: the result may be another object or a part of the target"
