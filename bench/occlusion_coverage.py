"""The target stage's occlusion test on exact geometry: how much of the occluded target it makes unknown.

    python bench/occlusion_coverage.py --presets occluded lookalike --views 49 --width 200 --height 150 \
        --reach 0 3 6 [--masks probe/masks.npz]

Per preset, the exact first surfaces (sphere-traced) and the target's silhouettes at the given size stand in
for the scene field's rendered surface at 1/occlusion_level; the target masks are the exact visible ones, or a
run's lifted masks (`--masks`: bench/probe/target_probe.py's masks.npz, same views, one preset). Printed per
reach (grid pixels): occluded target pixels labelled empty space (neither mask nor unknown: their rays carve
through the target), unknown pixels, and of those the ones that hide no target (an occluder the target stage
then does not empty from that view).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.synthetic import PRESETS, exact_views  # noqa: E402
from sam_utils.masks import downsample_masks  # noqa: E402
from sam_utils.target_geometry import OcclusionTest  # noqa: E402
from systems.config import Conf  # noqa: E402

CONF = Conf.from_file(ROOT / "confs" / "synthetic.conf")    # its occlusion_dilate and depth_tol
GROW = CONF.get("nto3d.target.occlusion_dilate", int)
DEPTH_TOL = CONF.get("nto3d.target.depth_tol", float)


def exact_test(preset: str, n: int, w: int, h: int):
    """(OcclusionTest on the exact surfaces, visible target (n,h,w), occluded target (n,h,w))."""
    e = exact_views(preset, n, w, h)
    test = OcclusionTest(torch.from_numpy(e.points).double(), torch.from_numpy(e.hit), e.P, (h, w), DEPTH_TOL)
    return test, e.visible, e.silhouette & ~e.visible


def lifted_masks(path: str, h: int, w: int) -> np.ndarray:
    z = np.load(path)
    n, fh, fw = z["shape"]
    return downsample_masks(np.unpackbits(z["final"], -1)[..., :fw].astype(bool), h, w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--height", type=int, default=150)
    ap.add_argument("--reach", type=int, nargs="+", default=[0, 6])
    ap.add_argument("--masks", default="", help="a run's lifted masks (masks.npz) instead of the exact ones")
    a = ap.parse_args()
    if a.masks and len(a.presets) != 1:
        raise SystemExit("--masks: name the one preset the masks belong to")
    print("| preset | masks | reach (grid px) | occluded target px | labelled empty | unknown px | unknown, hiding no target |")
    print("|---|---|---|---|---|---|---|")
    for preset in a.presets:
        test, visible, hidden = exact_test(preset, a.views, a.width, a.height)
        masks = lifted_masks(a.masks, a.height, a.width) if a.masks else visible
        for r in a.reach:
            u = test.occluded(torch.from_numpy(masks), GROW, r).numpy()
            print(f"| `{preset}` | {'lifted' if a.masks else 'exact'} | {r} | {hidden.sum()} | "
                  f"{(hidden & ~u & ~masks).sum()} | {u.sum()} | {(u & ~hidden).sum()} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
