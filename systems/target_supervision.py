"""What the target stage learns from and how its mesh is cut, from the scene field and the lifted masks.

- `occluded_target_masks` (or `occluded_from_surface` on a surface already rendered): after lifting,
  the pixels of each view where a foreground object hides the target (sam_utils.target_geometry's
  OcclusionTest on the scene's rendered surface), carried over the occluder to target surface that no
  view saw (`occlusion_reach`): *unknown* for the target field, neither target nor empty space. A
  pixel left "empty" there would carve its ray through the target's inside.
- `target_sdf_fn`: the SDF whose zero level set is the target's mesh. `mesh_cut = hull`: the target
  field's SDF pushed outside beyond the lifted masks' visual hull (masks | unknown, grown by
  hull_dilate pixels); `occupancy`: pushed outside where the occupancy head says "not the target".
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from datasets.dtu import DTUDataset
from sam_utils.masks import downsample_masks
from sam_utils.target_geometry import OcclusionTest, VisualHull
from systems.projection import project_views, projection_matrices, upsample
from systems.settings import TargetSettings
from systems.stages import INSTANCE


def occluded_target_masks(model, dataset: DTUDataset, final: np.ndarray, t: TargetSettings, depth_tol: float,
                          chunk: int) -> np.ndarray:
    """(N,H,W) bool unknown pixels: outside `final` (N,H,W) bool, where the scene's surface (rendered at
    1/t.occlusion_level) hides target surface that other views see; carried over the occluder up to
    t.occlusion_reach of the width, grown by t.occlusion_dilate grid pixels."""
    _, points, valid = project_views(model, dataset, t.occlusion_level, chunk, surface=True)
    return occluded_from_surface(points, valid, dataset, final, t.occlusion_dilate, depth_tol, t.occlusion_reach)


def occluded_from_surface(points: np.ndarray, valid: np.ndarray, dataset: DTUDataset, final: np.ndarray,
                          grow: int, depth_tol: float, reach: float) -> np.ndarray:
    """occluded_target_masks from an already rendered surface: points (N,h,w,3), valid (N,h,w) as
    project_views(..., surface=True) returns them -> (N,H,W) bool. reach: a share of the grid's width."""
    ds = dataset
    n, h, w = valid.shape
    test = OcclusionTest(torch.from_numpy(points).to(ds.device), torch.from_numpy(valid).to(ds.device),
                         projection_matrices(ds), (ds.H, ds.W), depth_tol)
    occ = test.occluded(downsample_masks(final, h, w), grow, int(round(reach * w))).cpu().numpy()
    unknown = np.stack([upsample(o, ds.H, ds.W, nearest=True) for o in occ]) & ~final
    share = unknown.sum((1, 2)) / max(1, ds.H * ds.W)
    print(f"[target] occluded target pixels (unknown): {int((share > 0).sum())}/{n} views, "
          f"largest share {share.max():.3f} of a view")
    return unknown


def hull_masks(final: np.ndarray, unknown: np.ndarray | None, grow: int) -> np.ndarray:
    """(N,H,W) bool: the lifted masks plus the occluded-target pixels, grown by `grow` pixels."""
    masks = final if unknown is None else final | unknown
    if grow <= 0:
        return masks
    kernel = np.ones((2 * grow + 1,) * 2, np.uint8)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])


def target_sdf_fn(model, dataset: DTUDataset, final: np.ndarray, unknown: np.ndarray | None, t: TargetSettings,
                  cell: float):
    """sdf_fn (M,3) -> (M,1) for the target mesh: the SDF raised to at least `cell` (one grid cell) outside
    the target, as t.mesh_cut says; the mesher then keeps the largest component."""
    if t.mesh_cut == "occupancy":
        occ = t.mesh_occupancy_threshold

        def occupancy_fn(x: torch.Tensor) -> torch.Tensor:
            out = model.sdf(x, (INSTANCE,))
            return torch.where(out[INSTANCE] >= occ, out["sdf"], out["sdf"].clamp(min=cell))

        return occupancy_fn
    hull = VisualHull(projection_matrices(dataset),
                      torch.from_numpy(hull_masks(final, unknown, t.hull_dilate)).to(dataset.device))

    def hull_fn(x: torch.Tensor) -> torch.Tensor:
        sdf = model.sdf.sdf(x)
        near = torch.nonzero(sdf[:, 0] < cell).squeeze(1)      # only there can the cut change the value
        out = sdf.clone()
        out[near] = torch.where(hull.contains(x[near])[:, None], sdf[near], sdf[near].clamp(min=cell))
        return out

    return hull_fn
