"""Write an imported scene's prompt.json: from its own mask (benchmark clicks) or from given pixels.

    python bench/capture_prompt.py gpu_data/lego_cap --from_mask            # deepest interior point + box
    python bench/capture_prompt.py gpu_data/fox_cap --point 250,470 --box 105,70,505,610

--from_mask clicks the deepest interior point of the view's mask (the largest distance to the mask's
border or the image's edge, cv2 exact L2 distance transform), as a person aiming at the middle of the
object would, and gives the mask's bounding box: a reproducible one-click prompt for scenes with exact
masks (NeRF-synthetic alpha). The file is the loader's prompt schema (README "Usage"), in pixels of
the scene's images, validated against the view's size before it is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from datasets.dtu import IMAGE_EXTS  # noqa: E402
from sam_utils.errors import PromptError  # noqa: E402
from sam_utils.masks import mask_box  # noqa: E402
from sam_utils.prompts import Prompt, load_prompt_file  # noqa: E402
from systems.atomic import atomic_write_text  # noqa: E402


def deepest_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the (H, W) bool mask's pixel farthest from any non-mask pixel or the image edge
    (first in row-major order among equals)."""
    if not mask.any():
        raise ValueError("the mask is empty: no interior point")
    padded = np.pad(mask.astype(np.uint8), 1)                   # the image edge counts as background
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def mask_prompt(mask: np.ndarray, view: int) -> Prompt:
    """One positive click at the mask's deepest interior point plus the mask's box (inclusive pixels)."""
    return Prompt(view, [deepest_point(mask)], [1], mask_box(mask))


def view_file(scene: Path, folder: str, view: int) -> Path:
    files = sorted(p for p in (scene / folder).glob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not 0 <= view < len(files):
        raise SystemExit(f"error: {scene / folder} holds {len(files)} images, no view {view}; import the "
                         "scene first (python scripts/import_scene.py SRC --out SCENE; mask/ comes from "
                         "sources with masks or alpha)")
    return files[view]


def write_prompt(scene: Path, prompt: Prompt) -> Path:
    """Validate `prompt` against the scene's view and write scene/prompt.json (atomically)."""
    files = sorted(p for p in (scene / "image").glob("*") if p.suffix.lower() in IMAGE_EXTS)
    img = cv2.imread(str(view_file(scene, "image", prompt.view)), cv2.IMREAD_UNCHANGED)
    prompt.validate(img.shape[0], img.shape[1], str(scene / "prompt.json"), len(files))
    out = scene / "prompt.json"
    atomic_write_text(out, json.dumps(prompt.to_dict()) + "\n")
    load_prompt_file(out)                                       # it reads back
    return out


def _numbers(n: int):
    def parse(text: str) -> list[float]:
        vals = [float(v) for v in text.split(",")]
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return vals
    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scene", type=Path, help="imported scene folder (image/, mask/, cameras_sphere.npz)")
    ap.add_argument("--view", type=int, default=0, help="view the prompt is on (default 0)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--from_mask", action="store_true", help="click the deepest point of the view's mask, box it")
    g.add_argument("--point", type=_numbers(2), help="x,y: one positive click (pixels of the scene's images)")
    ap.add_argument("--mask_dir", default="mask", help="--from_mask: mask folder inside the scene")
    ap.add_argument("--box", type=_numbers(4), default=None, help="x0,y0,x1,y1 with --point (optional)")
    args = ap.parse_args(argv)
    if not args.scene.is_dir():
        raise SystemExit(f"error: scene folder {args.scene} not found; import it first "
                         "(python scripts/import_scene.py SRC --out SCENE)")
    if args.from_mask:
        if args.box is not None:
            raise SystemExit("error: --box goes with --point; --from_mask boxes the mask itself")
        path = view_file(args.scene, args.mask_dir, args.view)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127
        if not mask.any():
            raise SystemExit(f"error: {path} is empty; --from_mask needs the object in that view (try --view)")
        prompt = mask_prompt(mask, args.view)
    else:
        prompt = Prompt(args.view, [args.point], [1], args.box)
    try:
        out = write_prompt(args.scene, prompt)
    except PromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {json.dumps(prompt.to_dict())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
