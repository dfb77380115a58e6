"""Issue 16: the target mesh's cut, on exact geometry (tests/exact_spheres.py).

(c) The hull cut removes a blob outside the masks' visual hull, and keeps an occluded part of the target
    when the unknown pixels join the masks.
(e) The support plane: the plane the target rests on closes its mesh flat; the plane is fitted only
    where the surface around the masks is one, with the cameras above it and the target too; on the
    presets' exact surfaces it is their table top.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.synthetic import exact_views, preset_views
from sam_utils.support_plane import support_plane
from systems.outputs import extract_world_mesh
from systems.target_supervision import target_sdf_fn
from tests.exact_spheres import TARGET, settings


# ---------------------------------------------------------------- (c) the hull cut
def cut_mesh(spheres, final, unknown, blob, cut: bool = True, **kw):
    """Target mesh of the exact SDF of the target sphere + a blob, cut by the masks' hull (no
    largest-component step); kw: target_sdf_fn's t (settings) and support."""
    def spheres_sdf(x):
        d = [torch.linalg.norm(x - torch.as_tensor(c, dtype=x.dtype), dim=-1, keepdim=True) - r for c, r in
             (TARGET, blob)]
        return torch.minimum(*d)

    model = SimpleNamespace(sdf=SimpleNamespace(sdf=spheres_sdf))
    intr = np.tile(np.eye(4), (len(spheres.P), 1, 1))
    intr[:, :3, :3] = spheres.K
    ds = SimpleNamespace(intrinsics=torch.from_numpy(intr), poses=torch.from_numpy(spheres.poses), device="cpu")
    res = 64
    fn = target_sdf_fn(model, ds, final, unknown, kw.pop("t", settings()), 2.0 / res, **kw) if cut else spheres_sdf
    return extract_world_mesh(fn, np.eye(4), res, 0.0, 1.0, 65536, "cpu"), res


def test_the_hull_cut_removes_a_blob_outside_the_masks(spheres):
    s = spheres
    blob = (np.array([0.0, 0.8, 0.0]), 0.15)          # beside the target: outside its silhouette in side views
    full = s.target | ((s.first == 1) & s.meets)       # the target's whole silhouettes
    uncut, _ = cut_mesh(s, full, None, blob, cut=False)
    assert len(uncut.split(only_watertight=False)) == 2
    mesh, res = cut_mesh(s, full, None, blob)
    assert len(mesh.split(only_watertight=False)) == 1 and mesh.is_watertight
    r = np.linalg.norm(mesh.vertices - TARGET[0], axis=1)
    assert np.abs(r - TARGET[1]).max() < 2.0 * 2.0 / res        # only the target sphere, whole


def test_the_hull_keeps_the_occluded_target_when_the_unknown_pixels_join_the_masks(spheres):
    s = spheres
    no_blob = (np.array([0.0, 0.0, 3.0]), 0.01)
    hidden = (s.first == 1) & s.meets
    cut, res = cut_mesh(s, s.target, None, no_blob)                 # the occluded part is cut away
    kept, _ = cut_mesh(s, s.target, hidden, no_blob)
    volume = 4 / 3 * math.pi * TARGET[1] ** 3
    assert cut.volume < 0.95 * volume
    r = np.linalg.norm(kept.vertices - TARGET[0], axis=1)
    assert np.abs(r - TARGET[1]).max() < 2.0 * 2.0 / res and kept.volume > 0.95 * volume


# ---------------------------------------------------------------- (e) the support plane
def test_the_support_plane_closes_the_mesh_flat_and_drops_what_lies_below(spheres):
    s = spheres
    full = s.target | ((s.first == 1) & s.meets)
    below = (np.array([0.0, 0.0, -0.45]), 0.25)         # a blob reaching under the plane, inside the hull
    plane = np.array([0.0, 0.0, 1.0, 0.2])              # z = -0.2, the cameras above it
    mesh, res = cut_mesh(s, full, None, below, support=plane)
    z = mesh.vertices[:, 2]
    assert z.min() > -0.2 - 1.5 * 2.0 / res
    bottom = mesh.vertices[np.abs(z + 0.2) < 2.0 / res]
    assert np.linalg.norm(bottom[:, :2], axis=1).max() > 0.4, "the sphere's section at the plane must close it"
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1


