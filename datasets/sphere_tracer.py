"""Deterministic sphere-tracing renderer of a Scene (torch, vectorised over all pixels of a view).

Shading: albedo * (AMBIENT + DIFFUSE * max(0, n . LIGHT_DIR)), one ray per pixel centre, no
anti-aliasing (so colours, masks and hit points refer to exactly the ray through K^-1 (u, v, 1)).
Rays that miss every object get BACKGROUND.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from datasets.synthetic_cameras import Camera
from datasets.synthetic_scene import Scene

BACKGROUND = (0, 0, 0)            # RGB uint8 of rays that hit nothing
MAX_STEPS = 128                   # sphere-tracing iterations per ray
# A ray hits when the SDF drops below a fraction of its pixel's footprint (cone tracing): accuracy is
# tied to the image resolution and grazing rays stop marching early. Footprint = t / focal mm.
HIT_EPS_PIXELS = 0.05
HIT_EPS_MIN_MM = 0.01
LOOSE_HIT_PIXELS = 0.5            # rays still marching after MAX_STEPS are hits if this close
NORMAL_STEP_MM = 0.05             # finite-difference step for SDF normals
LIGHT_DIR = (0.35, -0.45, 1.0)    # direction towards the light (normalised at use)
AMBIENT, DIFFUSE = 0.35, 0.65
# The renderer is thousands of small elementwise ops; on CPU their OpenMP hand-offs cost more than they
# save, and become 10-30x slower when other processes share the cores. One thread is fastest.
CPU_THREADS = 1
# Tetrahedral finite-difference stencil: gradient ~ sum_k k * f(p + h k) / (4 h).
_TETRA = ((1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0), (1.0, 1.0, 1.0))


@dataclass
class ViewRender:
    """Per-pixel results of one view (numpy). object_id is -1 where the ray hit nothing."""

    rgb: np.ndarray        # (H,W,3) uint8
    hit: np.ndarray        # (H,W) bool
    object_id: np.ndarray  # (H,W) int64
    points: np.ndarray     # (H,W,3) float32 world mm of the first hit (0 where no hit)
    depth: np.ndarray      # (H,W) float32 z_cam in mm (0 where no hit)


def default_device(device: str | None = None) -> torch.device:
    """`device` if given, else cuda when available, else cpu."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def cpu_threads(device: torch.device, n: int = CPU_THREADS):
    """Temporarily use `n` torch CPU threads (no-op for other devices)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pixel_rays(cam: Camera, width: int, height: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera centre (3,) and unit world directions (H*W,3) of rays through K^-1 (u, v, 1), row-major."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)  # (H*W,3)
    k_inv = torch.as_tensor(np.linalg.inv(cam.K))
    r = torch.as_tensor(cam.R)
    dirs = pix @ k_inv.T @ r  # (H*W,3) camera rays rotated to world: R^T (K^-1 pix)
    dirs = dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True)
    origin = torch.as_tensor(cam.center)
    return origin.to(device, torch.float32), dirs.to(device, torch.float32)


def ray_sphere(origin: torch.Tensor, dirs: torch.Tensor, center, radius: float):
    """Entry/exit distances (N,) of unit rays with a sphere, and which rays cross it (N,) bool."""
    oc = origin - torch.as_tensor(center, dtype=dirs.dtype, device=dirs.device)  # (3,)
    b = dirs @ oc  # (N,)
    disc = b * b - (oc @ oc - radius * radius)
    root = torch.sqrt(disc.clamp(min=0.0))
    t_near, t_far = (-b - root).clamp(min=0.0), -b + root
    return t_near, t_far, (disc > 0) & (t_far > 0)


def sphere_trace(scene: Scene, origin: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor,
                 t_far: torch.Tensor, valid: torch.Tensor, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """March rays (N,) from t_near to t_far; returns hit distance t (N,) and hit flag (N,) bool.

    focal (px) sets the pixel footprint t / focal that scales the hit tolerance.
    Only still-marching rays are evaluated (compacted every step), so cost falls as rays finish.
    Coordinates are kept as separate (A,) tensors (fast elementwise maths on CPU).
    """
    n = dirs.shape[0]
    t_out = torch.zeros(n, dtype=dirs.dtype, device=dirs.device)
    hit = torch.zeros(n, dtype=torch.bool, device=dirs.device)
    ox, oy, oz = (float(v) for v in origin)
    idx = torch.nonzero(valid).squeeze(1)  # (A,) indices of marching rays
    t, tf = t_near[idx], t_far[idx]
    dx, dy, dz = (dirs[idx, k].contiguous() for k in range(3))
    for _ in range(MAX_STEPS):
        if idx.numel() == 0:
            break
        dist = scene.sdf_xyz(dx * t + ox, dy * t + oy, dz * t + oz)  # (A,)
        done = dist < (t * (HIT_EPS_PIXELS / focal)).clamp(min=HIT_EPS_MIN_MM)
        t_out[idx[done]] = t[done]
        hit[idx[done]] = True
        t = t + dist
        keep = torch.nonzero(~done & (t < tf)).squeeze(1)
        if keep.numel() < idx.numel():
            idx, t, tf, dx, dy, dz = (a[keep] for a in (idx, t, tf, dx, dy, dz))
    if idx.numel():
        exact = scene.sdf_xyz(dx * t + ox, dy * t + oy, dz * t + oz, cull_margin=None)  # (A,) few rays
        close = exact.abs() < t * (LOOSE_HIT_PIXELS / focal)
        t_out[idx[close]] = t[close]
        hit[idx[close]] = True
    return t_out, hit


def sdf_normals(scene: Scene, p: torch.Tensor) -> torch.Tensor:
    """Unit outward normals (N,3) of the composite SDF at points p (N,3) by tetrahedral differences."""
    grad = torch.zeros_like(p)
    for k in _TETRA:
        kv = torch.tensor(k, dtype=p.dtype, device=p.device)
        grad = grad + kv * scene.sdf(p + NORMAL_STEP_MM * kv)[:, None]
    return grad / torch.linalg.norm(grad, dim=-1, keepdim=True).clamp(min=1e-12)


def shade(scene: Scene, p: torch.Tensor, object_id: torch.Tensor) -> torch.Tensor:
    """Lambertian + ambient colour in [0, 1] of surface points p (N,3) of objects object_id (N,)."""
    light = torch.tensor(LIGHT_DIR, dtype=p.dtype, device=p.device)
    light = light / torch.linalg.norm(light)
    lambert = (sdf_normals(scene, p) @ light).clamp(min=0.0)  # (N,)
    return scene.albedo(p, object_id) * (AMBIENT + DIFFUSE * lambert)[:, None]


@torch.no_grad()
def render_view(scene: Scene, cam: Camera, width: int, height: int, sphere_center, sphere_radius: float,
                device=None) -> ViewRender:
    """Render one view; rays start and stop at the scene's bounding sphere (centre, radius in mm)."""
    dev = default_device(device) if not isinstance(device, torch.device) else device
    with cpu_threads(dev):
        return _render(scene, cam, width, height, sphere_center, sphere_radius, dev)


