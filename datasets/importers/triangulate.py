"""Sparse points from views with known cameras (sources without SfM points: transforms.json, LLFF).

SIFT features (OpenCV) are matched between each view and its nearest views, matches off the
epipolar line the known poses predict are dropped, and the rest are triangulated (DLT). The points
then go through the same "seen by most views" sphere as COLMAP's points.
"""
from __future__ import annotations

import cv2
import numpy as np

from .normalise import Cameras

N_FEATURES = 1500           # SIFT features per view
RATIO = 0.75                # Lowe's ratio test
EPI_PX = 1.5                # max distance of a match from its epipolar line (pixels)
REPROJ_PX = 1.5             # max reprojection error of a triangulated point (pixels)
MIN_ANGLE_DEG = 2.0         # min triangulation angle
NEIGHBOURS = 3              # partner views per view (nearest camera centres)


def _fundamental(cams: Cameras, i: int, j: int) -> np.ndarray:
    """F with x_j^T F x_i = 0 for the known cameras i, j."""
    R = cams.R[j] @ cams.R[i].T
    t = cams.t[j] - R @ cams.t[i]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(cams.K[j]).T @ tx @ R @ np.linalg.inv(cams.K[i])


def _epi_dist(F: np.ndarray, xi: np.ndarray, xj: np.ndarray) -> np.ndarray:
    """Symmetric point-to-epipolar-line distance (M,) in pixels."""
    hi, hj = np.c_[xi, np.ones(len(xi))], np.c_[xj, np.ones(len(xj))]
    lj, li = hi @ F.T, hj @ F
    num = np.abs(np.einsum("mi,mi->m", hj, lj))
    return 0.5 * num * (1 / np.hypot(lj[:, 0], lj[:, 1]) + 1 / np.hypot(li[:, 0], li[:, 1]))


def triangulate_views(greys: list[np.ndarray], cams: Cameras) -> np.ndarray:
    """greys: N uint8 (h, w) images of cams (same pixels) -> world points (M, 3), M may be 0."""
    sift = cv2.SIFT_create(nfeatures=N_FEATURES)
    feats = [sift.detectAndCompute(g, None) for g in greys]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    centres = cams.centres
    P = cams.K @ np.concatenate([cams.R, cams.t[:, :, None]], 2)                  # (N, 3, 4)
    done, out = set(), []
    for i in range(len(greys)):
        order = np.argsort(np.linalg.norm(centres - centres[i], axis=1))
        for j in [int(j) for j in order[1:NEIGHBOURS + 1]]:
            if (min(i, j), max(i, j)) in done:
                continue
            done.add((min(i, j), max(i, j)))
            (ki, di), (kj, dj) = feats[i], feats[j]
            if di is None or dj is None or len(ki) < 2 or len(kj) < 2:
                continue
            good = [m[0] for m in matcher.knnMatch(di, dj, k=2)
                    if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
            if not good:
                continue
            xi = np.array([ki[m.queryIdx].pt for m in good])
            xj = np.array([kj[m.trainIdx].pt for m in good])
            keep = _epi_dist(_fundamental(cams, i, j), xi, xj) < EPI_PX
            if keep.sum() == 0:
                continue
            xi, xj = xi[keep], xj[keep]
            Xh = cv2.triangulatePoints(P[i], P[j], xi.T, xj.T)
            X = (Xh[:3] / Xh[3]).T                                                 # (M, 3)
            out.append(X[_valid(X, cams, i, j, xi, xj)])
    return np.concatenate(out) if out else np.zeros((0, 3))


def _valid(X, cams: Cameras, i, j, xi, xj) -> np.ndarray:
    """Points in front of both cameras, reprojecting within REPROJ_PX, angle >= MIN_ANGLE_DEG."""
    sub = Cameras(cams.K[[i, j]], cams.R[[i, j]], cams.t[[i, j]], cams.size)
    uv, z = sub.project(X)
    err = np.maximum(np.linalg.norm(uv[0] - xi, axis=1), np.linalg.norm(uv[1] - xj, axis=1))
    ri, rj = X - sub.centres[0], X - sub.centres[1]
    cos = np.einsum("mi,mi->m", ri, rj) / (np.linalg.norm(ri, axis=1) * np.linalg.norm(rj, axis=1))
    ok = np.isfinite(X).all(1) & (z > 0).all(0) & (err < REPROJ_PX)
    return ok & (cos < np.cos(np.radians(MIN_ANGLE_DEG)))
