"""An independent, deliberately plain implementation of the DTU evaluation rules, for cross-checks.

Written from the documented steps of the de-facto evaluator (DTUeval-python, "mesh" mode), not
from its code and not from evaluation/: one triangle at a time, a sequential down-sampling loop,
whole-array nearest-neighbour queries. Slow; meant for small meshes in tests.

Steps: (1) per triangle p0, p1, p2 with a = |(p1-p0) x (p2-p0)| > 0: thr = d sqrt(|p1-p0| |p2-p0| / a),
n_k = floor(edge_k / thr); grid (i + 1/2) / n1, (j + 1/2) / n2 for i <= n1, j <= n2 with sum < 1
(n = 0 counts as 1e-7); the point cloud is the vertices then those samples. (2) shuffle; walk the
points in order, keep one and discard every point within d of it unless already discarded.
(3) optional DTU culling: bounding box BB grown by `patch` below and 2 * patch above, then the
observation mask voxel round((x - BB_min) / Res) must exist and be set; stl points kept above the
plane P (P . [x, 1] > 0) for completeness only. (4) accuracy = mean of data -> stl distances
< max_dist, completeness = mean of stl -> data distances < max_dist.
"""
import numpy as np
from scipy.spatial import cKDTree


def ref_sample(vertices, faces, d):
    """Step 1: vertices followed by every triangle's grid points -> (M, 3)."""
    vertices = np.asarray(vertices, np.float64)
    points = [vertices]
    for face in np.asarray(faces):
        p0, p1, p2 = vertices[face]
        e1, e2 = p1 - p0, p2 - p0
        a = np.linalg.norm(np.cross(e1, e2))
        if not a > 0:
            continue
        thr = d * np.sqrt(np.linalg.norm(e1) * np.linalg.norm(e2) / a)
        n1, n2 = np.floor(np.linalg.norm(e1) / thr), np.floor(np.linalg.norm(e2) / thr)
        for i in range(int(n1) + 1):
            for j in range(int(n2) + 1):
                s, t = (i + 0.5) / max(n1, 1e-7), (j + 0.5) / max(n2, 1e-7)
                if s + t < 1:
                    points.append((p0 + s * e1 + t * e2)[None])
    return np.concatenate(points)


def ref_downsample(points, d, rng):
    """Step 2: shuffle with `rng` (a numpy Generator), then the sequential radius loop."""
    pts = np.array(points, np.float64)
    rng.shuffle(pts, axis=0)
    neighbours = cKDTree(pts).query_ball_point(pts, d)
    alive = np.ones(len(pts), bool)
    for k, idx in enumerate(neighbours):
        if alive[k]:
            alive[idx] = False
            alive[k] = True
    return pts[alive]


def ref_cull(data, stl, obs_mask, bb, res, plane, patch):
    """Step 3: data inside the grown box and the observation mask; stl above the plane."""
    inside = np.all((data >= bb[0] - patch) & (data < bb[1] + 2 * patch), axis=1)
    data = data[inside]
    cell = np.round((data - bb[0]) / res).astype(int)
    on_grid = np.all((cell >= 0) & (cell < np.array(obs_mask.shape)), axis=1)
    data, cell = data[on_grid], cell[on_grid]
    data = data[obs_mask[cell[:, 0], cell[:, 1], cell[:, 2]].astype(bool)]
    above = np.c_[stl, np.ones(len(stl))] @ np.asarray(plane, np.float64).reshape(4) > 0
    return data, stl[above]


def ref_chamfer(data, stl_for_accuracy, stl_for_completeness, max_dist):
    """Step 4 -> (accuracy, completeness, overall)."""
    d2s = cKDTree(stl_for_accuracy).query(data)[0]
    s2d = cKDTree(data).query(stl_for_completeness)[0]
    acc, comp = d2s[d2s < max_dist].mean(), s2d[s2d < max_dist].mean()
    return float(acc), float(comp), float((acc + comp) / 2)
