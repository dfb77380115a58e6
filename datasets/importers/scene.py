"""The importers' common scene description and the checks every source goes through.

Conventions (those of datasets/dtu.py): OpenCV camera axes (x right, y down, z forward), world ->
camera ``x_cam = R x + t``, pixel centres on integer coordinates. Sources that put the pixel
origin at the corner of the top-left pixel (COLMAP, instant-ngp, nerfstudio, Blender, LLFF) are
shifted by -0.5 px when read (``corner_to_centre``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..dtu import _pixel_rescale
from .errors import (DuplicateViewError, ImageSizeError, IntrinsicsError, MissingImageError,
                     RotationError, SceneImportError, list_some)

ROT_TOL = 1e-3               # max |R^T R - I| (and |det R - 1|) accepted, then re-orthonormalised
MAX_ASPECT = 10.0            # fx / fy beyond this (or below 1 / this) is degenerate


@dataclass
class View:
    """One camera and its image file. K (3, 3) refers to an image of `size` = (W, H)."""

    name: str                       # as the source lists it (used in messages)
    path: Path                      # image file
    K: np.ndarray                   # (3, 3) intrinsics, pixel centres on integers
    R: np.ndarray                   # (3, 3) world -> camera rotation
    t: np.ndarray                   # (3,) world -> camera translation
    size: tuple[int, int]           # (W, H) the intrinsics refer to
    dist: np.ndarray = field(default_factory=lambda: np.zeros(4))  # OpenCV k1, k2, p1, p2[, k3]
    mask_path: Path | None = None

    @property
    def centre(self) -> np.ndarray:
        """Camera centre in world coordinates (3,)."""
        return -self.R.T @ self.t


@dataclass
class Scene:
    """Views plus what the source knows about the object's extent."""

    views: list[View]
    source: Path                            # the file that lists the views (named in errors)
    points: np.ndarray | None = None        # (M, 3) sparse world points
    track_len: np.ndarray | None = None     # (M,) number of images observing each point
    bounds: np.ndarray | None = None        # (N, 2) near / far depth per view (LLFF)
    alpha_mask: bool = False                # the images' alpha channel is the object mask
    notes: list[str] = field(default_factory=list)


