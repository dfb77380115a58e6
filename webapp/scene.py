"""The scene side of the web app: views, the prompt being clicked, the segmenter's preview mask.

Coordinates: the page shows each view resized for display (`display_scale`: longest side in
[DISPLAY_MIN, DISPLAY_MAX]); clicks arrive in display pixels and are stored in full-resolution
pixels (x = column), the units of prompt.json and train.py's --prompt_points. The segmenter runs on
the display-size image (fast: the preview appears within a second); results are cached per view
and prompt, so undo and view switches are instant. One SceneData serves every browser tab; each
tab's clicks live in its own PromptState.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datasets.dtu import IMAGE_EXTS
from sam_utils.prompts import Prompt
from sam_utils.segmenter import Segmenter
from sam_utils.segmenters import build_segmenter
from systems.atomic import atomic_write_text
from systems.config import Conf

DISPLAY_MAX = 800          # display images: longest side at most this (pixels) ...
DISPLAY_MIN = 480          # ... and small views are upscaled to at least this (nearest neighbour)
THUMB_SIDE = 160
CACHE_SIZE = 64            # cached preview masks (all views together)
IMAGE_CACHE = 8            # full-resolution views kept in memory
MASK_RGB = np.array([30, 144, 255], np.float32)
MASK_ALPHA = 0.5
POS_RGB, NEG_RGB, BOX_RGB = (40, 220, 60), (230, 40, 40), (255, 210, 0)


def display_scale(height: int, width: int) -> float:
    longest = max(height, width)
    return DISPLAY_MIN / longest if longest < DISPLAY_MIN else min(1.0, DISPLAY_MAX / longest)


def display_image(image: np.ndarray) -> np.ndarray:
    """The view as the page shows it (RGB uint8), resized by display_scale."""
    s = display_scale(*image.shape[:2])
    if s == 1.0:
        return image
    size = (round(image.shape[1] * s), round(image.shape[0] * s))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST)


def overlay(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """image (H,W,3) with mask (H,W) blended in MASK_RGB at MASK_ALPHA (tests decode it back)."""
    out = image.copy()
    if mask is not None and mask.any():
        out[mask] = ((1 - MASK_ALPHA) * image[mask] + MASK_ALPHA * MASK_RGB).round().astype(np.uint8)
    return out


@dataclass
class PromptState:
    """One tab's prompt: points (full-res x, y) with labels 1/0, a box, a pending box corner, undo."""

    view: int = 0
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    box: list | None = None
    corner: list | None = None          # the first corner of a box being clicked
    history: list = field(default_factory=list)

    def _push(self) -> None:
        self.history.append((list(self.points), list(self.labels), self.box, self.corner))

    def click(self, x: float, y: float, mode: str) -> None:
        """mode: 'positive' | 'negative' | 'box' (two clicks: opposite corners)."""
        self._push()
        if mode == "box":
            if self.corner is None:
                self.corner = [x, y]
            else:
                (x0, y0), self.corner = self.corner, None
                self.box = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        else:
            self.points.append([x, y])
            self.labels.append(1 if mode == "positive" else 0)

    def set_box(self, box: list | None) -> None:
        self._push()
        self.box, self.corner = box, None

    def undo(self) -> None:
        if self.history:
            self.points, self.labels, self.box, self.corner = self.history.pop()

    def clear(self) -> None:
        self._push()
        self.points, self.labels, self.box, self.corner = [], [], None, None

    def select_view(self, view: int) -> None:
        """Another view: the prompt refers to one view, so it starts afresh there."""
        if view != self.view:
            self.view, self.points, self.labels, self.box, self.corner, self.history = view, [], [], None, None, []

    def usable(self) -> bool:
        return 1 in self.labels or self.box is not None

    def prompt(self) -> Prompt:
        return Prompt(self.view, np.asarray(self.points, np.float64).reshape(-1, 2), np.asarray(self.labels, np.int64),
                      None if self.box is None else np.asarray(self.box, np.float64))

    def to_json(self) -> dict:
        """prompt.json's schema (README "Usage"), full-resolution pixels."""
        return {"view": int(self.view),
                "positive": [p for p, lab in zip(self.points, self.labels) if lab == 1],
                "negative": [p for p, lab in zip(self.points, self.labels) if lab == 0],
                "box": None if self.box is None else [float(v) for v in self.box]}


