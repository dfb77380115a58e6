"""An ideal occupancy field for the lifting loop's CPU tests: labels carried over a scene's exact
surface. Each view's surface points take the vote of the accepted masks of the views that see them
(depth-tested), and what no accepted view has seen is *unknown*.

(It was the pipeline's labelling for a while, surface votes on the rendered surface instead of the
occupancy head's projection; it lost on the GPU suite, bench/RESULTS.md session 7, and lives on here
as a test double whose labels are exact by construction.)

Why: the occupancy head extrapolates to surface that no view has labelled, and the lifting's
outcome then hangs on the network's initialisation. Here every label is a depth-tested
reprojection of an accepted mask; a surface point that no accepted view sees gets its label from
the prompt view's visual hull instead: inside the cone of the (slightly grown) prompt mask it is
presumed target (every point of the target projects into its silhouette), outside it is background.
Points the prompt view itself shows as target carry `prompt_weight` votes, and so do the points it
shows as background outside that hull: the user's intent (this, and not that) is never voted out
by views whose segmenter takes in a neighbour of the target's colours.

Shapes: N views, surface grids (h,w) (the depth rendered at 1/level), P (N,3,4) maps world points to
full-resolution pixels (H,W); labels come in at the grid size.
"""
from __future__ import annotations

import numpy as np
import torch

from sam_utils.surface import Surface

EPS = 1e-9


class SurfaceVotes(Surface):
    """A Surface whose points take the votes of the accepted masks (the ideal field's labels)."""

    def vote(self, masks, accepted, negative_weight: float, prompt_view: int, prompt_weight: float,
             protected, hull) -> tuple[np.ndarray, np.ndarray]:
        """(prob (N,h,w) float32, known (N,h,w) bool) from the accepted views' masks (N,h,w) bool.

        prob: positive votes / (positive + negative_weight * negative votes) where some accepted view
        sees the point; else 1 inside the prompt's visual hull (hull (h,w) on the prompt view) and 0
        outside. The prompt view's target pixels inside `protected` (h,w) (its mask's interior) and
        its background pixels outside the hull vote prompt_weight times. known: a pixel's label rests on a vote (or it shows no surface, or lies
        outside the hull: background for certain).
        """
        n, h, w = self.shape
        dev = self.points.device
        masks = torch.as_tensor(masks, dtype=torch.bool, device=dev)
        hull = torch.as_tensor(hull, dtype=torch.bool, device=dev)
        protected = torch.as_tensor(protected, dtype=torch.bool, device=dev)
        views = [int(j) for j in np.flatnonzero(np.asarray(accepted))]
        prob = torch.zeros((n, h, w), dtype=torch.float32, device=dev)
        known = torch.ones((n, h, w), dtype=torch.bool, device=dev)
        for v in range(n):
            X = self.points[v][self.valid[v]]                                      # (M,3)
            p0 = [prompt_view]
            _, row, col, inside, _ = self._lookup(X, p0)
            in_hull = (inside & hull[row, col])[0]
            pos = torch.zeros(len(X), dtype=torch.float64, device=dev)
            neg = torch.zeros_like(pos)
            if views:
                idx, row, col, _, seen = self._lookup(X, views)                    # (J,M)
                label = masks[idx, row, col]
                wpos = torch.ones_like(seen, dtype=torch.float64)
                wneg = torch.full_like(wpos, negative_weight)
                if prompt_view in views:
                    k = views.index(prompt_view)
                    wpos[k] = torch.where(protected[row[k], col[k]], prompt_weight, 1.0).double()
                    wneg[k] = torch.where(hull[row[k], col[k]], negative_weight, prompt_weight).double()
                pos = (wpos * (seen & label)).sum(0)
                neg = (wneg * (seen & ~label)).sum(0)
            voted = (pos + neg) > 0
            p = torch.where(voted, pos / (pos + neg).clamp(min=EPS), in_hull.double())
            prob[v][self.valid[v]] = p.float()
            known[v][self.valid[v]] = voted | ~in_hull
        return prob.cpu().numpy(), known.cpu().numpy()
