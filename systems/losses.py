"""Training losses; each takes rendered values and the batch and returns a scalar tensor."""
from __future__ import annotations

import torch
import torch.nn.functional as F

OPACITY_CLAMP = 1e-3  # keeps BCE finite for fully transparent / opaque rays


def color_l1(rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 colour error; `weight` (B,1) selects/weights rays (None: all rays equally)."""
    err = (rendered - target).abs().sum(-1, keepdim=True)
    if weight is None:
        return err.mean() / 3.0
    return (err * weight).sum() / (3.0 * weight.sum().clamp(min=1.0))


def mask_bce(opacity: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE between rendered opacity (or any rendered probability) and a {0,1} mask, both (B,1)."""
    p = opacity.clamp(OPACITY_CLAMP, 1.0 - OPACITY_CLAMP)
    loss = F.binary_cross_entropy(p, mask, reduction="none")
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)
