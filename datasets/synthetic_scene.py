"""A composite scene of textured analytic objects: SDF, per-object ids and albedo (torch).

Objects are combined with a hard minimum (not blended) so that every surface point belongs to exactly
one object; this gives exact per-object ground truth (which object a ray hits first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets.sdf_primitives import Shape
from datasets.solid_textures import SolidTexture

# Objects whose bounding sphere is farther than this are replaced by the (cheaper) sphere bound.
# Must exceed the sphere tracer's hit tolerance; GT grids pass their own, voxel-based margin.
DEFAULT_CULL_MARGIN_MM = 8.0


@dataclass
class SceneObject:
    """One named solid with its texture; exactly one object of a scene is the target."""

    name: str
    shape: Shape
    texture: SolidTexture
    is_target: bool = False


class Scene:
    """Union of objects; gives the composite SDF, which object is nearest, and surface albedo."""

    def __init__(self, objects: list[SceneObject]):
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise ValueError(f"scene object names must be unique, got {names}")
        targets = [i for i, o in enumerate(objects) if o.is_target]
        if len(targets) != 1:
            raise ValueError(f"a scene needs exactly one target object, got {len(targets)} in {names}")
        self.objects = list(objects)
        self.target_index = targets[0]
        self._spheres = [o.shape.bounding_sphere() for o in self.objects]

    @property
    def target(self) -> SceneObject:
        return self.objects[self.target_index]

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """Conservative bounding box of all objects, (lo (3,), hi (3,)) in mm."""
        los, his = zip(*(o.shape.aabb() for o in self.objects))
        return np.min(los, axis=0), np.max(his, axis=0)

    def _object_sdf(self, index: int, x, y, z, cull_margin: float | None) -> torch.Tensor:
        """SDF of one object at coordinates x, y, z (N,) -> (N,); exact within `cull_margin` of its
        bounding sphere.

        Farther away the bounding-sphere distance is returned instead: it never exceeds the true
        distance (safe for sphere tracing) and is >= cull_margin > 0, so near-surface values and
        all signs are exactly those of the full SDF.
        """
        shape = self.objects[index].shape
        if cull_margin is None:
            return shape.sdf_xyz(x, y, z)
        (cx, cy, cz), radius = self._spheres[index]
        dx, dy, dz = x - float(cx), y - float(cy), z - float(cz)
        bound = torch.sqrt(dx * dx + dy * dy + dz * dz) - radius
        near = torch.nonzero(bound < cull_margin).squeeze(1)
        if near.numel() == x.shape[0]:
            return shape.sdf_xyz(x, y, z)
        if near.numel():
            bound[near] = shape.sdf_xyz(x[near], y[near], z[near])
        return bound

    def sdf_xyz(self, x, y, z, cull_margin: float | None = DEFAULT_CULL_MARGIN_MM,
                only: int | None = None) -> torch.Tensor:
        """Composite SDF (min over objects, or of object `only`) at coordinates x, y, z (N,) -> (N,) mm."""
        if only is not None:
            return self._object_sdf(only, x, y, z, cull_margin)
        d = self._object_sdf(0, x, y, z, cull_margin)
        for i in range(1, len(self.objects)):
            d = torch.minimum(d, self._object_sdf(i, x, y, z, cull_margin))
        return d

    def sdf(self, p: torch.Tensor, cull_margin: float | None = DEFAULT_CULL_MARGIN_MM,
            only: int | None = None) -> torch.Tensor:
        """Composite SDF at points p (N,3) -> (N,) mm; see `sdf_xyz`."""
        return self.sdf_xyz(p[:, 0], p[:, 1], p[:, 2], cull_margin, only)

    def nearest_object(self, p: torch.Tensor) -> torch.Tensor:
        """Index of the object with the smallest SDF at each point, p (N,3) -> (N,) int64."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        d = torch.stack([self._object_sdf(i, x, y, z, DEFAULT_CULL_MARGIN_MM) for i in range(len(self.objects))])
        return d.argmin(dim=0)

    def albedo(self, p: torch.Tensor, object_id: torch.Tensor) -> torch.Tensor:
        """Albedo of each point's object, p (N,3), object_id (N,) -> (N,3) in [0, 1]."""
        out = torch.zeros_like(p)
        for i, obj in enumerate(self.objects):
            sel = torch.nonzero(object_id == i).squeeze(1)
            if sel.numel():
                out[sel] = obj.texture.albedo(p[sel])
        return out
