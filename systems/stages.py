"""Training stages: what rays a step samples and which losses it applies.

- SceneStage: the whole scene (colour + eikonal [+ foreground-mask BCE]).
- LiftStage: the scene plus the occupancy ("instance") head, supervised by the accepted pseudo
  masks; half of each batch comes from views with an accepted mask, around the mask (focus_boxes),
  where the labels decide something.
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
    instance_negative: float = 1.0  # weight of a pseudo mask's background pixels relative to its foreground


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


def focus_boxes(masks: np.ndarray, margin: float) -> np.ndarray:
    """(N,4) int64 x0, y0, x1, y1 per view: the mask's bounding box grown by `margin` times its size
    on each side, clipped to the image (the whole image where the mask is empty)."""
    n, h, w = masks.shape
    out = np.tile(np.array([0, 0, w - 1, h - 1], np.int64), (n, 1))
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows):
            gy, gx = margin * (rows[-1] - rows[0] + 1), margin * (cols[-1] - cols[0] + 1)
            out[i] = [max(0, int(cols[0] - gx)), max(0, int(rows[0] - gy)),
                      min(w - 1, int(cols[-1] + gx)), min(h - 1, int(rows[-1] + gy))]
    return out


class LiftStage(SceneStage):
    """Scene reconstruction + occupancy head trained on the currently accepted views."""

    name = "lift"
    heads = (INSTANCE,)

    def __init__(self, weights: LossWeights, background: torch.Tensor, device, focus_margin: float):
        super().__init__(weights, background)
        self.device = device
        self.focus_margin = focus_margin             # < 0: accepted views sampled over the whole image
        self.masks: torch.Tensor | None = None       # (N,H,W) bool, on device
        self.unsure: torch.Tensor | None = None      # (N,H,W) bool: pixels without a vote, or None
        self.accepted_views: torch.Tensor | None = None
        self.boxes: torch.Tensor | None = None       # (N,4) where the accepted half of a batch samples

    def set_masks(self, masks: np.ndarray, accepted: np.ndarray, unsure: np.ndarray | None = None) -> None:
        self.masks = torch.from_numpy(masks).to(self.device)
        self.unsure = None if unsure is None or not unsure.any() else torch.from_numpy(unsure).to(self.device)
        self.accepted_views = torch.from_numpy(np.flatnonzero(accepted)).to(self.device)
        if self.focus_margin >= 0:
            self.boxes = torch.from_numpy(focus_boxes(masks, self.focus_margin)).to(self.device)

    def batch(self, trainer) -> dict:
        n = trainer.batch_rays
        a = trainer.dataset.sample_rays(n - n // 2, generator=trainer.generator)
        b = trainer.dataset.sample_rays(n // 2, generator=trainer.generator, views=self.accepted_views,
                                        boxes=self.boxes)
        batch = {k: torch.cat([a[k], b[k]]) for k in a if k in b}
        accepted = torch.zeros(trainer.dataset.n_images, dtype=torch.bool, device=self.device)
        accepted[self.accepted_views] = True
        batch["instance_weight"] = accepted[batch["view"]].float()[:, None]
        if self.unsure is not None:
            batch["instance_weight"] = batch["instance_weight"] * (1.0 - lookup_masks(self.unsure, batch))
        batch["instance_target"] = lookup_masks(self.masks, batch)
        batch["background"] = self.background
        return batch

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        terms = super().losses(out, batch)
        t = batch["instance_target"]
        # each accepted view votes on the points it sees; background votes count instance_negative times
        w = batch["instance_weight"] * (t + self.w.instance_negative * (1.0 - t))
        terms["instance"] = (self.w.instance, mask_bce(out[INSTANCE], t, w))
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
