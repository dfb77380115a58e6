"""Each view's rendered surface as a set of world points, and where a world point lands in the
views: grid pixel, camera depth, and whether the view sees it (its own surface there is at the
point's depth, within a relative tolerance). The geometry the target stage's occlusion test
(target_geometry.py) and the tests' ideal field build on.

Shapes: N views, surface grids (h,w) (the depth rendered at 1/level), P (N,3,4) maps world points to
full-resolution pixels (H,W).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .masks import downsample_masks

MAX_PAIRS = 1 << 23     # (view, point) pairs projected at once: bounds the memory of one step


class Surface:
    """points (N,h,w,3) surface point per pixel, valid (N,h,w) surface hit, P (N,3,4), full_hw (H,W)."""

    def __init__(self, points, valid, P, full_hw: tuple[int, int], depth_tol: float):
        self.points = torch.as_tensor(points, dtype=torch.float64)
        self.valid = torch.as_tensor(valid, dtype=torch.bool, device=self.points.device)
        self.P = torch.as_tensor(P, dtype=torch.float64, device=self.points.device)
        n, h, w = self.valid.shape
        self.shape, self.full_hw, self.tol = (n, h, w), full_hw, depth_tol
        self.scale = torch.tensor([w / full_hw[1], h / full_hw[0]], dtype=torch.float64, device=self.points.device)
        # each view's own camera depth per grid pixel (for the visibility test)
        self.depth = torch.stack([self._project(self.points[j].reshape(1, -1, 3), [j])[1].reshape(h, w)
                                  for j in range(n)])

    def _project(self, X: torch.Tensor, views: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (J,M,3) or (1,M,3) -> continuous grid coordinates (J,M,2) in `views` and camera depth (J,M)."""
        P = self.P[views]                                                         # (J,3,4)
        x = torch.einsum("jmc,jrc->jmr", X.expand(len(views), -1, -1), P[:, :, :3]) + P[:, None, :, 3]
        z = x[..., 2]
        uv = x[..., :2] / torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)[..., None]
        return (uv + 0.5) * self.scale - 0.5, z

    def _chunks(self, m: int) -> list[list[int]]:
        """The views in groups small enough that m points projected into one group stay under MAX_PAIRS."""
        step = max(1, MAX_PAIRS // max(m, 1))
        return [list(range(v0, min(self.shape[0], v0 + step))) for v0 in range(0, self.shape[0] if m else 0, step)]

    def _land(self, X: torch.Tensor, views: list[int]):
        """Where X (M,3) lands in each of `views`, all (J,M): view, grid row and col, in the image and in
        front, on a pixel that shows surface, that surface's camera depth, and X's."""
        n, h, w = self.shape
        g, z = self._project(X[None], views)
        col, row = torch.round(g[..., 0]).long(), torch.round(g[..., 1]).long()
        inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        row, col = torch.where(inside, row, 0), torch.where(inside, col, 0)
        idx = torch.as_tensor(views, device=X.device)[:, None].expand_as(row)
        return idx, row, col, inside, inside & self.valid[idx, row, col], self.depth[idx, row, col], z

    @torch.no_grad()
    def seen_inside(self, view: int, mask) -> torch.Tensor:
        """(N,h,w) bool: the pixels whose surface point `view` sees (depth-tested) inside `mask` (h,w) bool,
        a mask on view's grid: where that view's label carries over the surface to every view."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.points.device)
        _, row, col, _, seen = self._lookup(self.points[self.valid], [view])
        out = torch.zeros(self.shape, dtype=torch.bool, device=self.points.device)
        out[self.valid] = (seen & mask[row, col])[0]
        return out

    @torch.no_grad()
    def seen_by(self, views) -> torch.Tensor:
        """(N,h,w) bool: the pixels whose surface point some view of `views` sees (depth-tested): surface
        that views' labels rest on; the rest is unseen by them."""
        views = [int(v) for v in views]
        X = self.points[self.valid]
        hit = torch.zeros(len(X), dtype=torch.bool, device=X.device)
        step = max(1, MAX_PAIRS // max(len(X), 1))
        for i in range(0, len(views), step):
            hit |= self._lookup(X, views[i:i + step])[4].any(0)
        out = torch.zeros(self.shape, dtype=torch.bool, device=X.device)
        out[self.valid] = hit
        return out

    def _lookup(self, X: torch.Tensor, views: list[int]):
        """Where X (M,3) lands in each view's grid: row, col (J,M), in the image and in front (J,M), seen (J,M)
        (the view's own surface there at X's depth, within the tolerance relative to that surface's depth)."""
        idx, row, col, inside, on, own, z = self._land(X, views)
        return idx, row, col, inside, on & ((own - z).abs() <= self.tol * own.abs())


def carried_labels(surface: Surface, view: int, mask: np.ndarray, erode: int) -> np.ndarray:
    """(N,h,w) bool: the grid pixels of every view whose surface point `view` sees inside the interior of
    `mask` (H,W) bool (full resolution, eroded by `erode` pixels: a segmenter's mask spills past the
    silhouette, onto the surface behind). One view's label carried over the reconstructed geometry."""
    n, h, w = surface.shape
    inner = cv2.erode(np.asarray(mask, np.uint8), np.ones((2 * erode + 1,) * 2, np.uint8)) > 0 if erode > 0 else mask
    return surface.seen_inside(view, downsample_masks(np.asarray(inner, bool)[None], h, w)[0]).cpu().numpy()
