"""Loader for scenes in the NeuS/IDR "DTU" layout: images, optional masks, projection matrices.

Layout::

    data_dir/image/*.png          views, sorted by name
    data_dir/mask/*.png           optional object masks, paired with images by sorted order
    data_dir/cameras_sphere.npz   world_mat_i (3x4 or 4x4, world -> pixels), scale_mat_i (4x4)

Training works in "unit-sphere" coordinates: ``P_i = world_mat_i @ scale_mat_i`` is decomposed
into intrinsics K and a camera-to-world pose (the NeuS convention), so the object of interest lies
inside the unit sphere. ``scale_mat`` (scale_mat_0) maps unit-sphere coordinates back to the world.

Pixel convention (OpenCV): pixel centres sit at integer coordinates; the ray of pixel
(u = column, v = row) goes through ``K^-1 (u, v, 1)``. Downscaling by s maps a pixel centre u to
``(u + 0.5) / s - 0.5``, and K is adjusted the same way, so a ray still hits the same surface point.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
MASK_THRESHOLD = 127          # mask grey values above this are "object"
SINGULAR_RTOL = 1e-9          # |det(M3x3)| / ||M3x3||^3 below this -> singular projection
DECOMPOSE_RTOL = 1e-6         # max relative error of K [R|t] vs P after decomposition
MIN_NEAR = 1e-3               # near plane never closer than this (unit-sphere units)
MIN_INTERVAL = 1e-3           # a ray that misses the sphere gets [near, near + MIN_INTERVAL]


class DatasetError(ValueError):
    """A scene folder is malformed; the message names the file/key and how to fix it."""


# ----------------------------------------------------------------------------- file reading
def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_image(path: Path) -> np.ndarray:
    """Read an image as uint8 (H, W, 3) RGB: alpha dropped, grey replicated, 16-bit rescaled."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DatasetError(f"cannot read image {path}: file is corrupt or not an image; "
                           "replace it with a valid PNG/JPEG")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DatasetError(f"image {path} has unsupported pixel type {img.dtype}; save it as 8-bit")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_mask(path: Path) -> np.ndarray:
    """Read a mask as uint8 (H, W) in {0, 1}; any channel above MASK_THRESHOLD counts."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None or m.size == 0:
        raise DatasetError(f"cannot read mask {path}: file is corrupt or not an image; replace it")
    if m.ndim == 3:
        m = m[:, :, :3].max(axis=2)
    if m.dtype == np.uint16:
        m = m // 257
    return (m > MASK_THRESHOLD).astype(np.uint8)


def _as_4x4(mat: np.ndarray, key: str, path: Path) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape == (3, 4):
        mat = np.vstack([mat, [0.0, 0.0, 0.0, 1.0]])
    if mat.shape != (4, 4):
        raise DatasetError(f"{path}: '{key}' has shape {mat.shape}, expected 3x4 or 4x4; "
                           "rewrite the cameras file")
    if not np.all(np.isfinite(mat)):
        raise DatasetError(f"{path}: '{key}' contains NaN/inf; fix or regenerate the cameras file")
    return mat


def _is_singular(m3: np.ndarray) -> bool:
    scale = np.linalg.norm(m3) ** 3
    return scale == 0 or abs(np.linalg.det(m3)) / scale < SINGULAR_RTOL


def _load_cameras(path: Path, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Read world_mat_i / scale_mat_i for i < n_images -> two (N, 4, 4) float64 arrays."""
    if not path.is_file():
        raise DatasetError(f"cameras file {path} not found; put the NeuS/IDR cameras npz there "
                           "or pass cameras_name=")
    try:
        npz = dict(np.load(path))
    except Exception as exc:  # corrupt zip, pickle, ...
        raise DatasetError(f"cannot read cameras file {path} ({exc}); regenerate it") from exc
    n_world = sum(1 for k in npz if re.fullmatch(r"world_mat_\d+", k))
    if n_world != n_images:
        raise DatasetError(f"{path} has {n_world} world_mat_i entries but image/ holds {n_images} "
                           "images; every image needs exactly one camera")
    world, scale = [], []
    for i in range(n_images):
        for key in (f"world_mat_{i}", f"scale_mat_{i}"):
            if key not in npz:
                raise DatasetError(f"{path} lacks key '{key}'; add it (cameras are indexed by the "
                                   "sorted image order, from 0)")
        w = _as_4x4(npz[f"world_mat_{i}"], f"world_mat_{i}", path)
        s = _as_4x4(npz[f"scale_mat_{i}"], f"scale_mat_{i}", path)
        if _is_singular(s[:3, :3]):
            raise DatasetError(f"{path}: 'scale_mat_{i}' is singular; it must be an invertible "
                               "similarity (scale + translation)")
        if _is_singular((w @ s)[:3, :3]):
            raise DatasetError(f"{path}: 'world_mat_{i}' is singular (not a projective camera); "
                               "fix or regenerate it")
        world.append(w)
        scale.append(s)
    return np.stack(world), np.stack(scale)