def _render(scene, cam, width, height, sphere_center, sphere_radius, dev) -> ViewRender:
    origin, dirs = pixel_rays(cam, width, height, dev)
    t_near, t_far, valid = ray_sphere(origin, dirs, sphere_center, sphere_radius)
    t, hit = sphere_trace(scene, origin, dirs, t_near, t_far, valid, float(cam.K[0, 0]))
    hit_idx = torch.nonzero(hit).squeeze(1)
    p = origin + dirs[hit_idx] * t[hit_idx, None]  # (M,3)
    obj = scene.nearest_object(p)
    colour = shade(scene, p, obj)

    n = width * height
    rgb = torch.tensor(BACKGROUND, dtype=torch.float32, device=dev).repeat(n, 1) / 255.0
    rgb[hit_idx] = colour
    object_id = torch.full((n,), -1, dtype=torch.int64, device=dev)
    object_id[hit_idx] = obj
    points = torch.zeros(n, 3, dtype=torch.float32, device=dev)
    points[hit_idx] = p
    forward = torch.as_tensor(cam.R[2], dtype=torch.float32, device=dev)
    depth = torch.where(hit, t * (dirs @ forward), torch.zeros_like(t))
    rgb_u8 = torch.round(rgb.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return ViewRender(rgb=rgb_u8.reshape(height, width, 3).cpu().numpy(),
                      hit=hit.reshape(height, width).cpu().numpy(),
                      object_id=object_id.reshape(height, width).cpu().numpy(),
                      points=points.reshape(height, width, 3).cpu().numpy(),
                      depth=depth.reshape(height, width).cpu().numpy())
