"""What the user checks after an import: the sphere drawn into a few views, and prompt warnings."""
from __future__ import annotations

import numpy as np

from sam_utils.contact_sheet import contact_sheet
from sam_utils.prompts import Prompt

from .normalise import Cameras, Sphere

CLICK_RADIUS_FRAC = 0.02    # sparse points within this fraction of the image diagonal of a click
MIN_NEAR_POINTS = 3         # ... at least this many give the clicked surface's depth


def _rays(K, R, t, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) of one view -> world ray origins (M, 3) and unit directions (M, 3)."""
    d = np.linalg.solve(K, np.c_[uv, np.ones(len(uv))].T).T @ R          # R^T K^-1 p
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(-R.T @ t, d.shape), d


def ray_hits_sphere(o: np.ndarray, d: np.ndarray, sphere: Sphere) -> np.ndarray:
    """(M,) bool: the ray o + s d (s > 0, d unit, (M, 3) each) meets the sphere."""
    rel = (o - sphere.centre) / sphere.radius
    b = np.einsum("mi,mi->m", rel, d)
    disc = b * b - (np.einsum("mi,mi->m", rel, rel) - 1.0)
    return (disc >= 0) & (-b + np.sqrt(np.maximum(disc, 0)) > 0)


def sphere_masks(cams: Cameras, sphere: Sphere, views, width: int) -> np.ndarray:
    """(len(views), h, width) bool: pixels whose ray meets the sphere, on a width-wide grid."""
    w, h = cams.size
    hh = max(1, round(h * width / w))
    u = (np.arange(width) + 0.5) * (w / width) - 0.5
    v = (np.arange(hh) + 0.5) * (h / hh) - 0.5
    uv = np.stack(np.meshgrid(u, v), -1).reshape(-1, 2)
    out = []
    for i in views:
        out.append(ray_hits_sphere(*_rays(cams.K[i], cams.R[i], cams.t[i], uv), sphere)
                   .reshape(hh, width))
    return np.stack(out)


def sphere_overlay(images: list[np.ndarray], views: list[int], cams: Cameras, sphere: Sphere,
                   tile_width: int = 240) -> np.ndarray:
    """Contact sheet (RGB uint8) of `images` (views' RGB) with the sphere's footprint tinted."""
    masks = sphere_masks(cams, sphere, views, tile_width)
    tiles = [np.ascontiguousarray(im) for im in images]
    return contact_sheet(tiles, masks, np.ones(len(views), bool), [f"view {i}" for i in views],
                         tile_width)


def prompt_warnings(prompt: Prompt, cams: Cameras, sphere: Sphere,
                    points: np.ndarray | None = None) -> list[str]:
    """Warnings when the prompt's clicked surface (or its ray) lies outside the sphere.

    With sparse points, the surface under a click is at the median depth of the points that
    project within CLICK_RADIUS_FRAC of the image diagonal; without, the click's ray must at
    least cross the sphere. Clicks are pixels of the imported images (view prompt.view).
    """
    i = int(prompt.view)
    if not 0 <= i < len(cams.K):
        return [f"prompt view {i} does not exist (the scene has {len(cams.K)} views)"]
    clicks = prompt.points[prompt.labels == 1]
    if prompt.box is not None:
        b = prompt.box
        clicks = np.vstack([clicks, [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]])
    o, d = _rays(cams.K[i], cams.R[i], cams.t[i], clicks)
    warn = []
    near_r = CLICK_RADIUS_FRAC * float(np.hypot(*cams.size))
    if points is not None and len(points):
        uv, z = cams.project(np.asarray(points, np.float64))
        uv, z = uv[i], z[i]
    for k, (ok, dk) in enumerate(zip(o, d)):
        what = f"prompt point ({clicks[k, 0]:.0f}, {clicks[k, 1]:.0f}) on view {i}"
        if points is not None and len(points):
            close = (np.linalg.norm(uv - clicks[k], axis=1) < near_r) & (z > 0)
            if close.sum() >= MIN_NEAR_POINTS:
                cos = float(dk @ cams.R[i][2])               # depth -> distance along the ray
                x = ok + dk * np.median(z[close]) / cos
                dist = np.linalg.norm(x - sphere.centre) / sphere.radius
                if dist > 1:
                    warn.append(f"{what}: the surface it hits is {dist:.2f} radii from the sphere "
                                "centre, outside the sphere: pass --sphere/--box that holds it")
                continue
        if not ray_hits_sphere(ok[None], dk[None], sphere)[0]:
            warn.append(f"{what}: its ray misses the sphere, so the object there would be cut: "
                        "pass --sphere/--box that holds it")
    return warn
