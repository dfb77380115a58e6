"""Tests of datasets/dtu.py on hand-built scenes with known cameras, the real DTU scan, and a
generated synthetic scene (round trip through world_mat / scale_mat / K / pose)."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from datasets.dtu import DatasetError, DTUDataset, MIN_INTERVAL, MIN_NEAR, near_far_from_sphere

W, H = 64, 48
K0 = np.array([[70.0, 0.3, 31.7], [0.0, 72.0, 23.2], [0.0, 0.0, 1.0]])
CENTRE = np.array([10.0, -20.0, 600.0])     # object centre in world units (mm)
RADIUS = 100.0                              # scale_mat radius
CAM_DIST = 400.0
POINT = CENTRE + np.array([20.0, -10.0, 30.0])   # a world point inside the sphere
PROJ_SCALES = [2.5, -0.7, 1.0]              # projection matrices are only defined up to scale


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World->camera rotation (OpenCV: x right, y down, z forward)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def camera(i: int):
    """(R, t, eye) of view i, looking at CENTRE from a ring of directions."""
    ang = 0.6 * i
    eye = CENTRE + CAM_DIST * np.array([np.sin(ang), 0.3, -np.cos(ang)]) / np.sqrt(1.09)
    R = look_at(eye, CENTRE)
    return R, -R @ eye, eye


def true_pixel(i: int, x: np.ndarray) -> np.ndarray:
    R, t, _ = camera(i)
    p = K0 @ (R @ x + t)
    return p[:2] / p[2]


def make_scene(root, n_views=3, seed=0):
    """Write image/, mask/, cameras_sphere.npz; return the RGB images and binary masks written."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "mask").mkdir()
    scale = np.diag([RADIUS, RADIUS, RADIUS, 1.0])
    scale[:3, 3] = CENTRE
    cams, images, masks = {}, [], []
    for i in range(n_views):
        R, t, _ = camera(i)
        world = np.eye(4)
        world[:3] = PROJ_SCALES[i % len(PROJ_SCALES)] * (K0 @ np.hstack([R, t[:, None]]))
        cams[f"world_mat_{i}"] = world if i % 2 == 0 else world[:3]     # 4x4 and 3x4 both allowed
        cams[f"scale_mat_{i}"] = scale
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        mask = (rng.random((H, W)) > 0.5).astype(np.uint8)
        cv2.imwrite(str(root / "image" / f"{i:06d}.png"), img[:, :, ::-1])
        cv2.imwrite(str(root / "mask" / f"{i:03d}.png"), np.repeat(mask[:, :, None] * 255, 3, 2))
        images.append(img)
        masks.append(mask)
    np.savez(root / "cameras_sphere.npz", **cams)
    return np.stack(images), np.stack(masks)


@pytest.fixture
def scene(tmp_path):
    images, masks = make_scene(tmp_path / "scene")
    return tmp_path / "scene", images, masks


def distance_to_ray(o, d, x):
    t = float(np.dot(x - o, d))
    return float(np.linalg.norm(x - (o + t * d))), t


# ----------------------------------------------------------------------------- geometry
def test_decomposition_matches_world_mat(scene):
    root, _, _ = scene
    ds = DTUDataset(root)
    x_unit = ds.to_unit(POINT)
    for i in range(ds.n_images):
        uv = ds.project(POINT[None], i)[0]
        np.testing.assert_allclose(uv, true_pixel(i, POINT), atol=1e-6)
        np.testing.assert_allclose(ds.intrinsics[i, :3, :3].numpy(), K0, rtol=1e-5, atol=1e-5)
        pose = ds.poses[i].double().numpy()
        np.testing.assert_allclose(pose[:3, 3], ds.to_unit(camera(i)[2]), atol=1e-5)
        cam = np.linalg.inv(pose) @ np.append(x_unit, 1.0)
        assert cam[2] > 0, f"view {i}: point behind the decomposed camera"
        uv_k = K0 @ cam[:3]
        np.testing.assert_allclose(uv_k[:2] / uv_k[2], uv, atol=1e-3)


