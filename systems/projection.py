"""Render the occupancy (instance) field into every view, and read ground-truth target masks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.dtu import DTUDataset
from systems.outputs import render_chunked
from systems.stages import INSTANCE


SURFACE_OPACITY = 0.5   # a rendered pixel shows surface when its opacity reaches this


def _render_view(model, ds: DTUDataset, view: int, level: int, chunk: int, keys: tuple[str, ...]):
    """One view's rays at 1/level rendered by render_heads (the occupancy head too): rays_o, rays_d
    (h*w,3), the rendered keys (h*w,C) on the CPU, and (h, w)."""
    rays = ds.rays_at(view, level)
    h, w = rays["rays_o"].shape[:2]
    o, d = rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3)

    def fn(o, d, near, far):
        return model.renderer.render_heads(o, d, near, far, (INSTANCE,) if INSTANCE in keys else ())

    return o, d, render_chunked(fn, o, d, chunk, keys), (h, w)


@torch.no_grad()
def project_views(model, dataset: DTUDataset, resolution_level: int, chunk: int, surface: bool = False):
    """(N,H,W) float32 target probability per view: rendered at 1/level, upsampled to the full size.

    surface=True also returns the rendered surface at 1/level: points (N,h,w,3) in unit coordinates
    (float64) and valid (N,h,w) bool (opacity >= SURFACE_OPACITY), for connectivity.keep_connected.
    """
    ds = dataset
    out = np.empty((ds.n_images, ds.H, ds.W), np.float32)
    points, valid = [], []
    keys = (INSTANCE, "depth", "opacity") if surface else (INSTANCE,)
    model.eval()
    for v in range(ds.n_images):
        o, d, r, (h, w) = _render_view(model, ds, v, resolution_level, chunk, keys)
        out[v] = upsample(r[INSTANCE].reshape(h, w).numpy(), ds.H, ds.W)
        if surface:
            pts = o.double().cpu() + d.double().cpu() * r["depth"].double()
            points.append(pts.reshape(h, w, 3).numpy())
            valid.append((r["opacity"] >= SURFACE_OPACITY).reshape(h, w).numpy())
    model.train()
    return (out, np.stack(points), np.stack(valid)) if surface else out


def upsample(grid: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """(h,w) -> (height,width): bilinear (nearest for masks), pixel centres onto pixel centres."""
    if grid.shape == (height, width):
        return grid
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(grid.astype(np.float32) if not nearest else grid.astype(np.uint8), (width, height),
                      interpolation=interp).astype(grid.dtype)


def projection_matrices(ds: DTUDataset) -> np.ndarray:
    """(N,3,4) unit coordinates -> the dataset's pixels: K [R | t] from intrinsics and poses."""
    K = ds.intrinsics[:, :3, :3].double().cpu().numpy()
    w2c = np.linalg.inv(ds.poses.double().cpu().numpy())[:, :3, :]
    return K @ w2c


def load_gt_masks(ds, rel_dir: str) -> np.ndarray | None:
    """Ground-truth target masks (N,H,W) bool from <data_dir>/<rel_dir>/NNN.png, or None ('' or absent)."""
    if not rel_dir:
        return None
    folder = Path(ds.data_dir) / rel_dir
    files = sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []
    if len(files) != ds.n_images:
        print(f"[nto3d] no ground-truth masks used: {folder} has {len(files)} PNGs for {ds.n_images} views")
        return None
    masks = []
    for f in files:
        m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if m.shape != (ds.H, ds.W):
            m = cv2.resize(m, (ds.W, ds.H), interpolation=cv2.INTER_NEAREST)
        masks.append(m > 127)
    return np.stack(masks)
