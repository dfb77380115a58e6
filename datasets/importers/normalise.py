"""The bounding sphere of the object (-> scale_mat), chosen so that it does not cut the object.

Sources, in the order `choose_sphere` tries them:
  user      --sphere / --box, in the source's world units
  masks     visual hull of the object masks (carved on a voxel grid)
  points    sparse points inside most views' frusta (outliers trimmed): SfM's, or for sources
            without any, matches triangulated with the known cameras (triangulate.py)
  bounds    forward-facing (LLFF): every view's frustum between its near/far bounds
  look-at   the point the optical axes converge to; radius: the sphere most views see whole
Cameras are arrays: K (N, 3, 3), R (N, 3, 3), t (N, 3), size (W, H), all at the output resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NormalisationError

MIN_VIEW_FRAC = 0.75      # a point "seen by most views" lies inside this fraction of the frusta
MIN_POINTS = 20           # fewer kept points than this -> the best-covered half is used
POINT_QUANTILE = 0.99     # points farther from the centre than this quantile are outliers
MIN_TRACK = 3             # a point observed by fewer images is noise
HULL_RES = 48             # voxel grid per axis, per carving pass
HULL_MISS_FRAC = 0.02     # a voxel may fall off the mask in this fraction of views (mask noise)
LOOKAT_MIN_EIG = 1e-2     # optical axes (almost) parallel below this -> no convergence point
LOOKAT_QUANTILE = 0.9     # look-at radius: this quantile of the spheres each view sees whole
CAMERA_CLEARANCE = 0.9    # a sphere's radius is at most this fraction of its nearest camera's distance
FAR_QUANTILE = 0.9        # LLFF: far bound used for the frustum (the background is not the object)


@dataclass
class Cameras:
    K: np.ndarray      # (N, 3, 3)
    R: np.ndarray      # (N, 3, 3) world -> camera
    t: np.ndarray      # (N, 3)
    size: tuple        # (W, H)

    @property
    def centres(self) -> np.ndarray:                              # (N, 3)
        return -(self.R.transpose(0, 2, 1) @ self.t[:, :, None])[..., 0]

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (M, 3) -> pixels (N, M, 2) and depths (N, M)."""
        rt = np.concatenate([self.R, self.t[:, :, None]], 2)                 # (N, 3, 4)
        ph = np.c_[np.asarray(pts, np.float64).reshape(-1, 3), np.ones(len(pts))]
        cam = ph[None] @ rt.transpose(0, 2, 1)                               # (N, M, 3)
        pix = cam @ self.K.transpose(0, 2, 1)
        z = cam[..., 2]
        den = pix[..., 2:]
        return pix[..., :2] / np.where(np.abs(den) < 1e-12, 1e-12, den), z

    def resized(self, w: int, h: int) -> "Cameras":
        """The same cameras for images resized to (w, h) (pixel centres kept)."""
        sx, sy = w / self.size[0], h / self.size[1]
        scale = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        return Cameras(scale[None] @ self.K, self.R, self.t, (w, h))

    def in_image(self, pts: np.ndarray) -> np.ndarray:
        """(N, M) bool: point m projects inside view n's image, in front of the camera."""
        uv, z = self.project(pts)
        w, h = self.size
        return ((z > 0) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= w - 0.5)
                & (uv[..., 1] >= -0.5) & (uv[..., 1] <= h - 0.5))


@dataclass
class Sphere:
    centre: np.ndarray      # (3,) world
    radius: float
    method: str
    detail: str = ""

    def scale_mat(self) -> np.ndarray:
        """(4, 4) unit sphere -> world, as cameras_sphere.npz stores it."""
        m = np.diag([self.radius, self.radius, self.radius, 1.0])
        m[:3, 3] = self.centre
        return m


