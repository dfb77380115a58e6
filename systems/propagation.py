"""Click propagation: the naive pipeline without lifting, a baseline the lifting must beat (issue 15).

Reconstruct the scene, back-project the user's click and the prompt mask's surface pixels through the
prompt view's rendered depth into 3D, project those points into every view, keep the ones that view
sees (depth test against its own rendered surface, relative tolerance), make a prompt from them
(positives spread over the splat of the visible points, the splat's box) and ask the segmenter once
per view. No voting, no second round: what one click gives without lifting.

All 3D work is in the dataset's unit-sphere coordinates; pixels are the loaded images' (x = column).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from datasets.dtu import DTUDataset
from sam_utils.masks import pixel_indices
from sam_utils.prompts import Prompt, prompts_from_mask
from sam_utils.segmenter import Segmenter
from systems.outputs import render_chunked

MIN_OPACITY = 0.5        # a rendered ray with less opacity hits no surface
DEPTH_TOL = 0.02         # a point is visible in a view when |its distance - the surface's| <= this * the surface's
MAX_POINTS = 50_000      # back-projected mask points kept (deterministic subsample beyond)
SPLAT_CLOSE_PX = 3       # closing kernel (grid pixels) that fills the gaps between splatted points


@dataclass
class Surfaces:
    """First surface of every view on the grid of 1/level: points (N,h,w,3) unit-sphere coordinates,
    hit (N,h,w) bool. Grid pixel (r, c) is the ray through loaded-image pixel ((c + .5) W/w - .5, ...)
    as in DTUDataset.rays_at."""

    points: np.ndarray
    hit: np.ndarray
    level: int

    def __post_init__(self):
        if self.points.shape[:3] != self.hit.shape or self.points.shape[-1] != 3:
            raise ValueError(f"Surfaces: points {self.points.shape} must be (N, h, w, 3) and hit {self.hit.shape} "
                             "(N, h, w)")


@torch.no_grad()
def render_surfaces(model, dataset: DTUDataset, level: int, chunk: int, min_opacity: float = MIN_OPACITY) -> Surfaces:
    """Rendered depth of every view at 1/level (renderer.render_heads), as surface points."""
    model.eval()

    def fn(o, d, near, far):
        return model.renderer.render_heads(o, d, near, far, ())

    pts, hits = [], []
    for v in range(dataset.n_images):
        rays = dataset.rays_at(v, level)
        h, w = rays["rays_o"].shape[:2]
        o, d = rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3)
        r = render_chunked(fn, o, d, chunk, ("depth", "opacity"))
        pts.append((o.cpu() + d.cpu() * r["depth"]).reshape(h, w, 3).numpy())
        hits.append(r["opacity"].reshape(h, w).numpy() >= min_opacity)
    model.train()
    return Surfaces(np.stack(pts).astype(np.float32), np.stack(hits), int(level))


def _grid_index(uv: np.ndarray, dataset: DTUDataset, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loaded-image pixels (M,2) -> grid (rows, cols) of an (h, w) grid, and whether they lie in the image."""
    h, w = shape
    inside = (uv[:, 0] > -0.5) & (uv[:, 0] < dataset.W - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < dataset.H - 0.5)
    cols = np.clip(np.round((uv[:, 0] + 0.5) * w / dataset.W - 0.5), 0, w - 1).astype(np.int64)
    rows = np.clip(np.round((uv[:, 1] + 0.5) * h / dataset.H - 0.5), 0, h - 1).astype(np.int64)
    return rows, cols, inside


def _camera(dataset: DTUDataset, view: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre (3,), viewing axis (3,)) of a view in unit-sphere coordinates."""
    pose = dataset.poses[view].cpu().numpy().astype(np.float64)
    return pose[:3, 3], pose[:3, 2]


def visible_in(dataset: DTUDataset, surfaces: Surfaces, points: np.ndarray, view: int,
               depth_tol: float = DEPTH_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Where unit-sphere points (M,3) land in `view` (loaded-image pixels (M,2)) and whether that view sees
    them (M,) bool: in front, inside the image, on a rendered surface at their own distance within
    depth_tol of it (relative)."""
    centre, axis = _camera(dataset, view)
    pts = np.asarray(points, np.float64)
    in_front = (pts - centre) @ axis > 1e-6
    uv = dataset.project(dataset.to_world(pts), view)
    uv = np.where(in_front[:, None], uv, -1e6)
    rows, cols, inside = _grid_index(uv, dataset, surfaces.hit.shape[1:])
    surf = surfaces.points[view][rows, cols].astype(np.float64)
    d_surf = np.linalg.norm(surf - centre, axis=1)
    d_pts = np.linalg.norm(pts - centre, axis=1)
    seen = in_front & inside & surfaces.hit[view][rows, cols] & (np.abs(d_pts - d_surf) <= depth_tol * d_surf)
    return uv, seen


