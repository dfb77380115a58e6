"""Offscreen CPU rendering of triangle meshes: a vectorised numpy z-buffer rasteriser with shading.

No OpenGL, no display: the run report (evaluation/report.py) renders the target mesh from the
scene's own cameras with it, and models/mesh_export.py rasterises triangles in UV space to bake
textures. Pixel convention (OpenCV, as datasets/dtu.py): pixel centres at integer coordinates.
Triangles are bucketed by the size of their pixel bounding box, so each bucket tests a small
fixed window of candidate pixels per triangle; a chunk's candidates are reduced to the nearest
per pixel and merged into the z-buffer.
"""
from __future__ import annotations

import numpy as np
import trimesh

from datasets.dtu import decompose_projection

MAX_CANDIDATES = 1 << 22       # candidate pixels per chunk (memory ~ 100 bytes each)
NEAR = 1e-6                    # vertices closer than this to the camera plane cull their faces
AMBIENT, DIFFUSE = 0.3, 0.7
LIGHT_CAM = (-0.3, -0.5, -1.0)  # towards the light in camera coordinates (up-left, behind the camera)
DEFAULT_RGB = (0.72, 0.74, 0.80)
BACKGROUND_RGB = (255, 255, 255)


def rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Nearest triangle per pixel. xy (V,2) pixel coordinates, depth (V,) > 0, faces (F,3).

    Returns face (H,W) int64 (-1: empty), bary (H,W,3) float64 perspective-correct barycentric
    weights of the face's vertices, zbuf (H,W) float64 (inf: empty).
    """
    n_pix = height * width
    zbuf = np.full(n_pix, np.inf)
    face_buf = np.full(n_pix, -1, np.int64)
    bary_buf = np.zeros((n_pix, 3))
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(faces) == 0:
        return face_buf.reshape(height, width), bary_buf.reshape(height, width, 3), zbuf.reshape(height, width)
    tri = xy[faces]                                                     # (F,3,2)
    z = depth[faces]                                                    # (F,3)
    x0 = np.ceil(tri[..., 0].min(1)).clip(0, width)
    x1 = np.floor(tri[..., 0].max(1)).clip(-1, width - 1)
    y0 = np.ceil(tri[..., 1].min(1)).clip(0, height)
    y1 = np.floor(tri[..., 1].max(1)).clip(-1, height - 1)
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    ok = (x1 >= x0) & (y1 >= y0) & (z > NEAR).all(1) & (np.abs(area) > 1e-12)
    size = np.maximum(x1 - x0, y1 - y0) + 1
    bucket = np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)    # window 2^bucket pixels wide
    for b in np.unique(bucket[ok]):
        k = 1 << int(b)
        ids = np.flatnonzero(ok & (bucket == b))
        dy, dx = np.divmod(np.arange(k * k), k)                         # (k*k,) window offsets
        step = max(1, MAX_CANDIDATES // (k * k))
        for s in range(0, len(ids), step):
            f = ids[s:s + step]
            px = x0[f, None] + dx[None]                                 # (n, k*k)
            py = y0[f, None] + dy[None]
            t = tri[f]
            # edge functions -> screen-space barycentrics of the pixel centres
            w0 = ((t[:, 1, 0, None] - px) * (t[:, 2, 1, None] - py) - (t[:, 2, 0, None] - px) * (t[:, 1, 1, None] - py))
            w1 = ((t[:, 2, 0, None] - px) * (t[:, 0, 1, None] - py) - (t[:, 0, 0, None] - px) * (t[:, 2, 1, None] - py))
            w0, w1 = w0 / area[f, None], w1 / area[f, None]
            w2 = 1.0 - w0 - w1
            inside = (px <= x1[f, None]) & (py <= y1[f, None]) & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
            r, c = np.nonzero(inside)
            if len(r) == 0:
                continue
            zf = z[f[r]]                                                # (m,3)
            bw = np.stack([w0[r, c], w1[r, c], w2[r, c]], 1) / zf       # perspective correction
            inv = bw.sum(1)
            d = 1.0 / inv
            pix = (py[r, c] * width + px[r, c]).astype(np.int64)
            order = np.lexsort((d, pix))                                 # nearest first within each pixel
            pix, d, r, bw, inv = pix[order], d[order], r[order], bw[order], inv[order]
            first = np.ones(len(pix), bool)
            first[1:] = pix[1:] != pix[:-1]
            pix, d, r, bw, inv = pix[first], d[first], r[first], bw[first], inv[first]
            closer = d < zbuf[pix]
            pix = pix[closer]
            zbuf[pix] = d[closer]
            face_buf[pix] = f[r[closer]]
            bary_buf[pix] = bw[closer] / inv[closer, None]
    return face_buf.reshape(height, width), bary_buf.reshape(height, width, 3), zbuf.reshape(height, width)


def render_mesh(mesh: trimesh.Trimesh, K: np.ndarray, R: np.ndarray, t: np.ndarray, height: int, width: int,
                colors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shaded image of `mesh` seen by the camera x_pix ~ K (R X + t) (OpenCV: z forward, y down).

    colors: (V,3) or (V,4) uint8 vertex colours (default: the mesh's own vertex colours when it has
    them, else a light grey-blue). Two-sided Lambert + ambient, light near the camera.
    Returns rgb (H,W,3) uint8 (white background) and mask (H,W) bool.
    """
    verts = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    cam = verts @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(1, 3)   # (V,3)
    z = cam[:, 2]
    zs = np.where(np.abs(z) < NEAR, NEAR, z)
    uvw = cam @ np.asarray(K, np.float64)[:3, :3].T
    xy = uvw[:, :2] / zs[:, None]
    face, bary, _ = rasterize(xy, z, faces, height, width)
    mask = face >= 0
    rgb = np.empty((height, width, 3), np.float64)
    rgb[:] = np.asarray(BACKGROUND_RGB, np.float64) / 255.0
    if not mask.any():
        return (rgb * 255).round().astype(np.uint8), mask
    fidx, b = face[mask], bary[mask]                                    # (M,), (M,3)
    tri = faces[fidx]                                                   # (M,3)
    normals = (np.asarray(mesh.vertex_normals, np.float64)[tri] * b[..., None]).sum(1)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)
    light = np.asarray(R, np.float64).T @ (np.asarray(LIGHT_CAM) / np.linalg.norm(LIGHT_CAM))  # world, to light
    lambert = np.abs(normals @ -light)
    if colors is None and getattr(mesh.visual, "kind", None) == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors)
    if colors is not None:
        base = (np.asarray(colors, np.float64)[:, :3][tri] * b[..., None]).sum(1) / 255.0
    else:
        base = np.broadcast_to(np.asarray(DEFAULT_RGB), (len(fidx), 3))
    rgb[mask] = base * (AMBIENT + DIFFUSE * lambert)[:, None]
    return (rgb.clip(0, 1) * 255).round().astype(np.uint8), mask


def camera_from_world_mat(world_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A DTU world_mat (world -> pixels) -> K (3,3), R (3,3), t (3,) with x_pix ~ K (R X + t)."""
    intrinsics, pose = decompose_projection(np.asarray(world_mat, np.float64))
    R = pose[:3, :3].T
    return intrinsics[:3, :3], R, -R @ pose[:3, 3]


def scaled_intrinsics(K: np.ndarray, s: float) -> np.ndarray:
    """K for the image resized by s (pixel centres onto pixel centres)."""
    S = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])
    return S @ K
