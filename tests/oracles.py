"""Test segmenters backed by ground truth, degraded in known ways (issue 3's acceptance tests)."""
import cv2
import numpy as np

from sam_utils.segmenter import SegResult, Segmenter

KINDS = ("perfect", "eroded", "leak", "missing")


class DegradedOracle(Segmenter):
    """Answers every prompt with the view's ground-truth target mask, degraded by view: v % 4 == 1
    eroded, == 2 with the pixels of whatever lies near the target added (a leak onto the table and
    neighbours), == 3 missing (empty); view 0 (the prompt view) is perfect."""

    name = "degraded-oracle"
    ERODE_PX = 1
    LEAK_PX = 10

    def __init__(self, target: list[np.ndarray], anything: list[np.ndarray]):
        self.target, self.anything = target, anything    # per view (H,W) bool: target / any surface

    @classmethod
    def from_scene(cls, scene):
        read = lambda d: [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127 for f in sorted((scene / d).glob("*.png"))]  # noqa: E731
        return cls(read("gt/target_mask"), read("mask"))

    @staticmethod
    def kind(view: int) -> str:
        return KINDS[view % 4] if view else "perfect"

    def predict(self, view, image, prompt, mask_input=None):
        m = self.target[view].copy()
        k = self.kind(view)
        if k == "eroded":
            m = cv2.erode(m.astype(np.uint8), np.ones((2 * self.ERODE_PX + 1,) * 2, np.uint8)).astype(bool)
        elif k == "leak":
            near = cv2.dilate(m.astype(np.uint8), np.ones((2 * self.LEAK_PX + 1,) * 2, np.uint8)).astype(bool)
            m |= near & self.anything[view]
        elif k == "missing":
            m[:] = False
        return SegResult(m, 1.0, None)
