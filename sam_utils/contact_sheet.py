"""One PNG showing every view with its mask drawn on it (green: accepted, orange: projection only)."""
from __future__ import annotations

import math

import cv2
import numpy as np

TILE_WIDTH = 240            # pixels per view tile
OVERLAY_ALPHA = 0.45
ACCEPTED_RGB = (40, 220, 60)
REJECTED_RGB = (255, 150, 20)
FONT_SCALE = 0.45


def contact_sheet(images: list[np.ndarray], masks: np.ndarray, accepted: np.ndarray, labels: list[str],
                  tile_width: int = TILE_WIDTH) -> np.ndarray:
    """images: N x (H,W,3) uint8 RGB; masks (N,H,W) bool; returns one RGB uint8 grid image."""
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = images[0].shape[:2]
    th = max(1, round(h * tile_width / w))
    sheet = np.zeros((rows * th, cols * tile_width, 3), np.uint8)
    for i, (img, m) in enumerate(zip(images, masks)):
        tile = cv2.resize(img, (tile_width, th), interpolation=cv2.INTER_AREA).astype(np.float32)
        mt = cv2.resize(m.astype(np.uint8), (tile_width, th), interpolation=cv2.INTER_NEAREST).astype(bool)
        color = np.array(ACCEPTED_RGB if accepted[i] else REJECTED_RGB, np.float32)
        tile[mt] = (1 - OVERLAY_ALPHA) * tile[mt] + OVERLAY_ALPHA * color
        tile = tile.astype(np.uint8)
        contours, _ = cv2.findContours(mt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, tuple(int(c) for c in color), 1)
        cv2.putText(tile, labels[i], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        sheet[r * th:(r + 1) * th, c * tile_width:(c + 1) * tile_width] = tile
    return sheet
