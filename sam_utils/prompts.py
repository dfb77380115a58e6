"""Prompts for a segmenter: the user's click (file or command line) and prompts derived from masks.

Coordinates are pixels of the image the prompt refers to: x = column, y = row, pixel index
convention (pixel (x, y) covers [x, x+1) x [y, y+1)), as SAM and the original anno_box.json use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import PromptError
from .masks import grow_box, mask_box

# prompts_from_mask defaults (see its docstring).
MIN_AREA_PX = 25                # a projection smaller than this counts as empty
INTERIOR_MARGIN_PX = 4.0        # positives at least this far inside the mask border
INTERIOR_FRAC = 0.3             # ... and at least this fraction of the deepest interior distance
MIN_COMPONENT_FRAC = 0.05       # components smaller than this fraction of the largest are noise
RING_FRAC = 0.25                # default ring width, as a fraction of sqrt(mask area)
RING_MIN_PX = 8.0               # lower bound of the default ring width
RING_GAP_FRAC = 0.05            # negatives at least this fraction of sqrt(area) off the mask
RING_MIN_GAP_PX = 2.0
NEGATIVE_MAX_PROB = 0.1         # a negative must have a rendered probability below this
BOX_MARGIN_FRAC = 0.05          # the box grows by this fraction of its size on each side
MAX_CANDIDATES = 20000          # candidate pixels are subsampled to this many (speed)


@dataclass
class Prompt:
    """Points (+ box) on one view: points (K,2) float xy; labels (K,) int 1/0; box (4,) or None."""

    view: int
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)  # (K, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)       # (K,)
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float64).reshape(-1)       # (4,)

    @property
    def n_positive(self) -> int:
        return int((self.labels == 1).sum())

    def shifted(self, dx: float, dy: float, width: int, height: int) -> "Prompt":
        """The prompt on a width x height crop whose origin is (-dx, -dy) in this prompt's image:
        points that fall off the crop are dropped, the box is clipped to it."""
        pts = self.points + np.array([dx, dy])
        keep = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
        box = None
        if self.box is not None:
            box = np.clip(self.box + np.array([dx, dy, dx, dy]), 0, [width - 1, height - 1] * 2)
        return Prompt(self.view, pts[keep], self.labels[keep], box)

    def scaled(self, s: float) -> "Prompt":
        """The prompt for the image resized by factor s (pixel centres map onto pixel centres)."""
        def f(a):
            return np.maximum((a + 0.5) * s - 0.5, 0.0)
        return Prompt(self.view, f(self.points), self.labels.copy(),
                      None if self.box is None else f(self.box))

    def validate(self, height: int, width: int, source: str, n_views: int | None = None) -> "Prompt":
        """Raise PromptError (naming `source`) unless the prompt is usable on an HxW image of a scene of
        n_views views. Every prompt, from a file, the command line or the web app, is checked here."""
        where = f"{source} (view {self.view}, image {width}x{height})"
        if n_views is not None and not 0 <= self.view < n_views:
            raise PromptError(f"{source}: view {self.view} does not exist; the scene has views 0..{n_views - 1}")
        if len(self.labels) != len(self.points):
            raise PromptError(f"{where}: {len(self.points)} points but {len(self.labels)} labels; "
                              "give one label (1 = object, 0 = background) per point")
        if not np.isin(self.labels, (0, 1)).all():
            raise PromptError(f"{where}: labels must be 1 (object) or 0 (background), "
                              f"got {self.labels.tolist()}")
        if self.n_positive == 0 and self.box is None:
            raise PromptError(f"{where}: no positive point and no box; click at least one point "
                              "on the object or give a box around it")
        for (x, y) in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(f"{where}: point ({x:g}, {y:g}) is outside the image; points are "
                                  f"x in [0, {width}), y in [0, {height}) in full-resolution pixels")
        if self.box is not None:
            if self.box.shape != (4,) or not np.isfinite(self.box).all():
                raise PromptError(f"{where}: box must be 4 numbers x0,y0,x1,y1, got {self.box}")
            x0, y0, x1, y1 = self.box
            if not (x1 > x0 and y1 > y0):
                raise PromptError(f"{where}: box {self.box.tolist()} is degenerate; "
                                  "it must satisfy x0 < x1 and y0 < y1")
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise PromptError(f"{where}: box {self.box.tolist()} is outside the image "
                                  f"[0, {width}] x [0, {height}]")
        return self

    def to_dict(self) -> dict:
        """Our JSON schema (the one load_prompt_file reads back), for records of pseudo masks."""
        return {"view": int(self.view),
                "positive": self.points[self.labels == 1].tolist(),
                "negative": self.points[self.labels == 0].tolist(),
                "box": None if self.box is None else self.box.tolist()}


# ----------------------------------------------------------------------------- loading

def load_prompt_file(path, view: int | None = None) -> Prompt:
    """Read a prompt file in the original NTO3D schema ({"frames": [...]}) or ours ({"view": ...}).

    Original: the frame whose "index" == view (default: the first frame). Ours: the file's view
    (a different requested view is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file {path} not found; give the path of an anno_box.json-style "
                          "file or use --prompt_points")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"prompt file {path} is not valid JSON: {e}") from e
    try:
        if isinstance(data, dict) and "frames" in data:
            return _from_frames(data["frames"], view, path)
        if isinstance(data, dict) and "view" in data:
            return _from_ours(data, view, path)
    except PromptError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise PromptError(f"prompt file {path}: malformed entry ({e!r})") from e
    raise PromptError(f"prompt file {path} has an unknown schema; expected "
                      '{"frames": [{"index": 0, "point": [[x, y]], "label": [1], '
                      '"box": [x0, y0, x1, y1]}]} '
                      'or {"view": 0, "positive": [[x, y]], "negative": [], "box": null}')