def segmenter_from_conf(conf: Conf, data_dir: Path, device: str = "cpu") -> Segmenter:
    """The segmenter the run will use (nto3d.segmenter and its settings in the conf)."""
    kind = conf.get("nto3d.segmenter", str)
    if kind == "sam":
        return build_segmenter("sam", sam_model_type=conf.get("nto3d.sam.model_type", str),
                               sam_checkpoint=conf.get("nto3d.sam.checkpoint", str), device=device,
                               cache_dir=data_dir / "sam_feat")
    return build_segmenter(kind, crop_margin=conf.get("nto3d.grabcut.crop_margin", float),
                           workers=conf.get("nto3d.grabcut.workers", int))


class SceneData:
    """The scene folder's views (read lazily), thumbnails, and the cached preview segmenter."""

    def __init__(self, data_dir, segmenter_factory, prompt_file: str = "prompt.json"):
        self.data_dir = Path(data_dir)
        folder = self.data_dir / "image"
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {self.data_dir}: no image/ folder; give a scene in the NeuS/DTU layout "
                                    "(image/NNN.png, cameras_sphere.npz), e.g. one made by scripts/make_synthetic.py")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.paths:
            raise FileNotFoundError(f"--data {self.data_dir}: image/ holds no .png/.jpg views")
        self.prompt_path = self.data_dir / prompt_file
        self._factory, self._segmenter = segmenter_factory, None
        self._images: dict[int, np.ndarray] = {}
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @property
    def n_views(self) -> int:
        return len(self.paths)

    def _read(self, view: int) -> np.ndarray:
        bgr = cv2.imread(str(self.paths[view]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {self.paths[view]}; is it a valid image?")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def image(self, view: int) -> np.ndarray:
        """Full-resolution RGB uint8 view (the last IMAGE_CACHE views stay in memory)."""
        if view not in self._images:
            self._images[view] = self._read(view)
            while len(self._images) > IMAGE_CACHE:
                self._images.pop(next(iter(self._images)))
        return self._images[view]

    def shown(self, view: int) -> tuple[np.ndarray, float]:
        img = self.image(view)
        return display_image(img), display_scale(*img.shape[:2])

    def thumbnails(self) -> list[tuple[np.ndarray, str]]:
        out = []
        for v in range(self.n_views):
            img = self._read(v)
            s = THUMB_SIDE / max(img.shape[:2])
            out.append((cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), f"view {v}"))
        return out

    def segmenter(self) -> Segmenter:
        with self._lock:
            if self._segmenter is None:
                self._segmenter = self._factory()
            return self._segmenter

    def mask(self, state: PromptState) -> np.ndarray | None:
        """The segmenter's mask of state's prompt at display size (cached), None without a usable prompt."""
        if not state.usable():
            return None
        key = (state.view, tuple(map(tuple, state.points)), tuple(state.labels), None if state.box is None else tuple(state.box))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        img, s = self.shown(state.view)
        prompt = state.prompt().scaled(s).validate(img.shape[0], img.shape[1], "the page's prompt")
        seg = self.segmenter()
        mask = seg.predict_cascade(state.view, img, prompt).mask
        self._cache[key] = mask
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return mask

    def render(self, state: PromptState) -> tuple[np.ndarray, np.ndarray | None]:
        """(display image with the mask and the prompt drawn, the mask) for the page."""
        img, s = self.shown(state.view)
        mask = self.mask(state)
        out = overlay(img, mask)
        r = max(3, img.shape[1] // 120)

        def px(p):
            return int(round((p[0] + 0.5) * s - 0.5)), int(round((p[1] + 0.5) * s - 0.5))
        if state.box is not None:
            cv2.rectangle(out, px(state.box[:2]), px(state.box[2:]), BOX_RGB, 2)
        if state.corner is not None:
            cv2.drawMarker(out, px(state.corner), BOX_RGB, cv2.MARKER_CROSS, 4 * r, 2)
        for p, lab in zip(state.points, state.labels):
            cv2.circle(out, px(p), r, POS_RGB if lab == 1 else NEG_RGB, -1)
            cv2.circle(out, px(p), r, (255, 255, 255), 1)
        return out, mask

    def write_prompt(self, state: PromptState) -> Path:
        """Write the prompt to the scene's prompt file (atomically) after checking it fits the view."""
        h, w = self.image(state.view).shape[:2]
        state.prompt().validate(h, w, str(self.prompt_path), n_views=self.n_views)
        atomic_write_text(self.prompt_path, json.dumps(state.to_json(), indent=2) + "\n")
        return self.prompt_path
