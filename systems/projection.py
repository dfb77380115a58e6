"""Render the occupancy (instance) field into every view, and read ground-truth target masks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.dtu import DTUDataset
from systems.outputs import render_chunked
from systems.stages import INSTANCE


@torch.no_grad()
def project_views(model, dataset: DTUDataset, resolution_level: int, chunk: int) -> np.ndarray:
    """(N,H,W) float32 target probability per view: rendered at 1/level, upsampled to the full size."""
    ds = dataset
    out = np.empty((ds.n_images, ds.H, ds.W), np.float32)
    model.eval()

    def fn(o, d, near, far):
        return model.renderer.render_heads(o, d, near, far, (INSTANCE,))

    for v in range(ds.n_images):
        rays = ds.rays_at(v, resolution_level)
        h, w = rays["rays_o"].shape[:2]
        r = render_chunked(fn, rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3), chunk, (INSTANCE,))
        prob = r[INSTANCE].reshape(h, w).numpy()
        out[v] = cv2.resize(prob, (ds.W, ds.H), interpolation=cv2.INTER_LINEAR) if (h, w) != (ds.H, ds.W) else prob
    model.train()
    return out


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