@pytest.mark.parametrize("downscale", [1.0, 2.0, 1.5])
def test_ray_of_projected_pixel_hits_point(scene, downscale):
    root, _, _ = scene
    ds = DTUDataset(root, downscale=downscale)
    assert (ds.H, ds.W) == (round(H / downscale), round(W / downscale))
    assert ds.images.shape == (3, ds.H, ds.W, 3) and ds.masks.shape == (3, ds.H, ds.W)
    x_unit = ds.to_unit(POINT)
    for i in range(ds.n_images):
        uv = ds.project(POINT[None], i)[0]
        if downscale == 2.0:   # pixel centres: u' = (u + 0.5) / 2 - 0.5
            np.testing.assert_allclose(uv, (true_pixel(i, POINT) + 0.5) / 2 - 0.5, atol=1e-6)
        assert ds.full_size == (H, W)
        np.testing.assert_allclose(ds.from_full_pixels(true_pixel(i, POINT)[None])[0], uv,
                                   atol=1e-6)
        o, d = ds.rays_for_pixels(torch.tensor([i]), torch.tensor([uv[0]]), torch.tensor([uv[1]]))
        d = d[0].double().numpy()
        assert abs(np.linalg.norm(d) - 1) < 1e-6
        dist, t = distance_to_ray(o[0].double().numpy(), d, x_unit)
        assert t > 0 and dist < 1e-4, f"view {i}: ray misses the point by {dist}"


