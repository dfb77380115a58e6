"""DTU MVS's full evaluation protocol for a mesh: observation mask, bounding box, ground plane.

Files of DTU's "SampleSet" / "Points" downloads, under one root (scan N)::

    Points/stl/stlNNN_total.ply   the structured-light reference points (mm)
    ObsMask/ObsMaskN_10.mat       ObsMask (X, Y, Z) logical, BB (2, 3) box corners, Res voxel size
    ObsMask/PlaneN.mat            P (4,): the ground plane, P . [x, 1] > 0 above it

Steps (DTU's, as DTUeval-python runs them): the prediction is sampled and down-sampled to
`spacing` (evaluation/metrics.prediction_points); points outside BB grown by `patch` (60 mm) below
and 2 * patch above are cut; the rest must fall in a set voxel of ObsMask (voxel index
round((x - BB_min) / Res)). Accuracy: those points -> all STL points; completeness: the STL points
above the plane -> those points; distances >= max_dist dropped (evaluation/metrics.outlier_mean).
Optional NeuS-style pre-cleaning (`clean_mesh`): keep the vertices that project inside the scan's
dilated object mask in every view.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io
import trimesh

from evaluation.metrics import (DEFAULT_MAX_DIST_MM, DEFAULT_SPACING_MM, GeometryError, nearest_distances,
                                outlier_mean, prediction_points)

PATCH_MM = 60.0               # DTU: margin around the observation box
CLEAN_DILATE_PX = 24          # NeuS-style cleaning: object masks dilated by a disc of this radius


def dtu_paths(dtu_root, scan: int) -> dict[str, Path]:
    """{'stl', 'obs_mask', 'plane'} paths of scan `scan`; raises GeometryError naming missing files."""
    root = Path(dtu_root)
    paths = {"stl": root / "Points" / "stl" / f"stl{scan:03d}_total.ply",
             "obs_mask": root / "ObsMask" / f"ObsMask{scan}_10.mat",
             "plane": root / "ObsMask" / f"Plane{scan}.mat"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise GeometryError(f"DTU file(s) missing for scan {scan}: {', '.join(missing)}; --dtu_root must "
                            "hold DTU's Points/stl/ and ObsMask/ folders (SampleSet + Points downloads)")
    return paths


def _read_mat(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise GeometryError(f"cannot read {path} ({exc}); it must be DTU's MATLAB .mat file") from exc
    missing = [k for k in keys if k not in mat]
    if missing:
        raise GeometryError(f"{path} lacks variable(s) {', '.join(missing)}; it must be DTU's original file")
    return mat


def load_obs_mask(path) -> tuple[np.ndarray, np.ndarray, float]:
    """ObsMaskN_10.mat -> (ObsMask (X, Y, Z) bool, BB (2, 3) float64, Res float)."""
    mat = _read_mat(Path(path), ("ObsMask", "BB", "Res"))
    obs, bb, res = np.asarray(mat["ObsMask"]).astype(bool), np.asarray(mat["BB"], np.float64), mat["Res"]
    if obs.ndim != 3 or bb.shape != (2, 3) or np.size(res) != 1 or not float(np.ravel(res)[0]) > 0:
        raise GeometryError(f"{path}: expected ObsMask 3-D, BB 2x3 and a positive scalar Res; got "
                            f"{obs.shape}, {bb.shape}, {np.shape(res)}")
    # DTUeval-python reads BB as float32; the same rounding keeps voxel indices identical.
    return obs, bb.astype(np.float32).astype(np.float64), float(np.ravel(res)[0])


def load_plane(path) -> np.ndarray:
    """PlaneN.mat -> P (4,) float64."""
    plane = np.asarray(_read_mat(Path(path), ("P",))["P"], np.float64)
    if plane.size != 4:
        raise GeometryError(f"{path}: P must hold 4 numbers (a, b, c, d), got shape {plane.shape}")
    return plane.reshape(4)


def observed(points: np.ndarray, obs_mask: np.ndarray, bb: np.ndarray, res: float,
             patch: float = PATCH_MM) -> np.ndarray:
    """Which points (M, 3) survive DTU's box and observation-mask culling -> (M,) bool."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    keep = np.all((pts >= bb[0] - patch) & (pts < bb[1] + 2 * patch), axis=1)
    cell = np.zeros((len(pts), 3), np.int64)
    cell[keep] = np.around((pts[keep] - bb[0]) / res).astype(np.int64)
    keep &= np.all((cell >= 0) & (cell < np.array(obs_mask.shape)), axis=1)
    keep[keep] = obs_mask[cell[keep, 0], cell[keep, 1], cell[keep, 2]]
    return keep


