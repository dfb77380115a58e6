"""DTU-protocol point sets from meshes: per-triangle grid samples and radius down-sampling.

The rules are those of the DTU MVS evaluation as the de-facto Python evaluator (DTUeval-python)
applies them, so Chamfer figures computed on these points compare with what peers report:

* `sample_mesh` — every mesh vertex, plus, for each triangle (p0, p1, p2) with edges v1 = p1 - p0,
  v2 = p2 - p0 (lengths l1, l2) and doubled area a = |v1 x v2| > 0, the grid points
  p0 + u v1 + w v2 with u = (i + 0.5) / n1, w = (j + 0.5) / n2, u + w < 1, where
  thr = spacing * sqrt(l1 l2 / a), n1 = floor(l1 / thr), n2 = floor(l2 / thr)
  (a triangle with n1 or n2 = 0 adds no grid point). About 1 / spacing^2 points per unit area.
* `downsample` — visit the points in a random order; keep a point unless a point kept before it lies
  within `spacing` (greedy, order-dependent, as DTU's loop). Computed exactly without a Python loop:
  a point is kept in a round when no still-undecided neighbour precedes it, and kept points remove
  their neighbours; rounds repeat until every point is decided (same set as the sequential loop).

Memory is bounded by chunks: triangles are expanded `CANDIDATE_CHUNK` grid candidates at a time and
neighbour pairs are found `PAIR_CHUNK` points at a time; the outputs themselves are not capped.
"""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

CANDIDATE_CHUNK = 1 << 22      # grid candidates expanded at once (~200 MB of float64 temporaries)
PAIR_CHUNK = 1 << 18           # points whose radius neighbours are searched at once


def sample_triangles(triangles: np.ndarray, spacing: float) -> np.ndarray:
    """DTU grid samples inside triangles (F, 3, 3) -> (M, 3) float64 (vertices not included)."""
    if not spacing > 0:
        raise ValueError(f"sampling spacing must be positive, got {spacing}")
    tris = np.asarray(triangles, np.float64).reshape(-1, 3, 3)
    v1, v2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    l1, l2 = np.linalg.norm(v1, axis=1), np.linalg.norm(v2, axis=1)
    area2 = np.linalg.norm(np.cross(v1, v2), axis=1)
    ok = area2 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = spacing * np.sqrt(l1 * l2 / np.where(ok, area2, 1.0))
        n1 = np.where(ok, np.floor(l1 / thr), 0.0)
        n2 = np.where(ok, np.floor(l2 / thr), 0.0)
    live = np.nonzero((n1 >= 1) & (n2 >= 1))[0]             # others add no grid point
    counts = ((n1[live] + 1) * (n2[live] + 1)).astype(np.int64)
    out = [np.empty((0, 3))]
    for part in budget_slices(counts, CANDIDATE_CHUNK):
        tri, local = expand(counts[part])
        f = live[part][tri]
        cols = n2[f] + 1
        u = (local // cols + 0.5) / n1[f]
        w = (local % cols + 0.5) / n2[f]
        inside = u + w < 1.0
        f, u, w = f[inside], u[inside], w[inside]
        out.append(tris[f, 0] + u[:, None] * v1[f] + w[:, None] * v2[f])
    return np.concatenate(out)


def budget_slices(counts: np.ndarray, budget: int):
    """Consecutive slices of items (K,) whose counts add up to at most `budget` (a larger item alone)."""
    bounds = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = bounds[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(bounds, base + budget, side="right")))
        yield slice(start, stop)
        start = stop


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """counts (K,) -> (item, index within the item), two (sum(counts),) int64 arrays."""
    counts = np.asarray(counts, np.int64)
    item = np.repeat(np.arange(len(counts)), counts)
    return item, np.arange(len(item)) - np.repeat(np.cumsum(counts) - counts, counts)


def sample_mesh(mesh: trimesh.Trimesh, spacing: float) -> np.ndarray:
    """All vertices of `mesh` followed by its triangles' DTU grid samples -> (M, 3) float64."""
    verts = np.asarray(mesh.vertices, np.float64)
    return np.concatenate([verts, sample_triangles(verts[np.asarray(mesh.faces)], spacing)])


def radius_pairs(points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair {a, b}, a != b, of points (N, 3) within `radius`, listed once -> (E,), (E,).

    Points are sorted by x and cut into PAIR_CHUNK slabs; each slab's pairs are found with the
    points up to `radius` beyond it, so temporaries stay per slab. Indices are int32 when they fit.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    n = len(pts)
    index = np.int32 if n < 2**31 else np.int64
    order = np.argsort(pts[:, 0], kind="stable")
    xs = pts[order, 0]
    rows, cols = [np.empty(0, index)], [np.empty(0, index)]
    for lo in range(0, n, PAIR_CHUNK):
        hi = min(lo + PAIR_CHUNK, n)
        end = int(np.searchsorted(xs, xs[hi - 1] + radius, side="right"))
        pairs = cKDTree(pts[order[lo:end]]).query_pairs(radius, output_type="ndarray")  # i < j
        pairs = pairs[pairs[:, 0] < hi - lo]              # the pair's first point is in this slab
        rows.append(order[lo + pairs[:, 0]].astype(index))
        cols.append(order[lo + pairs[:, 1]].astype(index))
    return np.concatenate(rows), np.concatenate(cols)


def downsample_mask(points: np.ndarray, spacing: float, seed: int = 0,
                    order: np.ndarray | None = None) -> np.ndarray:
    """Which points (N, 3) DTU's greedy radius down-sampling keeps -> (N,) bool.

    order: the visiting order (a permutation of range(N)); default a permutation drawn with `seed`.
    A point is kept iff no point kept earlier in `order` lies within `spacing` of it.
    """
    if not spacing > 0:
        raise ValueError(f"down-sampling spacing must be positive, got {spacing}")
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    n = len(pts)
    if order is None:
        order = np.random.default_rng(seed).permutation(n)
    order = np.asarray(order)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    a, b = radius_pairs(pts, spacing)
    swap = rank[a] > rank[b]                                 # edge a -> b: a is visited first
    a[swap], b[swap] = b[swap], a[swap]
    undecided, keep = np.ones(n, bool), np.zeros(n, bool)
    while len(a):
        blocked = np.zeros(n, bool)
        blocked[b] = True                                    # an undecided point precedes it
        new = undecided & ~blocked
        keep |= new
        undecided &= ~new
        undecided[b[new[a]]] = False                         # neighbours of kept points go
        live = undecided[a] & undecided[b]
        a, b = a[live], b[live]
    return keep | undecided


def downsample(points: np.ndarray, spacing: float, seed: int = 0) -> np.ndarray:
    """The points (N, 3) that DTU's greedy radius down-sampling keeps -> (K, 3)."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    return pts[downsample_mask(pts, spacing, seed)]