def load_masks_and_cameras(data_dir, mask_dir: str = "mask", cameras_name: str = "cameras_sphere.npz"):
    """Masks and projection matrices of a scene folder, without reading its images (evaluation).

    Returns world_mats (N, 4, 4) float64 (world -> pixels), scale_mats (N, 4, 4) and masks
    (N, H, W) uint8 in {0, 1}; masks pair with cameras by sorted file order, as in DTUDataset.
    """
    data_dir = Path(data_dir)
    folder = data_dir / mask_dir
    paths = _list_images(folder) if folder.is_dir() else []
    if not paths:
        raise DatasetError(f"no masks in {folder}; put one {'/'.join(IMAGE_EXTS)} mask per view there "
                           "or name the folder that holds them")
    images = _list_images(data_dir / "image") if (data_dir / "image").is_dir() else []
    if images and len(images) != len(paths):
        raise DatasetError(f"{folder} holds {len(paths)} masks but {data_dir / 'image'} holds "
                           f"{len(images)} images; provide one mask per view")
    world, scale = _load_cameras(data_dir / cameras_name, len(paths))
    masks = [_read_mask(p) for p in paths]
    for p, m in zip(paths, masks):
        if m.shape != masks[0].shape:
            raise DatasetError(f"mask {p} is {m.shape[1]}x{m.shape[0]} but {paths[0].name} is "
                               f"{masks[0].shape[1]}x{masks[0].shape[0]}; all masks must have one size")
    return world, scale, np.stack(masks)


def scene_images(data_dir) -> list[Path]:
    """A scene folder's image files in view order ([] where it has no image/ folder); read_image reads one."""
    folder = Path(data_dir) / "image"
    return _list_images(folder) if folder.is_dir() else []


