"""Synthetic scenes: layout, determinism, camera convention and ground-truth consistency."""
import json
import math

import cv2
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from datasets.sdf_primitives import Capsule, Cylinder, Parts, RoundBox, SmoothUnion, Sphere, Torus, rotation_matrix
from datasets.sphere_tracer import HIT_EPS_PIXELS, LOOSE_HIT_PIXELS, cpu_threads, render_view
from datasets.synthetic import PART_DIR, PRESETS, make_scene
from datasets.synthetic_cameras import DISTANCE_IN_RADII, Camera, focal_for_sphere
from datasets.synthetic_presets import LAMP_POLE_RADIUS_MM, build_preset
from tests.oracles import PartOracle

SMALL = dict(n_views=6, width=80, height=60, gt_resolution=48)  # fast scenes for per-preset checks
CONTACT_GRID_MM = 0.75 # grid spacing used to find target/distractor overlap (overlaps are ~1.5 mm deep)
# Share of view 0 covered by the target (and by any surface) per preset; the others: SMALL_TARGET, FOREGROUND.
SMALL_TARGET, FOREGROUND = (0.01, 0.3), (0.2, 0.9)
FRAME = {"twotone": ((0.3, 0.7), FOREGROUND), "border": ((0.15, 0.6), (0.5, 1.0))}


