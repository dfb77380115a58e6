"""Empty-space skipping: a coarse grid of where the SDF's surface may be, and per-ray bounds from it.

Every `update_every` training steps the SDF is evaluated at the R^3 cell centres; a cell is occupied
when |sdf| could put the zero level set inside it (half the cell diagonal) or within `margin_cells`
cells of it. Each ray is stepped through the grid at half-cell steps between its sphere near/far,
and [near, far] shrinks to the span of occupied cells (one step of slack each side), so the NeuS
samples land around the surface instead of in empty space. A ray through no occupied cell keeps
one empty step at its far end (it renders as background).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class OccupancyGrid(nn.Module):
    def __init__(self, resolution: int, bound: float, margin_cells: float, update_every: int, start_iter: int = 0):
        super().__init__()
        self.resolution, self.bound = resolution, bound
        self.margin_cells, self.update_every, self.start_iter = margin_cells, update_every, start_iter
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def cell(self) -> float:
        return 2.0 * self.bound / self.resolution

    def centres(self) -> torch.Tensor:
        """(R^3, 3) cell centres in unit coordinates, x slowest (matches occupied.reshape(-1))."""
        c = (torch.arange(self.resolution, device=self.occupied.device, dtype=torch.float32) + 0.5) * self.cell - self.bound
        return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)

    @torch.no_grad()
    def update(self, sdf_fn, chunk: int) -> float:
        """Re-evaluate occupancy from sdf_fn ((M,3) -> (M,1)); returns the occupied fraction."""
        x = self.centres()
        sdf = torch.cat([sdf_fn(p).reshape(-1) for p in x.split(chunk)])
        reach = (0.5 * math.sqrt(3.0) + self.margin_cells) * self.cell
        self.occupied.copy_((sdf.abs() <= reach).reshape(self.occupied.shape))
        self.updates += 1
        return float(self.occupied.float().mean())

    def step(self, iteration: int, sdf_fn, chunk: int) -> bool:
        """Training hook: update on schedule; True when rays should be cut (from start_iter on).

        Skipping starts only after start_iter: before that the SDF is still the initial sphere, and
        surface that no sample reaches could never appear.
        """
        if iteration < self.start_iter:
            return False
        if (iteration - self.start_iter) % self.update_every == 0:
            self.update(sdf_fn, chunk)
        return True

    @torch.no_grad()
    def ray_bounds(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: torch.Tensor,
                   far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tightened (near, far), each (B,1), from the occupied cells along each ray."""
        n_steps = 2 * self.resolution
        k = (torch.arange(n_steps, device=near.device, dtype=near.dtype) + 0.5) / n_steps     # (S,)
        t = near + (far - near) * k                                                          # (B,S)
        pts = rays_o[:, None] + rays_d[:, None] * t[..., None]                               # (B,S,3)
        idx = ((pts + self.bound) / self.cell).long()
        inside = ((idx >= 0) & (idx < self.resolution)).all(-1)
        idx = idx.clamp(0, self.resolution - 1)
        occ = self.occupied[idx[..., 0], idx[..., 1], idx[..., 2]] & inside                  # (B,S)
        step = (far - near) / n_steps                                                        # (B,1)
        first = occ.float().argmax(-1, keepdim=True)
        last = n_steps - 1 - occ.flip(-1).float().argmax(-1, keepdim=True)
        hit = occ.any(-1, keepdim=True)
        new_near = torch.where(hit, near + step * (first - 1).clamp(min=0), far - step)
        new_far = torch.where(hit, near + step * (last + 2).clamp(max=n_steps), far)
        return new_near, new_far
