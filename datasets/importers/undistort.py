"""Lens distortion (OpenCV's k1, k2, p1, p2[, k3] model) -> pinhole views, with OpenCV.

COLMAP's SIMPLE_RADIAL / RADIAL / OPENCV and transforms.json's k1 k2 p1 p2 are this model on
normalised image coordinates, so the coefficients do not depend on the pixel-origin convention.
"""
from __future__ import annotations

import cv2
import numpy as np


def is_distorted(dist: np.ndarray) -> bool:
    return bool(np.any(np.asarray(dist) != 0))


def pinhole_camera(K: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """New K (3, 3) of the undistorted view of the same size, cropped so every pixel is valid."""
    if not is_distorted(dist):
        return np.asarray(K, np.float64).copy()
    new_k, _ = cv2.getOptimalNewCameraMatrix(np.asarray(K, np.float64), np.asarray(dist, np.float64),
                                             tuple(size), 0.0, tuple(size))
    return new_k


def undistort_image(img: np.ndarray, K: np.ndarray, dist: np.ndarray, new_k: np.ndarray,
                    nearest: bool = False) -> np.ndarray:
    """Resample `img` (H, W[, C]) taken with (K, dist) into the pinhole camera new_k, same size."""
    if not is_distorted(dist):
        return img
    h, w = img.shape[:2]
    mx, my = cv2.initUndistortRectifyMap(np.asarray(K, np.float64), np.asarray(dist, np.float64),
                                         None, new_k, (w, h), cv2.CV_32FC1)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(img, mx, my, interp, borderMode=cv2.BORDER_REPLICATE)


def project(points_cam: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Camera-frame points (M, 3) -> pixels (M, 2) through K and (optionally) the distortion."""
    pts = np.asarray(points_cam, np.float64).reshape(-1, 1, 3)
    d = np.zeros(4) if dist is None else np.asarray(dist, np.float64)
    uv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), np.asarray(K, np.float64), d)
    return uv.reshape(-1, 2)
