"""Training stages: what rays a step samples and which losses it applies.

- SceneStage: the whole scene (colour + eikonal [+ foreground-mask BCE]).
- LiftStage: the scene plus the occupancy ("instance") head, supervised by the accepted pseudo
  masks; half of each batch comes from views with an accepted mask, around the mask (focus_boxes),
  where the labels decide something. In the scene's own losses a focused ray weighs the accepted
  share of the views, so that every view's colours weigh alike: before the first round the focused
  half is all the prompt view's, and fitting one view's colours that hard grows floaters in front of
  its surface, the very depth the prompt is carried over.
- TargetStage: the target alone (NeuS with masks): outside its lifted mask a pixel is empty space
  (opacity 0, a random background colour per ray), so the field keeps the target and empties the
  rest (method.md, stage 2); pixels where a foreground object hides the target are unknown.

A stage draws its rays from a RaySampler (the dataset, the batch size and the run's generator) and
returns its loss terms as {name: (weight, value)}; it never sees the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from datasets.dtu import DTUDataset
from sam_utils.masks import grow_box, mask_box
from systems.settings import TargetSettings

INSTANCE = "instance"
OPACITY_CLAMP = 1e-3  # keeps BCE finite for fully transparent / opaque rays


def color_l1(rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 colour error per channel over the batch; both (B,3). weight (B,1): each ray's weight in
    the mean (None: all equal; 0: the ray does not count), as in mask_bce."""
    err = (rendered - target).abs().sum(-1, keepdim=True)
    if weight is None:
        return err.mean() / 3.0
    return (err / 3.0 * weight).sum() / weight.sum().clamp(min=1.0)


