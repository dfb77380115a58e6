"""Built-in synthetic tabletop scenes with exact ground truth, written in the NeuS/IDR DTU layout.

make_scene(preset, out_dir) renders `n_views` images of a procedurally built scene (one target + at
least two distractors on a finite table) and writes, in out_dir:
  image/NNN.png, mask/NNN.png          RGB renders, foreground (any surface hit) masks 0/255
  cameras_sphere.npz                   world_mat_i, scale_mat_i, camera_mat_i (+ their _inv), DTU style
  gt/scene.ply, gt/target.ply          watertight marching-cubes meshes of the analytic SDF (mm)
  gt/scene_visible.ply, gt/target_visible.ply   surface points seen in >= 1 view (completeness GT)
  gt/target_mask/NNN.png               per-view masks of pixels whose first hit is the target
  gt/target_parts/NNN.png              (targets made of parts: twotone) 0 off the target, else 1 + the
                                       index of the part hit in scene.json's "target_parts"
  prompt.json, anno_box.json           one click + box on the target in view 0 (ours / NTO3D schema);
                                       click = most interior target pixel, box = inclusive [x0, y0, x1, y1]
  scene.json                           metadata (preset, sizes, units, bounding sphere, objects)
Same arguments give byte-identical files on the same device.
"""
from __future__ import annotations

import io
import json
import pathlib
import shutil
import zipfile
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh
from tqdm import tqdm

from datasets.sphere_tracer import BACKGROUND, LIGHT_DIR, cpu_threads, default_device, render_view
from datasets.synthetic_cameras import ELEVATION_RANGE_DEG, Camera, make_cameras
from datasets.synthetic_gt import (VISIBLE_SPACING_MM, VisiblePoints, bounding_sphere, prompt_from_mask, sdf_mesh,
                                   target_part_map, target_parts)
from datasets.synthetic_presets import LOOK_AT_HEIGHT_MM, PRESETS, build_preset, framing
from datasets.synthetic_scene import Scene

__all__ = ["PRESETS", "BACKGROUND", "LOOK_AT_HEIGHT_MM", "ExactViews", "exact_views", "make_scene", "preset_views"]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamp so the npz is byte-identical across runs
MIN_VIEW0_TARGET_PIXELS = 50       # below this the click prompt would be meaningless
VIEW_DIRS = ("image", "mask", "gt/target_mask")  # folders holding one NNN.png per view
PART_DIR = "gt/target_parts"                     # one NNN.png per view too, for targets made of parts


def _save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez equivalent (readable by np.load) without wall-clock timestamps in the zip entries."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), buf.getvalue())


