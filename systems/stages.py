"""Training stages: what rays a step samples and which losses it applies.

- SceneStage: the whole scene (colour + eikonal [+ foreground-mask BCE]).
- LiftStage: the scene plus the occupancy ("instance") head, supervised by the accepted pseudo
  masks; half of each batch comes from views with an accepted mask.
- TargetStage: the target alone: outside its lifted mask a pixel takes a random background colour
  (per batch), the opacity is supervised by the mask, so the field keeps the target and empties
  the rest (method.md, stage 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from systems.losses import color_l1, mask_bce

INSTANCE = "instance"


@dataclass
class LossWeights:
    color: float
    eikonal: float
    mask: float          # foreground-opacity BCE (scene: dataset masks; target: lifted masks)
    instance: float      # occupancy-head BCE against pseudo masks


class SceneStage:
    name = "scene"
    heads: tuple[str, ...] = ()

    def __init__(self, weights: LossWeights, background: torch.Tensor):
        self.w, self.background = weights, background

    def batch(self, trainer) -> dict:
        b = trainer.dataset.sample_rays(trainer.batch_rays, generator=trainer.generator)
        b["background"] = self.background
        return b

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        terms = {"color": (self.w.color, color_l1(out["color"], batch["rgb"])),
                 "eikonal": (self.w.eikonal, out["eikonal"])}
        if self.w.mask > 0:
            terms["mask"] = (self.w.mask, mask_bce(out["opacity"], batch["mask"]))
        return terms


def lookup_masks(masks: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-ray value of per-view masks (N,H,W) at the batch's (view, pixel) -> (B,1) float."""
    u, v = batch["pixel"][:, 0], batch["pixel"][:, 1]
    return masks[batch["view"], v, u].float()[:, None]


class LiftStage(SceneStage):
    """Scene reconstruction + occupancy head trained on the currently accepted views."""

    name = "lift"
    heads = (INSTANCE,)

    def __init__(self, weights: LossWeights, background: torch.Tensor, device):
        super().__init__(weights, background)
        self.device = device
        self.masks: torch.Tensor | None = None       # (N,H,W) bool, on device
        self.accepted_views: torch.Tensor | None = None

    def set_masks(self, masks: np.ndarray, accepted: np.ndarray) -> None:
        self.masks = torch.from_numpy(masks).to(self.device)
        self.accepted_views = torch.from_numpy(np.flatnonzero(accepted)).to(self.device)

    def batch(self, trainer) -> dict:
        n = trainer.batch_rays
        a = trainer.dataset.sample_rays(n - n // 2, generator=trainer.generator)
        b = trainer.dataset.sample_rays(n // 2, generator=trainer.generator, views=self.accepted_views)
        batch = {k: torch.cat([a[k], b[k]]) for k in a if k in b}
        accepted = torch.zeros(trainer.dataset.n_images, dtype=torch.bool, device=self.device)
        accepted[self.accepted_views] = True
        batch["instance_weight"] = accepted[batch["view"]].float()[:, None]
        batch["instance_target"] = lookup_masks(self.masks, batch)
        batch["background"] = self.background
        return batch

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        terms = super().losses(out, batch)
        terms["instance"] = (self.w.instance, mask_bce(out[INSTANCE], batch["instance_target"], batch["instance_weight"]))
        return terms


class TargetStage(SceneStage):
    """Target-only reconstruction against the lifted masks with random background colours."""

    name = "target"
    heads = (INSTANCE,)

    def __init__(self, weights: LossWeights, masks: np.ndarray, device, random_background: bool,
                 background: torch.Tensor):
        super().__init__(weights, background)
        self.masks = torch.from_numpy(masks).to(device)
        self.random_background = random_background

    def batch(self, trainer) -> dict:
        batch = trainer.dataset.sample_rays(trainer.batch_rays, generator=trainer.generator)
        m = lookup_masks(self.masks, batch)
        bg = (torch.rand(3, device=m.device, generator=trainer.generator) if self.random_background
              else self.background)
        batch["rgb"] = batch["rgb"] * m + bg * (1.0 - m)
        batch["target"] = m
        batch["background"] = bg
        return batch

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        return {"color": (self.w.color, color_l1(out["color"], batch["rgb"])),
                "eikonal": (self.w.eikonal, out["eikonal"]),
                "mask": (self.w.mask, mask_bce(out["opacity"], batch["target"])),
                "instance": (self.w.instance, mask_bce(out[INSTANCE], batch["target"]))}
