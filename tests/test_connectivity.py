"""The target is one connected piece through the click (sam_utils/connectivity.py)."""
import cv2
import numpy as np
import pytest

from datasets.sphere_tracer import render_view
from datasets.synthetic import preset_views
from sam_utils.connectivity import EDGE_BAND, far_side, keep_connected, sample_spacing, seed_components


def sphere_points(centre, radius, n=4000, seed=0):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return np.asarray(centre) + radius * d / np.linalg.norm(d, axis=1, keepdims=True)


def test_only_the_seeded_piece_is_kept_and_gaps_under_the_bridge_are_closed():
    a, b = sphere_points([0, 0, 0], 10.0), sphere_points([30, 0, 0], 5.0, seed=1)   # 15 apart
    pts = np.concatenate([a, b])
    keep = seed_components(pts, np.array([0]), voxel=1.5, bridge=1)
    assert keep[:len(a)].all() and not keep[len(a):].any()
    keep = seed_components(pts, np.array([len(a)]), voxel=1.5, bridge=1)           # seed on the other
    assert keep[len(a):].all() and not keep[:len(a)].any()
    # a gap of 2 voxels is closed by a bridge of 1; a gap of 15 voxels is not
    c = sphere_points([0, 0, 10.0 + 1.0 + 5.0], 5.0, seed=2)                       # 1 unit gap to a
    keep = seed_components(np.concatenate([a, c, b]), np.array([0]), voxel=1.0, bridge=1)
    assert keep[:len(a) + len(c)].all() and not keep[len(a) + len(c):].any()


def test_without_seeds_nothing_is_removed_and_the_grid_is_bounded():
    pts = np.concatenate([sphere_points([0, 0, 0], 1.0), sphere_points([1e5, 0, 0], 1.0, seed=1)])
    assert seed_components(pts, np.array([], np.int64), voxel=0.1, bridge=1).all()
    keep = seed_components(pts, np.array([0]), voxel=1e-3, bridge=1)               # coarsened, not 1e24 cells
    assert keep[:4000].all() and not keep[4000:].any()


def test_sample_spacing_is_the_median_neighbour_distance():
    y, x = np.mgrid[0:4, 0:5].astype(float)
    pts = np.stack([x * 0.5, y * 0.5, np.zeros_like(x)], -1)[None]                  # (1,4,5,3), 0.5 apart
    valid = np.ones((1, 4, 5), bool)
    pts[0, 0, 4] = [100.0, 0, 0]                                                    # one depth jump
    assert abs(sample_spacing(pts, valid) - 0.5) < 1e-9
    assert sample_spacing(pts, np.zeros_like(valid)) == 0.0


def test_far_side_marks_the_pixels_behind_a_depth_step_not_the_near_ones():
    depth = np.full((1, 6, 8), 10.0)
    depth[0, :, :3] = 2.0                                                           # a near object on the left
    valid = np.ones_like(depth, bool)
    far = far_side(depth, valid, limit=1.0)
    reach = EDGE_BAND + 1
    assert not far[0, :, :3].any()                                                  # the near side stays
    assert far[0, :, 3:3 + reach].all() and not far[0, :, 3 + reach:].any()         # the band behind the step
    valid[0, :, :3] = False                                                         # nothing shown there: no step
    assert not far_side(depth, valid, limit=1.0).any()


def spilt_labels(preset: str, spill: int, n=12, w=160, h=120):
    """Exact surfaces of a preset and labels of every object but the table grown by `spill` pixels (a
    projection's blur past the silhouettes), the click at the deepest pixel of the target in view 0."""
    scene, cams, centre, radius = preset_views(preset, n, w, h)
    renders = [render_view(scene, c, w, h, centre, radius, "cpu") for c in cams]
    points = np.stack([r.points for r in renders]).astype(np.float64)
    valid, depth = np.stack([r.hit for r in renders]), np.stack([r.depth for r in renders]).astype(np.float64)
    obj = np.stack([r.object_id for r in renders])
    kernel = np.ones((2 * spill + 1, 2 * spill + 1), np.uint8)
    prob = np.stack([cv2.dilate((o > 0).astype(np.uint8), kernel) for o in obj]).astype(np.float32)
    t = scene.target_index
    dist = cv2.distanceTransform(np.pad(obj[0] == t, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    seeds = np.array([[0, *np.unravel_index(np.argmax(dist), dist.shape)]])
    names = [o.name for o in scene.objects]
    return points, valid, depth, prob, seeds, obj, names


@pytest.mark.parametrize("spill", [1, 2])
def test_labels_spilt_past_silhouettes_do_not_tie_a_separate_object_to_the_target(spill):
    """border: the can stands 44 mm from the caterpillar. Labels grown past the silhouettes land on the
    table behind them in every view, and without the far-side rule those spills join the two."""
    points, valid, depth, prob, seeds, obj, names = spilt_labels("border", spill)
    can, target = names.index("can"), names.index("caterpillar")
    kept = keep_connected(points, valid, depth, prob, seeds, 0.5, 3.0, 1, 4.0) >= 0.5
    assert kept[obj == target].mean() >= 0.99 and kept[obj == can].mean() <= 0.02
    old = keep_connected(points, valid, depth, prob, seeds, 0.5, 3.0, 1, np.inf) >= 0.5   # no far-side rule
    assert old[obj == can].mean() >= 0.9


def test_a_thin_part_of_the_target_keeps_it_in_one_piece():
    """thin: the lamp's head hangs on a pole of 4 mm radius; its near side is never left out."""
    points, valid, depth, prob, seeds, obj, names = spilt_labels("thin", 2)
    kept = keep_connected(points, valid, depth, prob, seeds, 0.5, 3.0, 1, 4.0) >= 0.5
    assert kept[obj == names.index("lamp")].mean() >= 0.99
