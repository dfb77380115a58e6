"""Importers on the real captures in ../shared/data: lego (Blender, exact alpha masks), fox
(instant-ngp transforms.json with OpenCV distortion), fern (LLFF); the loader reads each import.
COLMAP text/binary readers and the undistortion are checked against independent references."""
import json

import cv2
import numpy as np
import pytest
import torch

from datasets.dtu import DTUDataset, MIN_INTERVAL, decompose_projection, near_far_from_sphere
from datasets.importers import import_scene
from datasets.importers.colmap import load_colmap
from datasets.importers.colmap_io import (Camera, ImageEntry, Points, camera_intrinsics,
                                          read_model, rotmat_to_qvec, write_model)
from datasets.importers.nerf import load_transforms
from datasets.importers.normalise import Cameras, Sphere
from datasets.importers.preview import prompt_warnings
from datasets.importers.scene import check_scene, select_views
from datasets.importers.triangulate import triangulate_views
from datasets.importers.undistort import pinhole_camera, project, undistort_image
from sam_utils.prompts import Prompt

QUIET = dict(log=lambda *a: None)


def _data(shared_dir, name):
    d = shared_dir / "data" / name
    if not d.is_dir():
        pytest.skip(f"{d} not found (see ../shared/data/README.md)")
    return d


def _gl_c2w(frames):
    """(N, 4, 4) camera-to-world of transforms frames, converted to OpenCV axes."""
    return np.stack([np.asarray(f["transform_matrix"]) @ np.diag([1, -1, -1, 1.0]) for f in frames])


@pytest.fixture(scope="module")
def lego(shared_dir, tmp_path_factory):
    src = _data(shared_dir, "nerf_synthetic_lego")
    out = tmp_path_factory.mktemp("imp") / "lego"
    res = import_scene(src, out, views="0:100:5", downscale=4, **QUIET)
    return src, out, res


def test_lego_round_trip_without_ground_truth(lego):
    """Alpha-mask centroid rays meet near one point whose reprojection is inside every mask; every
    object pixel's ray meets the unit sphere (the normalisation does not cut the object)."""
    src, out, res = lego
    assert res.n_views == 20 and res.size == (200, 200) and res.has_masks
    assert res.sphere.method == "masks"
    ds = DTUDataset(out)
    assert ds.masks is not None and ds.masks.shape == (20, 200, 200)
    m = ds.masks.numpy().astype(bool)
    cents = np.array([[np.nonzero(mi)[1].mean(), np.nonzero(mi)[0].mean()] for mi in m])   # (N, 2)
    o, d = ds.rays_for_pixels(torch.arange(20), torch.tensor(cents[:, 0]), torch.tensor(cents[:, 1]))
    o, d = o.double().numpy(), d.double().numpy()
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    x = np.linalg.solve(proj.sum(0), np.einsum("nij,nj->i", proj, o))      # closest point (unit)
    miss = np.linalg.norm(np.einsum("nij,nj->ni", proj, x - o), axis=1)
    assert miss.max() < 0.15 and miss.mean() < 0.08 and np.linalg.norm(x) < 0.5, (miss, x)
    xw = ds.to_world(x[None])
    for i in range(20):
        u, v = np.rint(ds.project(xw, i)[0]).astype(int)
        assert m[i, v, u], f"triangulated centre projects off the mask in view {i}"
    for i in range(0, 20, 4):                     # every object pixel's ray meets the sphere
        vs, us = np.nonzero(m[i])
        ro, rd = ds.rays_for_pixels(torch.full((len(us),), i), torch.tensor(us), torch.tensor(vs))
        near, far = near_far_from_sphere(ro, rd)
        assert bool(((far - near) > MIN_INTERVAL).all()), f"view {i}: the sphere cuts the object"
    assert (out / "sphere_overlay.png").is_file()
    report = json.loads((out / "import_report.json").read_text())
    frames = json.loads((src / "transforms_train.json").read_text())["frames"]
    assert report["names"] == [f["file_path"] for f in frames[::5]]     # listed order, every 5th


def test_lego_triangulation_lands_on_the_object(lego):
    """Points triangulated from SIFT matches with the known cameras project inside the masks."""
    _, out, _ = lego
    ds = DTUDataset(out)
    cams = _cams(ds)
    greys = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in ds.images.numpy()]
    pts = triangulate_views(greys, cams)
    assert len(pts) > 100
    uv, z = cams.project(pts)
    ui, vi = np.rint(uv).astype(int).transpose(2, 0, 1).clip(0, 199)
    near = np.stack([cv2.dilate(m, np.ones((5, 5), np.uint8)) for m in ds.masks.numpy()])
    inside = near[np.arange(20)[:, None], vi, ui].astype(bool)      # (N, M) within 2 px of a mask
    assert inside.mean() > 0.95 and np.median(inside.mean(0)) == 1.0, inside.mean()


