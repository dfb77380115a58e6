"""Which pixels of a view show surface that another view also sees (depth-tested reprojection).

The lifting loop uses it to judge a segmenter's answer only where the occupancy field has evidence:
a pixel is "known" when its surface point is visible in some accepted view, so a projection that
is partial because no accepted view has seen that side yet does not make a correct answer look
wrong. Points come from rendered (or ground-truth) depth; cameras are 3x4 projection matrices
P = K [R | t] (world -> pixels, third row = camera depth).
"""
from __future__ import annotations

import numpy as np


def project(P: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points X (M,3) through P (3,4) -> pixels (M,2) (x = column, y = row) and camera depth z (M,)."""
    x = X @ P[:, :3].T + P[:, 3]
    z = x[:, 2]
    return x[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)[:, None], z


def visible_in(X: np.ndarray, P: np.ndarray, points: np.ndarray, valid: np.ndarray, scale: tuple[float, float],
               tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where points X (M,3) land in a view and whether that view sees them.

    points (h,w,3), valid (h,w): the view's own surface point per pixel of its (h,w) grid; P maps to
    full-size pixels, scale = (w / W, h / H) maps those onto the grid. Seen = in the image, on surface,
    and at the view's own depth within tol (relative). Returns row, col (M,) in the grid and seen (M,).
    """
    h, w = valid.shape
    uv, z = project(P, X)
    col = np.round((uv[:, 0] + 0.5) * scale[0] - 0.5).astype(np.int64)
    row = np.round((uv[:, 1] + 0.5) * scale[1] - 0.5).astype(np.int64)
    inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    row, col = np.where(inside, row, 0), np.where(inside, col, 0)
    _, z_own = project(P, points[row, col])
    seen = inside & valid[row, col] & (np.abs(z_own - z) <= tol * np.abs(z_own))
    return row, col, seen


def known_pixels(points: np.ndarray, valid: np.ndarray, P: np.ndarray, accepted: np.ndarray,
                 full_size: tuple[int, int], tol: float) -> np.ndarray:
    """(N,h,w) bool: surface pixels of each view that some accepted view sees.

    points (N,h,w,3), valid (N,h,w), P (N,3,4) to full-size pixels (H, W) = full_size.
    """
    n, h, w = valid.shape
    scale = (w / full_size[1], h / full_size[0])
    known = np.zeros((n, h, w), bool)
    for v in range(n):
        X = points[v][valid[v]]                                          # (M,3)
        seen = np.zeros(len(X), bool)
        for j in np.flatnonzero(accepted):
            seen |= visible_in(X, P[j], points[j], valid[j], scale, tol)[2]
        known[v][valid[v]] = seen
    return known