def sphere_from_user(sphere=None, box=None) -> Sphere | None:
    """--sphere (cx, cy, cz, r) or --box (x0, y0, z0, x1, y1, z1) -> Sphere (the box's circumsphere)."""
    if sphere is not None:
        c, r = np.asarray(sphere[:3], np.float64), float(sphere[3])
        if not r > 0:
            raise NormalisationError(f"--sphere radius {r} must be > 0")
        return Sphere(c, r, "user", "--sphere")
    if box is not None:
        lo, hi = np.asarray(box[:3], np.float64), np.asarray(box[3:], np.float64)
        if not np.all(hi > lo):
            raise NormalisationError(f"--box {list(box)}: need x0 < x1, y0 < y1, z0 < z1")
        return Sphere((lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2), "user", "--box")
    return None


def sphere_from_points(points: np.ndarray, cams: Cameras, track_len=None,
                       margin: float = 1.1) -> Sphere | None:
    """Sphere around the sparse points inside >= MIN_VIEW_FRAC of the frusta (None if < 4 points)."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    if track_len is not None:
        pts = pts[np.asarray(track_len) >= MIN_TRACK]
    if len(pts) < 4:
        return None
    frac = np.concatenate([cams.in_image(c).mean(0) for c in np.array_split(pts, max(1, len(pts) // 4096))])
    keep = frac >= MIN_VIEW_FRAC
    if keep.sum() < MIN_POINTS:
        keep = frac >= np.median(frac)
    p = pts[keep]
    centre = np.median(p, 0)
    d = np.linalg.norm(p - centre, axis=1)
    inl = p[d <= np.quantile(d, POINT_QUANTILE)]
    centre = (inl.min(0) + inl.max(0)) / 2
    r = float(np.linalg.norm(inl - centre, axis=1).max()) * margin
    clear = CAMERA_CLEARANCE * float(np.linalg.norm(cams.centres - centre, axis=1).min())
    detail = (f"{len(inl)} of {len(points)} sparse points (in >= {MIN_VIEW_FRAC:.0%} of the views, "
              f"outer {1 - POINT_QUANTILE:.0%} trimmed), margin {margin:g}")
    if r > clear:
        r, detail = clear, detail + ", shrunk to keep the cameras outside (background points)"
    return Sphere(centre, r, "points", detail)


def look_at_point(cams: Cameras) -> np.ndarray | None:
    """Least-squares point nearest to every optical axis, or None if the axes do not converge
    (near-parallel axes or a point behind most cameras)."""
    o = cams.centres
    d = cams.R[:, 2, :]                                            # (N, 3) viewing directions
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]         # (N, 3, 3)
    A, b = proj.sum(0), np.einsum("nij,nj->i", proj, o)
    eig = np.linalg.eigvalsh(A / len(o))
    if eig[0] < LOOKAT_MIN_EIG:
        return None
    c = np.linalg.solve(A, b)
    if (np.einsum("ni,ni->n", c - o, d) > 0).mean() < 0.9:
        return None
    return c


def sphere_from_lookat(cams: Cameras) -> Sphere | None:
    """Sphere at the look-at point, as large as every view still sees it whole."""
    c = look_at_point(cams)
    if c is None:
        return None
    uv, z = cams.project(c[None])
    w, h = cams.size
    u, v = uv[:, 0, 0], uv[:, 0, 1]
    border = np.minimum.reduce([u + 0.5, w - 0.5 - u, v + 0.5, h - 0.5 - v])    # (N,) px
    if np.any(border <= 0):
        return None
    f = np.maximum(cams.K[:, 0, 0], cams.K[:, 1, 1])
    dist = np.linalg.norm(cams.centres - c, axis=1)
    fits = dist * np.sin(np.arctan(border / f))                  # (N,) largest sphere view n sees
    r = float(min(np.quantile(fits, LOOKAT_QUANTILE), CAMERA_CLEARANCE * dist.min()))
    return Sphere(c, r, "look-at", f"optical axes converge; radius: the sphere {LOOKAT_QUANTILE:.0%} "
                  f"of the {len(dist)} views fit whole (close-ups may not)")


def sphere_from_bounds(cams: Cameras, bounds: np.ndarray) -> Sphere:
    """Forward-facing: sphere around each view's frustum between near and (a robust) far bound."""
    near = float(np.min(bounds[:, 0]))
    far = float(np.quantile(bounds[:, 1], FAR_QUANTILE))
    w, h = cams.size
    px = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5],
                   [(w - 1) / 2, (h - 1) / 2]])
    pts = []
    for K, R, t in zip(cams.K, cams.R, cams.t):
        rays = np.linalg.solve(K, np.c_[px, np.ones(len(px))].T).T          # (5, 3), z = 1
        for depth in np.linspace(near, far, 5):
            pts.append((rays * depth - t) @ R)                               # R^T (x - t)
    pts = np.concatenate(pts)
    centre = (pts.min(0) + pts.max(0)) / 2
    r = float(np.linalg.norm(pts - centre, axis=1).max())
    return Sphere(centre, r, "bounds", f"frusta between depth {near:.3g} and {far:.3g}; "
                  "forward-facing, so the cameras may lie inside the sphere")


