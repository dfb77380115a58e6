"""Silhouette check of a mesh against a scene's masks: CPU rasterisation, per-view IoU.

For captures without ground-truth geometry: a mesh that explains the object's masks in every view
scores IoU near 1. The mesh is in world coordinates, projected with the scene's world_mat_i (NeuS /
IDR layout, read by datasets/dtu.load_masks_and_cameras). Pixel convention as in datasets/dtu.py:
pixel (u = column, v = row) has its centre at integer (u, v); a pixel belongs to the silhouette when
its centre lies in (or on the edge of) a projected triangle in front of the camera, the same
sampling the renderers' masks use (one ray per pixel centre).
"""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import trimesh

from datasets.dtu import load_masks_and_cameras, read_image, scene_images
from evaluation.metrics import GeometryError, load_geometry, mask_iou
from sam_utils.contact_sheet import TILE_WIDTH, grid, paint, tile

RASTER_CHUNK = 1 << 22        # pixel-centre tests per batch of triangles
MIN_DEPTH = 1e-6              # vertices closer than this (camera depth) count as behind the camera
AGREE_RGB, MESH_ONLY_RGB, MASK_ONLY_RGB = (40, 220, 60), (235, 40, 40), (40, 110, 255)
MAX_WORKERS = 8               # processes a run's own check uses at most
PIXELS_PER_WORKER = 5_000_000  # below this many pixels (views x H x W) a worker costs more than it saves


