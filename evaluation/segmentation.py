"""The "segmenter alone" baseline: each view segmented from prompts made from its ground-truth mask.

This is what a perfect prompter would get out of the segmenter view by view, with no 3D lifting;
bench/run.py prints it beside the lifted masks (issue 3: lifting must beat it, mean and worst view).
"""
from __future__ import annotations

import numpy as np

from sam_utils.masks import mask_iou
from sam_utils.prompts import prompts_from_mask
from sam_utils.segmenter import Segmenter


def segmenter_alone_ious(segmenter: Segmenter, images: list[np.ndarray], gt_masks: np.ndarray,
                         n_positive: int, n_negative: int, cascade: bool, seed: int = 0) -> list[float]:
    """Per-view IoU against gt_masks (N,H,W) of the segmenter prompted from each view's own gt mask.

    Views whose gt mask is too small for a prompt score 0 (a perfect prompter could not help there).
    """
    views, prompts = [], []
    for v, g in enumerate(gt_masks):
        p = prompts_from_mask(g.astype(np.float32), view=v, n_positive=n_positive, n_negative=n_negative,
                              rng=seed + v)
        if p is not None:
            views.append(v)
            prompts.append(p)
    results = segmenter.predict_views(views, [images[v] for v in views], prompts, cascade=cascade)
    ious = [0.0] * len(gt_masks)
    for v, r in zip(views, results):
        ious[v] = mask_iou(r.mask, gt_masks[v])
    return ious
