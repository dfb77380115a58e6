"""Reconstruction metrics: DTU-style Chamfer distance (accuracy / completeness) and mask IoU.

Meshes are compared as point sets: a mesh is sampled uniformly on its surface at a fixed density
(DEFAULT_SPACING_MM = 0.2 mm, the DTU protocol's down-sampling distance), so numbers from different
meshes are comparable. Point-to-point distances are capped at `cap` (DTU: 20 mm) so a few far
outliers cannot dominate the means. Not included here: DTU's observation masks and bounding-box
crop of the prediction (pass already-cropped geometry, or a visible-points gt as `gt`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

DEFAULT_SPACING_MM = 0.2                       # DTU protocol down-sampling distance
DEFAULT_DENSITY = 1.0 / DEFAULT_SPACING_MM ** 2  # surface samples per mm^2
DEFAULT_MAX_POINTS = 3_000_000                 # ~72 MB of float64 points; keeps KD-trees in RAM
DEFAULT_CAP_MM = 20.0                          # DTU protocol distance cap


class GeometryError(ValueError):
    """A geometry file is missing, unreadable or empty; the message names it."""


def load_geometry(path) -> np.ndarray | trimesh.Trimesh:
    """Load a .ply/.obj/... file -> trimesh.Trimesh (has faces) or (M, 3) float64 points."""
    path = Path(path)
    if not path.is_file():
        raise GeometryError(f"geometry file {path} not found; check the path")
    try:
        geom = trimesh.load(path, process=False)
    except Exception as exc:
        raise GeometryError(f"cannot read geometry file {path} ({exc}); re-export it as "
                            ".ply or .obj") from exc
    if isinstance(geom, trimesh.Scene):
        parts = list(geom.geometry.values())
        if not parts:
            raise GeometryError(f"geometry file {path} is empty; export the mesh again")
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        geom = trimesh.util.concatenate(meshes) if meshes else \
            np.concatenate([np.asarray(g.vertices) for g in parts])
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces) > 0:
        return geom
    points = np.asarray(getattr(geom, "vertices", geom), np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise GeometryError(f"geometry file {path} has no faces and no points; export it again")
    if not np.all(np.isfinite(points)):
        raise GeometryError(f"geometry file {path} has NaN/inf coordinates; clean it")
    return points


def sample_surface(mesh: trimesh.Trimesh, density: float = DEFAULT_DENSITY, seed: int = 0,
                   max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Uniform area-weighted samples on the mesh surface -> (M, 3) float64.

    M = ceil(area * density), at least 1; capped at `max_points` with a warning (a capped sample
    has a lower density, so its Chamfer numbers are less comparable).
    """
    tris = np.asarray(mesh.triangles, np.float64)                       # (F, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    total = float(areas.sum())
    if not total > 0:
        raise GeometryError("mesh has zero surface area; nothing to sample")
    count = max(1, int(np.ceil(total * density)))
    if count > max_points:
        warnings.warn(f"surface sample capped at {max_points} points (wanted {count}); the "
                      "density is lower than requested", stacklevel=2)
        count = max_points
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tris), size=count, p=areas / total)          # (M,)
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1.0                                                 # fold into the triangle
    r1[flip], r2[flip] = 1.0 - r1[flip], 1.0 - r2[flip]
    t = tris[face]                                                       # (M, 3, 3)
    return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def as_points(geom, density: float = DEFAULT_DENSITY, seed: int = 0,
              max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """A mesh is sampled with `sample_surface`; a point cloud is returned as is -> (M, 3)."""
    if isinstance(geom, trimesh.Trimesh):
        return sample_surface(geom, density, seed, max_points)
    return np.asarray(geom, np.float64).reshape(-1, 3)


def capped_distances(src: np.ndarray, dst: np.ndarray, cap: float = DEFAULT_CAP_MM) -> np.ndarray:
    """Distance from each src point (M, 3) to its nearest dst point, min(d, cap) -> (M,)."""
    if len(src) == 0 or len(dst) == 0:
        raise GeometryError("cannot measure distances with an empty point set")
    dist, _ = cKDTree(dst).query(src, k=1, distance_upper_bound=cap, workers=-1)
    return np.minimum(dist, cap)           # beyond the bound cKDTree returns inf


def chamfer(pred_points: np.ndarray, gt_points: np.ndarray, cap: float = DEFAULT_CAP_MM,
            gt_accuracy_points: np.ndarray | None = None) -> dict:
    """DTU-style Chamfer: accuracy = mean capped pred->gt, completeness = mean capped gt->pred.

    `gt_accuracy_points` (optional) replaces gt for the accuracy term only, e.g. the full gt
    surface while `gt_points` holds only the visible part. overall = mean of the two.
    """
    pred = np.asarray(pred_points, np.float64).reshape(-1, 3)
    gt = np.asarray(gt_points, np.float64).reshape(-1, 3)
    gt_acc = gt if gt_accuracy_points is None else np.asarray(gt_accuracy_points, np.float64)
    accuracy = float(capped_distances(pred, gt_acc.reshape(-1, 3), cap).mean())
    completeness = float(capped_distances(gt, pred, cap).mean())
    return {"accuracy": accuracy, "completeness": completeness,
            "overall": 0.5 * (accuracy + completeness)}


from sam_utils.masks import mask_iou  # noqa: E402,F401  (mask IoU lives with the other mask helpers)


def chamfer_files(pred_path, gt_path, gt_accuracy_path=None,
                  spacing: float = DEFAULT_SPACING_MM, cap: float = DEFAULT_CAP_MM,
                  max_points: int = DEFAULT_MAX_POINTS, seed: int = 0) -> dict:
    """Chamfer between geometry files (meshes sampled every `spacing`, point clouds as they are).

    pred, gt and gt_accuracy are sampled with seeds seed, seed + 1, seed + 2, so two copies of one
    mesh show the sampling noise floor (about spacing / 2), not a fake exact 0.
    Returns chamfer()'s dict plus n_pred, n_gt (and n_gt_accuracy when given).
    """
    density = 1.0 / spacing ** 2
    pts = {name: as_points(load_geometry(path), density, seed + k, max_points)
           for k, (name, path) in enumerate((("pred", pred_path), ("gt", gt_path),
                                             ("gt_accuracy", gt_accuracy_path))) if path}
    result = chamfer(pts["pred"], pts["gt"], cap, pts.get("gt_accuracy"))
    result.update(n_pred=len(pts["pred"]), n_gt=len(pts["gt"]))
    if "gt_accuracy" in pts:
        result["n_gt_accuracy"] = len(pts["gt_accuracy"])
    return result
