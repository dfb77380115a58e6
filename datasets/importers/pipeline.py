"""import_scene: any supported source -> the NeuS/IDR DTU layout datasets/dtu.py reads.

Output (written to a hidden sibling folder, then moved into place, so a failed import leaves
no half-written scene)::

    out/image/000.png ...          views, undistorted, optionally downscaled, source order (PNG, or
                                   JPEG with image_format="jpg": far smaller for photos)
    out/mask/000.png ...           object masks (alpha channel / mask_path), when the source has them
    out/cameras_sphere.npz         world_mat_i = K [R|t] (4x4), scale_mat_i = the bounding sphere
    out/sphere_overlay.png         the sphere's footprint on a few views (check nothing is cut)
    out/import_report.json         source, sphere method, warnings
    out/sfm/                       (--format images) pycolmap database and sparse model
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..dtu import IMAGE_EXTS, _pixel_rescale, _read_mask
from .colmap import find_model, load_colmap
from .errors import SceneImportError
from .llff import load_llff
from .nerf import load_transforms, transforms_files
from .normalise import Cameras, Sphere, choose_sphere, sphere_from_user
from .preview import prompt_warnings, sphere_overlay
from .scene import Scene, check_scene, select_views
from .sfm import VIDEO_EXTS, extract_frames, run_sfm
from .triangulate import triangulate_views
from .undistort import pinhole_camera, undistort_image

FORMATS = ("auto", "colmap", "transforms", "blender", "llff", "images")
IMAGE_FORMATS = ("png", "jpg")      # of the written views (masks and the overlay are always PNG)
HULL_MASK_SIDE = 200         # masks are carved at this longer side
TRI_SIDE = 640               # views are matched at this longer side (sources without points)
OVERLAY_VIEWS = 6


@dataclass
class ImportResult:
    out: Path
    n_views: int
    size: tuple                     # (W, H) of the written images
    sphere: Sphere
    has_masks: bool
    warnings: list = field(default_factory=list)


def detect_format(src: Path) -> str:
    """Guess the source format from the files in src (see FORMATS)."""
    if src.is_file():
        if src.suffix.lower() == ".json":
            return "transforms"
        if src.suffix.lower() in VIDEO_EXTS:
            return "images"
        raise SceneImportError(f"{src} is a file of unknown kind; give the scene folder")
    if not src.is_dir():
        raise SceneImportError(f"{src} not found; give the folder of the capture")
    if (src / "poses_bounds.npy").is_file():
        return "llff"
    if (src / "transforms.json").is_file():
        return "transforms"
    if transforms_files(src):
        return "blender"
    if find_model(src) is not None:
        return "colmap"
    if any(p.suffix.lower() in IMAGE_EXTS for p in src.iterdir()):
        return "images"
    if (src / "images").is_dir():
        return "images"
    raise SceneImportError(f"cannot tell the format of {src}: no poses_bounds.npy, transforms*.json, "
                           "COLMAP model or photos; pass --format")


def parse_colour(text) -> tuple[int, int, int]:
    """'white' | 'black' | 'R,G,B' (0-255) -> RGB tuple."""
    if isinstance(text, (tuple, list)):
        return tuple(int(c) for c in text)
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
    if str(text).lower() in named:
        return named[str(text).lower()]
    try:
        rgb = tuple(int(c) for c in str(text).split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise SceneImportError(f"--background {text!r}: use white, black, grey or R,G,B (0-255)")
    return rgb


def _load(src: Path, fmt: str, staging: Path, opts: dict, log) -> Scene:
    if fmt == "colmap":
        return load_colmap(src, opts.get("images"), opts.get("drop_unregistered", False))
    if fmt in ("transforms", "blender"):
        return load_transforms(src, opts.get("splits"), blender=(fmt == "blender") or None)
    if fmt == "llff":
        return load_llff(src, opts.get("llff_factor"))
    if fmt == "images":
        photos = src
        if src.is_file():
            photos = extract_frames(src, staging / "sfm" / "frames", opts.get("video_frames", 100), log)
        elif not any(p.suffix.lower() in IMAGE_EXTS for p in src.iterdir()) and (src / "images").is_dir():
            photos = src / "images"
        model = run_sfm(photos, staging / "sfm", opts.get("camera_model", "SIMPLE_RADIAL"),
                        opts.get("sfm_max_size", 1600), opts.get("per_image", False),
                        opts.get("threads"), log=log)
        return load_colmap(model, photos, opts.get("drop_unregistered", False))
    raise SceneImportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _read_rgba(path: Path) -> np.ndarray:
    """(H, W, 3|4) uint8 RGB(A); 16-bit and grey inputs converted (dtu.read_image drops alpha,
    which the compositing needs)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SceneImportError(f"cannot read image {path}: corrupt or not an image; replace it")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None].repeat(3, 2)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _write_image(path: Path, img: np.ndarray, params: tuple = ()) -> None:
    """Atomic image write in the format of path's suffix (PNG, JPEG with params, e.g. its quality);
    img RGB (H, W, 3) or grey (H, W) uint8."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    data = img[:, :, ::-1] if img.ndim == 3 else img
    if not cv2.imwrite(str(tmp), np.ascontiguousarray(data), list(params)):
        raise SceneImportError(f"cannot write {path}; check the disk space and permissions")
    tmp.replace(path)


def _write_views(scene: Scene, folder: Path, downscale: float, background, overlay_idx,
                 want_greys: bool, image_format: str = "png", jpeg_quality: int = 95):
    """Undistort, composite, downscale and write every view (image/NNN.<image_format>; masks are
    always PNG). Returns the output Cameras, small masks (N, h, w) bool or None, the RGB images of
    overlay_idx, and small grey views (N, h, w) uint8 for triangulation when want_greys and the
    views have no masks (else None)."""
    w0, h0 = scene.views[0].size
    W, H = max(1, round(w0 / downscale)), max(1, round(h0 / downscale))
    rescale = _pixel_rescale(w0 / W, h0 / H)
    digits = max(3, len(str(len(scene.views) - 1)))
    (folder / "image").mkdir(parents=True)
    Ks, small_masks, previews, greys = [], [], {}, []
    mask_mode = None
    ms = HULL_MASK_SIDE / max(W, H)
    mw, mh = max(1, round(W * ms)), max(1, round(H * ms))
    gs = min(1.0, TRI_SIDE / max(W, H))
    gw, gh = max(1, round(W * gs)), max(1, round(H * gs))
    bg = np.asarray(background, np.float32)
    params = (cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)) if image_format == "jpg" else ()
    try:
        from tqdm import tqdm
        it = tqdm(list(enumerate(scene.views)), desc="[import] views", unit="img", disable=None)
    except ImportError:
        it = enumerate(scene.views)
    for i, v in it:
        new_k = pinhole_camera(v.K, v.dist, v.size)
        img = undistort_image(_read_rgba(v.path), v.K, v.dist, new_k)
        mask = None
        if v.mask_path is not None:
            mask = _read_mask(v.mask_path).astype(np.float32)
            if mask.shape != img.shape[:2]:
                raise SceneImportError(f"mask {v.mask_path} is {mask.shape[1]}x{mask.shape[0]} but "
                                       f"its image is {img.shape[1]}x{img.shape[0]}")
            mask = undistort_image(mask, v.K, v.dist, new_k, nearest=True)
        if img.shape[2] == 4:
            alpha = img[..., 3:].astype(np.float32) / 255.0
            if mask is None and scene.alpha_mask:
                mask = alpha[..., 0]
            img = (img[..., :3] * alpha + bg * (1 - alpha)).round().astype(np.uint8)
        if mask_mode is None:
            mask_mode = mask is not None
        elif mask_mode != (mask is not None):
            raise SceneImportError(f"{v.path}: some views have an alpha mask and others not; give "
                                   "every image an alpha channel or none")
        if (W, H) != (w0, h0):
            img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
        _write_image(folder / "image" / f"{i:0{digits}d}.{image_format}", img, params)
        if mask is not None:
            (folder / "mask").mkdir(exist_ok=True)
            m = cv2.resize(mask, (W, H), interpolation=cv2.INTER_AREA) if (W, H) != (w0, h0) else mask
            _write_image(folder / "mask" / f"{i:0{digits}d}.png", ((m > 0.5) * 255).astype(np.uint8))
            small_masks.append(cv2.resize(m, (mw, mh), interpolation=cv2.INTER_AREA) > 0.5)
        elif want_greys:
            grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            greys.append(cv2.resize(grey, (gw, gh), interpolation=cv2.INTER_AREA) if gs < 1 else grey)
        if i in overlay_idx:
            previews[i] = img
        Ks.append(rescale @ new_k)
    cams = Cameras(np.stack(Ks), np.stack([v.R for v in scene.views]),
                   np.stack([v.t for v in scene.views]), (W, H))
    return (cams, np.stack(small_masks) if mask_mode else None, previews,
            np.stack(greys) if greys and not mask_mode else None)


def import_scene(src, out, fmt: str = "auto", *, downscale: float = 1.0, views: str | None = None,
                 background="white", sphere=None, box=None, margin: float = 1.1, prompt=None,
                 force: bool = False, image_format: str = "png", jpeg_quality: int = 95, log=print,
                 **opts) -> ImportResult:
    """Import `src` into `out` (see the module docstring). opts: images, drop_unregistered, splits,
    llff_factor, camera_model, sfm_max_size, per_image, threads, video_frames (see the CLI).

    prompt: a sam_utils.prompts.Prompt on the imported images, checked against the sphere.
    image_format: "png" (lossless) or "jpg" (jpeg_quality 1-100) for the written views.
    """
    src, out = Path(src), Path(out)
    if not downscale >= 1.0:
        raise SceneImportError(f"--downscale {downscale}: must be >= 1")
    if image_format not in IMAGE_FORMATS or not 1 <= jpeg_quality <= 100:
        raise SceneImportError(f"--image-format {image_format!r} / --jpeg-quality {jpeg_quality}: "
                               f"choose one of {', '.join(IMAGE_FORMATS)} and a quality in 1-100")
    if out.exists() and not force and any(out.iterdir()):
        raise SceneImportError(f"{out} exists and is not empty; pass --force to replace it")
    fmt = detect_format(src) if fmt == "auto" else fmt
    user = sphere_from_user(sphere, box)
    bg = parse_colour(background)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log(f"[import] {src} as {fmt}")
            scene = check_scene(select_views(_load(src, fmt, staging, opts, log), views))
            n = len(scene.views)
            overlay_idx = sorted(set(np.linspace(0, n - 1, min(OVERLAY_VIEWS, n)).round().astype(int)))
            no_points = user is None and scene.points is None and scene.bounds is None
            cams, masks, previews, greys = _write_views(scene, staging, downscale, bg, overlay_idx,
                                                        no_points, image_format, jpeg_quality)
            if greys is not None:
                log(f"[import] no sparse points in the source: triangulating matches of "
                    f"{len(greys)} views with the known cameras")
                scene.points = triangulate_views(list(greys), cams.resized(*greys.shape[2:0:-1]))
                scene.notes.append(f"{len(scene.points)} points triangulated from the known cameras")
            sph = choose_sphere(cams, user=user, masks=masks, points=scene.points,
                                track_len=scene.track_len, bounds=scene.bounds, margin=margin)
            notes = _sanity(cams, sph)
            if prompt is not None:
                prompt.validate(cams.size[1], cams.size[0], "the prompt (pixels of the imported images)")
                notes += prompt_warnings(prompt, cams, sph, scene.points)
        notes = [str(w.message) for w in caught] + notes
        _write_cameras(staging / "cameras_sphere.npz", cams, sph)
        _write_image(staging / "sphere_overlay.png",
                     sphere_overlay([previews[i] for i in overlay_idx], overlay_idx, cams, sph))
        report = {"source": str(src), "format": fmt, "views": n, "size": list(cams.size),
                  "names": [v.name for v in scene.views], "masks": masks is not None,
                  "sphere": {"centre": sph.centre.tolist(), "radius": sph.radius,
                             "method": sph.method, "detail": sph.detail},
                  "notes": [n.replace(str(staging), str(out)) for n in scene.notes],
                  "warnings": notes}
        (staging / "import_report.json").write_text(json.dumps(report, indent=1))
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for w in notes:
        log(f"[import] WARNING: {w}")
    log(f"[import] {n} views {cams.size[0]}x{cams.size[1]} -> {out}; sphere from {sph.method} "
        f"({sph.detail}); check {out / 'sphere_overlay.png'}")
    return ImportResult(out, n, cams.size, sph, masks is not None, notes)


def _sanity(cams: Cameras, sph: Sphere) -> list[str]:
    """Warnings: cameras inside the sphere, views that do not see its centre."""
    notes = []
    inside = np.flatnonzero(np.linalg.norm(cams.centres - sph.centre, axis=1) < sph.radius)
    if len(inside) and sph.method != "bounds":         # forward-facing: expected, not a warning
        notes.append(f"{len(inside)} camera(s) lie inside the bounding sphere (views "
                     f"{inside[:8].tolist()}): background may be reconstructed; pass --sphere/--box")
    miss = np.flatnonzero(~cams.in_image(sph.centre[None])[:, 0])
    if len(miss):
        notes.append(f"the sphere centre is outside views {miss[:8].tolist()} "
                     f"({len(miss)} of {len(cams.K)}); check sphere_overlay.png")
    return notes


def _write_cameras(path: Path, cams: Cameras, sph: Sphere) -> None:
    arrays = {}
    scale = sph.scale_mat()
    for i, (K, R, t) in enumerate(zip(cams.K, cams.R, cams.t)):
        world = np.eye(4)
        world[:3] = K @ np.c_[R, t]
        arrays[f"world_mat_{i}"] = world
        arrays[f"scale_mat_{i}"] = scale
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _replace_dir(staging: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    staging.replace(out)
    shutil.rmtree(old, ignore_errors=True)
