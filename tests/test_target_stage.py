"""Issue 16 part 1: the object-only target field, its occlusion-aware unknown pixels and its support plane.

(a) From a scene field that holds the exact scene (the table included), the target stage against the
    ground-truth target masks empties the table: the field's own surface keeps almost none of it, and
    the target mesh has no vertex in the table's slab away from the target, is watertight and one piece.
(b) The occlusion test on exact geometry (spheres in a room, a ring of cameras): the pixels where an
    occluder hides the target come out unknown; the room's wall and the occluder's other pixels do not,
    nor do the pixels behind which mid-air depths (of grazing rays) would hide.
(d) The occlusion test's reach on the `occluded` preset's exact geometry: target surface that no view
    sees (the snowman's back at the tower) hides behind its occluder too; the reach covers it and spreads
    over surfaces only.
The mesh's cut (hull, support plane) on exact geometry: tests/test_target_cut.py.
"""
import json
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from bench.target_cut_ab import cut_ab_pipeline, own_variant
from datasets.dtu import DTUDataset
from datasets.synthetic import exact_views, preset_views
from datasets.synthetic_presets import TABLE_THICKNESS_MM
from sam_utils.support_plane import to_world as plane_to_world
from sam_utils.target_geometry import OcclusionTest
from systems.outputs import extract_world_mesh
from systems.config import ConfigError
from systems.stages import LossWeights, RaySampler, TargetStage
from systems.target_supervision import target_constraints
from tests.exact_spheres import H, W, grown, settings
from tests.runs import make_run

TARGET_ITERS = 80          # target-stage iterations in (a)
PREFIT_STEPS = 150         # regression steps that put the exact scene into the field
SKIRT_PIXELS = 3           # a table vertex farther than this many pixel footprints from the target is a skirt
PLANE_PIXELS = 1.5         # the plane within this many pixel footprints of the table top: the surface this coarse
                           # a field renders lies up to a footprint above it, by the float rounding of its training
TABLE_LEFT = 0.02          # the object-only field keeps at most this share of the scene field's table surface
NEUS_STD = math.pi / math.sqrt(3.0)   # std of NeuS's logistic density is this / inv_s
OVERRIDES = ("train.save_every = 0", f"nto3d.target.iters = {TARGET_ITERS}", "nto3d.target.occlusion_level = 2")


def test_an_unknown_mesh_cut_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="nto3d.target.mesh_cut"):
        settings(mesh_cut="hul")
    with pytest.raises(ConfigError, match="nto3d.target.occlusion_reach"):
        settings(occlusion_reach=-0.1)
    with pytest.raises(ConfigError, match="nto3d.target.support_ring"):
        settings(support_ring=-1.0)


# ---------------------------------------------------------------- the stage's batches and losses
def test_target_batches_empty_the_outside_and_skip_unknown_pixels(tiny_scene):
    ds = DTUDataset(tiny_scene)
    masks = np.zeros((ds.n_images, ds.H, ds.W), bool)
    masks[:, 20:30, 40:50] = True
    unknown = np.zeros_like(masks)
    unknown[:, 20:30, 50:60] = True                     # beside the mask, inside its focus box
    w = LossWeights(color=1.0, eikonal=0.1, mask=0.1, instance=0.1)
    stage = TargetStage(RaySampler(ds, 4000, torch.Generator().manual_seed(0)), w, masks, unknown, settings(),
                        torch.zeros(3), focus_margin=0.5)
    b = stage.batch()
    u, v = b["pixel"][:, 0], b["pixel"][:, 1]
    focused = (u >= 35) & (u <= 54) & (v >= 15) & (v <= 34)
    assert focused[3000:].all() and focused[:3000].float().mean() < 0.25   # the last quarter near the target
    inside, hidden = b["target"][:, 0] > 0, b["known"][:, 0] == 0
    assert torch.equal(hidden, torch.from_numpy(unknown)[b["view"], v, u])
    assert torch.allclose(b["rgb"][~inside], b["background"][~inside])    # outside: the ray's own colour
    assert b["background"][~inside].std(0).min() > 0.2                   # random per ray
    assert stage.heads == ()                                              # no occupancy head for the hull cut
    out = {"color": b["rgb"].clone(), "opacity": b["target"].clone(), "eikonal": torch.tensor(0.0)}
    base = {k: float(v) for k, (_, v) in stage.losses(out, b).items()}
    out["color"][hidden], out["opacity"][hidden] = 1.0 - b["rgb"][hidden], 1.0 - b["target"][hidden]
    assert {k: float(v) for k, (_, v) in stage.losses(out, b).items()} == base   # unknown rays do not count
    out["opacity"][~hidden & ~inside] = 0.9                               # a surface in known empty space costs
    assert float(stage.losses(out, b)["mask"][1]) > base["mask"] + 0.5


