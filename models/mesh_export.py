"""Meshes people can use: vertex colours from the colour network, .ply / .obj / .glb, UV textures.

`vertex_colors` queries the SDF network (feature, normal by its finite differences) at the mesh's
vertices, mapped to unit-sphere coordinates, and the colour network with the view direction set
to -normal (looking at the surface head-on), so a colour does not depend on any one camera.
`export_formats` writes the same world-unit mesh as .ply (vertex colours), .obj (vertex colours in
the `v` lines) and .glb (COLOR_0), all with the same vertices; "textured" adds a UV atlas
(xatlas, optional) with the colour network baked into a PNG: <base>_textured.obj/.mtl/.png and
<base>_textured.glb (seams duplicate vertices there). Every file is written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from evaluation.mesh_render import rasterize

FORMATS = ("ply", "obj", "glb", "textured")
TEXTURE_SIZE = 1024          # texels per side of the baked atlas
TEXTURE_DILATE_PX = 4        # texels grown past each chart's border (no dark seams when filtering)
ColorFn = Callable[[np.ndarray], np.ndarray]   # world points (N,3) -> RGB (N,3) float in [0, 1]


def parse_formats(text: str) -> list[str]:
    """'ply,obj,glb' -> ['ply', 'obj', 'glb']; an unknown name is an error that lists the known ones."""
    names = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise ValueError(f"--format {text!r}: unknown format(s) {bad}; choose from {','.join(FORMATS)}")
    return list(dict.fromkeys(names))


@torch.no_grad()
def network_colors(model, points_world: np.ndarray, scale_mat: np.ndarray, device, chunk: int = 65536,
                   normals_world: np.ndarray | None = None) -> np.ndarray:
    """RGB (N,3) float in [0,1] of the colour network at world points (N,3), viewed along -normal.

    model: has .sdf (models.fields.SDFNetwork) and .color (ColorNetwork). normals_world (N,3):
    the direction to look from (default: the SDF network's own gradient, the surface normal).
    """
    scale = float(scale_mat[0, 0])
    centre = np.asarray(scale_mat[:3, 3], np.float64)
    unit = (np.asarray(points_world, np.float64) - centre) / scale
    out = np.zeros((len(unit), 3), np.float32)
    for s in range(0, len(unit), chunk):
        x = torch.as_tensor(unit[s:s + chunk], dtype=torch.float32, device=device)
        res = model.sdf.sdf_and_gradient(x)
        if normals_world is None:
            n = F.normalize(res["gradient"], dim=-1, eps=1e-8)
        else:
            n = F.normalize(torch.as_tensor(normals_world[s:s + chunk], dtype=torch.float32, device=device), dim=-1)
        rgb = model.color(x, -n, n, res["feature"])
        out[s:s + chunk] = rgb.float().cpu().numpy()
    return out


def vertex_colors(model, mesh_world: trimesh.Trimesh, scale_mat: np.ndarray, device,
                  chunk: int = 65536) -> np.ndarray:
    """(V,4) uint8 RGBA vertex colours of a world-space mesh from the colour network."""
    rgb = network_colors(model, np.asarray(mesh_world.vertices), scale_mat, device, chunk)
    rgba = np.full((len(rgb), 4), 255, np.uint8)
    rgba[:, :3] = (rgb.clip(0, 1) * 255).round().astype(np.uint8)
    return rgba


def network_color_fn(model, scale_mat: np.ndarray, device, chunk: int = 65536) -> ColorFn:
    """color_fn for export_formats(..., "textured"): the colour network at world points."""
    return lambda points: network_colors(model, points, scale_mat, device, chunk)


def _atomic_write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _coloured(mesh: trimesh.Trimesh, colors: np.ndarray | None) -> trimesh.Trimesh:
    m = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)
    if colors is not None:
        colors = np.asarray(colors, np.uint8)
        if len(colors) != len(m.vertices):
            raise ValueError(f"export_formats: {len(colors)} colours for {len(m.vertices)} vertices; give one a vertex")
        if colors.shape[1] == 3:
            colors = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], 1)
        m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=colors)
    return m


def export_formats(mesh_world: trimesh.Trimesh, formats, base_path, colors: np.ndarray | None = None,
                   color_fn: ColorFn | None = None, texture_size: int = TEXTURE_SIZE) -> dict[str, Path]:
    """Write mesh_world as <base_path>.<fmt> for each of formats (names of FORMATS); returns {fmt: path}.

    colors: (V,3|4) uint8 vertex colours (None: none). "textured" needs color_fn (world points ->
    RGB in [0,1], e.g. a partial of network_colors) and the xatlas package.
    """
    formats = parse_formats(formats) if isinstance(formats, str) else list(formats)
    base = Path(base_path)
    base = base.with_suffix("") if base.suffix.lower() in (".ply", ".obj", ".glb") else base
    mesh = _coloured(mesh_world, colors)
    out: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "ply":
            out[fmt] = _atomic_write(base.with_suffix(".ply"), mesh.export(file_type="ply"))
        elif fmt == "obj":
            text = trimesh.exchange.obj.export_obj(mesh, include_color=colors is not None, include_texture=False,
                                                   include_normals=False)
            out[fmt] = _atomic_write(base.with_suffix(".obj"), text)
        elif fmt == "glb":
            out[fmt] = _atomic_write(base.with_suffix(".glb"), trimesh.Scene(mesh).export(file_type="glb"))
        elif fmt == "textured":
            if color_fn is None:
                raise ValueError("export_formats: 'textured' needs color_fn (the colour network) to bake a texture")
            out.update(export_textured(mesh_world, base.with_name(base.name + "_textured"), color_fn, texture_size))
        else:
            raise ValueError(f"export_formats: unknown format {fmt!r}; choose from {FORMATS}")
    return out


def uv_atlas(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas chart packing: (vmap (V',) original vertex of each new vertex, faces (F,3), uv (V',2) in [0,1])."""
    try:
        import xatlas
    except ImportError as e:  # optional dependency
        raise ImportError("textured export needs the xatlas package: pip install 'xatlas>=0.0.9,<0.1'") from e
    vmap, faces, uv = xatlas.parametrize(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    return vmap.astype(np.int64), faces.astype(np.int64), uv.astype(np.float64)


def bake_texture(mesh: trimesh.Trimesh, vmap: np.ndarray, faces: np.ndarray, uv: np.ndarray, color_fn: ColorFn,
                 size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size,size,3) uint8 texture: color_fn at the 3D point of every covered texel (row 0 = v = 1)."""
    verts = np.asarray(mesh.vertices, np.float64)[vmap]                 # (V',3)
    px = np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5], 1)
    face, bary, _ = rasterize(px, np.ones(len(px)), faces, size, size)
    covered = face >= 0
    tex = np.zeros((size, size, 3), np.uint8)
    if covered.any():
        tri = faces[face[covered]]                                      # (M,3)
        pts = (verts[tri] * bary[covered][..., None]).sum(1)
        tex[covered] = (np.clip(color_fn(pts), 0, 1) * 255).round().astype(np.uint8)
    # grow the charts a few texels so bilinear filtering at their borders reads chart colours
    grown, mask = tex.copy(), covered.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(TEXTURE_DILATE_PX):
        dil = cv2.dilate(grown, kernel)
        new = (cv2.dilate(mask, kernel) > 0) & (mask == 0)
        grown[new] = dil[new]
        mask[new] = 1
    return grown


def export_textured(mesh_world: trimesh.Trimesh, base: Path, color_fn: ColorFn,
                    size: int = TEXTURE_SIZE) -> dict[str, Path]:
    """<base>.obj + .mtl + .png and <base>.glb with a UV atlas and a baked texture."""
    vmap, faces, uv = uv_atlas(mesh_world)
    tex = bake_texture(mesh_world, vmap, faces, uv, color_fn, size)
    verts = np.asarray(mesh_world.vertices)[vmap]
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(tex))
    tm = trimesh.Trimesh(verts, faces, process=False,
                         visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex), material=material))
    text, files = trimesh.exchange.obj.export_obj(tm, include_texture=True, include_normals=False,
                                                  mtl_name=base.name + ".mtl", return_texture=True)
    out = {"textured_obj": _atomic_write(base.with_suffix(".obj"), text)}
    for name, data in files.items():
        _atomic_write(base.with_name(name), data)
    out["textured_png"] = base.with_name(next((n for n in files if n.endswith(".png")), base.name + ".png"))
    out["textured_glb"] = _atomic_write(base.with_suffix(".glb"), trimesh.Scene(tm).export(file_type="glb"))
    return out
