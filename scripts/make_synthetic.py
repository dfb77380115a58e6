#!/usr/bin/env python
"""Generate a built-in synthetic scene (images, DTU-style cameras, exact ground truth).

Example (from the repository root):
    python scripts/make_synthetic.py --preset occluded --out data/synthetic/occluded
"""
import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.synthetic import PRESETS, make_scene  # noqa: E402


def _dir_size_mb(path: pathlib.Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True, choices=PRESETS, help="scene difficulty preset")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output folder (created if missing)")
    ap.add_argument("--views", type=int, default=49, help="number of cameras (default 49)")
    ap.add_argument("--width", type=int, default=800, help="image width in pixels (default 800)")
    ap.add_argument("--height", type=int, default=600, help="image height in pixels (default 600)")
    ap.add_argument("--seed", type=int, default=0, help="varies textures and small placements (default 0)")
    ap.add_argument("--gt_resolution", type=int, default=256, help="marching-cubes samples along the longest "
                    "axis of each ground-truth mesh (default 256)")
    ap.add_argument("--zoom", type=float, default=None, help="focal multiplier of the cameras (> 1: the content "
                    "fills more of the frame; default: the preset's framing)")
    ap.add_argument("--look_at_height", type=float, default=None, help="height (mm) above the table the cameras "
                    "aim at (default: the preset's framing)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)

    start = time.time()
    out = make_scene(args.preset, args.out, n_views=args.views, width=args.width, height=args.height,
                     seed=args.seed, gt_resolution=args.gt_resolution, device=args.device, progress=True,
                     zoom=args.zoom, look_at_z=args.look_at_height)
    n_files = sum(1 for f in out.rglob("*") if f.is_file())
    print(f"wrote {args.preset!r} scene to {out.resolve()}: {args.views} views of {args.width}x{args.height}, "
          f"{n_files} files, {_dir_size_mb(out):.1f} MB, in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