def sphere_from_masks(cams: Cameras, masks: np.ndarray, margin: float = 1.1) -> Sphere | None:
    """Visual hull of masks (N, h, w) bool (any size: K is rescaled) -> its bounding sphere."""
    start = look_at_point(cams)
    if start is None:
        return None
    n, mh, mw = masks.shape
    small = cams.resized(mw, mh)
    half = np.full(3, np.linalg.norm(cams.centres - start, axis=1).max())
    lo, hi = start - half, start + half
    for _ in range(3):                                     # carve, then tighten the grid twice
        kept, step = _carve(small, masks, lo, hi)
        if len(kept) == 0:
            return None
        lo, hi = kept.min(0) - 2 * step, kept.max(0) + 2 * step
    centre = (kept.min(0) + kept.max(0)) / 2
    r = float(np.linalg.norm(kept - centre, axis=1).max() + np.linalg.norm(step) / 2)
    return Sphere(centre, r * margin, "masks", f"visual hull of {n} masks, margin {margin:g}")


def _carve(cams: Cameras, masks: np.ndarray, lo, hi):
    """Voxel centres (K, 3) inside every mask that sees them, and the voxel size (3,)."""
    axes = [np.linspace(a, b, HULL_RES) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    step = (hi - lo) / (HULL_RES - 1)
    n, mh, mw = masks.shape
    out = []
    for chunk in np.array_split(grid, 16):
        uv, z = cams.project(chunk)
        ui, vi = np.rint(uv[..., 0]).astype(np.int64), np.rint(uv[..., 1]).astype(np.int64)
        inside = (z > 0) & (ui >= 0) & (ui < mw) & (vi >= 0) & (vi < mh)
        hit = masks[np.arange(n)[:, None], vi.clip(0, mh - 1), ui.clip(0, mw - 1)] & inside
        miss = (inside & ~hit).sum(0)
        ok = (miss <= int(HULL_MISS_FRAC * n)) & (inside.sum(0) >= n / 2)
        out.append(chunk[ok])
    return np.concatenate(out), step


def choose_sphere(cams: Cameras, *, user: Sphere | None = None, masks=None, points=None,
                  track_len=None, bounds=None, margin: float = 1.1) -> Sphere:
    """The first sphere the sources above give; NormalisationError when none does."""
    tried = []
    if user is not None:
        return user
    if masks is not None:
        s = sphere_from_masks(cams, masks, margin)
        if s is not None:
            return s
        tried.append("masks (empty hull)")
    if points is not None:
        s = sphere_from_points(points, cams, track_len, margin)
        if s is not None:
            return s
        tried.append("sparse points (too few)")
    if bounds is not None:
        return sphere_from_bounds(cams, bounds)
    s = sphere_from_lookat(cams)
    if s is not None:
        return s
    tried.append("look-at (the optical axes do not converge in front of the cameras)")
    raise NormalisationError(f"no bounding sphere found (tried {'; '.join(tried)}); pass "
                             "--sphere cx,cy,cz,r or --box x0,y0,z0,x1,y1,z1 in the source's "
                             "world units")
