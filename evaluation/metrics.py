"""Reconstruction metrics: Chamfer distance on DTU's protocol (accuracy / completeness) and mask IoU.

Protocol (DTU MVS, as the de-facto evaluator DTUeval-python runs it; see evaluation/sampling.py):
a predicted mesh becomes its vertices plus per-triangle grid samples at `spacing` (DTU: 0.2 mm), then
is down-sampled to `spacing` (greedy radius rule, random order); a predicted point cloud is only
down-sampled. A ground-truth mesh becomes its vertices plus grid samples (dense, like DTU's STL
points); a ground-truth point cloud is used as it is. Accuracy = mean pred -> gt nearest distance,
completeness = mean gt -> pred; distances >= `max_dist` (DTU: 20 mm) are outliers and are *dropped*
from the means, and the fraction dropped is reported beside each figure. `outliers="clamp"` gives
the older clamped variant (outliers counted as max_dist), which is not comparable with DTU figures.
DTU's observation mask, bounding box and ground plane are in evaluation/dtu_protocol.py.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from evaluation.sampling import downsample, sample_mesh

DEFAULT_SPACING_MM = 0.2        # DTU protocol: sampling and down-sampling distance
DEFAULT_MAX_DIST_MM = 20.0      # DTU protocol: distances at or beyond this are outliers
OUTLIER_RULES = ("drop", "clamp")
QUERY_CHUNK = 1 << 20           # nearest-neighbour queries per call (bounds the temporaries)


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
        if not np.all(np.isfinite(geom.vertices)):
            raise GeometryError(f"geometry file {path} has NaN/inf coordinates; clean it")
        return geom
    points = np.asarray(getattr(geom, "vertices", geom), np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise GeometryError(f"geometry file {path} has no faces and no points; export it again")
    if not np.all(np.isfinite(points)):
        raise GeometryError(f"geometry file {path} has NaN/inf coordinates; clean it")
    return points


def write_json(path, obj) -> None:
    """Write obj as indented JSON to path atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def report(compute, json_path=None, errors: tuple = (GeometryError,)) -> int:
    """Command-line tail: print compute()'s dict as JSON (and write it to json_path) -> exit code.

    An exception of `errors` is printed as "error: ..." on stderr and gives exit code 1.
    """
    try:
        result = compute()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    if json_path:
        write_json(json_path, result)
    return 0


def prediction_points(geom, spacing: float = DEFAULT_SPACING_MM, seed: int = 0) -> tuple[np.ndarray, int]:
    """Predicted mesh or points -> (DTU samples down-sampled to `spacing` (K, 3), samples before)."""
    pts = sample_mesh(geom, spacing) if isinstance(geom, trimesh.Trimesh) else \
        np.asarray(geom, np.float64).reshape(-1, 3)
    return downsample(pts, spacing, seed), len(pts)


def reference_points(geom, spacing: float = DEFAULT_SPACING_MM) -> np.ndarray:
    """Ground-truth mesh -> vertices + DTU grid samples at `spacing`; points as they are -> (M, 3)."""
    if isinstance(geom, trimesh.Trimesh):
        return sample_mesh(geom, spacing)
    return np.asarray(geom, np.float64).reshape(-1, 3)


def nearest_distances(src: np.ndarray, dst: np.ndarray, max_dist: float = np.inf,
                      tree: cKDTree | None = None) -> np.ndarray:
    """Distance from each src point (M, 3) to its nearest dst point (N, 3) -> (M,) float64.

    Distances >= max_dist come back as inf (the KD-tree stops searching there); queries run
    QUERY_CHUNK points at a time. Pass `tree` = cKDTree(dst) to reuse one.
    """
    src = np.asarray(src, np.float64).reshape(-1, 3)
    if len(src) == 0 or len(dst) == 0:
        raise GeometryError("cannot measure distances with an empty point set")
    tree = cKDTree(np.asarray(dst, np.float64).reshape(-1, 3)) if tree is None else tree
    out = np.empty(len(src))
    for lo in range(0, len(src), QUERY_CHUNK):
        out[lo:lo + QUERY_CHUNK] = tree.query(src[lo:lo + QUERY_CHUNK], k=1,
                                              distance_upper_bound=max_dist, workers=-1)[0]
    out[out >= max_dist] = np.inf
    return out


