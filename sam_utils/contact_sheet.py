"""One PNG showing every view with masks drawn on it: the lifting's rounds (green: accepted, orange:
projection only), and any other per-view picture built from the same tiles (tile, paint, grid)."""
from __future__ import annotations

import math

import cv2
import numpy as np

TILE_WIDTH = 240            # pixels per view tile
OVERLAY_ALPHA = 0.45
ACCEPTED_RGB = (40, 220, 60)
REJECTED_RGB = (255, 150, 20)
FONT_SCALE = 0.45


def tile(image: np.ndarray, tile_width: int = TILE_WIDTH) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (th, tile_width, 3) float32, the view's tile."""
    h, w = image.shape[:2]
    return cv2.resize(image, (tile_width, max(1, round(h * tile_width / w))),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


def paint(t: np.ndarray, mask: np.ndarray, rgb, outline: bool = True, alpha: float = OVERLAY_ALPHA) -> None:
    """Tint the tile t (th,tw,3) float32 in place with rgb (weight alpha) where mask (H,W) bool (resized to
    the tile) holds, and outline it."""
    mt = cv2.resize(mask.astype(np.uint8), (t.shape[1], t.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    color = np.array(rgb, np.float32)
    t[mt] = (1 - alpha) * t[mt] + alpha * color
    if outline:
        contours, _ = cv2.findContours(mt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(t, contours, -1, tuple(float(c) for c in color), 1)


def grid(tiles: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Tiles (th,tw,3) of one size, each labelled in its corner -> one RGB uint8 image, rows of ~sqrt(N)."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    th, tw = tiles[0].shape[:2]
    sheet = np.zeros((math.ceil(n / cols) * th, cols * tw, 3), np.uint8)
    for i, (t, label) in enumerate(zip(tiles, labels)):
        t = np.clip(t, 0, 255).astype(np.uint8)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    return sheet


def contact_sheet(images: list[np.ndarray], masks: np.ndarray, accepted: np.ndarray, labels: list[str],
                  tile_width: int = TILE_WIDTH) -> np.ndarray:
    """images: N x (H,W,3) uint8 RGB; masks (N,H,W) bool; returns one RGB uint8 grid image."""
    tiles = []
    for img, m, ok in zip(images, masks, accepted):
        tiles.append(tile(img, tile_width))
        paint(tiles[-1], m, ACCEPTED_RGB if ok else REJECTED_RGB)
    return grid(tiles, labels)
