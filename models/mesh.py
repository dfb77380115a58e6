"""Mesh extraction: marching cubes (PyMCubes) of a field evaluated on a grid in chunks."""
from __future__ import annotations

from typing import Callable

import mcubes
import numpy as np
import torch
import trimesh
from scipy import ndimage


@torch.no_grad()
def evaluate_grid(fn: Callable[[torch.Tensor], torch.Tensor], bound_min, bound_max, resolution: int,
                  chunk: int, device) -> np.ndarray:
    """fn (N,3) -> (N,1) evaluated on a resolution^3 grid over the box; returns (R,R,R) float32.

    Slabs of constant x are evaluated `chunk` points at a time so that 512^3 fits in a few GB.
    """
    lo = torch.as_tensor(bound_min, dtype=torch.float32, device=device)
    hi = torch.as_tensor(bound_max, dtype=torch.float32, device=device)
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=device) for i in range(3)]
    out = np.empty((resolution,) * 3, dtype=np.float32)
    yy, zz = torch.meshgrid(axes[1], axes[2], indexing="ij")
    yz = torch.stack([yy.reshape(-1), zz.reshape(-1)], -1)  # (R*R, 2)
    slabs = max(1, chunk // yz.shape[0])
    for i0 in range(0, resolution, slabs):
        xs = axes[0][i0:i0 + slabs]
        pts = torch.cat([xs[:, None, None].expand(-1, yz.shape[0], 1), yz[None].expand(len(xs), -1, -1)], -1)
        vals = torch.cat([fn(p) for p in pts.reshape(-1, 3).split(chunk)])
        out[i0:i0 + len(xs)] = vals.reshape(len(xs), resolution, resolution).float().cpu().numpy()
    return out


def marching_cubes(values: np.ndarray, threshold: float, bound_min, bound_max) -> trimesh.Trimesh:
    """Zero crossing of (values - threshold), with SDF convention (negative inside), in box coordinates."""
    res = values.shape[0]
    verts, faces = mcubes.marching_cubes(-(values - threshold), 0.0)
    lo, hi = np.asarray(bound_min, np.float64), np.asarray(bound_max, np.float64)
    verts = verts / (res - 1) * (hi - lo) + lo
    return trimesh.Trimesh(verts, faces, process=False)


def fill_enclosed(values: np.ndarray, threshold: float, bound_min, bound_max, plane: np.ndarray) -> np.ndarray:
    """Space enclosed by the surface and the plane (4,) (n.x + d < 0 below it) made inside: no view sees into
    it (the inside of an object standing on a table), so whatever the field left there is a guess. Its values
    become threshold minus the height above the plane: the mesh closes on the plane, without inner walls.
    (R,R,R) in; a copy out where something was enclosed. Free space joins across edges and corners
    (26-neighbours), so only space sealed on every side is filled."""
    res = values.shape[0]
    ax = [np.linspace(float(bound_min[i]), float(bound_max[i]), res, dtype=np.float32) for i in range(3)]
    n = np.asarray(plane, np.float32)
    height = (n[0] * ax[0])[:, None, None] + (n[1] * ax[1])[None, :, None] + (n[2] * ax[2])[None, None, :] + n[3]
    free = (values >= threshold) & (height >= 0)
    labels, count = ndimage.label(free, structure=np.ones((3, 3, 3), bool))
    outside = np.zeros(count + 1, bool)
    for face in (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        outside[np.unique(face)] = True
    enclosed = free & ~outside[labels]
    if not enclosed.any():
        return values
    out = values.copy()
    out[enclosed] = threshold - np.maximum(np.broadcast_to(height, values.shape)[enclosed], 1e-6)
    return out


def to_world(mesh: trimesh.Trimesh, scale_mat: np.ndarray) -> trimesh.Trimesh:
    """Map a unit-sphere mesh to world coordinates with the scene's scale_mat."""
    verts = mesh.vertices * scale_mat[0, 0] + scale_mat[:3, 3][None]
    return trimesh.Trimesh(verts, mesh.faces, process=False)


def largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The connected component with the most faces (empty mesh passes through)."""
    if len(mesh.faces) == 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    return max(parts, key=lambda m: len(m.faces)) if len(parts) else mesh
