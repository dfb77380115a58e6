"""The target is one connected object through the user's click.

A segmenter's mask of the prompt view can take in a neighbouring object of the target's colours
that overlaps it in the image (GrabCut does, SAM can); carried over the surface, such a region is
as much "target" as the clicked object, and the views that see it agree with each other. In 3D it
is apart: the surface labelled target is split into pieces that do not touch (gaps wider than a
few surface samples), and only the pieces holding the clicked surface points are the target.

Pixels on the far side of a depth edge (a pixel next to them shows a much nearer surface) are left
out of the pieces and take the decision of the nearest labelled pixel of their view that is in
them: a label that spills a pixel past the target's silhouette lands on the surface *behind* it
(the table, far away) and, summed over the views, such spills tie every neighbour to the target
through the support; a rendered depth that mixes two surfaces there is a point in mid-air.

Shapes: M labelled surface points (M,3) in world units; the voxel size is a multiple of the
surface's sampling step, so the rule does not depend on the scene's units or the image size.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_CELLS = 2 ** 26          # the voxel grid is coarsened until it holds at most this many cells
EDGE_BAND = 1                # labels spill a pixel or two past a silhouette: the far side's first 1 + EDGE_BAND pixels are left out


def sample_spacing(points: np.ndarray, valid: np.ndarray) -> float:
    """Median distance between horizontally adjacent surface samples (N,h,w,3) where both are valid."""
    both = valid[:, :, 1:] & valid[:, :, :-1]
    if not both.any():
        return 0.0
    d = np.linalg.norm(points[:, :, 1:] - points[:, :, :-1], axis=-1)[both]
    return float(np.median(d))


def seed_components(points: np.ndarray, seeds: np.ndarray, voxel: float, bridge: int) -> np.ndarray:
    """(M,) bool: the points in the voxel-connected pieces (26-neighbourhood, gaps of up to 2*bridge
    voxels closed) that hold a seed; seeds: indices into points. All True when there is no seed."""
    if len(points) == 0 or len(seeds) == 0 or voxel <= 0:
        return np.ones(len(points), bool)
    lo = points.min(0)
    while True:
        keys = np.floor((points - lo) / voxel).astype(np.int64)
        shape = tuple(int(s) for s in keys.max(0) + 1 + 2 * bridge)
        if np.prod(shape, dtype=np.float64) <= MAX_CELLS:
            break
        voxel *= 1.5
    keys += bridge
    grid = np.zeros(shape, bool)
    grid[keys[:, 0], keys[:, 1], keys[:, 2]] = True
    closed = ndimage.binary_dilation(grid, ndimage.generate_binary_structure(3, 3), iterations=bridge) \
        if bridge > 0 else grid
    labels, _ = ndimage.label(closed, ndimage.generate_binary_structure(3, 3))
    point_label = labels[keys[:, 0], keys[:, 1], keys[:, 2]]
    keep = np.unique(point_label[seeds])
    return np.isin(point_label, keep[keep > 0])


def far_side(depth: np.ndarray, valid: np.ndarray, limit: float) -> np.ndarray:
    """(N,h,w) bool: valid pixels with a valid pixel within EDGE_BAND + 1 pixels whose surface is nearer
    to the camera by more than `limit`: the far side of a depth edge (where a label spilt past a
    silhouette lands; also a depth that mixes the two surfaces). depth (N,h,w) along each pixel's ray."""
    near = np.where(valid, depth, np.inf)
    size = 2 * (EDGE_BAND + 1) + 1
    nearest = ndimage.minimum_filter(near, size=(1, size, size), mode="nearest")
    step = np.where(valid, near - np.where(valid, nearest, 0.0), 0.0)     # finite: a valid pixel is its own neighbour
    return valid & (step > limit)


def keep_connected(points: np.ndarray, valid: np.ndarray, depth: np.ndarray, prob: np.ndarray, seeds: np.ndarray,
                   threshold: float, voxel_samples: float, bridge: int, edge_samples: float) -> np.ndarray:
    """prob (N,h,w) with the target-labelled surface (prob >= threshold where valid) that is not connected
    in 3D to a seed set to 0. points (N,h,w,3) / valid (N,h,w) / depth (N,h,w): each view's rendered
    surface; seeds (K,3) int: (view, row, col) grid pixels the user marked as target (one off the
    labelled surface moves to the nearest labelled pixel of its view). Voxels are voxel_samples
    surface samples wide; a pixel on the far side of a depth step of more than edge_samples samples is
    out of the pieces and follows the nearest labelled pixel of its view that is in them."""
    spacing = sample_spacing(points, valid)
    sel = valid & (prob >= threshold)
    core = sel & ~far_side(depth, valid, edge_samples * spacing)
    index = np.full(sel.shape, -1, np.int64)
    index[core] = np.arange(int(core.sum()))
    picks = []
    for v, r, c in np.asarray(seeds, np.int64).reshape(-1, 3):
        if core[v].any():
            rc = np.argwhere(core[v])
            r, c = rc[np.argmin(((rc - [r, c]) ** 2).sum(1))]
            picks.append(index[v, r, c])
    keep = seed_components(points[core], np.asarray(picks, np.int64), voxel_samples * spacing, bridge)
    kept = np.zeros_like(sel)
    kept[core] = keep
    out = prob.copy()
    for v in range(len(prob)):
        if not core[v].any():
            continue                                   # nothing to decide from in this view: left as labelled
        _, (rows, cols) = ndimage.distance_transform_edt(~core[v], return_indices=True)
        out[v][sel[v] & ~kept[v][rows, cols]] = 0.0
    return out
