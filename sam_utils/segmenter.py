"""The segmenter interface (prompt -> mask on one view) and the checks every backend shares.

Backends (sam_model.py, grabcut.py) import only this module; sam_utils/segmenters.py builds them by name.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import PromptError, SegmenterError
from .prompts import Prompt
from .sam_grid import LOW_RES_SIZE, low_res_logits_to_image

MIN_MASK_PIXELS = 16      # check_nonempty's default: fewer pixels than this is "empty"


@dataclass
class SegResult:
    """mask (H,W) bool; score: the backend's confidence (~[0,1]); low_res_logits (256,256) or None."""

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray | None = None


class Segmenter(abc.ABC):
    """Prompted single-object segmentation of one view (images are RGB uint8 (H,W,3))."""

    name: str = "segmenter"

    @abc.abstractmethod
    def predict(self, view: int, image: np.ndarray, prompt: Prompt,
                mask_input: np.ndarray | None = None) -> SegResult:
        """One prediction. mask_input: SAM low-res logits (256,256) or a probability map (H,W)."""

    def predict_cascade(self, view: int, image: np.ndarray, prompt: Prompt) -> SegResult:
        """The original's 3-step refinement (see SamSegmenter); without logits: one predict."""
        return self.predict(view, image, prompt)

    def predict_views(self, views: list[int], images: list[np.ndarray], prompts: list[Prompt],
                      cascade: bool = False) -> list[SegResult]:
        """One result per view (predict, or predict_cascade when cascade=True); backends batch it."""
        if not (len(views) == len(images) == len(prompts)):
            raise SegmenterError(f"predict_views: {len(views)} views, {len(images)} images and "
                                 f"{len(prompts)} prompts; give one image and one prompt per view")
        run = self.predict_cascade if cascade else self.predict
        return self._map_views(run, views, images, prompts)

    def _map_views(self, run, views, images, prompts) -> list[SegResult]:
        """run(view, image, prompt) for every view, in order (backends may run them in parallel)."""
        return [run(v, im, p) for v, im, p in zip(views, images, prompts)]


def check_image(image: np.ndarray, view: int) -> np.ndarray:
    """Raise SegmenterError unless image is RGB uint8 (H,W,3), the format every backend expects."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise SegmenterError(f"view {view}: segmenters take RGB uint8 (H, W, 3) images, got "
                             f"{getattr(image, 'dtype', type(image))} {np.shape(image)}; convert "
                             "with (img * 255).round().astype(np.uint8) and drop any alpha channel")
    return image


def check_nonempty(result: SegResult, *, view: int, source: str,
                   min_pixels: int = MIN_MASK_PIXELS) -> SegResult:
    """Raise PromptError when the user's prompt produced (almost) no mask; else return result."""
    n = int(np.count_nonzero(result.mask))
    if n < min_pixels:
        raise PromptError(f"{source}: the prompt on view {view} gave an empty mask ({n} pixels < "
                          f"{min_pixels}); move the point onto the object or add a box")
    return result


def mask_input_to_prob(mask_input: np.ndarray, H: int, W: int) -> np.ndarray:
    """Any accepted mask_input -> (H,W) float32 probability of the object.

    (256,256) or (1,256,256) arrays on a non-256x256 image are SAM low-res logits; other arrays
    are resized to (H,W); values outside [0,1] are taken as logits.
    """
    m = np.asarray(mask_input, np.float32)
    m = m.reshape(m.shape[-2:]) if m.ndim == 3 and m.shape[0] == 1 else m
    if m.ndim != 2:
        raise SegmenterError(f"mask_input must be (h, w) or (1, h, w), got shape {np.shape(mask_input)}")
    if m.shape == (LOW_RES_SIZE, LOW_RES_SIZE) and (H, W) != m.shape:
        return 1.0 / (1.0 + np.exp(-low_res_logits_to_image(m, H, W)))
    if m.shape != (H, W):
        m = cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)
    if m.min() < 0.0 or m.max() > 1.0:
        m = 1.0 / (1.0 + np.exp(-m))
    return m