def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
    """Write an (H,W) grey or (H,W,3) RGB uint8 image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write image {path}")


def _camera_arrays(cams: list[Camera], centre: np.ndarray, radius: float) -> dict[str, np.ndarray]:
    """DTU-style cameras_sphere.npz content; scale_mat maps the unit sphere onto the bounding sphere."""
    scale = np.diag([radius, radius, radius, 1.0])
    scale[:3, 3] = centre
    arrays = {}
    for i, cam in enumerate(cams):
        world = cam.world_mat()
        arrays[f"world_mat_{i}"] = world
        arrays[f"world_mat_inv_{i}"] = np.linalg.inv(world)
        arrays[f"scale_mat_{i}"] = scale
        arrays[f"scale_mat_inv_{i}"] = np.linalg.inv(scale)
        arrays[f"camera_mat_{i}"] = np.eye(4)  # unused by NeuS loaders; intrinsics live in world_mat
        arrays[f"camera_mat_inv_{i}"] = np.eye(4)
    return arrays


def _write_points(path: pathlib.Path, points: np.ndarray) -> None:
    trimesh.PointCloud(points.astype(np.float64)).export(str(path))


def _remove_stale_views(out: pathlib.Path, n_views: int) -> None:
    """Delete NNN.png views with index >= n_views left by an earlier, larger run into the same folder
    (they would break the one-image-per-camera layout)."""
    for sub in VIEW_DIRS + (PART_DIR,):
        for path in (out / sub).glob("[0-9][0-9][0-9].png"):
            if int(path.stem) >= n_views:
                path.unlink()


def _check_args(preset: str, n_views: int, width: int, height: int, gt_resolution: int) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if n_views < 1 or n_views > 1000:
        raise ValueError(f"n_views must be in [1, 1000] (3-digit file names), got {n_views}")
    if width < 16 or height < 16:
        raise ValueError(f"image must be at least 16x16 pixels, got width={width}, height={height}")
    if gt_resolution < 8:
        raise ValueError(f"gt_resolution must be >= 8, got {gt_resolution}")


def make_scene(preset: str, out_dir, n_views: int = 49, width: int = 800, height: int = 600, seed: int = 0,
               gt_resolution: int = 256, device: str | None = None, progress: bool = False,
               zoom: float | None = None, look_at_z: float | None = None) -> pathlib.Path:
    """Build preset `preset` (one of PRESETS), render it and write images + ground truth to out_dir.

    device: torch device for rendering/GT (default: cuda if available, else cpu).
    progress: show a tqdm bar over views. Returns out_dir as a Path.
    zoom, look_at_z: the cameras' focal multiplier and look-at height (mm); None: the preset's (framing()).
    """
    _check_args(preset, n_views, width, height, gt_resolution)
    dev = default_device(device)
    framed = _framing(preset, zoom, look_at_z)
    with cpu_threads(dev):
        return _make_scene(preset, pathlib.Path(out_dir), n_views, width, height, seed, gt_resolution, dev, progress,
                           framed)


def _framing(preset: str, zoom: float | None, look_at_z: float | None) -> tuple[float, float]:
    """(zoom, look-at height mm): the preset's framing() where an argument is None."""
    z, h = framing(preset)
    return (z if zoom is None else float(zoom)), (h if look_at_z is None else float(look_at_z))


def preset_views(preset: str, n_views: int, width: int, height: int, seed: int = 0, device="cpu",
                 zoom: float | None = None, look_at_z: float | None = None
                 ) -> tuple[Scene, list[Camera], np.ndarray, float]:
    """The scene of `preset`, its cameras (as make_scene places them) and bounding sphere (centre, radius mm):
    what tests need to render views in memory (sphere_tracer.render_view) without writing files.
    zoom, look_at_z: as make_scene's (None: the preset's framing)."""
    scene, view0_azimuth = build_preset(preset, seed)
    centre, radius = bounding_sphere(scene, device)
    zoom, look_at_z = _framing(preset, zoom, look_at_z)
    cams = make_cameras(n_views, width, height, centre, radius, view0_azimuth, look_at_z=look_at_z, zoom=zoom)
    return scene, cams, centre, radius


@dataclass
class ExactViews:
    """A preset's exact first surfaces in every view, in world mm: points (N,h,w,3), hit (N,h,w), visible
    (N,h,w) the target shown first, silhouette (N,h,w) the target's alone (occluded parts included), P (N,3,4)
    world -> pixels."""

    points: np.ndarray
    hit: np.ndarray
    visible: np.ndarray
    silhouette: np.ndarray
    P: np.ndarray


def exact_views(preset: str, n_views: int, width: int, height: int, seed: int = 0, device="cpu") -> ExactViews:
    """Sphere-trace a preset's views in memory (no files): the geometry the target stage's occlusion test
    stands on, exact (tests, bench/occlusion_coverage.py)."""
    scene, cams, centre, radius = preset_views(preset, n_views, width, height, seed, device)
    alone = Scene([scene.target])
    full = [render_view(scene, c, width, height, centre, radius, device) for c in cams]
    return ExactViews(points=np.stack([f.points for f in full]), hit=np.stack([f.hit for f in full]),
                      visible=np.stack([f.object_id == scene.target_index for f in full]),
                      silhouette=np.stack([render_view(alone, c, width, height, centre, radius, device).hit
                                           for c in cams]),
                      P=np.stack([c.world_mat()[:3] for c in cams]))