# ---------------------------------------------------------------- (a) the object-only stage
def prefit_scene(model, scene, scale_mat: np.ndarray, steps: int, seed: int = 0) -> None:
    """Regress the SDF network onto the exact scene SDF (unit coordinates), half the points near surfaces."""
    g = torch.Generator().manual_seed(seed)
    s, t = float(scale_mat[0, 0]), torch.from_numpy(scale_mat[:3, 3])

    def exact(x):
        return (scene.sdf(x.double() * s + t) / s).float()[:, None]

    pool = torch.randn(32768, 3, generator=g)
    pool = pool / pool.norm(dim=1, keepdim=True) * torch.rand(len(pool), 1, generator=g) ** (1 / 3)
    near = pool[exact(pool)[:, 0].abs().argsort()[:8192]]
    pool = torch.cat([pool[:8192], near + 0.01 * torch.randn(near.shape, generator=g)])
    values = exact(pool)
    opt = torch.optim.Adam(model.sdf.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(len(pool), (4096,), generator=g)
        loss = (model.sdf.sdf(pool[idx]) - values[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def read_masks(folder) -> np.ndarray:
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127 for f in sorted(folder.glob("*.png"))])


def table_vertices(mesh, tree: cKDTree, top_z: float, tol: float) -> tuple[int, int]:
    """(vertices in the table's slab, of those farther than tol from the target's surface)."""
    z = mesh.vertices[:, 2]
    slab = (z > top_z - TABLE_THICKNESS_MM - tol) & (z < top_z + tol)
    far = tree.query(mesh.vertices[slab])[0] > tol if slab.any() else np.zeros(0, bool)
    return int(slab.sum()), int(far.sum())


@pytest.fixture(scope="module")
def object_only(tiny_scene, tmp_path_factory):
    """The target stage run from the exact scene field: (run, scene-field mesh, raw target-field mesh, target mesh)."""
    meta = json.loads((tiny_scene / "scene.json").read_text())
    r = make_run(tiny_scene, tmp_path_factory.mktemp("target"), *OVERRIDES, scene_only=False)
    p, ds = r.pipeline, r.pipeline.dataset
    scene = preset_views(meta["preset"], meta["n_views"], meta["width"], meta["height"], meta["seed"])[0]
    prefit_scene(p.model, scene, ds.scale_mat, PREFIT_STEPS)
    # the sharpness a trained field reaches: NeuS's kernel as wide as a pixel's footprint at the target
    gt = trimesh.load(tiny_scene / "gt" / "target.ply")
    centre = ds.to_unit(gt.vertices.mean(0))
    footprint = float(np.linalg.norm(ds.poses[0, :3, 3].numpy() - centre)) / float(ds.intrinsics[0, 0, 0])
    with torch.no_grad():
        p.model.variance.variance.fill_(math.log(NEUS_STD / footprint) / 10.0)
    scene_mesh = extract_world_mesh(p.model.sdf.sdf, ds.scale_mat, 64, 0.0, 1.0, 65536, "cpu")
    p.final = read_masks(tiny_scene / "gt" / "target_mask")
    p.unknown, p.support, _ = target_constraints(p.model, ds, p.final, p.n.target, p.n.target.depth_tol,
                                                 p.s.validate.render_chunk)
    # the target stage starts where a scene run ends: after the cos-anneal
    r.trainer.iteration = p.phase_start = p.s.train.cos_anneal_iters
    p.phase, p.stage = "target", p._stage_for("target")
    r.trainer.fit()
    raw = extract_world_mesh(p.model.sdf.sdf, ds.scale_mat, 64, 0.0, 1.0, 65536, "cpu")
    target = trimesh.load(p.write_mesh(r.trainer.iteration, resolution=64))
    skirt = SKIRT_PIXELS * footprint * float(ds.scale_mat[0, 0])     # world mm
    return SimpleNamespace(run=r, scene_mesh=scene_mesh, raw=raw, target=target, gt=gt, skirt=skirt,
                           top=meta["ground_top_z"], visible=trimesh.load(tiny_scene / "gt" / "target_visible.ply"))


def test_the_object_only_field_empties_the_table(object_only):
    o = object_only
    tree = cKDTree(o.gt.sample(50000, seed=0))
    _, before = table_vertices(o.scene_mesh, tree, o.top, o.skirt)
    _, after = table_vertices(o.raw, tree, o.top, o.skirt)
    assert before > 0, "the scene field must start with the table in it"
    assert after <= TABLE_LEFT * before, f"the target field keeps {after} of the table's {before} vertices"


def test_the_target_mesh_has_no_skirt_and_is_one_watertight_piece(object_only):
    o = object_only
    tree = cKDTree(o.gt.sample(50000, seed=0))
    slab, far = table_vertices(o.target, tree, o.top, o.skirt)
    assert far == 0, f"{far} of the target mesh's {slab} vertices in the table's slab lie > {o.skirt:.1f} mm from it"
    assert o.target.is_watertight
    assert len(o.target.split(only_watertight=False)) == 1
    # the target itself survived: its visible surface lies near the mesh
    d = cKDTree(o.target.vertices).query(np.asarray(o.visible.vertices))[0]
    assert np.mean(d < o.skirt) > 0.9


def test_the_cut_ab_meshes_the_runs_own_fields(object_only, tmp_path):
    """bench/target_cut_ab.py: its variant of the run's own cut (the fill: a plane was found) is the run's target
    mesh vertex for vertex, so its other variants are measured on the same fields."""
    p = object_only.run.pipeline
    ab = cut_ab_pipeline(p, tmp_path, resolution=64)
    assert own_variant(p) == "fill" and ab["fill"]["vertices"] == len(object_only.target.vertices)
    mesh = trimesh.load(tmp_path / "target_fill.ply", process=False)
    assert np.allclose(mesh.vertices, object_only.target.vertices)
    assert ab["none"]["vertices"] != ab["fill"]["vertices"]             # the plane cut the table's remnant away


def test_a_resumed_run_keeps_the_unknown_pixels(object_only, tiny_scene):
    p = object_only.run.pipeline
    again = make_run(tiny_scene, object_only.run.exp_dir, *OVERRIDES, is_continue=True, scene_only=False).pipeline
    assert again.phase == "done" and p.unknown is not None
    assert np.array_equal(again.unknown, p.unknown) and np.array_equal(again.final, p.final)
    assert p.support is not None and np.array_equal(again.support, p.support)


def test_the_support_plane_is_the_table_top(object_only):
    """Fitted to the exact scene field's surface around the masks: the table's top, the cameras above it."""
    o = object_only
    ds, plane = o.run.pipeline.dataset, o.run.pipeline.support
    s, t = float(ds.scale_mat[0, 0]), ds.scale_mat[:3, 3]
    assert plane[2] > 0.995, f"normal {plane[:3]} is not the table's (+z)"
    centre = o.gt.vertices.mean(0)
    on_top = (np.array([centre[0], centre[1], o.top]) - t) / s
    off = PLANE_PIXELS * o.skirt / SKIRT_PIXELS
    assert off < TABLE_THICKNESS_MM                                      # the top, not the table's bottom
    assert abs(on_top @ plane[:3] + plane[3]) * s < off, "the plane lies off the table top"
    world = plane_to_world(plane, np.asarray(ds.scale_mat))              # the report's plane, in millimetres
    X = np.random.default_rng(0).normal(scale=50.0, size=(20, 3)) + centre
    assert np.allclose(X @ world[:3] + world[3], s * ((X - t) / s @ plane[:3] + plane[3]))
    assert abs(world[3] / world[2] + o.top) < off                        # z = the table top


# ---------------------------------------------------------------- (b) exact geometry: spheres, a room, a ring
def test_occluded_target_pixels_are_unknown_and_the_rest_is_not(spheres):
    s = spheres
    grow = 1
    test = OcclusionTest(torch.from_numpy(s.points), torch.ones(s.first.shape, dtype=torch.bool), s.P, (H, W), 0.02)
    unknown = test.occluded(s.target, grow).numpy()
    hidden = (s.first == 1) & s.meets                   # the occluder in front of the target
    assert hidden[0].sum() > 50, "the construction must hide part of the target in view 0"
    for v in range(len(s.P)):
        assert not (unknown[v] & s.target[v]).any()     # the target's own pixels stay target
        if hidden[v].sum() > 20:
            assert (unknown[v] & hidden[v]).sum() >= 0.8 * hidden[v].sum(), f"view {v}: occluded target missed"
        # the wall and the occluder's other pixels are known (beyond the growth at the region's edge)
        assert not (unknown[v] & ~grown(hidden[v], grow + 1)).any(), f"view {v}: unknown pixels off the occlusion"


def test_mid_air_depths_in_a_mask_make_no_unknown_pixels(spheres):
    """Mixed depths of grazing rays put one view's "target" points in mid-air (here beyond the target, up
    to the room's wall): no other view sees them, so they hide behind nothing."""
    s = spheres
    points = s.points.copy()
    eye = s.poses[2][:3, 3]
    inner = cv2.erode(s.target[2].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    pick = np.zeros_like(inner)
    pick[tuple(a[::3] for a in np.nonzero(inner))] = True
    points[2][pick] = eye + 2.0 * (points[2][pick] - eye)
    grow = 1
    test = OcclusionTest(torch.from_numpy(points), torch.ones(s.first.shape, dtype=torch.bool), s.P, (H, W), 0.02)
    unknown = test.occluded(s.target, grow).numpy()
    hidden = (s.first == 1) & s.meets
    for v in range(len(s.P)):
        assert not (unknown[v] & ~grown(hidden[v], grow + 1)).any(), f"view {v}: unknown pixels off the occlusion"
    assert (unknown[0] & hidden[0]).sum() >= 0.8 * hidden[0].sum()


# ---------------------------------------------------------------- (d) the occlusion test's reach
REACH = 4                  # grid pixels at 100x75 (synthetic.conf's 0.03 of the width would be 3)


@pytest.fixture(scope="module")
def occluded_preset():
    """The occlusion test on the `occluded` preset's exact surfaces (24 views 100x75), the visible target and
    its occluded pixels."""
    w, h = 100, 75
    e = exact_views("occluded", 24, w, h)
    test = OcclusionTest(torch.from_numpy(e.points).double(), torch.from_numpy(e.hit), e.P, (h, w), 0.02)
    return SimpleNamespace(test=test, target=e.visible, hidden=e.silhouette & ~e.visible, surface=e.hit)


def test_the_reach_covers_target_surface_no_view_sees(occluded_preset):
    s = occluded_preset
    before = s.test.occluded(torch.from_numpy(s.target), 0).numpy()
    after = s.test.occluded(torch.from_numpy(s.target), 0, REACH).numpy()
    share = lambda u: (u & s.hidden).sum() / s.hidden.sum()    # noqa: E731
    assert s.hidden.sum() > 500
    assert share(before) < 0.5, "the construction must hide target surface that no view sees"
    assert share(after) >= 0.9, f"occluded target pixels covered: {share(before):.3f} -> {share(after):.3f}"
    added = after & ~before
    assert not (added & s.target).any()
    assert not (added & ~s.surface).any(), "the reach spread over pixels that show no surface (background)"
    near = np.stack([grown(b, REACH) for b in before])
    assert not (added & ~near).any(), "the reach went farther than its pixels"