def corner_to_centre(K: np.ndarray) -> np.ndarray:
    """Intrinsics with the pixel origin at the top-left corner -> origin at its centre."""
    K = np.array(K, np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def pose_from_c2w(c2w: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world (3x4 / 4x4, OpenCV axes) -> (R, t) world -> camera, rotation checked."""
    c2w = np.asarray(c2w, np.float64)
    R = as_rotation(c2w[:3, :3], label)
    return R.T, -R.T @ c2w[:3, 3]


def as_rotation(R: np.ndarray, label: str) -> np.ndarray:
    """R (3, 3) if it is a rotation up to ROT_TOL (returned re-orthonormalised); else RotationError."""
    R = np.asarray(R, np.float64)
    if R.shape != (3, 3) or not np.isfinite(R).all():
        raise RotationError(f"{label}: rotation {R.tolist()} has NaN/inf or wrong shape; "
                            "regenerate the poses")
    err = np.abs(R.T @ R - np.eye(3)).max()
    det = np.linalg.det(R)
    if err > ROT_TOL or abs(det - 1.0) > ROT_TOL:
        why = ("is a reflection (det < 0): an axis is flipped" if det < 0 else
               f"is not orthonormal (|R^T R - I| = {err:.2g}, det = {det:.4g}): it is scaled or "
               "sheared")
        raise RotationError(f"{label}: the pose's rotation part {why}; a pose must be a rigid "
                            "motion (scale only the translation when rescaling a scene)")
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def _file_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:            # reads the header only
        return im.size


def check_scene(scene: Scene) -> Scene:
    """Raise the named error for missing files, duplicates, degenerate intrinsics and mixed sizes.

    A file whose size is a uniform rescale of its camera's (e.g. LLFF images_8/) gets K rescaled
    to the file (pixel centres kept). Returns the scene (views updated in place).
    """
    src = scene.source
    if not scene.views:
        raise MissingImageError(f"{src} lists no views; check that it is the right file")
    seen: dict[Path, str] = {}
    dups = []
    for v in scene.views:
        key = v.path.resolve()
        if key in seen:
            dups.append(f"{v.name} (also listed as {seen[key]})" if seen[key] != v.name else v.name)
        seen[key] = v.name
    if dups:
        raise DuplicateViewError(f"{src} lists these images more than once: {list_some(dups)}; "
                                 "keep one entry per image")
    missing = [v for v in scene.views if not v.path.is_file()]
    missing += [v for v in scene.views if v.mask_path is not None and not v.mask_path.is_file()]
    if missing:
        raise MissingImageError(
            f"{src} lists {len(missing)} image/mask file(s) that are not on disk: "
            f"{list_some(str(v.path if not v.path.is_file() else v.mask_path) for v in missing)}; put them there, fix the paths in "
            "the file, or remove those entries")
    for i, v in enumerate(scene.views):
        _check_intrinsics(v, f"{src}, view {v.name}")
        v.R = as_rotation(v.R, f"{src}, view {v.name}")
        if not np.isfinite(v.t).all():
            raise RotationError(f"{src}, view {v.name}: translation {v.t} has NaN/inf; "
                                "regenerate the poses")
        _fit_to_file(v, src)
    first = scene.views[0]
    odd = [v for v in scene.views if v.size != first.size]
    if odd:
        raise ImageSizeError(
            f"{src}: views have different sizes: {first.name} is {first.size[0]}x{first.size[1]} "
            f"but {list_some(f'{v.name} is {v.size[0]}x{v.size[1]}' for v in odd)}; all views "
            "must share one size (resize or crop the photos to one size and re-run SfM)")
    return scene


def _check_intrinsics(v: View, label: str) -> None:
    K, (w, h) = np.asarray(v.K, np.float64), v.size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    bad = None
    if not (w > 0 and h > 0):
        bad = f"image size {w}x{h}"
    elif K.shape != (3, 3) or not np.isfinite(K).all() or not np.isfinite(v.dist).all():
        bad = "NaN/inf in the intrinsics or distortion"
    elif not (fx > 0 and fy > 0):
        bad = f"focal lengths fx={fx:g}, fy={fy:g} (must be > 0)"
    elif not (1 / MAX_ASPECT < fx / fy < MAX_ASPECT):
        bad = f"focal lengths fx={fx:g}, fy={fy:g} differ more than {MAX_ASPECT:g}x"
    elif not (-w <= cx <= 2 * w and -h <= cy <= 2 * h):
        bad = f"principal point ({cx:g}, {cy:g}) far outside the {w}x{h} image"
    elif np.any(K[2] != [0, 0, 1]) or K[1, 0] != 0:
        bad = f"K's last row {K[2].tolist()} / K[1,0] (must be [0, 0, 1] / 0)"
    if bad:
        raise IntrinsicsError(f"{label}: degenerate intrinsics: {bad}; fix the camera entry "
                              "(focal lengths and principal point in pixels of the image file)")


def _fit_to_file(v: View, src: Path) -> None:
    """Rescale K when the file is a uniformly resized copy of the image the camera describes."""
    fw, fh = _file_size(v.path)
    if (fw, fh) == tuple(v.size):
        return
    sx, sy = v.size[0] / fw, v.size[1] / fh
    if abs(v.size[1] / sx - fh) > 1.0:          # not one factor for both axes (up to rounding)
        raise ImageSizeError(f"{v.path} is {fw}x{fh} but its camera in {src} is for "
                             f"{v.size[0]}x{v.size[1]} (another aspect ratio); use the original "
                             "images or fix the camera's width/height")
    v.K = _pixel_rescale(sx, sy) @ v.K
    v.size = (fw, fh)


def select_views(scene: Scene, spec: str | None) -> Scene:
    """Keep the views picked by `spec`: a slice "start:stop:step" or indices "0,4,9" (listed order)."""
    if not spec:
        return scene
    n = len(scene.views)
    try:
        if ":" in spec:
            idx = list(range(n))[slice(*[int(p) if p.strip() else None for p in spec.split(":")])]
        else:
            idx = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError as exc:
        raise SceneImportError(f"--views {spec!r}: expected 'start:stop:step' or '0,4,9'") from exc
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise SceneImportError(f"--views {spec!r}: indices {bad or '(none)'} out of range for {n} views")
    if len(set(idx)) != len(idx):
        warnings.warn(f"--views {spec!r} repeats views; each is kept once")
        idx = list(dict.fromkeys(idx))
    scene.views = [scene.views[i] for i in idx]
    if scene.bounds is not None:
        scene.bounds = scene.bounds[idx]
    return scene
