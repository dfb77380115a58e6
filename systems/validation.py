"""Validation outputs: rendered images (colour | ground truth | normals) and meshes in world space."""
from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import trimesh

from datasets.dtu import DTUDataset, near_far_from_sphere
from models.mesh import evaluate_grid, largest_component, marching_cubes, to_world


@torch.no_grad()
def render_view(model, dataset: DTUDataset, view: int, resolution_level: int, chunk: int, background,
                heads: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Render a whole view at 1/resolution_level; returns (h,w,C) float arrays per rendered key."""
    rays = dataset.rays_at(view, resolution_level)
    h, w = rays["rays_o"].shape[:2]
    o, d = rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3)
    keys = ("color", "normal", "opacity", "depth") + heads
    parts: dict[str, list] = {k: [] for k in keys}
    for oc, dc in zip(o.split(chunk), d.split(chunk)):
        near, far = near_far_from_sphere(oc, dc)
        out = model.renderer.render(oc, dc, near, far, background, heads=heads, perturb=False)
        for k in keys:
            parts[k].append(out[k].float().cpu())
    result = {k: torch.cat(v).reshape(h, w, -1).numpy() for k, v in parts.items()}
    result["gt"] = rays["rgb"].float().cpu().numpy() if "rgb" in rays else None
    return result


def normals_to_image(normal: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World normals (h,w,3) -> camera-space normals mapped to [0,1] for display."""
    rot = pose[:3, :3].T
    cam = normal @ rot.T
    cam[..., 1:] *= -1.0  # OpenCV camera (y down, z forward) -> the usual normal-map colours
    return np.clip(cam * 0.5 + 0.5, 0.0, 1.0)


def save_validation_image(path: Path, rendered: dict[str, np.ndarray], pose: np.ndarray,
                          extra_panels: list[np.ndarray] = ()) -> None:
    """One PNG: rendered colour | ground truth | normals | extra panels (e.g. feature PCA), each (h,w,3)."""
    panels = [rendered["color"]]
    if rendered.get("gt") is not None:
        panels.append(rendered["gt"])
    panels.append(normals_to_image(rendered["normal"], pose))
    panels.extend(extra_panels)
    img = np.concatenate([np.clip(p, 0.0, 1.0) for p in panels], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, (img * 255).round().astype(np.uint8))


@torch.no_grad()
def extract_world_mesh(sdf_fn, scale_mat: np.ndarray, resolution: int, threshold: float, bound: float,
                       chunk: int, device, keep_largest: bool = False) -> trimesh.Trimesh:
    """Marching cubes of the SDF inside the unit sphere, mapped to world space with scale_mat.

    The SDF is intersected with the unit sphere (max of the two) so the mesh is closed where the
    scene touches the sphere's boundary.
    """
    def fn(p: torch.Tensor) -> torch.Tensor:
        return torch.maximum(sdf_fn(p).float(), p.norm(dim=-1, keepdim=True) - 1.0)

    lo, hi = [-bound] * 3, [bound] * 3
    values = evaluate_grid(fn, lo, hi, resolution, chunk, device)
    mesh = marching_cubes(values, threshold, lo, hi)
    if keep_largest:
        mesh = largest_component(mesh)
    return to_world(mesh, scale_mat)
