"""Exact ground truth of a synthetic Scene: bounding sphere, marching-cubes meshes, visible points, prompt.

All geometry in world millimetres.
"""
from __future__ import annotations

import cv2
import mcubes
import numpy as np
import torch
import trimesh

from datasets.sdf_primitives import Parts
from datasets.synthetic_scene import Scene
from sam_utils.masks import mask_box

SPHERE_MARGIN = 1.05          # bounding-sphere radius = this * farthest occupied point distance
SPHERE_DECIMALS = 3           # centre/radius rounded to micrometres (tidy metadata)
SPHERE_GRID_RES = 96          # samples along the longest axis of the grid used to find the sphere
GRID_PAD_VOXELS = 2           # empty voxels around the box so marching cubes closes every surface
GRID_CHUNK = 1 << 19          # points per SDF evaluation chunk
CULL_VOXELS = 2.0             # extra object-culling margin in voxels beyond the refinement band
ZERO_NUDGE_MM = 1e-6          # grid samples with SDF exactly 0 are moved this far outside
BLOCK = 4                     # sparse grid: block edge in voxels (coarse samples at block centres)
VISIBLE_SPACING_MM = {"scene": 1.0, "target": 0.5}  # voxel size for de-duplicating visible points
MAX_VISIBLE_POINTS = 200_000


def _grid_axes(lo: np.ndarray, hi: np.ndarray, resolution: int) -> tuple[list[np.ndarray], float]:
    """Per-axis sample coordinates with cubic voxels: `resolution` samples along the longest axis."""
    if resolution < 8:
        raise ValueError(f"grid resolution must be >= 8, got {resolution}")
    voxel = float((hi - lo).max()) / (resolution - 1)
    axes = []
    for a in range(3):
        n = int(np.ceil((hi[a] - lo[a]) / voxel)) + 1 + 2 * GRID_PAD_VOXELS
        axes.append(lo[a] - GRID_PAD_VOXELS * voxel + voxel * np.arange(n))
    return axes, voxel


@torch.no_grad()
def _eval_points(scene: Scene, pts: np.ndarray, only: int | None, margin: float, device) -> np.ndarray:
    """SDF at points (N,3) float64 numpy, evaluated in chunks -> (N,) float32."""
    out = np.empty(len(pts), dtype=np.float32)
    for i in range(0, len(pts), GRID_CHUNK):
        p = torch.as_tensor(pts[i:i + GRID_CHUNK], dtype=torch.float32, device=device)
        out[i:i + GRID_CHUNK] = scene.sdf(p, cull_margin=margin, only=only).cpu().numpy()
    return out


