"""Readers and writers of COLMAP sparse models (cameras, images, points3D), text and binary.

Written from COLMAP's documented formats ("Output format" of its manual). Poses are
world -> camera, quaternion (qw, qx, qy, qz) and translation; pixels have their origin at the
top-left corner of the first pixel. Newer COLMAP models also hold rigs/frames files, which this
reader does not need (one image = one camera pose).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import IntrinsicsError, RotationError, SceneImportError

# model name -> (id, number of parameters), as COLMAP numbers them
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
    "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4), "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12),
}
MODEL_BY_ID = {i: name for name, (i, _) in CAMERA_MODELS.items()}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
_P2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
_TRACK = np.dtype([("image", "<i4"), ("p2d", "<i4")])


@dataclass
class Camera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray              # (P,) in COLMAP's order for `model`


@dataclass
class ImageEntry:
    id: int
    qvec: np.ndarray                # (4,) qw, qx, qy, qz  (world -> camera)
    tvec: np.ndarray                # (3,)
    camera_id: int
    name: str
    xys: np.ndarray                 # (P, 2) keypoints
    point3d_ids: np.ndarray         # (P,) int64, -1 = none


@dataclass
class Points:
    ids: np.ndarray                 # (M,) int64
    xyz: np.ndarray                 # (M, 3)
    rgb: np.ndarray                 # (M, 3) uint8
    error: np.ndarray               # (M,)
    tracks: list                    # M arrays (L, 2): image id, point2D index

    @property
    def track_len(self) -> np.ndarray:
        return np.array([len(t) for t in self.tracks], np.int64)


# ----------------------------------------------------------------------------- camera maths
def qvec_to_rotmat(q: np.ndarray, label: str = "quaternion") -> np.ndarray:
    """(qw, qx, qy, qz) -> (3, 3) rotation; the quaternion is normalised first."""
    q = np.asarray(q, np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(q).all() or n < 1e-8:
        raise RotationError(f"{label}: quaternion {q.tolist()} is zero or NaN; re-export the model")
    w, x, y, z = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (qw, qx, qy, qz) with qw >= 0."""
    K = np.array([[R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
                  [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
                  [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], 0],
                  [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1],
                   R[0, 0] + R[1, 1] + R[2, 2]]]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


def camera_intrinsics(cam: Camera, label: str) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP camera -> K (3, 3) in COLMAP's corner-origin pixels and OpenCV (k1, k2, p1, p2)."""
    if cam.model not in SUPPORTED:
        raise IntrinsicsError(f"{label}: camera model {cam.model} is not supported (supported: "
                              f"{', '.join(SUPPORTED)}); re-run COLMAP with one of them, or run "
                              "'colmap image_undistorter' and import its output")
    p = np.asarray(cam.params, np.float64)
    n_want = CAMERA_MODELS[cam.model][1]
    if p.shape != (n_want,):
        raise IntrinsicsError(f"{label}: {cam.model} needs {n_want} parameters, got {p.size}")
    dist = np.zeros(4)
    if cam.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        dist[:len(p) - 3] = p[3:]
    else:
        fx, fy, cx, cy = p[:4]
        dist[:len(p) - 4] = p[4:]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), dist


# ----------------------------------------------------------------------------- reading
def find_model_files(folder: Path) -> str | None:
    """'.bin' or '.txt' when `folder` holds cameras/images of that kind (binary preferred)."""
    for ext in (".bin", ".txt"):
        if all((folder / f"{n}{ext}").is_file() for n in ("cameras", "images")):
            return ext
    return None


def read_model(folder, ext: str | None = None):
    """folder -> (cameras {id: Camera}, images {id: ImageEntry}, Points or None if no points3D)."""
    folder = Path(folder)
    ext = ext or find_model_files(folder)
    if ext is None:
        raise SceneImportError(f"{folder} holds no COLMAP model (cameras.bin/.txt and "
                               "images.bin/.txt); point to the sparse model folder, e.g. sparse/0")
    text = ext == ".txt"
    try:
        cams = (_read_cameras_txt if text else _read_cameras_bin)(folder / f"cameras{ext}")
        images = (_read_images_txt if text else _read_images_bin)(folder / f"images{ext}")
        pts_path = folder / f"points3D{ext}"
        points = ((_read_points_txt if text else _read_points_bin)(pts_path)
                  if pts_path.is_file() else None)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, SceneImportError):
            raise
        raise SceneImportError(f"cannot parse the COLMAP model in {folder} ({exc!r}); the files "
                               "are truncated or not COLMAP output; re-export them") from exc
    return cams, images, points


def _lines(path: Path):
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _read_cameras_txt(path: Path) -> dict[int, Camera]:
    cams = {}
    for line in _lines(path):
        e = line.split()
        cams[int(e[0])] = Camera(int(e[0]), e[1], int(e[2]), int(e[3]),
                                 np.array(e[4:], np.float64))
    return cams


def _read_images_txt(path: Path) -> dict[int, ImageEntry]:
    images = {}
    rows = [ln.strip() for ln in path.read_text().splitlines() if not ln.startswith("#")]
    i = 0
    while i < len(rows):
        if not rows[i]:                       # blank lines between entries
            i += 1
            continue
        e = rows[i].split(maxsplit=9)
        obs = np.array(rows[i + 1].split() if i + 1 < len(rows) else [], np.float64).reshape(-1, 3)
        images[int(e[0])] = ImageEntry(int(e[0]), np.array(e[1:5], np.float64),
                                       np.array(e[5:8], np.float64), int(e[8]), e[9],
                                       obs[:, :2].copy(), obs[:, 2].astype(np.int64))
        i += 2
    return images


