"""Analytic signed-distance primitives (torch) used to build the synthetic scenes.

Conventions: world units are millimetres, the SDF is negative inside, `sdf` takes points (N, 3) and
`sdf_xyz` the three coordinate tensors (N,) each; both return shape (N,). Each shape also reports a
conservative axis-aligned bounding box (numpy, float64) so scenes can size grids and cull far-away
objects cheaply.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Local->world rotation Rz(yaw) @ Ry(pitch) @ Rx(roll), angles in degrees. Returns (3, 3) float64."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array([[math.cos(y), -math.sin(y), 0.0], [math.sin(y), math.cos(y), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(r), -math.sin(r)], [0.0, math.sin(r), math.cos(r)]])
    return rz @ ry @ rx


def _vec3(value, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,):
        raise ValueError(f"{name} must have 3 components (x, y, z), got {value!r}")
    return arr


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 mm, got {value!r}")
    return float(value)


Coords = tuple  # (x, y, z): three float tensors of shape (N,)


def _norm2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(a * a + b * b)


def _norm3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(a * a + b * b + c * c)


class Shape:
    """Base class: a solid with a signed distance function and a conservative bounding box.

    Subclasses implement `sdf_xyz` on separate coordinate tensors (structure of arrays): on CPU this
    is several times faster than (N,3) matmuls and reductions over the last axis.
    """

    def sdf(self, p: torch.Tensor) -> torch.Tensor:  # p (N,3) -> (N,)
        return self.sdf_xyz(p[:, 0], p[:, 1], p[:, 2])

    def sdf_xyz(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # 3x (N,) -> (N,)
        raise NotImplementedError

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:  # (lo (3,), hi (3,)) in mm
        raise NotImplementedError

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        """Sphere around the bounding box: |p - c| - r is a lower bound of the distance to the shape."""
        lo, hi = self.aabb()
        return (lo + hi) / 2.0, float(np.linalg.norm(hi - lo) / 2.0)


class _Posed(Shape):
    """A primitive defined centred at its local origin, placed by `center` and a local->world `rotation`."""

    def __init__(self, center, rotation=None):
        self.center = _vec3(center, "center")
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        if self.rotation.shape != (3, 3):
            raise ValueError(f"rotation must be a 3x3 matrix, got shape {self.rotation.shape}")
        self._rotated = not np.allclose(self.rotation, np.eye(3))

    def to_local(self, x, y, z) -> Coords:
        """World coordinates -> local ones, R^T (p - c), each (N,)."""
        c = self.center
        dx, dy, dz = x - float(c[0]), y - float(c[1]), z - float(c[2])
        if not self._rotated:
            return dx, dy, dz
        r = self.rotation
        return tuple(dx * float(r[0, j]) + dy * float(r[1, j]) + dz * float(r[2, j]) for j in range(3))

    def local_half_extent(self) -> np.ndarray:  # (3,) half-size of the local bounding box
        raise NotImplementedError

    def aabb(self):
        half = np.abs(self.rotation) @ self.local_half_extent()
        return self.center - half, self.center + half


class Sphere(_Posed):
    def __init__(self, center, radius: float):
        super().__init__(center)
        self.radius = _positive(radius, "Sphere radius")

    def sdf_xyz(self, x, y, z):
        return _norm3(*self.to_local(x, y, z)) - self.radius

    def local_half_extent(self):
        return np.full(3, self.radius)


class RoundBox(_Posed):
    """Box with half sizes `half_size` (outer extent) whose edges are rounded with radius `rounding`."""

    def __init__(self, center, half_size, rounding: float = 0.0, rotation=None):
        super().__init__(center, rotation)
        self.half_size = _vec3(half_size, "RoundBox half_size")
        self.rounding = float(rounding)
        if not 0 <= self.rounding < self.half_size.min():
            raise ValueError(f"RoundBox rounding must be in [0, min(half_size)), got {rounding}")

    def sdf_xyz(self, x, y, z):
        inner = self.half_size - self.rounding
        qx, qy, qz = (c.abs() - float(h) for c, h in zip(self.to_local(x, y, z), inner))
        outside = _norm3(qx.clamp(min=0.0), qy.clamp(min=0.0), qz.clamp(min=0.0))
        inside = torch.maximum(torch.maximum(qx, qy), qz).clamp(max=0.0)
        return outside + inside - self.rounding

    def local_half_extent(self):
        return self.half_size


class Cylinder(_Posed):
    """Capped cylinder along its local z axis, with rounded rims of radius `rounding`."""

    def __init__(self, center, radius: float, half_height: float, rounding: float = 0.0, rotation=None):
        super().__init__(center, rotation)
        self.radius = _positive(radius, "Cylinder radius")
        self.half_height = _positive(half_height, "Cylinder half_height")
        self.rounding = float(rounding)
        if not 0 <= self.rounding < min(self.radius, self.half_height):
            raise ValueError(f"Cylinder rounding must be in [0, min(radius, half_height)), got {rounding}")

    def sdf_xyz(self, x, y, z):
        lx, ly, lz = self.to_local(x, y, z)
        dx = _norm2(lx, ly) - (self.radius - self.rounding)
        dz = lz.abs() - (self.half_height - self.rounding)
        outside = _norm2(dx.clamp(min=0.0), dz.clamp(min=0.0))
        inside = torch.maximum(dx, dz).clamp(max=0.0)
        return outside + inside - self.rounding

    def local_half_extent(self):
        return np.array([self.radius, self.radius, self.half_height])


class Torus(_Posed):
    """Ring around the local z axis: tube of radius `minor` whose centre line has radius `major`."""

    def __init__(self, center, major: float, minor: float, rotation=None):
        super().__init__(center, rotation)
        self.major = _positive(major, "Torus major radius")
        self.minor = _positive(minor, "Torus minor radius")

    def sdf_xyz(self, x, y, z):
        lx, ly, lz = self.to_local(x, y, z)
        return _norm2(_norm2(lx, ly) - self.major, lz) - self.minor

    def local_half_extent(self):
        r = self.major + self.minor
        return np.array([r, r, self.minor])


class Capsule(Shape):
    """All points within `radius` of the segment a-b."""

    def __init__(self, a, b, radius: float):
        self.a, self.b = _vec3(a, "Capsule a"), _vec3(b, "Capsule b")
        self.radius = _positive(radius, "Capsule radius")
        if np.allclose(self.a, self.b):
            raise ValueError("Capsule end points a and b coincide; use a Sphere instead")

    def sdf_xyz(self, x, y, z):
        axis = self.b - self.a
        ax, ay, az = (float(v) for v in axis)
        px, py, pz = x - float(self.a[0]), y - float(self.a[1]), z - float(self.a[2])
        h = ((px * ax + py * ay + pz * az) / float(axis @ axis)).clamp(0.0, 1.0)  # (N,) position on segment
        return _norm3(px - h * ax, py - h * ay, pz - h * az) - self.radius

    def aabb(self):
        return np.minimum(self.a, self.b) - self.radius, np.maximum(self.a, self.b) + self.radius


class SmoothUnion(Shape):
    """Polynomial smooth minimum of several shapes with blend radius `k` mm (k=0: plain union)."""

    def __init__(self, shapes: Sequence[Shape], k: float = 0.0):
        if len(shapes) < 1:
            raise ValueError("SmoothUnion needs at least one shape")
        if k < 0:
            raise ValueError(f"SmoothUnion blend radius k must be >= 0 mm, got {k}")
        self.shapes, self.k = list(shapes), float(k)

    def sdf_xyz(self, x, y, z):
        d = self.shapes[0].sdf_xyz(x, y, z)
        for shape in self.shapes[1:]:
            d = smooth_min(d, shape.sdf_xyz(x, y, z), self.k)
        return d

    def aabb(self):
        # smin >= min - k/4, so the blended solid stays within k/4 of some component.
        los, his = zip(*(s.aabb() for s in self.shapes))
        grow = self.k / 4.0
        return np.min(los, axis=0) - grow, np.max(his, axis=0) + grow


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum of two distance fields (blend radius k mm); exact min when k == 0."""
    if k <= 0:
        return torch.minimum(a, b)
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return torch.lerp(b, a, h) - k * h * (1.0 - h)


class Parts(Shape):
    """One solid made of named parts, combined with a plain minimum (no blending) so that every surface
    point belongs to exactly one part, the nearest: exact per-part ground truth (a house's walls and
    roof, say), as `Scene` gives per object."""

    def __init__(self, parts: dict[str, Shape]):
        if not parts:
            raise ValueError("Parts needs at least one named part, e.g. Parts({'walls': box, 'roof': roof})")
        self.names, self.shapes = tuple(parts), list(parts.values())

    def sdf_xyz(self, x, y, z):
        d = self.shapes[0].sdf_xyz(x, y, z)
        for shape in self.shapes[1:]:
            d = torch.minimum(d, shape.sdf_xyz(x, y, z))
        return d

    def part_of(self, p: torch.Tensor) -> torch.Tensor:
        """Index into `names` of the part nearest to each point, p (N,3) -> (N,) int64."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        return torch.stack([s.sdf_xyz(x, y, z) for s in self.shapes]).argmin(dim=0)

    def aabb(self):
        los, his = zip(*(s.aabb() for s in self.shapes))
        return np.min(los, axis=0), np.max(his, axis=0)