def outlier_mean(dist: np.ndarray, max_dist: float, outliers: str = "drop") -> tuple[float, float]:
    """(mean, outlier fraction) of distances (M,): outliers (>= max_dist) dropped or clamped.

    With "drop" and every distance an outlier the mean is nan (nothing left to average).
    """
    if outliers not in OUTLIER_RULES:
        raise ValueError(f"outliers must be one of {OUTLIER_RULES}, got {outliers!r}")
    far = ~(dist < max_dist)
    fraction = float(far.mean())
    if outliers == "clamp":
        return float(np.minimum(dist, max_dist).mean()), fraction
    return (float(dist[~far].mean()) if (~far).any() else float("nan")), fraction


def chamfer(pred_points: np.ndarray, gt_points: np.ndarray, max_dist: float = DEFAULT_MAX_DIST_MM,
            gt_accuracy_points: np.ndarray | None = None, outliers: str = "drop") -> dict:
    """Chamfer of point sets: accuracy pred -> gt, completeness gt -> pred, overall their mean.

    `gt_accuracy_points` (optional) replaces gt for the accuracy term only (e.g. the whole gt
    surface while `gt_points` holds its visible part). Returns accuracy, completeness, overall and
    accuracy_outliers / completeness_outliers: the fractions of distances >= max_dist (dropped, or
    clamped with outliers="clamp"), plus outlier_rule.
    """
    pred = np.asarray(pred_points, np.float64).reshape(-1, 3)
    gt = np.asarray(gt_points, np.float64).reshape(-1, 3)
    gt_acc = gt if gt_accuracy_points is None else np.asarray(gt_accuracy_points, np.float64).reshape(-1, 3)
    acc, acc_out = outlier_mean(nearest_distances(pred, gt_acc, max_dist), max_dist, outliers)
    comp, comp_out = outlier_mean(nearest_distances(gt, pred, max_dist), max_dist, outliers)
    return {"accuracy": acc, "completeness": comp, "overall": 0.5 * (acc + comp),
            "accuracy_outliers": acc_out, "completeness_outliers": comp_out, "outlier_rule": outliers}


from sam_utils.masks import mask_iou  # noqa: E402,F401  (mask IoU lives with the other mask helpers)


def chamfer_files(pred_path, gt_path, gt_accuracy_path=None, spacing: float = DEFAULT_SPACING_MM,
                  max_dist: float = DEFAULT_MAX_DIST_MM, *, outliers: str = "drop", seed: int = 0) -> dict:
    """Chamfer between geometry files on DTU's protocol (see the module docstring).

    gt_path: completeness reference (e.g. visible-surface points); gt_accuracy_path: the accuracy
    reference (e.g. the closed gt mesh; default gt_path). spacing: sampling and down-sampling
    distance in scene units (DTU: 0.2 mm); seed: the down-sampling order.
    Returns chamfer()'s dict plus n_pred (after down-sampling), n_pred_samples (before), n_gt
    (and n_gt_accuracy when given).
    """
    if not spacing > 0 or not max_dist > 0:
        raise ValueError(f"spacing ({spacing}) and max_dist ({max_dist}) must be positive")
    pred, n_samples = prediction_points(load_geometry(pred_path), spacing, seed)
    gt = reference_points(load_geometry(gt_path), spacing)
    gt_acc = reference_points(load_geometry(gt_accuracy_path), spacing) if gt_accuracy_path else None
    result = chamfer(pred, gt, max_dist, gt_acc, outliers)
    result.update(n_pred=len(pred), n_pred_samples=n_samples, n_gt=len(gt))
    if gt_acc is not None:
        result["n_gt_accuracy"] = len(gt_acc)
    return result
