"""What the target stage learns from and how its mesh is cut, from the scene field and the lifted masks.

- `target_constraints` (`occluded_from_surface` on a surface already rendered): after lifting,
  the pixels of each view where a foreground object hides the target (sam_utils.target_geometry's
  OcclusionTest on the scene's rendered surface), carried over the occluder to target surface that no
  view saw (`occlusion_reach`): *unknown* for the target field, neither target nor empty space. A
  pixel left "empty" there would carve its ray through the target's inside. And the plane the target
  rests on (sam_utils.support_plane): no view sees beneath it, so the target's mesh ends there.
- `target_sdf_fn`: the SDF whose zero level set is the target's mesh. `mesh_cut = hull`: the target
  field's SDF pushed outside beyond the lifted masks' visual hull (masks | unknown, grown by
  hull_dilate pixels) and under the support plane; `occupancy`: pushed outside where the occupancy head
  says "not the target". The mesher then fills the space the target and its plane enclose (no view sees
  into it: models.mesh.fill_enclosed), so the mesh has no inner walls.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from datasets.dtu import DTUDataset
from sam_utils.masks import downsample_masks
from sam_utils.support_plane import support_plane
from sam_utils.target_geometry import OcclusionTest, VisualHull
from systems.projection import project_views, projection_matrices, upsample
from systems.settings import TargetSettings
from systems.stages import INSTANCE


class TargetConstraints(NamedTuple):
    """What the target stage and its mesh take from the scene field after lifting."""
    unknown: np.ndarray               # (N,H,W) bool: occluded-target pixels, neither target nor empty space
    support: np.ndarray | None        # (4,) the plane the target rests on, or None
    support_why: str                  # the plane, or why none was found ("" where t.support_ring is 0)


def target_constraints(model, dataset: DTUDataset, final: np.ndarray, t: TargetSettings, depth_tol: float,
                       chunk: int) -> TargetConstraints:
    """From the scene's surface rendered at 1/t.occlusion_level, after lifting: the unknown pixels
    (occluded_from_surface) and the target's support plane (sam_utils.support_plane; None where
    t.support_ring is 0 or none is found)."""
    _, points, valid = project_views(model, dataset, t.occlusion_level, chunk, surface=True)
    unknown = occluded_from_surface(points, valid, dataset, final, t.occlusion_dilate, depth_tol, t.occlusion_reach)
    plane, why = None, ""
    if t.support_ring > 0:
        n, h, w = valid.shape
        centres = dataset.poses[:, :3, 3].double().cpu().numpy()
        plane, why = support_plane(points, valid, downsample_masks(final, h, w), downsample_masks(unknown, h, w),
                                   centres, max(1, int(round(t.support_ring * w))), t.support_tol)
        print("[target] support plane: " + (f"none found ({why}): no cut below the target" if plane is None else why))
    return TargetConstraints(unknown, plane, why)


def occluded_from_surface(points: np.ndarray, valid: np.ndarray, dataset: DTUDataset, final: np.ndarray,
                          grow: int, depth_tol: float, reach: float) -> np.ndarray:
    """The unknown pixels from an already rendered surface: points (N,h,w,3), valid (N,h,w) as
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
                  cell: float, support: np.ndarray | None = None):
    """sdf_fn (M,3) -> (M,1) for the target mesh: the SDF raised to at least `cell` (one grid cell) outside
    the target, as t.mesh_cut says; the mesher then keeps the largest component. mesh_cut = hull also
    raises it to the depth under the `support` plane (4,), where one is given."""
    if t.mesh_cut == "occupancy":
        occ = t.mesh_occupancy_threshold

        def occupancy_fn(x: torch.Tensor) -> torch.Tensor:
            out = model.sdf(x, (INSTANCE,))
            return torch.where(out[INSTANCE] >= occ, out["sdf"], out["sdf"].clamp(min=cell))

        return occupancy_fn
    dev = dataset.device
    hull = VisualHull(projection_matrices(dataset), torch.from_numpy(hull_masks(final, unknown, t.hull_dilate)).to(dev))
    plane = None if support is None else torch.as_tensor(support, dtype=torch.float32, device=dev)

    def hull_fn(x: torch.Tensor) -> torch.Tensor:
        out = model.sdf.sdf(x).clone()
        if plane is not None:
            out = torch.maximum(out, -(x @ plane[:3] + plane[3])[:, None])
        near = torch.nonzero(out[:, 0] < cell).squeeze(1)      # only there can the cut change the value
        out[near] = torch.where(hull.contains(x[near])[:, None], out[near], out[near].clamp(min=cell))
        return out

    return hull_fn