def _cams(ds):
    """Cameras (world units) of an imported scene, decomposed from its world_mats."""
    K, R, t = [], [], []
    for w in ds.world_mats:
        k, pose = decompose_projection(w)
        K.append(k[:3, :3])
        R.append(pose[:3, :3].T)
        t.append(-pose[:3, :3].T @ pose[:3, 3])
    return Cameras(np.stack(K), np.stack(R), np.stack(t), (ds.W, ds.H))


def test_prompt_check_warns_only_outside(lego):
    _, out, res = lego
    ds_cams = _cams(DTUDataset(out))
    at = ds_cams.project(res.sphere.centre[None])[0][0, 0]       # the sphere centre on view 0
    click = Prompt(0, [at], [1])
    assert prompt_warnings(click, ds_cams, res.sphere) == []
    corner = Prompt(0, [[2, 2]], [1])                          # its ray passes the small sphere
    small = Sphere(res.sphere.centre, 0.3, "user")
    assert prompt_warnings(corner, ds_cams, small) and not prompt_warnings(click, ds_cams, small)
    pts = res.sphere.centre + np.array([[0, 0, 0.0]])          # a surface point at the centre
    far = Sphere(res.sphere.centre + [0, 0, 5.0], 0.5, "user")
    w = prompt_warnings(click, ds_cams, far, np.repeat(pts, 5, 0))
    assert len(w) == 1 and "outside the sphere" in w[0]


def test_fox_transforms_import_loader_reads_it(shared_dir, tmp_path):
    src = _data(shared_dir, "instant_ngp_fox")
    res = import_scene(src, tmp_path / "fox", views="0:67:8", downscale=4, **QUIET)
    ds = DTUDataset(tmp_path / "fox")
    assert (ds.n_images, ds.H, ds.W) == (9, 480, 270) and ds.masks is None
    frames = json.loads((src / "transforms.json").read_text())["frames"][0:67:8]
    c2w = _gl_c2w(frames)
    centres = ds.to_world(ds.poses[:, :3, 3].double().numpy())
    np.testing.assert_allclose(centres, c2w[:, :3, 3], atol=1e-4)
    np.testing.assert_allclose(ds.poses[:, :3, :3].numpy(), c2w[:, :3, :3], atol=1e-5)
    k = ds.intrinsics[0].numpy()
    assert abs(k[0, 0] - 1375.52 / 4) / k[0, 0] < 0.15 and k[0, 0] != pytest.approx(1375.52 / 4)
    assert (np.linalg.norm(ds.poses[:, :3, 3].numpy(), axis=1) > 1).all()   # cameras outside
    assert res.sphere.method == "points"                     # triangulated from the known poses


def test_fern_llff_import_loader_reads_it(shared_dir, tmp_path):
    src = _data(shared_dir, "llff_fern")
    res = import_scene(src, tmp_path / "fern", **QUIET)
    ds = DTUDataset(tmp_path / "fern")
    assert (ds.n_images, ds.H, ds.W) == (20, 378, 504) and res.sphere.method == "bounds"
    pb = np.load(src / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5)
    np.testing.assert_allclose(ds.intrinsics[:, 0, 0].numpy(), pb[:, 2, 4] / 8, rtol=1e-5)
    np.testing.assert_allclose(ds.to_world(ds.poses[:, :3, 3].double().numpy()), pb[:, :, 3],
                               atol=1e-3)
    fwd = ds.poses[:, :3, 2].double().numpy()                 # OpenCV +z = LLFF -backward
    np.testing.assert_allclose(fwd, -pb[:, :, 2], atol=1e-5)
    # every view's centre pixel at the near bound is inside the sphere
    near = np.load(src / "poses_bounds.npy")[:, 15]
    o, d = ds.rays_for_pixels(torch.arange(20), torch.full((20,), 251.5), torch.full((20,), 188.5))
    pts = ds.to_world(o.double().numpy()) + d.double().numpy() * near[:, None] * 1.01
    assert (np.linalg.norm(ds.to_unit(pts), axis=1) < 1).all()


def _lego_colmap(src, tmp, n=8):
    """A COLMAP model (2 cameras, OPENCV + PINHOLE) from lego's known poses with projected points."""
    scene = check_scene(select_views(load_transforms(src), f"0:{n}"))
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.8, 0.8, (60, 3))
    K = scene.views[0].K
    fx, cx = K[0, 0], K[0, 2] + 0.5                            # COLMAP pixels: corner origin
    cams = {1: Camera(1, "PINHOLE", 800, 800, np.array([fx, fx, cx, cx])),
            3: Camera(3, "OPENCV", 800, 800, np.array([fx, fx, cx, cx, 0.02, -0.01, 1e-3, -2e-3]))}
    images, tracks = {}, [[] for _ in X]
    for k, v in enumerate(scene.views):
        cam = cams[1 if k % 2 else 3]
        Kc, dist = camera_intrinsics(cam, "test")
        uv = project(X @ v.R.T + v.t, Kc, dist)
        images[10 + k] = ImageEntry(10 + k, rotmat_to_qvec(v.R), v.t, cam.id, v.path.name, uv,
                                    np.arange(len(X), dtype=np.int64) + 100)
        for j in range(len(X)):
            tracks[j].append([10 + k, j])
    pts = Points(np.arange(len(X)) + 100, X, rng.integers(0, 255, (len(X), 3)).astype(np.uint8),
                 rng.random(len(X)), [np.array(t) for t in tracks])
    write_model(tmp / "txt", cams, images, pts, ".txt")
    return scene, cams, images, pts