def back_project(dataset: DTUDataset, surfaces: Surfaces, view: int, mask: np.ndarray | None = None,
                 pixels: np.ndarray | None = None, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Surface points (M,3) of `view` under a loaded-image mask (H,W) bool (its grid pixels that hit a
    surface, subsampled to max_points) or under pixels (K,2) x, y (those that hit)."""
    h, w = surfaces.hit.shape[1:]
    hit, pts = surfaces.hit[view], surfaces.points[view]
    if pixels is not None:
        rows, cols, inside = _grid_index(np.asarray(pixels, np.float64).reshape(-1, 2), dataset, (h, w))
        keep = inside & hit[rows, cols]
        return pts[rows[keep], cols[keep]].astype(np.float64)
    if mask is None or mask.shape != (dataset.H, dataset.W):
        raise ValueError(f"back_project: the mask must be (H, W) = {(dataset.H, dataset.W)} bool, got "
                         f"{None if mask is None else mask.shape}")
    u = (np.arange(w) + 0.5) * dataset.W / w - 0.5
    v = (np.arange(h) + 0.5) * dataset.H / h - 0.5
    cols, rows = pixel_indices(np.stack(np.meshgrid(u, v), -1).reshape(-1, 2), dataset.H, dataset.W)
    under = mask[rows, cols].reshape(h, w) & hit                               # (h, w) grid pixels on the mask
    sel = np.flatnonzero(under)
    if len(sel) > max_points:
        sel = np.sort(np.random.default_rng(seed).choice(sel, max_points, replace=False))
    return pts.reshape(-1, 3)[sel].astype(np.float64)


def propagate_prompts(dataset: DTUDataset, surfaces: Surfaces, prompt: Prompt, prompt_mask: np.ndarray, *,
                      n_positive: int = 5, n_negative: int = 0, depth_tol: float = DEPTH_TOL,
                      max_points: int = MAX_POINTS, seed: int = 0) -> dict[int, Prompt]:
    """One prompt per view other than the prompt view where the projected mask points are seen: the
    click's own projection first (when seen), then positives spread over the splat of the seen points
    (sam_utils.prompts.prompts_from_mask: interior, farthest-point), the splat's box grown by its
    margin, optional negatives around it. Views where too little is seen get none."""
    src = prompt.view
    points = back_project(dataset, surfaces, src, mask=np.asarray(prompt_mask, bool), max_points=max_points, seed=seed)
    clicks = back_project(dataset, surfaces, src, pixels=prompt.points[prompt.labels == 1])
    h, w = surfaces.hit.shape[1:]
    kernel = np.ones((SPLAT_CLOSE_PX, SPLAT_CLOSE_PX), np.uint8)
    out: dict[int, Prompt] = {}
    for v in range(dataset.n_images):
        if v == src or not len(points):
            continue
        uv, seen = visible_in(dataset, surfaces, points, v, depth_tol)
        if not seen.any():
            continue
        rows, cols, _ = _grid_index(uv[seen], dataset, (h, w))
        splat = np.zeros((h, w), np.uint8)
        splat[rows, cols] = 1
        splat = cv2.morphologyEx(splat, cv2.MORPH_CLOSE, kernel)
        full = cv2.resize(splat, (dataset.W, dataset.H), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        p = prompts_from_mask(full, view=v, n_positive=n_positive, n_negative=n_negative, rng=seed + v)
        if p is None:
            continue
        if len(clicks):
            cuv, cseen = visible_in(dataset, surfaces, clicks, v, depth_tol)
            if cseen.any():
                p = Prompt(v, np.concatenate([cuv[cseen], p.points]),
                           np.concatenate([np.ones(int(cseen.sum()), np.int64), p.labels]), p.box)
        out[v] = p
    return out


def click_propagation(model, dataset: DTUDataset, prompt: Prompt, prompt_mask: np.ndarray, segmenter: Segmenter,
                      render_level: int, chunk: int, *, surfaces: Surfaces | None = None,
                      images: list[np.ndarray] | None = None, n_positive: int = 5, n_negative: int = 0,
                      cascade: bool = False, depth_tol: float = DEPTH_TOL, seed: int = 0) -> np.ndarray:
    """Per-view masks (N,H,W) bool of click propagation: the prompt view keeps prompt_mask (the
    segmenter's answer to the user), every other view gets the segmenter's answer to its propagated
    prompt (empty where none). surfaces: the depth source (default: render_surfaces of `model` at
    render_level); images: RGB uint8 (H,W,3) per view (default: the dataset's)."""
    if surfaces is None:
        surfaces = render_surfaces(model, dataset, render_level, chunk)
    if images is None:
        images = list(dataset.images.cpu().numpy())
    prompts = propagate_prompts(dataset, surfaces, prompt, prompt_mask, n_positive=n_positive,
                                n_negative=n_negative, depth_tol=depth_tol, seed=seed)
    masks = np.zeros((dataset.n_images, dataset.H, dataset.W), bool)
    masks[prompt.view] = prompt_mask
    views = sorted(prompts)
    if views:
        results = segmenter.predict_views(views, [images[v] for v in views], [prompts[v] for v in views],
                                          cascade=cascade)
        for v, r in zip(views, results):
            masks[v] = r.mask
    return masks
