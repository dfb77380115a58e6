"""GrabCut segmenter: the WEIGHT-FREE FALLBACK for machines without a SAM checkpoint.

OpenCV's cv2.grabCut (colour GMMs + graph cut) seeded from the prompt: the box (or a box grown
around the points / the mask_input) bounds the object, positive points are definite-foreground
discs, negative points definite-background discs, and mask_input sets probable FG/BG inside the
box. Much weaker than SAM on cluttered scenes; it exists so the pipeline runs end to end anywhere.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .masks import mask_box, pixel_indices
from .prompts import Prompt
from .segmenter import SegResult, Segmenter, check_image, mask_input_to_prob

ITERATIONS = 5              # grabCut iterations
MAX_SIDE = 256              # work on a copy whose longest side is at most this (speed; on
                            # dtu_scan65 IoU was no better at 320-400 px)
DISC_FRAC = 0.04            # radius of the seed discs, as a fraction of the working longest side
MIN_DISC_PX = 2
POINT_BOX_MARGIN_FRAC = 0.25  # without a box: grow the points' bbox by this fraction of the longest side
MASK_BOX_MARGIN_FRAC = 0.1    # without a box: grow mask_input's bbox by this fraction of its size
MIN_CROP_MARGIN_PX = 16       # the crop around the object's rect is at least this much wider per side


class GrabCutSegmenter(Segmenter):
    """cv2.grabCut from prompts (fallback; name "grabcut"). score = prompt consistency in [0,1].

    crop_margin and workers have no defaults here: they are the conf's nto3d.grabcut settings
    (crop_margin <= 0: the whole image; workers 0: one thread per CPU core).
    """

    name = "grabcut"

    def __init__(self, *, crop_margin: float, workers: int, iterations: int = ITERATIONS,
                 max_side: int = MAX_SIDE, disc_frac: float = DISC_FRAC, seed: int = 0):
        self.iterations, self.max_side, self.disc_frac = iterations, max_side, disc_frac
        self.crop_margin = crop_margin
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self.seed = seed

    def _map_views(self, run, views, images, prompts) -> list[SegResult]:
        """Views in parallel threads (OpenCV releases the GIL in grabCut; its RNG is per thread and
        seeded per call, so the result does not depend on the number of workers)."""
        if self.workers == 1 or len(views) < 2:
            return super()._map_views(run, views, images, prompts)
        with ThreadPoolExecutor(min(self.workers, len(views))) as pool:
            return list(pool.map(run, views, images, prompts))

    def _rect(self, prompt: Prompt, prob: np.ndarray | None, H: int, W: int) -> np.ndarray:
        """x0,y0,x1,y1 (inclusive pixel bounds) of the region that may hold the object."""
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
        elif prob is not None and (box := mask_box(prob >= 0.5)) is not None:
            x0, y0, x1, y1 = box
            m = MASK_BOX_MARGIN_FRAC * max(x1 - x0 + 1, y1 - y0 + 1)
            x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
        else:
            pos = prompt.points[prompt.labels == 1]
            m = POINT_BOX_MARGIN_FRAC * max(H, W)
            x0, y0 = pos.min(0) - m
            x1, y1 = pos.max(0) + m
        return np.array([np.clip(x0, 0, W - 1), np.clip(y0, 0, H - 1),
                         np.clip(x1, 0, W - 1), np.clip(y1, 0, H - 1)]).round().astype(int)

    def predict(self, view: int, image: np.ndarray, prompt: Prompt,
                mask_input: np.ndarray | None = None) -> SegResult:
        check_image(image, view)
        H0, W0 = image.shape[:2]
        prob0 = None if mask_input is None else mask_input_to_prob(mask_input, H0, W0)  # (H0, W0)
        cx0, cy0, cx1, cy1 = self._window(prompt, prob0, H0, W0)
        crop = image[cy0:cy1 + 1, cx0:cx1 + 1]
        Hc, Wc = crop.shape[:2]
        s = min(1.0, self.max_side / max(Hc, Wc))
        img = crop if s == 1.0 else cv2.resize(crop, (round(Wc * s), round(Hc * s)),
                                               interpolation=cv2.INTER_AREA)
        H, W = img.shape[:2]
        p = prompt.shifted(-cx0, -cy0, Wc, Hc)
        p = p if s == 1.0 else p.scaled(s)
        prob = None
        if prob0 is not None:
            prob = prob0[cy0:cy1 + 1, cx0:cx1 + 1]
            prob = prob if s == 1.0 else cv2.resize(prob, (W, H), interpolation=cv2.INTER_LINEAR)

        mask = self._grabcut(img, p, prob)                                   # (H, W) bool
        if s != 1.0:
            mask = cv2.resize(mask.astype(np.float32), (Wc, Hc), interpolation=cv2.INTER_LINEAR) >= 0.5
        full = np.zeros((H0, W0), bool)
        full[cy0:cy1 + 1, cx0:cx1 + 1] = mask
        return SegResult(full, _consistency(full, prompt), None)

    def _window(self, prompt: Prompt, prob: np.ndarray | None, H: int, W: int) -> tuple[int, ...]:
        """Inclusive x0, y0, x1, y1 of the crop GrabCut works on: the object's rect grown by
        crop_margin of its longest side (its surroundings train the background model), or the
        whole image when crop_margin <= 0."""
        if self.crop_margin <= 0:
            return 0, 0, W - 1, H - 1
        x0, y0, x1, y1 = self._rect(prompt, prob, H, W)
        m = max(MIN_CROP_MARGIN_PX, self.crop_margin * max(x1 - x0 + 1, y1 - y0 + 1))
        return (int(max(0, x0 - m)), int(max(0, y0 - m)), int(min(W - 1, x1 + m)), int(min(H - 1, y1 + m)))

    def _grabcut(self, img: np.ndarray, p: Prompt, prob: np.ndarray | None) -> np.ndarray:
        """cv2.grabCut on img (H, W, 3) seeded from prompt p and probability prob (both in img's pixels)."""
        H, W = img.shape[:2]
        x0, y0, x1, y1 = self._rect(p, prob, H, W)
        gc = np.full((H, W), cv2.GC_BGD, np.uint8)
        inside = np.zeros((H, W), bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        gc[inside] = cv2.GC_PR_FGD
        if prob is not None:
            gc[inside & (prob < 0.5)] = cv2.GC_PR_BGD
        r = max(MIN_DISC_PX, int(round(self.disc_frac * max(H, W))))
        for (x, y), lab in zip(p.points, p.labels):
            cv2.circle(gc, (int(round(x)), int(round(y))), r,
                       int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)
        if not np.isin(gc, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():   # box = whole image
            gc[[0, -1], :] = cv2.GC_PR_BGD
            gc[:, [0, -1]] = cv2.GC_PR_BGD
        if not np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).any():
            return np.zeros((H, W), bool)

        cv2.setRNGSeed(self.seed)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(img[..., ::-1])
        cv2.grabCut(bgr, gc, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        mask = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)                 # (H, W)
        return _keep_components_with_points(mask, p)


def _keep_components_with_points(mask: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Drop foreground components that hold no positive point (GrabCut's stray specks)."""
    pos = prompt.points[prompt.labels == 1]
    if len(pos) == 0:
        return mask
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    xs, ys = pixel_indices(pos, *mask.shape)
    keep = np.unique(lab[ys, xs])
    keep = keep[keep > 0]
    return np.isin(lab, keep) if len(keep) else mask


def _consistency(mask: np.ndarray, prompt: Prompt) -> float:
    """Fraction of prompt points on the right side of the mask (a crude stand-in for SAM's score)."""
    if len(prompt.points) == 0:
        return float(mask.any())
    xs, ys = pixel_indices(prompt.points, *mask.shape)
    return float(np.mean(mask[ys, xs] == (prompt.labels == 1)))
