"""Pinhole cameras on a hemisphere band around the scene (OpenCV convention).

Convention: x_cam right, y_cam down, camera looks along +z_cam. A world point X projects to pixel
(u=col, v=row) with K @ (R X + t) ∝ (u, v, 1); pixel centres sit at integer coordinates, so the ray of
pixel (u, v) passes through K^-1 (u, v, 1) and the principal point is ((W-1)/2, (H-1)/2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ELEVATION_RANGE_DEG = (20.0, 70.0)      # camera elevations above the table plane
GOLDEN_ANGLE_DEG = 180.0 * (3.0 - math.sqrt(5.0))  # azimuth step of the Fibonacci spiral
DISTANCE_IN_RADII = 3.0                 # camera distance / bounding-sphere radius
SPHERE_FILL = 1.15                      # bounding-sphere diameter / image height (the sphere has margin)
WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class Camera:
    """K (3,3) intrinsics, R (3,3) world->camera rotation, t (3,) translation (mm): x_cam = R x + t."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray

    @property
    def center(self) -> np.ndarray:  # (3,) camera centre in world mm
        return -self.R.T @ self.t

    @classmethod
    def from_world_mat(cls, world_mat: np.ndarray) -> "Camera":
        """Inverse of world_mat() (RQ decomposition of its 3x4 part; K scaled to K[2,2] = 1)."""
        k, r, c = cv2.decomposeProjectionMatrix(np.ascontiguousarray(world_mat[:3], np.float64))[:3]
        c = c[:3, 0] / c[3, 0]
        return cls(K=k / k[2, 2], R=r, t=-r @ c)

    def world_mat(self) -> np.ndarray:
        """4x4 float64 projection world (mm) -> pixels, as DTU's world_mat: K4 @ [R|t; 0 0 0 1]."""
        k4, rt = np.eye(4), np.eye(4)
        k4[:3, :3] = self.K
        rt[:3, :3], rt[:3, 3] = self.R, self.t
        return k4 @ rt


def look_at(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R (3,3), t (3,)) for a camera at `eye` looking at `target` with world +z up."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to world up; use an elevation below 90 deg")
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows are the camera axes in world coordinates
    return R, -R @ eye


def intrinsics(width: int, height: int, focal: float) -> np.ndarray:
    """3x3 pinhole K with square pixels and the principal point at the image centre ((W-1)/2, (H-1)/2)."""
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def focal_for_sphere(radius: float, distance: float, height: int) -> float:
    """Focal (px) at which a sphere of `radius` seen from `distance` spans SPHERE_FILL * height pixels."""
    half_angle = math.asin(radius / distance)
    return SPHERE_FILL * (height / 2.0) / math.tan(half_angle)


def spiral_directions(n_views: int, view0_azimuth_deg: float) -> list[tuple[float, float]]:
    """(azimuth, elevation) in degrees of `n_views` Fibonacci-spiral directions in the elevation band.

    Elevations are area-uniform on the band (uniform in sin(elevation)). The spiral is re-indexed so
    that view 0 is the mid-elevation sample, rotated to sit at `view0_azimuth_deg`.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    first = n_views // 2
    out = []
    for i in range(n_views):
        k = (i + first) % n_views
        elevation = math.degrees(math.asin(lo + (hi - lo) * (k + 0.5) / n_views))
        azimuth = view0_azimuth_deg + (k - first) * GOLDEN_ANGLE_DEG
        out.append(((azimuth + 180.0) % 360.0 - 180.0, elevation))
    return out


def make_cameras(n_views: int, width: int, height: int, center: np.ndarray, radius: float,
                 view0_azimuth_deg: float, look_at_z: float | None = None, zoom: float = 1.0) -> list[Camera]:
    """Cameras at DISTANCE_IN_RADII * radius from the look-at point, focal fitting the sphere to the frame.

    center, radius: the scene's bounding sphere (mm). The look-at point is `center`, lowered to height
    `look_at_z` if given (tabletop content sits low in its bounding sphere; this centres it in view).
    zoom: focal multiplier (> 1: content near the sphere's rim leaves the frame).
    """
    if not zoom > 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    aim = np.array(center, dtype=np.float64)
    if look_at_z is not None:
        aim[2] = look_at_z
    distance = DISTANCE_IN_RADII * radius
    K = intrinsics(width, height, zoom * focal_for_sphere(radius, distance, height))
    cams = []
    for az, el in spiral_directions(n_views, view0_azimuth_deg):
        a, e = math.radians(az), math.radians(el)
        eye = aim + distance * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        R, t = look_at(eye, aim)
        cams.append(Camera(K.copy(), R, t))
    return cams