def sdf_grid(scene: Scene, axes: list[np.ndarray], voxel: float, only: int | None, device) -> np.ndarray:
    """SDF samples (nx, ny, nz) float32 on the grid `axes` (of object `only`, or the whole scene).

    Sparse: the SDF is first sampled at the centres of BLOCK^3-voxel blocks; only blocks that can hold
    a sample within one voxel of the surface are sampled finely. Elsewhere a sample gets its block's
    centre value, which has the right sign (the SDF is 1-Lipschitz). So every value marching cubes
    interpolates (both ends of a sign-changing edge, |SDF| <= voxel) is exact, and all signs are right.
    """
    dims = np.array([len(a) for a in axes])
    lo = np.array([a[0] for a in axes])
    nb = -(-dims // BLOCK)  # blocks per axis (ceil)
    half_diag = voxel * (BLOCK - 1) / 2.0 * np.sqrt(3.0)
    near_limit = half_diag + voxel
    margin = near_limit + CULL_VOXELS * voxel  # culled (lower-bound) values all exceed near_limit
    bidx = np.stack(np.meshgrid(*(np.arange(n) for n in nb), indexing="ij"), axis=-1).reshape(-1, 3)
    coarse = _eval_points(scene, lo + voxel * (bidx * BLOCK + (BLOCK - 1) / 2.0), only, margin, device)
    grid = np.repeat(np.repeat(np.repeat(coarse.reshape(*nb), BLOCK, 0), BLOCK, 1), BLOCK, 2)
    grid = np.ascontiguousarray(grid[:dims[0], :dims[1], :dims[2]])
    near = bidx[np.abs(coarse) <= near_limit]  # (K,3) blocks to refine
    offsets = np.stack(np.meshgrid(*([np.arange(BLOCK)] * 3), indexing="ij"), axis=-1).reshape(-1, 3)
    fine = (near[:, None, :] * BLOCK + offsets[None]).reshape(-1, 3)  # (K*BLOCK^3,3) sample indices
    fine = fine[np.all(fine < dims, axis=1)]
    grid[fine[:, 0], fine[:, 1], fine[:, 2]] = _eval_points(scene, lo + voxel * fine, only, margin, device)
    return grid


def sdf_mesh(scene: Scene, resolution: int, only: int | None = None, device="cpu") -> trimesh.Trimesh:
    """Watertight marching-cubes mesh (world mm, outward faces) of the scene or of object `only`."""
    shape = scene.objects[only].shape if only is not None else None
    lo, hi = shape.aabb() if shape is not None else scene.aabb()
    axes, voxel = _grid_axes(lo, hi, resolution)
    sdf = sdf_grid(scene, axes, voxel, only, device).astype(np.float64)
    # Samples exactly on the surface (e.g. the table top on a grid plane) would put vertices on grid
    # corners shared by several cells; nudging them outside keeps every vertex on a unique edge.
    sdf[sdf == 0.0] = ZERO_NUDGE_MM
    # PyMCubes orients faces outward when the field is positive inside.
    verts, faces = mcubes.marching_cubes(-sdf, 0.0)
    origin = np.array([a[0] for a in axes])
    # process=False keeps marching-cubes topology (merging close vertices could break manifoldness).
    mesh = trimesh.Trimesh(vertices=origin + verts * voxel, faces=faces, process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def bounding_sphere(scene: Scene, device="cpu") -> tuple[np.ndarray, float]:
    """(centre (3,), radius) of a sphere holding every occupied point of the scene with SPHERE_MARGIN."""
    lo, hi = scene.aabb()
    axes, voxel = _grid_axes(lo, hi, SPHERE_GRID_RES)
    sdf = sdf_grid(scene, axes, voxel, None, device)
    occupied = np.stack(np.nonzero(sdf <= voxel), axis=1)  # (M,3) indices near or inside a surface
    if occupied.size == 0:
        raise ValueError("scene is empty: no object surface found on the bounding grid")
    pts = np.stack([axes[a][occupied[:, a]] for a in range(3)], axis=1)
    centre = np.round((pts.min(axis=0) + pts.max(axis=0)) / 2.0, SPHERE_DECIMALS) + 0.0  # + 0.0: no -0.0
    radius = float(np.linalg.norm(pts - centre, axis=1).max() + voxel) * SPHERE_MARGIN
    return centre, float(np.ceil(radius * 10**SPHERE_DECIMALS) / 10**SPHERE_DECIMALS)


class VisiblePoints:
    """Accumulates first-hit surface points over views, keeping one point per `spacing` mm voxel."""

    def __init__(self, spacing_mm: float):
        self.spacing = float(spacing_mm)
        self._keys = np.empty(0, dtype=np.int64)
        self._points = np.empty((0, 3), dtype=np.float32)

    def add(self, points: np.ndarray) -> None:
        """Add points (N,3) float32; a voxel already holding a point keeps its first one."""
        if len(points) == 0:
            return
        cells = np.floor(points.astype(np.float64) / self.spacing).astype(np.int64)
        offset, span = 1 << 20, 1 << 21  # cells lie within +-2^20 voxels (km-sized scenes)
        keys = (cells[:, 0] + offset) * span * span + (cells[:, 1] + offset) * span + (cells[:, 2] + offset)
        keys = np.concatenate([self._keys, keys])
        pts = np.concatenate([self._points, points.astype(np.float32)])
        keys, first = np.unique(keys, return_index=True)
        self._keys, self._points = keys, pts[first]

    def result(self, max_points: int = MAX_VISIBLE_POINTS, seed: int = 0) -> np.ndarray:
        """The de-duplicated points (M,3), deterministically sub-sampled to at most `max_points`."""
        if len(self._points) <= max_points:
            return self._points.copy()
        keep = np.sort(np.random.default_rng(seed).choice(len(self._points), max_points, replace=False))
        return self._points[keep]


def target_parts(scene: Scene) -> tuple[str, ...]:
    """Names of the target's parts (sdf_primitives.Parts), () when the target is one piece."""
    shape = scene.target.shape
    return shape.names if isinstance(shape, Parts) else ()


@torch.no_grad()
def target_part_map(scene: Scene, object_id: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-pixel part of the target: (H,W) uint8, 0 where the first hit is not the target, else 1 + the
    index into target_parts(scene) of the part hit. object_id (H,W) and points (H,W,3) of a ViewRender."""
    out = (object_id == scene.target_index).astype(np.uint8)
    if target_parts(scene) and out.any():
        p = torch.as_tensor(points[out > 0], dtype=torch.float32)
        out[out > 0] = scene.target.shape.part_of(p).numpy().astype(np.uint8) + 1
    return out


def prompt_from_mask(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """Click [x, y] at the mask pixel farthest from its boundary, and box [x0, y0, x1, y1] (inclusive).

    mask: (H,W) bool. x is the column, y the row. The image border counts as boundary.
    """
    if not mask.any():
        raise ValueError("target mask of the prompt view is empty: the target is not visible in view 0 "
                         "(use a larger image or check the preset's view-0 azimuth)")
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [int(col), int(row)], list(mask_box(mask))