def test_colmap_text_and_binary_agree(shared_dir, tmp_path):
    """Text written here, binary written by pycolmap from it (or by our writer without pycolmap):
    both readers return the same model, and the COLMAP loader gives back lego's poses."""
    src = _data(shared_dir, "nerf_synthetic_lego")
    scene, cams, images, pts = _lego_colmap(src, tmp_path)
    (tmp_path / "bin").mkdir()
    try:
        import pycolmap
        pycolmap.Reconstruction(str(tmp_path / "txt")).write_binary(str(tmp_path / "bin"))
    except ImportError:
        write_model(tmp_path / "bin", cams, images, pts, ".bin")
    ct, it, pt = read_model(tmp_path / "txt")
    cb, ib, pb = read_model(tmp_path / "bin")
    assert ct.keys() == cb.keys() == {1, 3}
    for c in ct:
        assert ct[c].model == cb[c].model and np.allclose(ct[c].params, cb[c].params, rtol=1e-12)
    assert it.keys() == ib.keys()
    for i in it:
        a, b = it[i], ib[i]
        assert a.name == b.name and a.camera_id == b.camera_id
        assert np.allclose(a.qvec * np.sign(a.qvec[0]), b.qvec * np.sign(b.qvec[0]), atol=1e-12)
        assert np.allclose(a.tvec, b.tvec) and np.allclose(a.xys, b.xys)
        assert (a.point3d_ids == b.point3d_ids).all()
    order = np.argsort(pb.ids)
    assert (pt.ids == pb.ids[order]).all() and np.allclose(pt.xyz, pb.xyz[order])
    assert all((np.asarray(sorted(map(tuple, a))) == sorted(map(tuple, pb.tracks[k]))).all()
               for a, k in zip(pt.tracks, order))
    img_dir = src / "train"
    for model in ("txt", "bin"):
        got = load_colmap(tmp_path / model, images=img_dir, drop_unregistered=True)
        by_name = {v.path.name: v for v in got.views}
        for v in scene.views:
            g = by_name[v.path.name]
            assert np.allclose(g.R, v.R, atol=1e-9) and np.allclose(g.t, v.t, atol=1e-9)
            assert np.allclose(g.K, v.K)
        assert len(got.points) == 60 and (got.track_len == 8).all()


def test_undistorted_point_lands_on_pinhole(shared_dir):
    """fox's OpenCV distortion: a dot drawn where the distorted model projects a point is found,
    after undistortion, where the rewritten pinhole K projects it (< 0.5 px)."""
    meta = json.loads((_data(shared_dir, "instant_ngp_fox") / "transforms.json").read_text())
    s = 4                                                      # quarter size: 270 x 480
    w, h = int(meta["w"]) // s, int(meta["h"]) // s
    K = np.array([[meta["fl_x"] / s, 0, meta["cx"] / s - 0.5],       # corner origin -> centres
                  [0, meta["fl_y"] / s, meta["cy"] / s - 0.5], [0, 0, 1]])
    dist = np.array([meta[k] for k in ("k1", "k2", "p1", "p2")])
    new_k = pinhole_camera(K, dist, (w, h))
    assert not np.allclose(new_k, K)
    rng = np.random.default_rng(1)
    uv_pin = rng.uniform([20, 20], [w - 20, h - 20], (40, 2))
    X = np.c_[np.linalg.solve(new_k, np.c_[uv_pin, np.ones(40)].T).T[:, :2], np.ones(40)]
    uv_dist = project(X, K, dist)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.float32)
    for u, v in uv_dist:
        img += np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5 ** 2))
    und = undistort_image(img, K, dist, new_k)
    for (u, v) in uv_pin:
        u0, v0 = int(round(u)), int(round(v))
        win = und[v0 - 5:v0 + 6, u0 - 5:u0 + 6]
        wy, wx = np.mgrid[v0 - 5:v0 + 6, u0 - 5:u0 + 6]
        got = np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()
        assert np.linalg.norm(got - [u, v]) < 0.5, (got, (u, v))
    # COLMAP's RADIAL model maps onto OpenCV's k1, k2: same pixel as COLMAP's own formula
    cam = Camera(1, "RADIAL", w, h, np.array([300.0, 135.5, 240.5, -0.05, 0.01]))
    Kc, dc = camera_intrinsics(cam, "test")
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 - 0.05 * r2 + 0.01 * r2 * r2
    np.testing.assert_allclose(project(np.array([[x, y, 1.0]]), Kc, dc)[0],
                               [300 * x * radial + 135.5, 300 * y * radial + 240.5], atol=1e-9)
