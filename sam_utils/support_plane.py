"""The surface the target rests on, as a plane: no view sees under it, so the target's mesh ends there.

A target standing on a table hides the table beneath it from every camera; the fields keep whatever
they guessed there (the table's slab, or a basement reaching below it), and neither the masks nor
their visual hull can remove it, because every ray to it passes through the target first. The scene's
surface that the views show around the target's masks (outside them, not occluded target) is mostly
that support: a RANSAC plane through it, with every camera on one side and the target's own surface
on that side too, bounds the target from below. No such plane (a target against the background, a
cluttered ring, cameras on both sides, a plane through the target): no cut.

Shapes: N views, surface grids (h,w); points in unit coordinates; a plane is (4,) float64 [n, d] with
|n| = 1 and n . x + d > 0 on the cameras' side (the height above the support).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sam_utils.target_geometry import dilate

MIN_POINTS = 50          # fewer surface points around the target than this: no plane
MIN_INLIERS = 0.25       # the plane must hold this share of them (the rest: neighbours, occluders, edges)
TARGET_BELOW = 0.02      # at most this share of the target's own surface points may lie under it
MAX_SAMPLES = 20000      # points the RANSAC looks at
TRIALS = 256


def ring_points(points: np.ndarray, valid: np.ndarray, masks: np.ndarray, unknown: np.ndarray,
                ring: int) -> np.ndarray:
    """(M,3): the surface points within `ring` grid pixels around the masks (N,h,w), outside them and outside
    the unknown (occluded-target) pixels."""
    m = torch.from_numpy(np.ascontiguousarray(masks))
    near = (dilate(m, ring) & ~m).numpy() & ~unknown & valid
    return points[near]


def fit_plane(X: np.ndarray, tol: float, seed: int = 0) -> tuple[np.ndarray, float] | None:
    """RANSAC plane (4,) through X (M,3) with inliers within `tol`, refined by least squares on them, and its
    inlier share; None for too few points."""
    if len(X) < MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    if len(X) > MAX_SAMPLES:
        X = X[rng.choice(len(X), MAX_SAMPLES, replace=False)]
    best, best_n = None, -1
    for _ in range(TRIALS):
        a, b, c = X[rng.choice(len(X), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n = n / np.linalg.norm(n)
        count = int((np.abs(X @ n - n @ a) < tol).sum())
        if count > best_n:
            best, best_n = np.append(n, -n @ a), count
    if best is None:
        return None
    inl = X[np.abs(X @ best[:3] + best[3]) < tol]
    centre = inl.mean(0)
    n = np.linalg.svd(inl - centre, full_matrices=False)[2][-1]
    plane = np.append(n, -n @ centre)
    return plane, float(np.mean(np.abs(X @ plane[:3] + plane[3]) < tol))


class SupportFit(NamedTuple):
    """The support plane (4,) or None, and why: what the log says, so a missing cut can be understood."""
    plane: np.ndarray | None
    why: str


def support_plane(points: np.ndarray, valid: np.ndarray, masks: np.ndarray, unknown: np.ndarray,
                  centres: np.ndarray, ring: int, tol: float) -> SupportFit:
    """The target's support plane (4,), oriented to the cameras (centres (N,3)), or None where the views'
    surface around the masks is no plane that every camera sees from above with the target above it."""
    around = ring_points(points, valid, masks, unknown, ring)
    fit = fit_plane(around, tol)
    if fit is None:
        return SupportFit(None, f"{len(around)} surface points around the masks (a plane needs {MIN_POINTS})")
    plane, share = fit
    if share < MIN_INLIERS:
        return SupportFit(None, f"the best plane holds {share:.0%} of the {len(around)} surface points around the "
                                f"masks within {tol:g} (needs {MIN_INLIERS:.0%})")
    held = f"the plane holding {share:.0%} of the points around the masks has"
    height = centres @ plane[:3] + plane[3]
    if (height < 0).all():
        plane, height = -plane, -height
    if not (height > tol).all():
        return SupportFit(None, f"{held} {int((height <= tol).sum())} of {len(height)} cameras on or under it")
    inner = dilate(torch.from_numpy(np.ascontiguousarray(masks)), -1).numpy() & valid
    below = points[inner] @ plane[:3] + plane[3] < -tol
    if not below.size or below.mean() > TARGET_BELOW:
        return SupportFit(None, f"{held} {below.mean() if below.size else 1.0:.1%} of the target's own surface "
                                f"under it (at most {TARGET_BELOW:.0%})")
    return SupportFit(plane, f"n = {np.round(plane[:3], 3).tolist()}, d = {plane[3]:.4f}, holding {share:.0%} of "
                             f"the {len(around)} surface points around the masks")


def to_world(plane: np.ndarray, scale_mat: np.ndarray) -> np.ndarray:
    """A plane (4,) in unit coordinates -> the same plane in world units (scale_mat: unit -> world, a uniform
    scale and a shift): n . x + d = 0 with |n| = 1, its height above the plane in world units."""
    s, shift = float(scale_mat[0, 0]), np.asarray(scale_mat[:3, 3], np.float64)
    n = np.asarray(plane[:3], np.float64)
    return np.append(n, s * float(plane[3]) - float(n @ shift))