def mask_bce(opacity: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE between rendered opacity (or any rendered probability) and a {0,1} mask, both (B,1);
    weight (B,1): each ray's weight in the mean (None: all equal)."""
    p = opacity.clamp(OPACITY_CLAMP, 1.0 - OPACITY_CLAMP)
    loss = F.binary_cross_entropy(p, mask, reduction="none")
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


class RaySampler:
    """Random training rays of one dataset: batch size and the run's generator (checkpointed by the loop)."""

    def __init__(self, dataset: DTUDataset, batch_rays: int, generator: torch.Generator):
        self.dataset, self.batch_rays, self.generator = dataset, batch_rays, generator

    def sample(self, n: int | None = None, views: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None) -> dict:
        return self.dataset.sample_rays(self.batch_rays if n is None else n, generator=self.generator,
                                        views=views, boxes=boxes)


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

    def __init__(self, sampler: RaySampler, weights: LossWeights, background: torch.Tensor):
        self.sampler, self.w, self.background = sampler, weights, background

    def batch(self) -> dict:
        b = self.sampler.sample()
        b["background"] = self.background
        return b

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        w = batch.get("scene_weight")       # (B,1) each ray's weight in the means (None: all equal)
        terms = {"color": (self.w.color, color_l1(out["color"], batch["rgb"], w)),
                 "eikonal": (self.w.eikonal, out["eikonal"])}
        if self.w.mask > 0:
            terms["mask"] = (self.w.mask, mask_bce(out["opacity"], batch["mask"], w))
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
        box = mask_box(m)
        if box is not None:
            out[i] = grow_box(box, margin, h, w).astype(np.int64)   # truncation, as int() before
    return out


class LiftStage(SceneStage):
    """Scene reconstruction + occupancy head trained on the currently accepted views."""

    name = "lift"
    heads = (INSTANCE,)

    def __init__(self, sampler: RaySampler, weights: LossWeights, background: torch.Tensor, focus_margin: float):
        super().__init__(sampler, weights, background)
        self.device = sampler.dataset.device
        self.focus_margin = focus_margin             # < 0: accepted views sampled over the whole image
        self.masks: torch.Tensor | None = None       # (N,H,W) bool, on device
        self.accepted_views: torch.Tensor | None = None
        self.boxes: torch.Tensor | None = None       # (N,4) where the accepted half of a batch samples

    def set_masks(self, masks: np.ndarray, accepted: np.ndarray) -> None:
        self.masks = torch.from_numpy(masks).to(self.device)
        self.accepted_views = torch.from_numpy(np.flatnonzero(accepted)).to(self.device)
        if self.focus_margin >= 0:
            self.boxes = torch.from_numpy(focus_boxes(masks, self.focus_margin)).to(self.device)

    def batch(self) -> dict:
        n = self.sampler.batch_rays
        a = self.sampler.sample(n - n // 2)
        b = self.sampler.sample(n // 2, views=self.accepted_views, boxes=self.boxes)
        batch = {k: torch.cat([a[k], b[k]]) for k in a if k in b}
        accepted = torch.zeros(self.sampler.dataset.n_images, dtype=torch.bool, device=self.device)
        accepted[self.accepted_views] = True
        batch["instance_weight"] = accepted[batch["view"]].float()[:, None]
        batch["instance_target"] = lookup_masks(self.masks, batch)
        # the uniform rays give each view 1/N of their number, the focused ones 1/K (K accepted views)
        share = len(self.accepted_views) / self.sampler.dataset.n_images
        batch["scene_weight"] = torch.cat([torch.ones(len(a["view"]), 1, device=self.device),
                                           torch.full((len(b["view"]), 1), share, device=self.device)])
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
    """The target alone (NeuS with masks), from the scene field: inside the lifted mask a pixel is the
    target's colour and opaque; outside it is empty space (opacity 0, the ray's random background
    colour); occluded-target pixels (`unknown`) get neither loss. A `focus_fraction` of each batch
    comes from the masks' grown boxes, the rest from anywhere (empty space is learned too)."""

    name = "target"

    def __init__(self, sampler: RaySampler, weights: LossWeights, masks: np.ndarray, unknown: np.ndarray | None,
                 settings: TargetSettings, background: torch.Tensor, focus_margin: float):
        super().__init__(sampler, weights, background)
        dev = sampler.dataset.device
        self.masks = torch.from_numpy(masks).to(dev)                             # (N,H,W) bool
        self.unknown = None if unknown is None else torch.from_numpy(unknown).to(dev)
        self.random_background, self.focus_fraction = settings.random_background, settings.focus_fraction
        # (N,4) where the focused share samples; nto3d.focus_margin < 0: anywhere
        self.boxes = None if focus_margin < 0 else torch.from_numpy(focus_boxes(masks, focus_margin)).to(dev)
        # the occupancy head is trained only when the mesh is cut with it
        self.heads = (INSTANCE,) if settings.mesh_cut == "occupancy" else ()

    def batch(self) -> dict:
        n = self.sampler.batch_rays
        k = int(round(n * self.focus_fraction))
        parts = [self.sampler.sample(n - k), self.sampler.sample(k, boxes=self.boxes)]
        batch = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        m = lookup_masks(self.masks, batch)
        known = torch.ones_like(m) if self.unknown is None else 1.0 - lookup_masks(self.unknown, batch)
        if self.random_background:
            gen = self.sampler.generator
            bg = torch.rand(len(m), 3, device=gen.device, generator=gen).to(m.device)
        else:
            bg = self.background.expand(len(m), 3)
        batch["rgb"] = batch["rgb"] * m + bg * (1.0 - m)
        batch["target"], batch["known"], batch["background"] = m, known, bg
        return batch

    def losses(self, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        m, known = batch["target"], batch["known"]
        terms = {"color": (self.w.color, color_l1(out["color"], batch["rgb"], known)),
                 "eikonal": (self.w.eikonal, out["eikonal"]),
                 "mask": (self.w.mask, mask_bce(out["opacity"], m, known))}
        if self.heads:
            terms["instance"] = (self.w.instance, mask_bce(out[INSTANCE], m, known))
        return terms