def above_plane(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Which points (M, 3) lie strictly above the plane P (P . [x, 1] > 0) -> (M,) bool."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    return pts @ plane[:3] + plane[3] > 0


def evaluate_dtu(pred, stl: np.ndarray, obs_mask: np.ndarray, bb: np.ndarray, res: float,
                 plane: np.ndarray, spacing: float = DEFAULT_SPACING_MM,
                 max_dist: float = DEFAULT_MAX_DIST_MM, patch: float = PATCH_MM, seed: int = 0,
                 outliers: str = "drop") -> dict:
    """DTU's Chamfer of a predicted mesh / points `pred` against STL points (M, 3) -> dict.

    Keys: accuracy, completeness, overall, accuracy_outliers, completeness_outliers (fractions of
    distances >= max_dist), outlier_rule, n_pred_samples, n_pred (down-sampled), n_pred_observed,
    n_stl, n_stl_above.
    """
    down, n_samples = prediction_points(pred, spacing, seed)
    data = down[observed(down, obs_mask, bb, res, patch)]
    stl = np.asarray(stl, np.float64).reshape(-1, 3)
    stl_above = stl[above_plane(stl, plane)]
    if len(data) == 0:
        raise GeometryError("no predicted point lies inside DTU's observation mask; is the mesh in DTU's "
                            "world coordinates (mm)? (a unit-sphere mesh needs scale_mat applied first)")
    acc, acc_out = outlier_mean(nearest_distances(data, stl, max_dist), max_dist, outliers)
    comp, comp_out = outlier_mean(nearest_distances(stl_above, data, max_dist), max_dist, outliers)
    return {"accuracy": acc, "completeness": comp, "overall": 0.5 * (acc + comp),
            "accuracy_outliers": acc_out, "completeness_outliers": comp_out, "outlier_rule": outliers,
            "n_pred_samples": n_samples, "n_pred": len(down), "n_pred_observed": len(data),
            "n_stl": len(stl), "n_stl_above": len(stl_above)}


def clean_mesh(mesh: trimesh.Trimesh, world_mats: np.ndarray, masks: np.ndarray,
               dilate_px: int = CLEAN_DILATE_PX) -> trimesh.Trimesh:
    """NeuS-style pre-cleaning: keep vertices inside the dilated mask of every view, and their faces.

    world_mats (N, 4, 4) world -> pixels; masks (N, H, W) object masks. A vertex behind a camera or
    outside an image counts as outside. A face stays only if its three vertices do.
    """
    verts = np.asarray(mesh.vertices, np.float64)
    keep = np.ones(len(verts), bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
    for world_mat, mask in zip(world_mats, masks):
        grown = cv2.dilate(np.asarray(mask, np.uint8), kernel) > 0 if dilate_px > 0 else np.asarray(mask) > 0
        uvw = verts @ world_mat[:3, :3].T + world_mat[:3, 3]
        front = uvw[:, 2] > 0
        uv = np.round(uvw[:, :2] / np.where(front, uvw[:, 2], 1.0)[:, None])
        h, w = grown.shape
        inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        hit = np.zeros(len(verts), bool)
        hit[inside] = grown[uv[inside, 1].astype(np.int64), uv[inside, 0].astype(np.int64)]
        keep &= hit
    faces = np.asarray(mesh.faces)
    out = trimesh.Trimesh(verts, faces[keep[faces].all(axis=1)], process=False)
    out.remove_unreferenced_vertices()
    return out