def _make_scene(preset, out, n_views, width, height, seed, gt_resolution, dev, progress, framed) -> pathlib.Path:
    """make_scene's body (arguments already checked; framed: (zoom, look-at height mm))."""
    scene, cams, centre, radius = preset_views(preset, n_views, width, height, seed, dev, *framed)
    parts = target_parts(scene)
    for sub in VIEW_DIRS + ((PART_DIR,) if parts else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not parts:
        shutil.rmtree(out / PART_DIR, ignore_errors=True)  # left by another preset written here before
    _remove_stale_views(out, n_views)

    seen = VisiblePoints(VISIBLE_SPACING_MM["scene"])
    seen_target = VisiblePoints(VISIBLE_SPACING_MM["target"])
    point = box = None
    views = tqdm(enumerate(cams), total=n_views, desc=f"render {preset}", unit="view", disable=not progress)
    for i, cam in views:
        view = render_view(scene, cam, width, height, centre, radius, dev)
        target = view.object_id == scene.target_index  # (H,W) bool
        if i == 0:
            if target.sum() < MIN_VIEW0_TARGET_PIXELS:
                raise ValueError(f"view 0 shows only {int(target.sum())} target pixels at {width}x{height}; use a "
                                 f"larger image (>= {MIN_VIEW0_TARGET_PIXELS} pixels are needed for the prompt)")
            point, box = prompt_from_mask(target)
        _write_png(out / "image" / f"{i:03d}.png", view.rgb)
        _write_png(out / "mask" / f"{i:03d}.png", view.hit.astype(np.uint8) * 255)
        _write_png(out / "gt" / "target_mask" / f"{i:03d}.png", target.astype(np.uint8) * 255)
        if parts:
            _write_png(out / PART_DIR / f"{i:03d}.png", target_part_map(scene, view.object_id, view.points))
        seen.add(view.points[view.hit])
        seen_target.add(view.points[target])

    _save_npz(out / "cameras_sphere.npz", _camera_arrays(cams, centre, radius))
    sdf_mesh(scene, gt_resolution, device=dev).export(str(out / "gt" / "scene.ply"))
    sdf_mesh(scene, gt_resolution, only=scene.target_index, device=dev).export(str(out / "gt" / "target.ply"))
    _write_points(out / "gt" / "scene_visible.ply", seen.result(seed=seed))
    _write_points(out / "gt" / "target_visible.ply", seen_target.result(seed=seed))

    prompt = {"view": 0, "positive": [point], "negative": [], "box": box}
    anno = {"frames": [{"index": 0, "point": [point], "label": [1], "box": box}]}
    meta = {
        "preset": preset, "seed": seed, "n_views": n_views, "width": width, "height": height,
        "gt_resolution": gt_resolution, "units": "mm", "up": [0.0, 0.0, 1.0], "ground_top_z": 0.0,
        "background": list(BACKGROUND), "light_dir": list(LIGHT_DIR),
        "sphere_center": [float(c) for c in centre], "sphere_radius": float(radius),
        "look_at": [float(centre[0]), float(centre[1]), framed[1]],
        "focal": float(cams[0].K[0, 0]), "zoom": framed[0],
        "elevation_range_deg": list(ELEVATION_RANGE_DEG),
        "objects": [{"name": o.name, "is_target": o.is_target} for o in scene.objects],
        "target": scene.target.name, "target_index": scene.target_index, "target_parts": list(parts),
        "camera_convention": "OpenCV: x right, y down, looks along +z; pixel (u=col, v=row) ~ K (R X + t)",
        "prompt_convention": "point [x=col, y=row]; box [x0, y0, x1, y1] inclusive pixel indices",
    }
    for name, obj in (("prompt.json", prompt), ("anno_box.json", anno), ("scene.json", meta)):
        (out / name).write_text(json.dumps(obj, indent=2) + "\n")
    return out
