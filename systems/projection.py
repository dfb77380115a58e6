"""Render the occupancy (instance) field into every view, and read ground-truth target masks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.dtu import near_far_from_sphere
from systems.stages import INSTANCE

SURFACE_OPACITY = 0.5   # a rendered pixel is on the surface when its opacity reaches this


@torch.no_grad()
def project_views(tr, resolution_level: int, surface: bool = False):
    """(N,H,W) float32 target probability per view: rendered at 1/level, upsampled to the full size.

    surface=True also returns the rendered surface at 1/level: points (N,h,w,3) in unit coordinates
    and valid (N,h,w) (opacity >= 0.5), for visibility.known_pixels.
    """
    ds = tr.dataset
    out = np.empty((ds.n_images, ds.H, ds.W), np.float32)
    points, valid = [], []
    tr.model.eval()
    for v in range(ds.n_images):
        rays = ds.rays_at(v, resolution_level)
        h, w = rays["rays_o"].shape[:2]
        o, d = rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3)
        vals = {k: [] for k in ((INSTANCE, "depth", "opacity") if surface else (INSTANCE,))}
        for oc, dc in zip(o.split(tr.val_chunk), d.split(tr.val_chunk)):
            near, far = near_far_from_sphere(oc, dc)
            r = tr.model.renderer.render_heads(oc, dc, near, far, (INSTANCE,))
            for k in vals:
                vals[k].append(r[k])
        prob = torch.cat(vals[INSTANCE]).reshape(h, w).float().cpu().numpy()
        out[v] = cv2.resize(prob, (ds.W, ds.H), interpolation=cv2.INTER_LINEAR) if (h, w) != (ds.H, ds.W) else prob
        if surface:
            pts = o + d * torch.cat(vals["depth"])
            points.append(pts.reshape(h, w, 3).double().cpu().numpy())
            valid.append((torch.cat(vals["opacity"]) >= SURFACE_OPACITY).reshape(h, w).cpu().numpy())
    tr.model.train()
    return (out, np.stack(points), np.stack(valid)) if surface else out


def projection_matrices(ds) -> np.ndarray:
    """(N,3,4) unit coordinates -> the dataset's pixels: K [R | t] from intrinsics and poses."""
    K = ds.intrinsics[:, :3, :3].double().cpu().numpy()
    w2c = np.linalg.inv(ds.poses.double().cpu().numpy())[:, :3, :]
    return K @ w2c


def upsample_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N,h,w) bool -> (N,height,width) bool, nearest neighbour."""
    if masks.shape[1:] == (height, width):
        return masks
    return np.stack([cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
                     for m in masks])


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