def _from_frames(frames, view, path) -> Prompt:
    if not isinstance(frames, list) or not frames:
        raise PromptError(f"prompt file {path}: 'frames' must be a non-empty list")
    if view is None:
        frame = frames[0]
    else:
        match = [f for f in frames if int(f.get("index", -1)) == int(view)]
        if not match:
            have = [f.get("index") for f in frames]
            raise PromptError(f"prompt file {path} has no frame with index {view}; available indices: "
                              f"{have} (choose one of them as the prompt view)")
        frame = match[0]
    points = np.asarray(frame.get("point", []), dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(frame.get("label", [1] * len(points)), dtype=np.int64).reshape(-1)
    box = frame.get("box")
    return Prompt(int(frame["index"]), points, labels, None if box is None else box)


def _from_ours(data, view, path) -> Prompt:
    file_view = int(data["view"])
    if view is not None and int(view) != file_view:
        raise PromptError(f"prompt file {path} is for view {file_view}, but view {view} was requested")
    pos = np.asarray(data.get("positive", []), dtype=np.float64).reshape(-1, 2)
    neg = np.asarray(data.get("negative", []) or [], dtype=np.float64).reshape(-1, 2)
    labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    box = data.get("box")
    return Prompt(file_view, np.concatenate([pos, neg]), labels, None if box is None else box)


def _parse_numbers(text: str, n: int, option: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != n:
        raise PromptError(f"{option}: cannot parse {text!r}; expected {n} comma-separated numbers")
    return values


def _parse_points(text: str | None, option: str) -> np.ndarray:
    if text is None or not text.strip():
        return np.zeros((0, 2))
    return np.array([_parse_numbers(p, 2, option) for p in text.split(";") if p.strip()])


def parse_cli_prompt(view: int, points: str | None, box: str | None = None,
                     negative: str | None = None) -> Prompt:
    """Prompt from command-line strings (the caller validates it against the image size).

    points   "x,y;x,y"     (--prompt_points; object points)
    negative "x,y;x,y"     (--prompt_negative; optional background points)
    box      "x0,y0,x1,y1" (--prompt_box; optional)
    """
    pos = _parse_points(points, "--prompt_points")
    neg = _parse_points(negative, "--prompt_negative")
    b = None if box is None or not box.strip() else np.array(_parse_numbers(box, 4, "--prompt_box"))
    if len(pos) == 0 and b is None:
        raise PromptError("--prompt_points / --prompt_box: give at least one point on the object "
                          '(e.g. --prompt_points "412,300") or a box ("x0,y0,x1,y1")')
    pts = np.concatenate([pos, neg]) if len(neg) else pos
    return Prompt(int(view), pts.reshape(-1, 2),
                  np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]), b)


# ----------------------------------------------------------------------------- from masks

