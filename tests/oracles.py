"""Test segmenters backed by ground truth: degraded in known ways (issue 3's acceptance tests), answering
with one part of the target (part/whole ambiguity, issue 15), or the object under the prompt."""
import json

import cv2
import numpy as np

from datasets.synthetic import PART_DIR
from datasets.synthetic_gt import target_part_map, target_parts
from sam_utils.lifting import LiftingSettings, SegmenterTrust
from sam_utils.masks import pixel_indices
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


def _read_views(folder, flag=cv2.IMREAD_GRAYSCALE) -> list[np.ndarray]:
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no NNN.png views in {folder}; generate the scene with datasets.synthetic.make_scene")
    return [cv2.imread(str(f), flag) for f in files]


class PartOracle(Segmenter):
    """Part/whole ambiguity: in `part_views` the answer is one part of the target, the same 3D part in
    every such view (twotone's roof, say); elsewhere the whole target. Ignores the prompt, like
    DegradedOracle; the prompt view is never a part view unless listed."""

    name = "part-oracle"

    def __init__(self, target: list[np.ndarray], part: list[np.ndarray], part_views):
        self.target, self.part = target, part            # per view (H,W) bool: the whole target / the part
        self.part_views = {int(v) for v in part_views}

    @staticmethod
    def default_views(n_views: int) -> list[int]:
        """Every second view, the odd ones (the prompt view 0 answers with the whole target)."""
        return list(range(1, n_views, 2))

    @classmethod
    def from_scene(cls, scene, part: str = "roof", part_views=None):
        """From a scene folder written by make_scene for a target made of parts (gt/target_parts)."""
        names = json.loads((scene / "scene.json").read_text()).get("target_parts", [])
        if part not in names:
            raise ValueError(f"{scene}: the target has parts {names}, not {part!r}; use a preset whose target "
                             "is made of parts (twotone)")
        labels = _read_views(scene / PART_DIR, cv2.IMREAD_UNCHANGED)
        views = cls.default_views(len(labels)) if part_views is None else part_views
        return cls([lab > 0 for lab in labels], [lab == names.index(part) + 1 for lab in labels], views)

    @classmethod
    def from_renders(cls, scene, renders, part: str = "roof", part_views=None):
        """From a Scene and its in-memory views (sphere_tracer.ViewRender), for tests without files."""
        names = target_parts(scene)
        if part not in names:
            raise ValueError(f"the target has parts {list(names)}, not {part!r}")
        labels = [target_part_map(scene, r.object_id, r.points) for r in renders]
        views = cls.default_views(len(labels)) if part_views is None else part_views
        return cls([lab > 0 for lab in labels], [lab == names.index(part) + 1 for lab in labels], views)

    def kind(self, view: int) -> str:
        return "part" if view in self.part_views else "whole"

    def predict(self, view, image, prompt, mask_input=None):
        return SegResult((self.part if self.kind(view) == "part" else self.target)[view].copy(), 1.0, None)


class ObjectOracle(Segmenter):
    """A perfect prompted segmenter: the object that most positive points fall on (object ids per view,
    -1 where nothing), cut to the prompt's box grown by BOX_SLACK of its size a side; empty when no
    positive lands on an object. A prompt on the wrong object, or a box around a piece, shows."""

    name = "object-oracle"
    BOX_SLACK = 0.1

    def __init__(self, object_ids: list[np.ndarray]):
        self.object_ids = object_ids                     # per view (H,W) int

    def predict(self, view, image, prompt, mask_input=None):
        ids = self.object_ids[view]
        h, w = ids.shape
        cols, rows = pixel_indices(prompt.points[prompt.labels == 1], h, w)
        under = ids[rows, cols]
        under = under[under >= 0]
        if not len(under):
            return SegResult(np.zeros((h, w), bool), 0.0, None)
        mask = ids == np.bincount(under).argmax()
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            mx, my = self.BOX_SLACK * (x1 - x0 + 1), self.BOX_SLACK * (y1 - y0 + 1)
            keep = np.zeros_like(mask)
            keep[max(0, int(np.floor(y0 - my))):int(np.ceil(y1 + my)) + 1,
                 max(0, int(np.floor(x0 - mx))):int(np.ceil(x1 + mx)) + 1] = True
            mask &= keep
        return SegResult(mask, 1.0, None)


def lifting_settings(trust: SegmenterTrust, **changes) -> LiftingSettings:
    """The lifting settings of the loop tests (full-resolution projections, the oracle's trust), with changes."""
    base = dict(converge_eps=0.02, max_rounds=5, proj_threshold=0.5, n_positive=3, n_negative=3, cascade=True,
                render_level=1, final_render_level=1, connect_voxel=3.0, connect_bridge=1, connect_edge=4.0,
                unseen="unknown", rollback_spill=0.03)
    return LiftingSettings(**{**base, **changes}, per_segmenter={"oracle": trust})
