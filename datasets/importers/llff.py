"""LLFF scenes (poses_bounds.npy + images[_N]/) -> Scene.

poses_bounds.npy is (N, 17): per view a 3x5 matrix, row-major (camera -> world in LLFF's axes
[down, right, backward] plus a column (H, W, focal) of the full-size images), then the near/far
depth bounds. Images are the sorted files of images/ or images_N/ (downscaled copies).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dtu import _list_images
from .errors import MissingImageError, SceneImportError
from .scene import Scene, View, corner_to_centre, pose_from_c2w


def _image_dir(src: Path, factor: int | None) -> Path:
    if factor:
        d = src / (f"images_{factor}" if factor > 1 else "images")
        if not d.is_dir():
            raise MissingImageError(f"{d} not found; pick an --llff-factor that has a folder in {src}")
        return d
    if (src / "images").is_dir():
        return src / "images"
    found = sorted((int(d.name.split("_")[1]), d) for d in src.glob("images_*")
                   if d.is_dir() and d.name.split("_")[1].isdigit())
    if not found:
        raise MissingImageError(f"{src} has no images/ or images_N/ folder next to poses_bounds.npy")
    return found[0][1]


def load_llff(src, factor: int | None = None) -> Scene:
    """Read src/poses_bounds.npy; K is for the full size and rescaled to the files by check_scene."""
    src = Path(src)
    path = src / "poses_bounds.npy"
    try:
        arr = np.load(path)
    except (OSError, ValueError) as exc:
        raise SceneImportError(f"cannot read {path} ({exc}); it must be LLFF's (N, 17) array") from exc
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise SceneImportError(f"{path} has shape {arr.shape}; LLFF's poses_bounds.npy is (N, 17)")
    img_dir = _image_dir(src, factor)
    files = _list_images(img_dir)
    if len(files) != len(arr):
        raise MissingImageError(f"{img_dir} holds {len(files)} images but {path} has {len(arr)} "
                                "poses; LLFF pairs them by sorted file name, so the counts must match")
    views = []
    for i, (row, img) in enumerate(zip(arr, files)):
        m = row[:15].reshape(3, 5)
        h, w, f = m[:, 4]
        down, right, back, centre = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
        c2w = np.stack([right, down, -back, centre], 1)          # OpenCV axes
        R, t = pose_from_c2w(c2w, f"{path}, row {i}")
        K = corner_to_centre(np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]]))
        views.append(View(img.name, img, K, R, t, (int(round(w)), int(round(h)))))
    scene = Scene(views, path, bounds=arr[:, 15:17].astype(np.float64))
    scene.notes.append(f"LLFF: {len(views)} views from {img_dir.name}/, forward-facing")
    return scene
