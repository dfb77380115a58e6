"""The target is one connected piece through the click (sam_utils/connectivity.py)."""
import numpy as np

from sam_utils.connectivity import sample_spacing, seed_components


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