# ----------------------------------------------------------------------------- camera maths
def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P (3x4 or 4x4) -> intrinsics (4, 4) with K[2,2] = 1 and camera-to-world pose (4, 4).

    Uses cv2.decomposeProjectionMatrix (RQ). When OpenCV returns both focal lengths negative
    (P given up to a negative scale) the 180-degree roll is moved from K into the rotation.
    """
    K, R, c_h = cv2.decomposeProjectionMatrix(np.ascontiguousarray(P[:3, :4], np.float64))[:3]
    K = K / K[2, 2]
    flip = np.diag([np.sign(K[0, 0]), np.sign(K[1, 1]), 1.0])
    if np.linalg.det(flip) > 0:       # a rotation: fold it into R so fx, fy > 0
        K, R = K @ flip, flip @ R
    intrinsics = np.eye(4)
    intrinsics[:3, :3] = K
    pose = np.eye(4)
    pose[:3, :3] = R.T
    pose[:3, 3] = c_h[:3, 0] / c_h[3, 0]
    return intrinsics, pose


def _pixel_rescale(s_x: float, s_y: float) -> np.ndarray:
    """3x3 map from full-size pixels to pixels of an image shrunk by (s_x, s_y), centres kept."""
    return np.array([[1.0 / s_x, 0.0, 0.5 / s_x - 0.5],
                     [0.0, 1.0 / s_y, 0.5 / s_y - 0.5],
                     [0.0, 0.0, 1.0]])


def near_far_from_sphere(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float = 1.0):
    """Ray/sphere intersection -> near (B, 1), far (B, 1) in units of |rays_d|.

    near is clamped to >= MIN_NEAR (camera inside the sphere). A ray that misses gets the tiny
    interval [t*, t* + MIN_INTERVAL] at its closest approach t*; detect misses with
    ``far - near <= MIN_INTERVAL``.
    """
    a = (rays_d * rays_d).sum(-1, keepdim=True)                        # (B, 1)
    b = (rays_o * rays_d).sum(-1, keepdim=True)                        # (B, 1)
    c = (rays_o * rays_o).sum(-1, keepdim=True) - radius ** 2          # (B, 1)
    mid = -b / a
    half = torch.sqrt(torch.clamp(b * b - a * c, min=0.0)) / a
    near = torch.clamp(mid - half, min=MIN_NEAR)
    far = torch.maximum(mid + half, near + MIN_INTERVAL)
    return near, far


# ----------------------------------------------------------------------------- dataset
class DTUDataset:
    """All views of one scene on `device`: uint8 images/masks, K, K^-1 and poses (unit sphere)."""

    def __init__(self, data_dir, cameras_name: str = "cameras_sphere.npz", downscale: float = 1.0,
                 load_masks: bool = True, device="cpu"):
        self.data_dir = Path(data_dir)
        self.device = torch.device(device)
        if not self.data_dir.is_dir():
            raise DatasetError(f"data folder {self.data_dir} not found; pass the scene folder "
                               "that holds image/ and the cameras npz")
        if not downscale >= 1.0:
            raise DatasetError(f"downscale={downscale} for {self.data_dir}: must be >= 1")
        img_dir = self.data_dir / "image"
        self.image_paths = _list_images(img_dir) if img_dir.is_dir() else []
        if not self.image_paths:
            raise DatasetError(f"no images in {img_dir}; put the views there as "
                               f"{'/'.join(IMAGE_EXTS)} files")
        self.n_images = len(self.image_paths)
        self.world_mats, scale_mats = _load_cameras(self.data_dir / cameras_name, self.n_images)
        self.scale_mat = scale_mats[0]

        images = self._read_all(self.image_paths, read_image, "image")         # (N, H0, W0, 3)
        h0, w0 = images.shape[1:3]
        self.full_size = (h0, w0)                     # (H, W) of the files, before downscale
        self.H, self.W = max(1, round(h0 / downscale)), max(1, round(w0 / downscale))
        # exact per-axis factors after rounding: full pixels -> loaded pixels
        self._rescale = _pixel_rescale(w0 / self.W, h0 / self.H)                # (3, 3)
        if (self.H, self.W) != (h0, w0):
            images = np.stack([cv2.resize(im, (self.W, self.H), interpolation=cv2.INTER_AREA)
                               for im in images])
        self.images = torch.from_numpy(images).to(self.device)                  # (N, H, W, 3) u8
        self.masks = self._load_masks((h0, w0)) if load_masks else None          # (N, H, W) u8

        intr, poses = [], []
        for i in range(self.n_images):
            k, pose = decompose_projection(self.world_mats[i] @ scale_mats[i])
            k[:3, :3] = self._rescale @ k[:3, :3]
            intr.append(k)
            poses.append(pose)
        intr = np.stack(intr)
        self.intrinsics = torch.tensor(intr, dtype=torch.float32, device=self.device)
        self.intrinsics_inv = torch.tensor(np.linalg.inv(intr), dtype=torch.float32,
                                           device=self.device)
        self.poses = torch.tensor(np.stack(poses), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ loading helpers
    def _read_all(self, paths: list[Path], reader, what: str) -> np.ndarray:
        """Read every file with `reader`; all must share the first one's size."""
        arrays = []
        for p in paths:
            a = reader(p)
            if arrays and a.shape[:2] != arrays[0].shape[:2]:
                raise DatasetError(f"{what} {p} is {a.shape[1]}x{a.shape[0]} but {paths[0].name} "
                                   f"is {arrays[0].shape[1]}x{arrays[0].shape[0]}; all {what}s "
                                   "must have the same size")
            arrays.append(a)
        return np.stack(arrays)

    def _load_masks(self, full_hw: tuple[int, int]) -> torch.Tensor | None:
        mask_dir = self.data_dir / "mask"
        paths = _list_images(mask_dir) if mask_dir.is_dir() else []
        if not paths:
            return None
        if len(paths) != self.n_images:
            raise DatasetError(f"{mask_dir} holds {len(paths)} masks but image/ holds "
                               f"{self.n_images} images; provide one mask per image or remove "
                               "mask/ (or pass load_masks=False)")
        masks = self._read_all(paths, _read_mask, "mask")                       # (N, H0, W0)
        if masks.shape[1:3] != full_hw:
            raise DatasetError(f"mask {paths[0]} is {masks.shape[2]}x{masks.shape[1]} but images "
                               f"are {full_hw[1]}x{full_hw[0]}; masks must match the image size")
        if masks.shape[1:3] != (self.H, self.W):
            masks = np.stack([cv2.resize(m, (self.W, self.H), interpolation=cv2.INTER_NEAREST)
                              for m in masks])
        return torch.from_numpy(masks).to(self.device)

    # ------------------------------------------------------------------ rays
    def rays_for_pixels(self, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
        """Rays of pixels (u = column, v = row) of `view` (each (B,)) -> rays_o, rays_d (B, 3)."""
        view = view.to(self.device).long()
        pix = torch.stack([u.to(self.device, torch.float32), v.to(self.device, torch.float32),
                           torch.ones_like(u, dtype=torch.float32, device=self.device)], -1)
        d_cam = (self.intrinsics_inv[view, :3, :3] @ pix[..., None])[..., 0]     # (B, 3)
        d_world = (self.poses[view, :3, :3] @ d_cam[..., None])[..., 0]         # (B, 3)
        rays_d = d_world / d_world.norm(dim=-1, keepdim=True)
        rays_o = self.poses[view, :3, 3]                                         # (B, 3)
        return rays_o, rays_d

    def sample_rays(self, n_rays: int, generator: torch.Generator | None = None,
                    views: torch.Tensor | None = None, boxes: torch.Tensor | None = None) -> dict:
        """n_rays random pixels over all views (or `views`) with their colour and mask.

        boxes: (n_images, 4) x0, y0, x1, y1 (inclusive pixels): sample each view inside its box only.
        """
        gen_dev = generator.device if generator is not None else self.device
        if views is None:
            view = torch.randint(self.n_images, (n_rays,), generator=generator, device=gen_dev)
        else:
            views = torch.as_tensor(views, dtype=torch.long).reshape(-1)
            pick = torch.randint(len(views), (n_rays,), generator=generator, device=gen_dev)
            view = views.to(gen_dev)[pick]
        if boxes is None:
            u = torch.randint(self.W, (n_rays,), generator=generator, device=gen_dev)
            v = torch.randint(self.H, (n_rays,), generator=generator, device=gen_dev)
        else:
            b = boxes.to(gen_dev).long()[view]                                     # (B, 4)
            r = torch.rand(2, n_rays, generator=generator, device=gen_dev)
            u = b[:, 0] + (r[0] * (b[:, 2] - b[:, 0] + 1)).long().clamp(max=self.W - 1 - b[:, 0])
            v = b[:, 1] + (r[1] * (b[:, 3] - b[:, 1] + 1)).long().clamp(max=self.H - 1 - b[:, 1])
        view, u, v = view.to(self.device), u.to(self.device), v.to(self.device)
        rays_o, rays_d = self.rays_for_pixels(view, u, v)
        out = {"rays_o": rays_o, "rays_d": rays_d, "view": view,
               "pixel": torch.stack([u, v], -1),                                   # (B, 2)
               "rgb": self.images[view, v, u].float() / 255.0}                     # (B, 3)
        if self.masks is not None:
            out["mask"] = self.masks[view, v, u, None].float()                     # (B, 1)
        return out

    def rays_at(self, view: int, resolution_level: int = 1) -> dict:
        """All rays of one view at 1/resolution_level size.

        Returns rays_o, rays_d, rgb (h, w, 3), pixel (h, w, 2) = (u, v) in this dataset's pixel
        units (centres of the level x level blocks), and mask (h, w, 1) = object fraction.
        """
        lvl = int(resolution_level)
        h, w = max(1, self.H // lvl), max(1, self.W // lvl)
        u = (torch.arange(w, device=self.device, dtype=torch.float32) + 0.5) * (self.W / w) - 0.5
        v = (torch.arange(h, device=self.device, dtype=torch.float32) + 0.5) * (self.H / h) - 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")                             # (h, w)
        idx = torch.full((h * w,), int(view), dtype=torch.long, device=self.device)
        rays_o, rays_d = self.rays_for_pixels(idx, uu.reshape(-1), vv.reshape(-1))
        out = {"rays_o": rays_o.reshape(h, w, 3), "rays_d": rays_d.reshape(h, w, 3),
               "pixel": torch.stack([uu, vv], -1),
               "rgb": self._shrink(self.images[view], w, h) / 255.0}
        if self.masks is not None:
            out["mask"] = self._shrink(self.masks[view], w, h).reshape(h, w, 1)
        return out

    def _shrink(self, img: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """uint8 image (H, W[, C]) -> float32 (h, w[, C]), box-averaged (INTER_AREA) if smaller."""
        if img.shape[:2] == (h, w):
            return img.float()
        small = cv2.resize(img.cpu().numpy().astype(np.float32), (w, h),
                           interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small).to(self.device)

    # ------------------------------------------------------------------ coordinates
    def from_full_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (M, 2) = (u, v) of the files' full-size images -> pixels of the loaded images."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        return uv @ self._rescale[:2, :2].T + self._rescale[:2, 2]

    def project(self, points_world: np.ndarray, view: int) -> np.ndarray:
        """World points (M, 3) -> pixels (M, 2) = (u, v) of this dataset's (downscaled) images."""
        pts = np.asarray(points_world, np.float64).reshape(-1, 3)
        proj = self._rescale @ self.world_mats[view][:3]                            # (3, 4)
        uvw = pts @ proj[:, :3].T + proj[:, 3]                                       # (M, 3)
        return uvw[:, :2] / uvw[:, 2:3]

    def to_unit(self, points_world):
        """World points (..., 3) -> unit-sphere coordinates (inverse of scale_mat)."""
        return _affine(np.linalg.inv(self.scale_mat), points_world)

    def to_world(self, points_unit):
        """Unit-sphere points (..., 3) -> world coordinates (scale_mat)."""
        return _affine(self.scale_mat, points_unit)


def _affine(mat: np.ndarray, points):
    """Apply the 4x4 affine `mat` to points (..., 3); numpy in -> numpy out, torch -> torch."""
    if isinstance(points, torch.Tensor):
        m = torch.as_tensor(mat, dtype=points.dtype, device=points.device)
        return points @ m[:3, :3].T + m[:3, 3]
    pts = np.asarray(points, np.float64)
    return pts @ mat[:3, :3].T + mat[:3, 3]