def _farthest_points(cand: np.ndarray, k: int, first: int) -> np.ndarray:
    """Greedy farthest-point selection of k rows of cand (N,2), starting at row `first`."""
    chosen = [first]
    d = np.linalg.norm(cand - cand[first], axis=1)                # (N,)
    while len(chosen) < min(k, len(cand)):
        i = int(np.argmax(d))
        if d[i] <= 0:
            break
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(cand - cand[i], axis=1))
    return cand[chosen]


def _drop_small_components(mask: np.ndarray, min_frac: float) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]                                  # (n-1,)
    keep = np.flatnonzero(areas >= min_frac * areas.max()) + 1
    return np.isin(lab, keep)


def _subsample(idx: np.ndarray, rng: np.random.Generator, limit: int) -> np.ndarray:
    return idx if len(idx) <= limit else np.sort(rng.choice(idx, limit, replace=False))


def prompts_from_mask(prob: np.ndarray, view: int, threshold: float = 0.5, n_positive: int = 5,
                      n_negative: int = 4, interior_margin_px: float = INTERIOR_MARGIN_PX,
                      ring_px: float | None = None, rng=None, *,
                      min_area_px: int = MIN_AREA_PX, interior_frac: float = INTERIOR_FRAC,
                      negative_max_prob: float = NEGATIVE_MAX_PROB,
                      box_margin_frac: float = BOX_MARGIN_FRAC, known: np.ndarray | None = None) -> Prompt | None:
    """Prompt from a soft mask (H,W) in [0,1], e.g. the rendered occupancy of the target in a view.

    Positives: farthest-point spread over confident interior pixels (distance to the mask border
    >= max(interior_margin_px, interior_frac * deepest distance); the image edge counts as border),
    starting at the deepest pixel; always inside the mask, unlike k-means centres on non-convex
    shapes. Negatives: farthest-point spread over pixels with prob < negative_max_prob lying
    between a small gap and ring_px (default RING_FRAC * sqrt(area), >= RING_MIN_PX) from the mask.
    Box: the mask's bounding box grown by box_margin_frac, clipped to the image.
    known (H,W) bool: where the map rests on evidence; points only there (positives inside the known
    part of the mask, negatives on known background), the box from the whole map (a guess may widen
    where the segmenter looks, never say what is what). Returns None when fewer than min_area_px
    pixels (of the known part, with known) pass the threshold.
    Deterministic given rng.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise PromptError(f"prompts_from_mask: expected an (H, W) probability map, got {prob.shape}")
    rng = np.random.default_rng(rng)
    H, W = prob.shape
    mask = prob >= threshold                                            # (H, W) bool
    if mask.sum() < min_area_px:
        return None
    mask = _drop_small_components(mask, MIN_COMPONENT_FRAC)
    area = float(mask.sum())

    # positives: distance to the nearest non-mask pixel (of the known part), with the image edge as non-mask
    inner = mask if known is None else mask & known
    if inner.sum() < min_area_px:
        return None
    dist_in = cv2.distanceTransform(np.pad(inner, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]  # (H, W)
    deepest = float(dist_in.max())
    margin = min(max(interior_margin_px, interior_frac * deepest), deepest)
    cand = _subsample(np.flatnonzero(dist_in >= margin), rng, MAX_CANDIDATES)
    xy = np.stack([cand % W, cand // W], 1).astype(np.float64)          # (N, 2)
    pos = _farthest_points(xy, n_positive, int(np.argmax(dist_in.ravel()[cand])))

    # negatives: a ring of confident background around the mask
    dist_out = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)  # (H, W)
    ring = ring_px if ring_px is not None else max(RING_MIN_PX, RING_FRAC * np.sqrt(area))
    gap = min(max(RING_MIN_GAP_PX, RING_GAP_FRAC * np.sqrt(area)), 0.5 * ring)
    ring_mask = (~mask) & (dist_out >= gap) & (dist_out <= ring) & (prob < negative_max_prob)
    if known is not None:
        ring_mask &= known
    neg = np.zeros((0, 2))
    cand = _subsample(np.flatnonzero(ring_mask), rng, MAX_CANDIDATES)
    if n_negative > 0 and len(cand):
        xy = np.stack([cand % W, cand // W], 1).astype(np.float64)
        neg = _farthest_points(xy, n_negative, int(rng.integers(len(cand))))

    box = grow_box(mask_box(mask), box_margin_frac, H, W)
    labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return Prompt(int(view), np.concatenate([pos, neg]), labels, box)
