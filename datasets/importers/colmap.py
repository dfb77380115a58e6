"""COLMAP sparse model (+ its image folder) -> Scene.

Accepted SRC: the model folder itself (holding cameras/images[/points3D] .bin or .txt), or a
project folder with sparse/0 (or sparse/, colmap/sparse/0, ...) and images/. With several
models under sparse/ the one with most images is used.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..dtu import IMAGE_EXTS
from .colmap_io import camera_intrinsics, find_model_files, qvec_to_rotmat, read_model
from .errors import DuplicateViewError, SceneImportError, UnregisteredViewError, list_some
from .scene import Scene, View, corner_to_centre

MODEL_DIRS = ("", "sparse/0", "sparse", "colmap/sparse/0", "colmap/sparse", "distorted/sparse/0")


def find_model(src: Path) -> Path | None:
    """The model folder inside (or equal to) src, or None."""
    for sub in MODEL_DIRS:
        if (src / sub).is_dir() and find_model_files(src / sub):
            return src / sub
    for parent in (src / "sparse", src / "colmap" / "sparse"):
        models = [d for d in sorted(parent.glob("*")) if d.is_dir() and find_model_files(d)]
        if models:
            return max(models, key=lambda d: len(read_model(d)[1]))
    return None


def find_images(model_dir: Path, images: Path | None) -> Path:
    """The folder the model's image names are relative to: `images`, else an images/ next to or
    above the model folder (up to 3 levels)."""
    if images is not None:
        if not Path(images).is_dir():
            raise SceneImportError(f"--images {images} is not a folder; give the folder the model's "
                                   "image names are relative to")
        return Path(images)
    for d in [model_dir, *list(model_dir.parents)[:3]]:
        if (d / "images").is_dir():
            return d / "images"
    raise SceneImportError(f"no images/ folder found next to or above {model_dir}; pass --images "
                           "DIR (the folder the names in images.bin/.txt are relative to)")


def images_on_disk(folder: Path) -> list[str]:
    """Image files under folder (recursively), as names relative to it, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def load_colmap(src, images: Path | None = None, drop_unregistered: bool = False) -> Scene:
    """Read the model under `src`; views sorted by image name, sparse points kept for the sphere.

    Images present in the image folder but not registered in the model raise
    UnregisteredViewError (or are skipped with a warning when drop_unregistered).
    """
    src = Path(src)
    model_dir = find_model(src)
    if model_dir is None:
        raise SceneImportError(f"no COLMAP model under {src}: expected cameras.bin/.txt and "
                               "images.bin/.txt there or in sparse/0; run SfM first or pass "
                               "--format images to run it")
    ext = find_model_files(model_dir)
    cams, entries, points = read_model(model_dir, ext)
    img_dir = find_images(model_dir, images)
    label = model_dir / f"images{ext}"
    names = [e.name for e in entries.values()]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DuplicateViewError(f"{label} registers these images more than once: "
                                 f"{list_some(dups)}; keep one entry per image (re-run the mapper)")
    unreg = sorted(set(images_on_disk(img_dir)) - set(names))
    if unreg:
        msg = (f"{len(unreg)} image(s) in {img_dir} have no camera in {label} (SfM could not "
               f"register them): {list_some(unreg)}")
        if not drop_unregistered:
            raise UnregisteredViewError(msg + "; remove or re-take them (more overlap, less blur), "
                                        "or pass --drop-unregistered to import the others")
        warnings.warn(msg + "; importing without them")
    views = []
    for e in sorted(entries.values(), key=lambda e: e.name):
        if e.camera_id not in cams:
            raise SceneImportError(f"{label}: image {e.name} uses camera {e.camera_id}, which "
                                   f"{model_dir / ('cameras' + ext)} lacks; re-export the model")
        cam = cams[e.camera_id]
        K, dist = camera_intrinsics(cam, f"{model_dir / ('cameras' + ext)}, camera {cam.id}")
        views.append(View(e.name, img_dir / e.name, corner_to_centre(K),
                          qvec_to_rotmat(e.qvec, f"{label}, image {e.name}"),
                          np.asarray(e.tvec, np.float64), (cam.width, cam.height), dist))
    scene = Scene(views, label)
    if points is not None and len(points.ids):
        scene.points, scene.track_len = points.xyz, points.track_len
    scene.notes.append(f"COLMAP model {model_dir} ({ext[1:]}), images from {img_dir}")
    return scene
