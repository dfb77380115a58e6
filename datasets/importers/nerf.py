"""transforms.json (instant-ngp / nerfstudio) and NeRF-synthetic Blender scenes -> Scene.

Keys read, globally or per frame (a frame's value wins): fl_x, fl_y, cx, cy, w, h, k1, k2, k3,
p1, p2, camera_angle_x, camera_angle_y, camera_model; per frame file_path, transform_matrix
(camera -> world, OpenGL axes: x right, y up, z backward) and optional mask_path. Pixel origin
at the corner (cx = w / 2 is the image centre), as these tools render rays through pixel + 0.5.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..dtu import IMAGE_EXTS
from .errors import IntrinsicsError, SceneImportError
from .scene import Scene, View, _file_size, corner_to_centre, pose_from_c2w

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])     # flips camera y and z
BLENDER_SPLITS = ("train", "val", "test")
UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE624")


def transforms_files(src: Path, splits=None) -> list[Path]:
    """The json file(s) to read: src itself, src/transforms.json, or src/transforms_{split}.json."""
    if src.is_file():
        return [src]
    if (src / "transforms.json").is_file() and not splits:
        return [src / "transforms.json"]
    want = splits or BLENDER_SPLITS
    files = [src / f"transforms_{s}.json" for s in want if (src / f"transforms_{s}.json").is_file()]
    if splits and len(files) != len(want):
        have = sorted(p.name for p in src.glob("transforms*.json"))
        raise SceneImportError(f"{src}: --splits {','.join(want)} asked, but only {have} exist")
    return files


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneImportError(f"cannot read {path} ({exc}); it must be a transforms.json") from exc
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise SceneImportError(f"{path} has no 'frames' list; it is not a transforms.json")
    return data


def _resolve(base: Path, rel: str) -> Path:
    """An image path as listed; a missing extension is looked up (Blender lists 'train/r_0')."""
    p = base / rel
    if p.suffix.lower() in IMAGE_EXTS or p.is_file():
        return p
    for ext in IMAGE_EXTS:
        if p.with_name(p.name + ext).is_file():
            return p.with_name(p.name + ext)
    return p.with_name(p.name + ".png")             # reported as missing by check_scene


def _intrinsics(meta: dict, path: Path, label: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """K (pixel centres), OpenCV distortion (5,) and (W, H) from one frame's merged keys."""
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model in UNSUPPORTED_MODELS:
        raise IntrinsicsError(f"{label}: camera_model {model} is not supported (pinhole with "
                              "k1 k2 p1 p2 only); undistort the images first")
    try:
        if "w" in meta and "h" in meta:
            w, h = int(meta["w"]), int(meta["h"])
        else:
            w, h = _file_size(path) if path.is_file() else (0, 0)
        fx = meta.get("fl_x")
        if fx is None:
            if "camera_angle_x" not in meta:
                raise IntrinsicsError(f"{label}: neither fl_x nor camera_angle_x is given; add the "
                                      "focal length in pixels (fl_x) or the horizontal FOV")
            fx = 0.5 * w / math.tan(0.5 * float(meta["camera_angle_x"]))
        fy = meta.get("fl_y")
        if fy is None:
            fy = (0.5 * h / math.tan(0.5 * float(meta["camera_angle_y"]))
                  if "camera_angle_y" in meta and "fl_x" not in meta else fx)
        cx, cy = float(meta.get("cx", w / 2)), float(meta.get("cy", h / 2))
        dist = np.array([float(meta.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3")])
    except (TypeError, ValueError) as exc:
        raise IntrinsicsError(f"{label}: intrinsics are not numbers ({exc})") from exc
    K = corner_to_centre(np.array([[float(fx), 0, cx], [0, float(fy), cy], [0, 0, 1.0]]))
    return K, dist, (w, h)


def load_transforms(src, splits=None, blender: bool | None = None) -> Scene:
    """Read transforms json(s) under src (a folder or one file); views in listed order.

    blender: treat the images' alpha as the object mask (default: on for transforms_{split}.json).
    """
    src = Path(src)
    files = transforms_files(src, splits)
    if not files:
        raise SceneImportError(f"no transforms.json or transforms_{{train,val,test}}.json in {src}")
    if blender is None:
        blender = not any(f.name == "transforms.json" for f in files)
    views = []
    for path in files:
        data = _read_json(path)
        shared = {k: v for k, v in data.items() if k != "frames"}
        for i, fr in enumerate(data["frames"]):
            label = f"{path}, frame {i}"
            if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
                raise SceneImportError(f"{label}: a frame needs 'file_path' and 'transform_matrix'")
            img = _resolve(path.parent, str(fr["file_path"]))
            label = f"{path}, frame {i} ({fr['file_path']})"
            K, dist, size = _intrinsics({**shared, **fr}, img, label)
            c2w = np.asarray(fr["transform_matrix"], np.float64)
            if c2w.shape not in ((4, 4), (3, 4)):
                raise SceneImportError(f"{label}: transform_matrix has shape {c2w.shape}; "
                                       "expected 4x4 camera-to-world")
            c2w = np.vstack([c2w[:3], [0, 0, 0, 1]]) @ GL_TO_CV
            R, t = pose_from_c2w(c2w, label)
            mask = _resolve(path.parent, str(fr["mask_path"])) if fr.get("mask_path") else None
            views.append(View(str(fr["file_path"]), img, K, R, t, size, dist, mask))
    masks = [v.mask_path is not None for v in views]
    if any(masks) and not all(masks):
        raise SceneImportError(f"{files[0]}: {masks.count(False)} frame(s) lack mask_path while "
                               "others have one; give every frame a mask or none")
    scene = Scene(views, files[0] if len(files) == 1 else src, alpha_mask=blender)
    scene.notes.append(f"{'Blender' if blender else 'transforms.json'}: "
                       f"{', '.join(f.name for f in files)}")
    return scene
