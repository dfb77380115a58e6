"""What a run writes besides checkpoints: validation images, world-space meshes, their Chamfer and silhouette check.

Both whole-view renderers here (colour for validation images, heads for projections) go through
`render_chunked`, so a view is rendered the same way wherever it is needed.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import trimesh

from datasets.dtu import DTUDataset, near_far_from_sphere
from evaluation.metrics import chamfer_files
from evaluation.silhouette import check_paths, evaluate_silhouettes, read_check
from models.mesh import evaluate_grid, fill_enclosed, largest_component, marching_cubes, to_world
from models.mesh_export import export_formats, network_color_fn, vertex_colors
from systems.atomic import atomic_write, atomic_write_image, atomic_write_text, named_disk_full
from systems.settings import ValidateSettings


@torch.no_grad()
def render_chunked(render_fn, rays_o: torch.Tensor, rays_d: torch.Tensor, chunk: int,
                   keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """render_fn(o, d, near, far) -> dict, over (R,3) rays in chunks; returns keys concatenated (R,C) on the CPU."""
    parts: dict[str, list] = {k: [] for k in keys}
    for oc, dc in zip(rays_o.split(chunk), rays_d.split(chunk)):
        near, far = near_far_from_sphere(oc, dc)
        out = render_fn(oc, dc, near, far)
        for k in keys:
            parts[k].append(out[k].float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def render_view(model, dataset: DTUDataset, view: int, resolution_level: int, chunk: int, background,
                heads: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Render a whole view at 1/resolution_level; returns (h,w,C) float arrays per rendered key."""
    rays = dataset.rays_at(view, resolution_level)
    h, w = rays["rays_o"].shape[:2]
    keys = ("color", "normal", "opacity", "depth") + tuple(heads)

    def fn(o, d, near, far):
        return model.renderer.render(o, d, near, far, background, heads=tuple(heads), perturb=False)

    out = render_chunked(fn, rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3), chunk, keys)
    result = {k: v.reshape(h, w, -1).numpy() for k, v in out.items()}
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
    atomic_write(path, lambda tmp: imageio.imwrite(tmp, (img * 255).round().astype(np.uint8), format="png"))


@torch.no_grad()
def extract_world_mesh(sdf_fn, scale_mat: np.ndarray, resolution: int, threshold: float, bound: float,
                       chunk: int, device, keep_largest: bool = False,
                       support: np.ndarray | None = None) -> trimesh.Trimesh:
    """Marching cubes of the SDF inside the unit sphere, mapped to world space with scale_mat.

    The SDF is intersected with the unit sphere (max of the two) so the mesh is closed where the
    scene touches the sphere's boundary. `support` (4,), a plane in unit coordinates the surface stands
    on: the space the surface and the plane enclose is filled (models.mesh.fill_enclosed).
    """
    def fn(p: torch.Tensor) -> torch.Tensor:
        return torch.maximum(sdf_fn(p).float(), p.norm(dim=-1, keepdim=True) - 1.0)

    lo, hi = [-bound] * 3, [bound] * 3
    values = evaluate_grid(fn, lo, hi, resolution, chunk, device)
    if support is not None:
        values = fill_enclosed(values, threshold, lo, hi, support)
    mesh = marching_cubes(values, threshold, lo, hi)
    if keep_largest:
        mesh = largest_component(mesh)
    return to_world(mesh, scale_mat)


class MeshWriter:
    """meshes/<which>_<iter>.<fmt> and meshes/<which>.<fmt> (world space; vertex colours from the colour
    network), the .ply evaluated against the scene's gt/."""

    def __init__(self, model, dataset: DTUDataset, settings: ValidateSettings, bound: float, exp_dir: Path):
        self.model, self.dataset, self.s, self.bound = model, dataset, settings, bound
        self.folder = Path(exp_dir) / "meshes"
        self.eval_seconds = 0.0      # spent on evaluate (ground truth only): not part of a user's click -> mesh

    def write(self, which: str, sdf_fn, iteration: int, resolution: int | None = None,
              threshold: float | None = None, keep_largest: bool = False, formats=("ply",),
              support: np.ndarray | None = None) -> Path:
        res = resolution or self.s.mesh_resolution
        thr = self.s.mesh_threshold if threshold is None else threshold
        mesh = extract_world_mesh(sdf_fn, self.dataset.scale_mat, res, thr, self.bound, self.s.mesh_chunk,
                                  self.dataset.device, keep_largest=keep_largest, support=support)
        path = self.folder / f"{which}_{iteration:08d}.ply"
        if len(mesh.faces) == 0:
            atomic_write(path, lambda tmp: mesh.export(tmp, file_type="ply"))
        else:
            ds = self.dataset
            colors = vertex_colors(self.model, mesh, ds.scale_mat, ds.device, self.s.mesh_chunk)
            color_fn = network_color_fn(self.model, ds.scale_mat, ds.device) if "textured" in formats else None
            with named_disk_full(path):
                written = export_formats(mesh, ["ply", *[f for f in formats if f != "ply"]], path, colors, color_fn)
            for p in written.values():
                latest = self.folder / p.name.replace(f"_{iteration:08d}", "")
                atomic_write(latest, lambda tmp, p=p: shutil.copyfile(p, tmp))
        atomic_write(self.folder / f"{which}.ply", lambda tmp: shutil.copyfile(path, tmp))
        print(f"[mesh] {which}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> {path}")
        if len(mesh.faces) == 0:
            hint = (" the occupancy head claims no surface: see masks/round_*/contact_sheet.png" if which == "target"
                    else " train longer or lower --mcube_threshold")
            print(f"[mesh] WARNING: the {which} mesh is empty;{hint}")
            return path
        self.evaluate(path, which)
        return path

    def evaluate(self, path: Path, which: str) -> dict | None:
        """Chamfer against the scene's ground truth (gt/<which>_visible.ply for completeness)."""
        gt_dir = self.dataset.data_dir / "gt"
        if not (gt_dir / f"{which}.ply").is_file():
            return None
        t0 = time.time()
        result = chamfer_files(path, gt_dir / f"{which}_visible.ply", gt_dir / f"{which}.ply", self.s.eval_spacing)
        self.eval_seconds += time.time() - t0
        atomic_write_text(path.with_suffix(".json"), json.dumps(result, indent=2))
        print(f"[eval] {which} Chamfer (world units): " + json.dumps({k: round(v, 4) for k, v in result.items()
                                                                     if isinstance(v, float)}))
        return result


def silhouette_check(mesh_path, scene_dir, mask_dir: str, workers: int = 0) -> dict:
    """The mesh's silhouette against scene_dir/mask_dir in every view (evaluation.silhouette), kept beside it
    (check_paths: the figures and the sheet) and read back while the mesh is not newer and the masks are the
    same folder: the run, its report and the bench share one computation. evaluation.silhouette.read_check's
    dict ({"mean", "worst", "worst_view", "per_view", "mask_dir", "sheet"})."""
    json_path, sheet_path = check_paths(mesh_path)
    mask_dir = str(mask_dir)
    kept = read_check(mesh_path)                    # None where missing or unreadable: computed again
    if kept is not None and kept["mask_dir"] == mask_dir and sheet_path.is_file() \
            and json_path.stat().st_mtime >= Path(mesh_path).stat().st_mtime:
        return kept
    result = evaluate_silhouettes(mesh_path, scene_dir, mask_dir, workers=workers, sheet=True)
    atomic_write_image(sheet_path, result.pop("sheet"))
    atomic_write_text(json_path, json.dumps({**result, "mask_dir": mask_dir}, indent=1))
    return read_check(mesh_path)
