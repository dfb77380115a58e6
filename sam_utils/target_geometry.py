"""Geometry of the target stage's supervision, from the scene's rendered surface and the lifted masks.

- OcclusionTest (a surface.Surface): the pixels outside a view's target mask behind which target
  surface hides (an occluder in front of it). The target's surface points that other views see
  inside their masks, projected into view v, that land outside v's mask where v's own surface is
  nearer than the point (by more than depth_tol, relative): there the mask's "not target" means
  "something in front", so the target field must not learn empty space there. Carried a few pixels
  over the occluder (its surface still nearer than the hidden target): target surface that no view
  sees (its back where it touches the occluder) hides there too.
- VisualHull: a point that projects, in some view where it lies inside the image, outside that
  view's mask is outside the target (NeuS's mask-based mesh cleaning).

Shapes: N views, surface grids (h,w) (rendered at 1/level), full-resolution images (H,W), P (N,3,4)
maps unit-sphere points to full-resolution pixels (integer = pixel centre).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sam_utils.surface import MAX_PAIRS, Surface


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """(N,h,w) bool grown by `radius` pixels (square structuring element); radius < 0 erodes."""
    if radius == 0:
        return masks
    r = abs(radius)
    x = masks[:, None].float() if radius > 0 else (~masks)[:, None].float()
    grown = F.max_pool2d(x, 2 * r + 1, stride=1, padding=r)[:, 0] > 0
    return grown if radius > 0 else ~grown


class OcclusionTest(Surface):
    """points (N,h,w,3) rendered surface, valid (N,h,w) surface hit, P (N,3,4), full_hw (H,W), depth_tol."""

    def __init__(self, points, valid, P, full_hw: tuple[int, int], depth_tol: float):
        super().__init__(points, valid, P, full_hw, depth_tol)
        # the nearest surface each view shows around each pixel (3x3; +inf where it shows none)
        far = torch.where(self.valid, self.depth, torch.full_like(self.depth, float("inf")))
        self.nearest = -F.max_pool2d(-far[:, None], 3, stride=1, padding=1)[:, 0]

    def _classify(self, X: torch.Tensor, views: list[int], masks: torch.Tensor):
        """Where X (M,3) lands in `views`, each (J,M): view, row, col; `behind` the pixel's surface (nearer
        than X); `seen` there (its surface at X's depth); `free` (every surface around the pixel, or none,
        lies beyond X: the view sees through X); the pixel's mask; X's camera depth. Tolerances relative to
        X's depth."""
        idx, row, col, image, on, own, z = self._land(X, views)
        margin = self.tol * z.abs()
        behind, seen = on & (z - own > margin), on & ((z - own).abs() <= margin)
        free = image & (self.nearest[idx, row, col] - z > margin)
        return idx, row, col, behind, seen, free, masks[idx, row, col], z

    @torch.no_grad()
    def occluded(self, masks, grow: int, reach: int = 0) -> torch.Tensor:
        """(N,h,w) bool: pixels outside `masks` (N,h,w) bool where another view's target surface lies
        behind this view's own surface, extended `reach` grid pixels over the occluder (`_reach`), then
        grown by `grow` grid pixels (never into the masks).

        The source points are the masks' interiors (eroded by one pixel) that a second view sees too
        (inside its mask, at its depth) and no view sees through: a rendered depth that mixes two
        surfaces along a grazing ray, or a floater, is a point in mid-air that would hide "behind"
        whatever another view shows there. Points landing within one pixel of a mask are left out (the
        growth restores that ring): there the field's silhouette and the mask's disagree, and the
        target would hide its own back.
        """
        n, h, w = self.shape
        masks = torch.as_tensor(masks, dtype=torch.bool, device=self.points.device)
        X = self.points[self.valid & dilate(masks, -1)]                            # (M,3) target surface
        through = torch.zeros(len(X), dtype=torch.bool, device=X.device)
        seen = torch.zeros(len(X), dtype=torch.long, device=X.device)
        for views in self._chunks(len(X)):
            _, _, _, _, saw, free, label, _ = self._classify(X, views, masks)
            through |= free.any(0)
            seen += (saw & label).sum(0)
        X = X[~through & (seen >= 2)]
        behind_depth = torch.full((n, h, w), float("inf"), dtype=torch.float64, device=masks.device)
        ring = dilate(masks, 1)
        for views in self._chunks(len(X)):
            idx, row, col, behind, _, _, label, z = self._classify(X, views, ring)
            behind &= ~label
            flat = (idx * h + row) * w + col
            behind_depth.view(-1).scatter_reduce_(0, flat[behind], z[behind], "amin")
        hit = self._reach(behind_depth, masks, reach)
        return dilate(hit, grow) & ~masks

    def _reach(self, depth: torch.Tensor, masks: torch.Tensor, steps: int) -> torch.Tensor:
        """The occluded pixels (finite `depth` (N,h,w): the nearest hidden target point's camera depth)
        extended, one grid pixel a step, to neighbours outside `masks` whose own surface lies in front of
        that depth (by more than the tolerance): the occluder goes on hiding the target there, where no
        view saw the target's surface (its back at a contact, say), so the target field must not learn
        empty space through it. Background (no surface) and surfaces at or behind the target stop it."""
        hit = torch.isfinite(depth)
        for _ in range(steps):
            near = -F.max_pool2d(-depth[:, None], 3, stride=1, padding=1)[:, 0]     # nearest hidden depth around
            new = ~hit & ~masks & self.valid & torch.isfinite(near) & (self.depth < near * (1.0 - self.tol))
            if not new.any():
                break
            depth = torch.where(new, near, depth)
            hit |= new
        return hit


class VisualHull:
    """P (N,3,4) unit points -> pixels, masks (N,H,W) bool (already grown for safety), on one device."""

    def __init__(self, P, masks: torch.Tensor):
        self.masks = masks
        self.P = torch.as_tensor(P, dtype=torch.float32, device=masks.device)

    @torch.no_grad()
    def contains(self, X: torch.Tensor) -> torch.Tensor:
        """(M,) bool for points X (M,3): False where some view sees X in its image outside its mask."""
        n, H, W = self.masks.shape
        out = torch.ones(len(X), dtype=torch.bool, device=X.device)
        step = max(1, MAX_PAIRS // max(len(X), 1))
        for v0 in range(0, n, step):
            P = self.P[v0:v0 + step]                                                # (J,3,4)
            x = torch.einsum("mc,jrc->jmr", X.float(), P[:, :, :3]) + P[:, None, :, 3]
            z = x[..., 2]
            uv = x[..., :2] / z.clamp(min=1e-9)[..., None]
            col, row = torch.round(uv[..., 0]).long(), torch.round(uv[..., 1]).long()
            inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
            idx = torch.arange(v0, v0 + len(P), device=X.device)[:, None].expand_as(row)
            seen = self.masks[idx, row.clamp(0, H - 1), col.clamp(0, W - 1)]
            out &= ~(inside & ~seen).any(0)
        return out