def test_a_support_plane_needs_a_plane_below_the_target_and_every_camera_above():
    rng = np.random.default_rng(0)
    n, h, w = 4, 40, 40
    masks = np.zeros((n, h, w), bool)
    masks[:, 15:25, 15:25] = True
    points = np.empty((n, h, w, 3))
    points[..., :2] = rng.uniform(-0.5, 0.5, (n, h, w, 2))
    points[..., 2] = 0.1 + rng.normal(0, 1e-3, (n, h, w))              # the table at z = 0.1
    clutter = rng.random((n, h, w)) < 0.2
    points[clutter, 2] = rng.uniform(0.2, 0.6, clutter.sum())          # other objects around
    points[masks, 2] = rng.uniform(0.12, 0.4, masks.sum())             # the target, above the table
    valid, unknown = np.ones((n, h, w), bool), np.zeros((n, h, w), bool)
    above = np.array([[1.0, 0, 2.0], [-1.0, 0, 2.0], [0, 1.0, 1.5], [0, -1.0, 1.5]])
    fit = support_plane(points, valid, masks, unknown, above, 12, 0.005)
    plane = fit.plane
    assert "holding" in fit.why and plane is not None and plane[2] > 0.999 and abs(plane[3] + 0.1) < 2e-3
    below = support_plane(points, valid, masks, unknown, above * [1, 1, -1], 12, 0.005)   # seen from below
    assert below.plane is None and "100.0% of the target's own surface under it" in below.why   # flipped to the cameras
    both = support_plane(points, valid, masks, unknown, np.vstack([above, [[0, 0, -1.0]]]), 12, 0.005)
    assert both.plane is None and "1 of 5 cameras on or under it" in both.why
    sunk = points.copy()
    sunk[masks, 2] -= 0.2                                              # the "plane" cuts through the target
    through = support_plane(sunk, valid, masks, unknown, above, 12, 0.005)
    assert through.plane is None and "of the target's own surface under it" in through.why
    scattered = points.copy()
    scattered[..., 2] = rng.uniform(0.0, 0.6, (n, h, w))               # no plane around the target
    scattered[masks, 2] = 0.7
    none = support_plane(scattered, valid, masks, unknown, above, 12, 0.005)
    assert none.plane is None and "(needs 25%)" in none.why
    empty = support_plane(points, ~valid, masks, unknown, above, 12, 0.005)   # background only
    assert empty.plane is None and empty.why.startswith("0 surface points around the masks")


@pytest.mark.parametrize("preset", ["twotone", "border", "occluded"])
def test_the_support_plane_of_the_exact_scenes_is_their_table_top(preset):
    """On a preset's exact surfaces (sphere-traced, 12 views 100x75) the plane is the table top, z = 0 mm: the
    house's large footprint (twotone), a target cut by the frame (border), an occluder beside it (occluded)."""
    n, w, h = 12, 100, 75
    e = exact_views(preset, n, w, h)
    radius = preset_views(preset, n, w, h, 0, "cpu")[3]
    centres = np.stack([-np.linalg.solve(p[:, :3], p[:, 3]) for p in e.P])
    plane = support_plane(e.points.astype(np.float64), e.hit, e.visible, np.zeros_like(e.visible), centres, 8,
                          0.005 * radius).plane
    assert plane is not None and plane[2] > math.cos(math.radians(0.5)), f"{preset}: normal {plane}"
    assert abs(plane[3] / plane[2]) < 0.5, f"{preset}: the plane lies {-plane[3] / plane[2]:.2f} mm off the table top"


# ---------------------------------------------------------------- (f) space enclosed by the target and its plane
def box_sdf(x: torch.Tensor, center, half) -> torch.Tensor:
    q = (x - torch.as_tensor(center, dtype=x.dtype)).abs() - torch.as_tensor(half, dtype=x.dtype)
    return (q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0))[:, None]


def cup_mesh(inner_center, fill: bool):
    """A box-shaped cup (walls 0.1 thick) standing on the plane z = 0, cut by it; its cavity is (0.3, 0.3, 0.35)
    half-sized at inner_center: open below (upside down, sealed by the plane) or above (upright)."""
    plane = np.array([0.0, 0.0, 1.0, 0.0])

    def fn(x):
        cup = torch.maximum(box_sdf(x, (0, 0, 0.3), (0.4, 0.4, 0.4)), -box_sdf(x, inner_center, (0.3, 0.3, 0.35)))
        return torch.maximum(cup, -x[:, 2:])
    return extract_world_mesh(fn, np.eye(4), 64, 0.0, 1.0, 65536, "cpu", support=plane if fill else None)


def test_the_space_the_target_and_its_plane_enclose_is_filled_and_nothing_else():
    outer = lambda v: box_sdf(torch.as_tensor(v, dtype=torch.float32), (0, 0, 0.3), (0.4, 0.4, 0.4))[:, 0].numpy()
    cell = 2.0 / 63
    walls = cup_mesh((0, 0, 0.25), fill=False)                       # upside down: the cavity meets the plane
    assert (outer(walls.vertices) < -2 * cell).mean() > 0.2          # its inner walls
    solid = cup_mesh((0, 0, 0.25), fill=True)
    assert solid.is_watertight and len(solid.split(only_watertight=False)) == 1
    off = np.maximum(outer(solid.vertices), -solid.vertices[:, 2])   # the cut solid box's own surface
    assert np.abs(off).max() < cell and abs(solid.volume - 0.8 * 0.8 * 0.7) < 0.02
    upright = [cup_mesh((0, 0, 0.45), fill=f) for f in (False, True)]  # open above: seen into, kept hollow
    assert np.array_equal(upright[0].vertices, upright[1].vertices) and len(upright[0].faces) == len(upright[1].faces)
    assert (outer(upright[1].vertices) < -2 * cell).mean() > 0.2