def test_downscale_resamples_images_and_masks(scene):
    root, images, masks = scene
    ds = DTUDataset(root, downscale=2)
    expect = cv2.resize(images[1], (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ds.images[1].numpy(), expect)
    assert set(np.unique(ds.masks.numpy())) <= {0, 1}
    np.testing.assert_array_equal(ds.masks[2].numpy(), cv2.resize(
        masks[2], (W // 2, H // 2), interpolation=cv2.INTER_NEAREST))


def test_world_unit_round_trip(scene):
    ds = DTUDataset(scene[0], load_masks=False)
    assert ds.masks is None
    pts = np.random.default_rng(1).normal(size=(5, 3)) * 50 + CENTRE
    np.testing.assert_allclose(ds.to_world(ds.to_unit(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(ds.to_unit(CENTRE + [RADIUS, 0, 0]), [1, 0, 0], atol=1e-12)
    t = ds.to_unit(torch.tensor(pts))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), ds.to_unit(pts), atol=1e-9)


# ----------------------------------------------------------------------------- rays
def test_sample_rays_returns_the_image_pixels(scene):
    root, images, masks = scene
    ds = DTUDataset(root)
    b = ds.sample_rays(500, generator=torch.Generator().manual_seed(0))
    assert b["rays_o"].shape == b["rays_d"].shape == b["rgb"].shape == (500, 3)
    assert b["mask"].shape == (500, 1) and b["pixel"].shape == (500, 2)
    assert b["view"].shape == (500,)
    assert b["rgb"].dtype == b["mask"].dtype == torch.float32
    assert b["view"].dtype == b["pixel"].dtype == torch.long
    view, u, v = b["view"].numpy(), b["pixel"][:, 0].numpy(), b["pixel"][:, 1].numpy()
    assert u.max() < W and v.max() < H and len(np.unique(view)) == 3
    np.testing.assert_allclose(b["rgb"].numpy(), images[view, v, u] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(b["mask"][:, 0].numpy(), masks[view, v, u])
    o, d = ds.rays_for_pixels(b["view"], b["pixel"][:, 0].float(), b["pixel"][:, 1].float())
    assert torch.allclose(o, b["rays_o"]) and torch.allclose(d, b["rays_d"])
    again = ds.sample_rays(500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["pixel"], b["pixel"])
    sub = ds.sample_rays(200, views=torch.tensor([2]))
    assert (sub["view"] == 2).all()


def test_rays_at_full_and_reduced(scene):
    root, images, _ = scene
    ds = DTUDataset(root)
    full = ds.rays_at(1)
    assert full["rays_d"].shape == (H, W, 3) and full["mask"].shape == (H, W, 1)
    np.testing.assert_allclose(full["rgb"].numpy(), images[1] / 255.0, atol=1e-6)
    px = full["pixel"][10, 20]
    assert px.tolist() == [20.0, 10.0]
    _, d = ds.rays_for_pixels(torch.tensor([1]), px[:1], px[1:])
    assert torch.allclose(d[0], full["rays_d"][10, 20], atol=1e-6)
    half = ds.rays_at(1, resolution_level=2)
    assert half["rgb"].shape == (H // 2, W // 2, 3)
    assert half["pixel"][0, 0].tolist() == [0.5, 0.5]   # centre of the top-left 2x2 block
    np.testing.assert_allclose(half["rgb"][0, 0].numpy(), images[1, :2, :2].mean((0, 1)) / 255,
                               atol=1 / 255)


def test_near_far_from_sphere():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.2], [0.0, 5.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far = near_far_from_sphere(o, d)
    assert near.shape == far.shape == (3, 1)
    assert near[0].item() == pytest.approx(2.0) and far[0].item() == pytest.approx(4.0)
    assert near[1].item() == pytest.approx(MIN_NEAR) and far[1].item() == pytest.approx(0.8)
    assert far[2] - near[2] <= MIN_INTERVAL + 1e-6      # miss: degenerate interval
    near2, far2 = near_far_from_sphere(o[:1], d[:1], radius=2.0)
    assert near2.item() == pytest.approx(1.0) and far2.item() == pytest.approx(5.0)


def test_alpha_and_grey_images_load_as_rgb(scene):
    root, images, _ = scene
    rgba = np.concatenate([images[0][:, :, ::-1], np.full((H, W, 1), 7, np.uint8)], 2)
    cv2.imwrite(str(root / "image" / "000000.png"), rgba)
    cv2.imwrite(str(root / "image" / "000001.png"), images[1][:, :, 0])
    ds = DTUDataset(root)
    np.testing.assert_array_equal(ds.images[0].numpy(), images[0])
    np.testing.assert_array_equal(ds.images[1].numpy(), np.repeat(images[1][:, :, :1], 3, 2))


# ----------------------------------------------------------------------------- bad input
def _edit_npz(root, fn):
    path = root / "cameras_sphere.npz"
    cams = dict(np.load(path))
    fn(cams)
    np.savez(path, **cams)


def _set(cams, key, value):
    cams[key] = value


BAD_INPUTS = {
    "no folder": (lambda r: r.rename(r.parent / "gone"), "scene"),
    "no image dir": (lambda r: shutil.rmtree(r / "image"), "image"),
    "empty image dir": (lambda r: [p.unlink() for p in (r / "image").iterdir()], "image"),
    "no cameras": (lambda r: (r / "cameras_sphere.npz").unlink(), "cameras_sphere.npz"),
    "count mismatch": (lambda r: (r / "image" / "000002.png").unlink(), "world_mat"),
    "missing scale key": (lambda r: _edit_npz(r, lambda c: c.pop("scale_mat_1")), "scale_mat_1"),
    "index gap": (lambda r: _edit_npz(r, lambda c: _set(c, "world_mat_9", c.pop("world_mat_2"))),
                  "world_mat_2"),
    "corrupt image": (lambda r: (r / "image" / "000001.png").write_bytes(b"not a png"),
                      "000001.png"),
    "nan matrix": (lambda r: _edit_npz(r, lambda c: c["world_mat_1"].__setitem__((0, 0), np.nan)),
                   "world_mat_1"),
    "singular matrix": (lambda r: _edit_npz(r, lambda c: c["world_mat_2"].__setitem__(
        (slice(0, 3), 0), 0.0)), "world_mat_2"),
    "odd image size": (lambda r: cv2.imwrite(str(r / "image" / "000002.png"),
                                             np.zeros((H, W + 2, 3), np.uint8)), "000002.png"),
    "mask count": (lambda r: (r / "mask" / "001.png").unlink(), "mask"),
    "mask size": (lambda r: [cv2.imwrite(str(p), np.zeros((H // 2, W // 2), np.uint8))
                             for p in (r / "mask").iterdir()], "000.png"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_dataset_error(scene, case):
    root = scene[0]
    mutate, needle = BAD_INPUTS[case]
    mutate(root)
    with pytest.raises(DatasetError, match=needle.replace(".", r"\.")):
        DTUDataset(root)


# ----------------------------------------------------------------------------- real data
def test_real_dtu_scan(shared_dir):
    root = shared_dir / "data" / "dtu_scan65"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    ds = DTUDataset(root, downscale=4)
    assert ds.n_images == 49 and (ds.H, ds.W) == (150, 200)
    assert ds.images.shape == (49, 150, 200, 3) and ds.masks.shape == (49, 150, 200)
    centres = ds.poses[:, :3, 3]
    assert (centres.norm(dim=-1) > 1.0).all(), "a camera centre lies inside the unit sphere"
    to_origin = -centres / centres.norm(dim=-1, keepdim=True)
    assert (torch.sum(ds.poses[:, :3, 2] * to_origin, -1) > 0.9).all(), "a camera looks away"
    # the one-click prompt of view 0 (800x600 pixels) lands on the object mask
    (x, y), = json.loads((root / "anno_box.json").read_text())["frames"][0]["point"]
    u, v = round((x + 0.5) / 4 - 0.5), round((y + 0.5) / 4 - 0.5)
    assert ds.masks[0, v, u] == 1
    o, d = ds.rays_for_pixels(torch.tensor([0]), torch.tensor([float(u)]), torch.tensor([float(v)]))
    near, far = near_far_from_sphere(o, d)
    assert far - near > 0.5, "the prompt ray should cross the unit sphere"


# ----------------------------------------------------------------------------- synthetic round trip
def ray_mesh_distances(o: np.ndarray, d: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distances t > 0 at which the ray o + t d crosses triangles (F, 3, 3) (Moller-Trumbore;
    trimesh's ray module would need rtree)."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("fi,fi->f", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = o - tris[:, 0]
    a = np.einsum("fi,fi->f", s, p) * inv
    q = np.cross(s, e1)
    b = (q @ d) * inv
    t = np.einsum("fi,fi->f", e2, q) * inv
    return t[ok & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)]


def test_synthetic_scene_round_trip(tiny_scene):
    """gt target inside the unit sphere; the prompt ray of view 0 hits the gt target mesh and the
    hit point projects back onto the prompt pixel: K/pose agree with world_mat/scale_mat."""
    import trimesh

    ds = DTUDataset(tiny_scene)
    target = trimesh.load(tiny_scene / "gt" / "target.ply", force="mesh")
    unit = ds.to_unit(np.asarray(target.vertices))
    assert np.linalg.norm(unit, axis=1).max() < 1.0, "gt target leaves the unit sphere"
    prompt = json.loads((tiny_scene / "prompt.json").read_text())
    assert prompt["view"] == 0
    u, v = (float(c) for c in prompt["positive"][0])
    o, d = ds.rays_for_pixels(torch.tensor([0]), torch.tensor([u]), torch.tensor([v]))
    origin = ds.to_world(o[0].double().numpy())
    direction = ds.to_world(o[0].double().numpy() + d[0].double().numpy()) - origin
    direction /= np.linalg.norm(direction)
    t = ray_mesh_distances(origin, direction, np.asarray(target.triangles))
    assert len(t), "the prompt ray of view 0 misses the gt target mesh"
    first = origin + t.min() * direction
    np.testing.assert_allclose(ds.project(first[None], 0)[0], [u, v], atol=0.05)