def _read_gray(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"cannot read {path}"
    return img


def _cameras(scene_dir):
    return dict(np.load(scene_dir / "cameras_sphere.npz"))


def _project(world_mat, pts):
    """Pixels (N,2) and camera depths (N,) of world points (N,3) under a 4x4 world_mat."""
    h = np.c_[pts, np.ones(len(pts))] @ world_mat[:3].T
    return h[:, :2] / h[:, 2:3], h[:, 2]


def _camera_from_world_mat(world_mat):
    return Camera.from_world_mat(world_mat)


@pytest.fixture(scope="module")
def preset_scenes(tmp_path_factory):
    """Every preset at a small size: {preset: out_dir}."""
    root = tmp_path_factory.mktemp("presets")
    return {p: make_scene(p, root / p, seed=0, **SMALL) for p in PRESETS}


def test_primitive_sdfs_are_exact_at_known_points():
    p = torch.tensor([[0.0, 0.0, 0.0], [13.0, 0.0, 0.0], [0.0, 0.0, 30.0]])
    assert torch.allclose(Sphere((0, 0, 0), 10).sdf(p), torch.tensor([-10.0, 3.0, 20.0]))
    box = RoundBox((0, 0, 0), (10, 20, 5), rounding=1, rotation=rotation_matrix(90))  # long side along x now
    assert torch.allclose(box.sdf(torch.tensor([[25.0, 0, 0], [0, 15.0, 0]])), torch.tensor([5.0, 5.0]), atol=1e-5)
    cyl = Cylinder((0, 0, 0), 10, 5)
    assert torch.allclose(cyl.sdf(p), torch.tensor([-5.0, 3.0, 25.0]))
    assert torch.allclose(Torus((0, 0, 0), 20, 5).sdf(torch.tensor([[20.0, 0, 0], [0, 0, 0]])),
                          torch.tensor([-5.0, 15.0]))
    cap = Capsule((0, 0, 0), (0, 0, 10), 2)
    assert torch.allclose(cap.sdf(torch.tensor([[5.0, 0, 5], [0, 0, 15]])), torch.tensor([3.0, 3.0]))
    blend = SmoothUnion([Sphere((-5, 0, 0), 6), Sphere((5, 0, 0), 6)], k=4)
    assert blend.sdf(torch.tensor([[0.0, 6.0, 0.0]])).item() < min(s.sdf(torch.tensor([[0.0, 6.0, 0.0]])).item()
                                                                  for s in blend.shapes)
    parts = Parts({"left": Sphere((-5, 0, 0), 6), "right": Sphere((5, 0, 0), 6)})  # hard union, exact parts
    q = torch.tensor([[-7.0, 0.0, 0.0], [0.5, 0.0, 0.0], [12.0, 0.0, 0.0]])
    assert torch.allclose(parts.sdf(q), torch.tensor([-4.0, -1.5, 1.0])) and parts.part_of(q).tolist() == [0, 1, 1]


def test_layout_is_complete(tiny_scene):
    meta = json.loads((tiny_scene / "scene.json").read_text())
    n = meta["n_views"]
    cams = _cameras(tiny_scene)
    for i in range(n):
        for key in ("world_mat", "scale_mat", "camera_mat"):
            assert cams[f"{key}_{i}"].shape == (4, 4) and cams[f"{key}_{i}"].dtype == np.float64
    assert sum(k.startswith("world_mat_") and k[10:].isdigit() for k in cams) == n
    for sub in ("image", "mask", "gt/target_mask"):
        assert sorted(p.name for p in (tiny_scene / sub).iterdir()) == [f"{i:03d}.png" for i in range(n)]
    img = cv2.imread(str(tiny_scene / "image" / "000.png"))
    assert img.shape == (meta["height"], meta["width"], 3) and img.dtype == np.uint8
    mask = _read_gray(tiny_scene / "mask" / "000.png")
    assert mask.shape == (meta["height"], meta["width"]) and set(np.unique(mask)) == {0, 255}
    assert np.all(img[mask == 0] == 0), "background pixels must be BACKGROUND (black)"
    for name in ("scene.ply", "target.ply", "scene_visible.ply", "target_visible.ply"):
        assert (tiny_scene / "gt" / name).stat().st_size > 0
    assert meta["units"] == "mm" and sum(o["is_target"] for o in meta["objects"]) == 1
    assert len(meta["objects"]) >= 4  # table + target + at least two distractors


def test_world_mat_decomposes_to_the_focal_used(tiny_scene):
    meta = json.loads((tiny_scene / "scene.json").read_text())
    cams = _cameras(tiny_scene)
    r = meta["sphere_radius"]
    want = focal_for_sphere(r, DISTANCE_IN_RADII * r, meta["height"])
    assert meta["focal"] == pytest.approx(want)
    look_at = np.array(meta["look_at"])
    for i in range(meta["n_views"]):
        cam = _camera_from_world_mat(cams[f"world_mat_{i}"])
        assert cam.K[0, 0] == pytest.approx(want, rel=1e-6) and cam.K[1, 1] == pytest.approx(want, rel=1e-6)
        assert cam.K[0, 2] == pytest.approx((meta["width"] - 1) / 2) and cam.K[1, 2] == pytest.approx(
            (meta["height"] - 1) / 2)
        assert np.linalg.norm(cam.center - look_at) == pytest.approx(DISTANCE_IN_RADII * r, rel=1e-6)
        elevation = math.degrees(math.asin((cam.center[2] - look_at[2]) / (DISTANCE_IN_RADII * r)))
        assert 19.0 <= elevation <= 71.0
        pix, depth = _project(cams[f"world_mat_{i}"], look_at[None])  # look-at point: image centre, in front
        assert depth[0] > 0 and np.allclose(pix[0], [(meta["width"] - 1) / 2, (meta["height"] - 1) / 2], atol=1e-6)


def test_scale_mat_sphere_encloses_scene_and_cameras_are_outside(tiny_scene):
    cams = _cameras(tiny_scene)
    scale = cams["scale_mat_0"]
    assert all(np.array_equal(scale, cams[k]) for k in cams if k.startswith("scale_mat_") and "inv" not in k)
    mesh = trimesh.load(tiny_scene / "gt" / "scene.ply")
    unit = (np.c_[mesh.vertices, np.ones(len(mesh.vertices))] @ np.linalg.inv(scale).T)[:, :3]
    radius = np.linalg.norm(unit, axis=1).max()
    assert 0.85 < radius < 0.97, "the unit sphere should hold the whole scene with ~5% margin"
    for i in range(json.loads((tiny_scene / "scene.json").read_text())["n_views"]):
        cam = _camera_from_world_mat(cams[f"world_mat_{i}"] @ scale)  # NeuS: P = world_mat @ scale_mat
        assert np.linalg.norm(cam.center) > 1.5


def test_scene_is_dtu_sized_and_meshes_are_watertight(tiny_scene):
    scene = trimesh.load(tiny_scene / "gt" / "scene.ply")
    target = trimesh.load(tiny_scene / "gt" / "target.ply")
    for mesh in (scene, target):
        assert mesh.is_watertight and mesh.volume > 0
    ext = scene.bounds[1] - scene.bounds[0]
    assert 300 <= ext[:2].max() <= 400 and scene.bounds[0, 2] == pytest.approx(-10.0, abs=1.0)
    across = (target.bounds[1] - target.bounds[0]).max()
    assert 80 <= across <= 150
    assert target.bounds[0, 2] < 0.5, "the target stands on the table (top at z = 0)"


def test_prompt_lies_on_target_of_view0(tiny_scene):
    prompt = json.loads((tiny_scene / "prompt.json").read_text())
    anno = json.loads((tiny_scene / "anno_box.json").read_text())
    tmask = _read_gray(tiny_scene / "gt" / "target_mask" / "000.png") > 0
    (x, y), = prompt["positive"]
    assert prompt["view"] == 0 and prompt["negative"] == [] and tmask[y, x]
    rows, cols = np.nonzero(tmask)
    assert prompt["box"] == [cols.min(), rows.min(), cols.max(), rows.max()]
    frame, = anno["frames"]
    assert frame == {"index": 0, "point": [[x, y]], "label": [1], "box": prompt["box"]}
    dist = cv2.distanceTransform(np.pad(tmask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    assert dist[y, x] == pytest.approx(dist.max(), abs=0.5), "click should be the most interior pixel"


def test_target_masks_visible_in_most_views_and_inside_foreground(tiny_scene):
    n = json.loads((tiny_scene / "scene.json").read_text())["n_views"]
    counts = []
    for i in range(n):
        tmask = _read_gray(tiny_scene / "gt" / "target_mask" / f"{i:03d}.png") > 0
        fg = _read_gray(tiny_scene / "mask" / f"{i:03d}.png") > 0
        assert not np.any(tmask & ~fg)
        counts.append(tmask.sum())
    assert np.mean(np.array(counts) > 0) >= 0.75


def test_rendered_hits_lie_on_gt_target_and_reproject_to_their_pixels(tiny_scene):
    """Rays built from the saved world_mat (K^-1 (u, v, 1)) hit the gt target exactly where target_mask says."""
    meta = json.loads((tiny_scene / "scene.json").read_text())
    scene, _ = build_preset(meta["preset"], meta["seed"])
    world_mat = _cameras(tiny_scene)["world_mat_0"]
    view = render_view(scene, _camera_from_world_mat(world_mat), meta["width"], meta["height"],
                       meta["sphere_center"], meta["sphere_radius"], "cpu")
    tmask = _read_gray(tiny_scene / "gt" / "target_mask" / "000.png") > 0
    assert np.sum((view.object_id == meta["target_index"]) != tmask) <= 2  # decomposition round-off only
    rows, cols = np.nonzero(tmask & (view.object_id == meta["target_index"]))
    pts = view.points[rows, cols].astype(np.float64)
    pix, depth = _project(world_mat, pts)
    assert np.abs(pix - np.c_[cols, rows]).max() < 0.02
    assert np.allclose(depth, view.depth[rows, cols], rtol=1e-5)
    footprint = depth / meta["focal"]  # (N,) mm per pixel at each hit
    sdf = scene.sdf(torch.as_tensor(pts, dtype=torch.float32), only=meta["target_index"]).abs().numpy()
    assert np.all(sdf <= LOOSE_HIT_PIXELS * footprint) and np.median(sdf / footprint) <= HIT_EPS_PIXELS
    mesh = trimesh.load(tiny_scene / "gt" / "target.ply")
    voxel = (mesh.bounds[1] - mesh.bounds[0]).max() / (meta["gt_resolution"] - 1)
    dist, _ = cKDTree(mesh.vertices).query(pts)  # mesh vertices are <= ~voxel/2 apart on the surface
    assert np.all(dist - sdf < voxel)


def test_visible_points_project_into_masks(tiny_scene):
    meta = json.loads((tiny_scene / "scene.json").read_text())
    cams = _cameras(tiny_scene)
    pts = np.asarray(trimesh.load(tiny_scene / "gt" / "target_visible.ply").vertices)
    scene_pts = np.asarray(trimesh.load(tiny_scene / "gt" / "scene_visible.ply").vertices)
    assert 0 < len(pts) < len(scene_pts) <= 200_000
    seen = np.zeros(len(pts), dtype=bool)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(meta["n_views"]):
        tmask = cv2.dilate(_read_gray(tiny_scene / "gt" / "target_mask" / f"{i:03d}.png"), kernel) > 0
        pix, depth = _project(cams[f"world_mat_{i}"], pts)
        uv = np.round(pix).astype(int)
        ok = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < meta["width"]) & (uv[:, 1] >= 0) & (uv[:, 1] < meta["height"])
        seen[ok] |= tmask[uv[ok, 1], uv[ok, 0]]
    assert seen.mean() > 0.99
    assert pts[:, 2].min() > -0.5, "target points seen from above the table never lie below its top"


def test_same_arguments_give_identical_files_and_seed_changes_them(tmp_path):
    dirs = [make_scene("easy", tmp_path / name, seed=seed, n_views=3, width=64, height=48, gt_resolution=24)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*") if p.is_file())
    for rel in files:
        assert (dirs[0] / rel).read_bytes() == (dirs[1] / rel).read_bytes(), f"{rel} differs between runs"
    assert (dirs[0] / "image/000.png").read_bytes() != (dirs[2] / "image/000.png").read_bytes()


def test_presets_build_differ_and_frame_the_target(preset_scenes):
    images = {}
    for preset, out in preset_scenes.items():
        meta = json.loads((out / "scene.json").read_text())
        assert meta["preset"] == preset
        images[preset] = cv2.imread(str(out / "image" / "000.png"))
        (t_lo, t_hi), (f_lo, f_hi) = FRAME.get(preset, (SMALL_TARGET, FOREGROUND))
        frac = (_read_gray(out / "gt" / "target_mask" / "000.png") > 0).mean()
        assert t_lo < frac < t_hi, f"{preset}: target covers {frac:.3f} of view 0"
        fg = (_read_gray(out / "mask" / "000.png") > 0).mean()
        assert f_lo < fg <= f_hi, f"{preset}: scene covers {fg:.3f} of view 0"
        assert (out / PART_DIR).is_dir() == bool(meta["target_parts"]), preset
    for a in PRESETS:
        for b in PRESETS:
            if a < b:
                assert not np.array_equal(images[a], images[b]), f"presets {a} and {b} render the same"


@pytest.mark.parametrize("preset", ["occluded", "lookalike"])
def test_touching_presets_have_a_distractor_in_contact_with_the_target(preset):
    """A grid point inside both the target and a distractor exists (the solids overlap) for some distractor."""
    scene, _ = build_preset(preset, 0)
    t_lo, t_hi = scene.target.shape.aabb()
    touching, separated = [], []
    for i, obj in enumerate(scene.objects):
        if obj.is_target or obj.name == "table":
            continue
        lo, hi = obj.shape.aabb()
        lo, hi = np.maximum(lo, t_lo), np.minimum(hi, t_hi)  # boxes' overlap
        if np.any(hi <= lo):
            separated.append(obj.name)
            continue
        axes = [torch.arange(lo[a], hi[a], CONTACT_GRID_MM, dtype=torch.float32) for a in range(3)]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        with cpu_threads(pts.device):
            both = (scene.sdf(pts, only=scene.target_index) < 0) & (scene.sdf(pts, only=i) < 0)
        (touching if bool(both.any()) else separated).append(obj.name)
    assert touching, f"{preset}: no distractor touches the target"
    assert separated, f"{preset}: expected a separated distractor too"


def test_thin_preset_target_has_a_thin_pole(preset_scenes):
    mesh = trimesh.load(preset_scenes["thin"] / "gt" / "target.ply")
    mid = mesh.vertices[(mesh.vertices[:, 2] > 40) & (mesh.vertices[:, 2] < 80)]
    spread = (mid[:, :2].max(axis=0) - mid[:, :2].min(axis=0)).max()
    assert 1.5 * LAMP_POLE_RADIUS_MM < spread < 3.0 * LAMP_POLE_RADIUS_MM


def test_rerun_with_fewer_views_leaves_no_stale_views(tmp_path):
    make_scene("easy", tmp_path, n_views=4, width=64, height=48, gt_resolution=16)
    make_scene("easy", tmp_path, n_views=2, width=64, height=48, gt_resolution=16)
    for sub in ("image", "mask", "gt/target_mask"):
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == ["000.png", "001.png"]


def test_bad_preset_is_rejected_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="easy"):
        make_scene("hard", tmp_path / "x", n_views=2, width=32, height=24)



def test_every_preset_writes_the_ground_truth_layout(preset_scenes):
    """Per-view images and gt masks, watertight gt meshes, a target standing on the table, a prompt on it."""
    for preset, out in preset_scenes.items():
        n = json.loads((out / "scene.json").read_text())["n_views"]
        for sub in ("image", "mask", "gt/target_mask"):
            assert sorted(p.name for p in (out / sub).iterdir()) == [f"{i:03d}.png" for i in range(n)], (preset, sub)
        target = trimesh.load(out / "gt" / "target.ply")
        assert target.is_watertight and target.volume > 0 and target.bounds[0, 2] < 0.5, preset
        assert len(trimesh.load(out / "gt" / "target_visible.ply").vertices) > 0, preset
        (x, y), = json.loads((out / "prompt.json").read_text())["positive"]
        assert _read_gray(out / "gt" / "target_mask" / "000.png")[y, x] > 0, preset


def test_twotone_target_has_two_parts_of_strongly_different_colours(preset_scenes):
    out = preset_scenes["twotone"]
    meta = json.loads((out / "scene.json").read_text())
    assert meta["target_parts"] == ["walls", "roof"]
    colours, both = {1: [], 2: []}, 0
    for i in range(meta["n_views"]):
        parts = _read_gray(out / PART_DIR / f"{i:03d}.png")
        tmask = _read_gray(out / "gt" / "target_mask" / f"{i:03d}.png") > 0
        assert set(np.unique(parts)) <= {0, 1, 2} and np.array_equal(parts > 0, tmask)
        rgb = cv2.cvtColor(cv2.imread(str(out / "image" / f"{i:03d}.png")), cv2.COLOR_BGR2RGB)
        for k in colours:
            colours[k].append(rgb[parts == k])
        both += min((parts == 1).sum(), (parts == 2).sum()) >= 0.15 * tmask.sum()
    assert both == meta["n_views"], "each part should be a large share of the target in every view"
    walls, roof = (np.concatenate(colours[k]).astype(np.float64).mean(axis=0) for k in (1, 2))
    assert walls[0] > 2 * walls[1] and np.ptp(roof) < 15, (walls, roof)     # red walls, grey roofs
    assert np.linalg.norm(walls - roof) > 60


def test_twotone_prompt_view_misses_much_of_the_walls(preset_scenes):
    """Of the walls' surface seen by some view, a large share is hidden from view 0 (behind the house)."""
    out = preset_scenes["twotone"]
    meta = json.loads((out / "scene.json").read_text())
    scene, _ = build_preset("twotone", meta["seed"])
    pts = np.asarray(trimesh.load(out / "gt" / "target_visible.ply").vertices)
    walls = scene.target.shape.part_of(torch.as_tensor(pts, dtype=torch.float32)).numpy() == 0
    world_mat = _cameras(out)["world_mat_0"]
    view = render_view(scene, _camera_from_world_mat(world_mat), meta["width"], meta["height"],
                       meta["sphere_center"], meta["sphere_radius"], "cpu")
    pix, depth = _project(world_mat, pts[walls])
    uv = np.clip(np.round(pix).astype(int), 0, [meta["width"] - 1, meta["height"] - 1])
    seen = view.hit[uv[:, 1], uv[:, 0]] & (np.abs(view.depth[uv[:, 1], uv[:, 0]] - depth) < 10.0)
    assert walls.mean() > 0.2 and 0.05 < seen.mean() < 0.7, (walls.mean(), seen.mean())
    in_memory = PartOracle.from_renders(scene, [view], part_views=[0])          # the same parts as on disk
    assert np.sum(in_memory.part[0] != (_read_gray(out / PART_DIR / "000.png") == 2)) <= 2


def test_part_oracle_answers_with_the_roof_in_its_views(preset_scenes):
    out = preset_scenes["twotone"]
    oracle = PartOracle.from_scene(out)
    for v in range(SMALL["n_views"]):
        labels = _read_gray(out / PART_DIR / f"{v:03d}.png")
        mask = oracle.predict(v, None, None).mask
        if v % 2:
            assert oracle.kind(v) == "part" and np.array_equal(mask, labels == 2)
            assert mask.any() and (labels == 1).sum() > 0.15 * (labels > 0).sum()   # a strict part of the target
        else:
            assert oracle.kind(v) == "whole" and np.array_equal(mask, labels > 0)
    with pytest.raises(ValueError, match="twotone"):
        PartOracle.from_scene(preset_scenes["easy"])


def test_border_target_crosses_the_image_border_in_most_views(preset_scenes):
    def crosses(out, i):
        m = _read_gray(out / "gt" / "target_mask" / f"{i:03d}.png") > 0
        return m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()

    n = SMALL["n_views"]
    assert sum(crosses(preset_scenes["border"], i) for i in range(n)) >= n // 2 + 1
    assert not any(crosses(preset_scenes["easy"], i) for i in range(n))     # the small-target presets never do