def project(vertices: np.ndarray, world_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (V, 3) under a 3x4 / 4x4 world -> pixel matrix -> pixels (V, 2) (u, v), depths (V,)."""
    uvw = np.asarray(vertices, np.float64) @ world_mat[:3, :3].T + world_mat[:3, 3]
    depth = uvw[:, 2]
    safe = np.where(np.abs(depth) > MIN_DEPTH, depth, MIN_DEPTH)
    return uvw[:, :2] / safe[:, None], depth


def rasterize(uv: np.ndarray, faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside or on a triangle of pixels uv (V, 2), faces (F, 3).

    Triangles are grouped by their pixel box rounded up to powers of two, so each group tests a
    dense (K, h, w) block of pixel centres against the three edge functions by broadcasting.
    """
    out = np.zeros((height, width), bool)
    tri = np.asarray(uv, np.float64)[np.asarray(faces)]                  # (F, 3, 2)
    lo = np.maximum(np.ceil(tri.min(axis=1)), 0).astype(np.int64)         # first pixel centre in the box
    hi = np.minimum(np.floor(tri.max(axis=1)), [width - 1, height - 1]).astype(np.int64)
    span = hi - lo + 1                                                    # (F, 2) columns, rows
    x, y = tri[..., 0], tri[..., 1]                                       # (F, 3)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
    live = (span > 0).all(axis=1) & (area != 0)
    # edge k (from vertex k to k + 1): sign(area) * (a u + b v + c) >= 0 inside
    sign = np.sign(area)[:, None]
    xn, yn = np.roll(x, -1, axis=1), np.roll(y, -1, axis=1)
    a, b = -(yn - y) * sign, (xn - x) * sign
    c = -(a * x + b * y)                                                  # (F, 3) each
    size = np.ones_like(span)
    size[live] = 2 ** np.ceil(np.log2(span[live])).astype(np.int64)
    key = size[:, 0] * (1 << 32) + size[:, 1]
    for k in np.unique(key[live]):
        group = np.nonzero(live & (key == k))[0]
        w, h = int(k >> 32), int(k & 0xFFFFFFFF)
        step = max(1, RASTER_CHUNK // (w * h))
        for part in range(0, len(group), step):
            f = group[part:part + step]
            u = lo[f, 0, None, None] + np.arange(w)[None, None, :]        # (K, 1, w)
            v = lo[f, 1, None, None] + np.arange(h)[None, :, None]        # (K, h, 1)
            inside = (u <= hi[f, 0, None, None]) & (v <= hi[f, 1, None, None])
            for e in range(3):
                inside &= a[f, e, None, None] * u + b[f, e, None, None] * v + c[f, e, None, None] >= 0
            vv, uu = np.broadcast_arrays(v, u)
            out[vv[inside], uu[inside]] = True
    return out


def silhouette(mesh: trimesh.Trimesh, world_mat: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool silhouette of `mesh` (world coordinates) in the view of `world_mat`.

    Triangles with a vertex behind the camera are skipped (objects inside the cameras' sphere
    never have one).
    """
    uv, depth = project(mesh.vertices, world_mat)
    faces = np.asarray(mesh.faces)
    return rasterize(uv, faces[(depth[faces] > MIN_DEPTH).all(axis=1)], height, width)


def view_checks(mesh: trimesh.Trimesh, world_mats: np.ndarray, masks: np.ndarray, tile_hw: tuple[int, int],
                workers: int = 1) -> tuple[list[float], np.ndarray]:
    """Per view of world_mats (N, 4, 4): the IoU of the mesh's silhouette against masks (N, H, W) bool, and
    where they differ at tile size, (N, th, tw) uint8: 0 neither, 1 both, 2 mesh only, 3 mask only.

    workers > 1: the views are split over that many processes (the rasteriser is single-threaded numpy,
    and a fine mesh seen in a hundred views takes minutes in one). Full-size silhouettes are never kept.
    """
    n = len(world_mats)
    if workers <= 1 or n < 2:
        ious, labels = [], np.zeros((n, *tile_hw), np.uint8)
        for i, (w, m) in enumerate(zip(world_mats, masks)):
            s = silhouette(mesh, w, *m.shape)
            ious.append(mask_iou(s, m))
            label = np.select([s & m, s & ~m, m & ~s], [1, 2, 3], 0).astype(np.uint8)
            labels[i] = cv2.resize(label, tile_hw[::-1], interpolation=cv2.INTER_NEAREST)
        return ious, labels
    chunks = np.array_split(np.arange(n), min(workers, n))
    jobs = [(np.asarray(mesh.vertices), np.asarray(mesh.faces), world_mats[c], masks[c], tile_hw) for c in chunks]
    # spawn, not fork: the parent may hold torch / OpenMP threads that a forked child would inherit locked
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_chunk_checks, jobs))
    return [iou for ious, _ in parts for iou in ious], np.concatenate([labels for _, labels in parts])


def _chunk_checks(job):
    vertices, faces, world_mats, masks, tile_hw = job
    return view_checks(trimesh.Trimesh(vertices, faces, process=False), world_mats, masks, tile_hw)


def silhouette_sheet(image_paths: list[Path], labels: np.ndarray, ious: list[float]) -> np.ndarray:
    """One RGB picture of every view from view_checks' labels: green where mesh and mask agree, red where
    only the mesh covers (a skirt, a spill), blue where only the mask does (a missing part); each tile on
    its photo (read one at a time; grey without photos) and labelled with its IoU."""
    tiles = []
    for i, label in enumerate(labels):
        t = tile(read_image(image_paths[i])) if image_paths else np.full((*label.shape, 3), 96, np.float32)
        if t.shape[:2] != label.shape:              # photos of another aspect than the masks: the masks' tile
            t = cv2.resize(t, label.shape[::-1], interpolation=cv2.INTER_AREA)
        for value, rgb, alpha in ((1, AGREE_RGB, 0.3), (2, MESH_ONLY_RGB, 0.9), (3, MASK_ONLY_RGB, 0.9)):
            paint(t, label == value, rgb, outline=False, alpha=alpha)
        tiles.append(t)
    return grid(tiles, [f"view {i}  IoU {iou:.3f}" for i, iou in enumerate(ious)])


def evaluate_silhouettes(mesh_path, scene_dir, mask_dir: str = "mask", cameras_name: str = "cameras_sphere.npz",
                         workers: int = 1, sheet: bool = False) -> dict:
    """{"mean_iou": float, "per_view": [IoU per view]} of a mesh file against scene_dir/mask_dir
    (workers: processes, see view_checks; 0 or None: by the pixels to raster); sheet: also "sheet", the
    silhouette_sheet (RGB uint8) of where they differ."""
    mesh = load_geometry(mesh_path)
    if not isinstance(mesh, trimesh.Trimesh):
        raise GeometryError(f"{mesh_path} holds points, not a mesh; the silhouette check needs faces")
    world_mats, _, masks = load_masks_and_cameras(Path(scene_dir), mask_dir, cameras_name)
    masks = masks > 0
    if not workers:
        workers = min(MAX_WORKERS, os.cpu_count() or 1, -(-masks.size // PIXELS_PER_WORKER))
    h, w = masks.shape[1:3]
    ious, labels = view_checks(mesh, world_mats, masks, (max(1, round(h * TILE_WIDTH / w)), TILE_WIDTH), workers)
    out = {"mean_iou": float(np.mean(ious)), "per_view": ious}
    if sheet:
        out["sheet"] = silhouette_sheet(scene_images(scene_dir), labels, ious)
    return out


def check_paths(mesh_path) -> tuple[Path, Path]:
    """Where a run keeps a mesh's silhouette check (systems.outputs.silhouette_check writes it, the report
    and the bench read it): <mesh stem>_silhouette.json and .jpg beside the mesh."""
    mesh_path = Path(mesh_path)
    return (mesh_path.with_name(f"{mesh_path.stem}_silhouette.json"),
            mesh_path.with_name(f"{mesh_path.stem}_silhouette.jpg"))


def read_check(mesh_path) -> dict | None:
    """The silhouette check a run kept beside mesh_path (check_paths), with its worst view: {"mean", "worst",
    "worst_view", "per_view", "mask_dir", "sheet" (path)}; None where there is none or it is unreadable."""
    json_path, sheet_path = check_paths(mesh_path)
    try:
        res = json.loads(json_path.read_text())
        per_view = [float(v) for v in res["per_view"]]
        worst = int(np.argmin(per_view))
        return {"mean": float(res["mean_iou"]), "worst": per_view[worst], "worst_view": worst, "per_view": per_view,
                "mask_dir": res.get("mask_dir"), "sheet": sheet_path}
    except (OSError, ValueError, KeyError, TypeError):
        return None