def _read_points_txt(path: Path) -> Points:
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for line in _lines(path):
        e = line.split()
        ids.append(int(e[0]))
        xyz.append([float(v) for v in e[1:4]])
        rgb.append([int(v) for v in e[4:7]])
        err.append(float(e[7]))
        tracks.append(np.array(e[8:], np.int64).reshape(-1, 2))
    return Points(np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                  np.array(rgb, np.uint8).reshape(-1, 3), np.array(err, np.float64), tracks)


class _Reader:
    def __init__(self, path: Path):
        self.buf, self.pos = path.read_bytes(), 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype, count, self.pos)
        self.pos += dtype.itemsize * count
        return out

    def name(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        s = self.buf[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s


def _read_cameras_bin(path: Path) -> dict[int, Camera]:
    r, cams = _Reader(path), {}
    for _ in range(r.take("Q")[0]):
        cid, mid, w, h = r.take("iiQQ")
        if mid not in MODEL_BY_ID:
            raise IntrinsicsError(f"{path}: camera {cid} has unknown model id {mid}")
        model = MODEL_BY_ID[mid]
        cams[cid] = Camera(cid, model, w, h, np.array(r.take("d" * CAMERA_MODELS[model][1])))
    return cams


def _read_images_bin(path: Path) -> dict[int, ImageEntry]:
    r, images = _Reader(path), {}
    for _ in range(r.take("Q")[0]):
        vals = r.take("idddddddi")
        name = r.name()
        obs = r.array(_P2D, r.take("Q")[0])
        images[vals[0]] = ImageEntry(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8],
                                     name, np.stack([obs["x"], obs["y"]], -1), obs["id"].copy())
    return images


def _read_points_bin(path: Path) -> Points:
    r = _Reader(path)
    n = r.take("Q")[0]
    ids, xyz, rgb, err, tracks = (np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3), np.uint8),
                                  np.zeros(n), [])
    for k in range(n):
        vals = r.take("QdddBBBd")
        ids[k], xyz[k], rgb[k], err[k] = vals[0], vals[1:4], vals[4:7], vals[7]
        tr = r.array(_TRACK, r.take("Q")[0])
        tracks.append(np.stack([tr["image"], tr["p2d"]], -1).astype(np.int64))
    return Points(ids, xyz, rgb, err, tracks)


# ----------------------------------------------------------------------------- writing
def write_model(folder, cameras: dict, images: dict, points: Points | None, ext: str = ".txt"):
    """Write a model in COLMAP's text (".txt") or binary (".bin") format (atomic per file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if ext == ".txt":
        cam_txt = "".join(f"{c.id} {c.model} {c.width} {c.height} "
                          f"{' '.join(repr(float(p)) for p in c.params)}\n" for c in cameras.values())
        img_txt = "".join(
            f"{m.id} {' '.join(repr(float(v)) for v in (*m.qvec, *m.tvec))} {m.camera_id} {m.name}\n"
            + " ".join(f"{x!r} {y!r} {int(p)}" for (x, y), p in zip(m.xys.tolist(), m.point3d_ids))
            + "\n" for m in images.values())
        pts_txt = "" if points is None else "".join(
            f"{i} {' '.join(repr(float(v)) for v in p)} {' '.join(str(int(c)) for c in col)} "
            f"{e!r} {' '.join(str(int(v)) for v in tr.reshape(-1))}\n"
            for i, p, col, e, tr in zip(points.ids, points.xyz, points.rgb, points.error.tolist(),
                                        points.tracks))
        blobs = {"cameras": cam_txt.encode(), "images": img_txt.encode(), "points3D": pts_txt.encode()}
    elif ext == ".bin":
        blobs = {"cameras": _cameras_bin(cameras), "images": _images_bin(images),
                 "points3D": _points_bin(points)}
    else:
        raise ValueError(f"ext must be '.txt' or '.bin', got {ext!r}")
    for name, data in blobs.items():
        if name == "points3D" and points is None:
            continue
        tmp = folder / f".{name}{ext}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / f"{name}{ext}")


def _cameras_bin(cameras: dict) -> bytes:
    out = [struct.pack("<Q", len(cameras))]
    for c in cameras.values():
        out.append(struct.pack("<iiQQ", c.id, CAMERA_MODELS[c.model][0], c.width, c.height))
        out.append(np.asarray(c.params, "<f8").tobytes())
    return b"".join(out)


def _images_bin(images: dict) -> bytes:
    out = [struct.pack("<Q", len(images))]
    for m in images.values():
        out.append(struct.pack("<idddddddi", m.id, *m.qvec, *m.tvec, m.camera_id))
        out.append(m.name.encode("utf-8") + b"\0")
        obs = np.zeros(len(m.xys), _P2D)
        obs["x"], obs["y"], obs["id"] = m.xys[:, 0], m.xys[:, 1], m.point3d_ids
        out.append(struct.pack("<Q", len(obs)) + obs.tobytes())
    return b"".join(out)


def _points_bin(points: Points | None) -> bytes:
    if points is None:
        return b""
    out = [struct.pack("<Q", len(points.ids))]
    for i, p, col, e, tr in zip(points.ids, points.xyz, points.rgb, points.error, points.tracks):
        out.append(struct.pack("<QdddBBBd", int(i), *p, *(int(c) for c in col), e))
        t = np.zeros(len(tr), _TRACK)
        t["image"], t["p2d"] = tr[:, 0], tr[:, 1]
        out.append(struct.pack("<Q", len(t)) + t.tobytes())
    return b"".join(out)
