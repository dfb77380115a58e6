"""Exact geometry for the target stage's tests: spheres in a room seen by a ring of cameras, ray-cast.

The target sphere at the origin, an occluder in front of it as camera 0 sees it, every other ray ending
on the room's wall (an inside-out sphere); `spheres()` casts every view once.
"""
import math
from types import SimpleNamespace

import cv2
import numpy as np

from datasets.synthetic_cameras import look_at
from systems.settings import TargetSettings

TARGET = (np.zeros(3), 0.5)
OCCLUDER = (np.array([1.1, 0.25, 0.1]), 0.2)     # in front of the target as camera 0 sees it
ROOM = 4.0                                       # every ray ends on the room's wall (an inside-out sphere)
H, W, F = 60, 80, 70.0


def ring_cameras(n: int = 8, radius: float = 2.2, elevation_deg: float = 15.0):
    """(K (3,3), poses (n,4,4) camera-to-world, P (n,3,4)): a ring around the target, camera 0 on +x."""
    K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
    e = math.radians(elevation_deg)
    poses, P = [], []
    for a in np.linspace(0, 2 * math.pi, n, endpoint=False):
        eye = radius * np.array([math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), math.sin(e)])
        R, t = look_at(eye, np.zeros(3))
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R.T, eye
        poses.append(pose)
        P.append(K @ np.concatenate([R, t[:, None]], 1))
    return K, np.stack(poses), np.stack(P)


def sphere_hit(o, d, centre, r, inside: bool = False):
    """Ray parameter (..,) of the first hit of rays o + t d (d unit) with a sphere, inf where missed."""
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    root = np.sqrt(np.maximum(disc, 0.0))
    t = -b + root if inside else -b - root
    return np.where((disc > 0) & (t > 0), t, np.inf)


def cast(poses, K):
    """Per view: surface points (n,H,W,3), what each pixel shows first (0 target, 1 occluder, 2 wall) and
    whether its ray meets the target at all (n,H,W)."""
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    points, first, meets = [], [], []
    for pose in poses:
        d = d_cam @ pose[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = pose[:3, 3]
        t = np.stack([sphere_hit(o, d, *TARGET), sphere_hit(o, d, *OCCLUDER),
                      sphere_hit(o, d, np.zeros(3), ROOM, inside=True)])
        k = t.argmin(0)
        points.append(o + d * np.take_along_axis(t, k[None], 0)[0][..., None])
        first.append(k)
        meets.append(np.isfinite(t[0]))
    return np.stack(points), np.stack(first), np.stack(meets)


def spheres() -> SimpleNamespace:
    """The ring's cameras (K, poses, P) and their casts: points, first (0 target, 1 occluder, 2 wall), meets,
    target (the target's visible pixels)."""
    K, poses, P = ring_cameras()
    points, first, meets = cast(poses, K)
    return SimpleNamespace(K=K, poses=poses, P=P, points=points, first=first, meets=meets, target=first == 0)


def grown(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8)) > 0


def settings(**kw) -> TargetSettings:
    base = dict(iters=0, mask_weight=0.1, random_background=True, focus_fraction=0.25, occlusion_level=1,
                occlusion_dilate=0, occlusion_reach=0.0, depth_tol=0.02, mesh_cut="hull", hull_dilate=1,
                support_ring=0.0, support_tol=0.005, mesh_occupancy_threshold=0.5)
    return TargetSettings(**{**base, **kw})
