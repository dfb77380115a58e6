"""Chamfer distance of a predicted mesh against ground truth (DTU-style), printed as JSON.

Usage (from the repository root)::

    python scripts/eval_mesh.py --pred exp/x/mesh.ply --gt gt/target.ply [--gt_accuracy FULL.ply]
                                [--json out.json] [--spacing 0.2] [--cap 20]

Meshes are sampled at 1 / spacing^2 points per unit area (pred with --seed, gt with --seed + 1);
point clouds are used as they are.
`--gt_accuracy` gives a separate reference (e.g. the full closed mesh) for the accuracy term while
`--gt` (e.g. visible points) is used for completeness.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluation.metrics import (  # noqa: E402  (after the sys.path insert)
    DEFAULT_CAP_MM, DEFAULT_MAX_POINTS, DEFAULT_SPACING_MM, GeometryError, chamfer_files)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pred", required=True, help="predicted mesh or point cloud")
    ap.add_argument("--gt", required=True, help="ground-truth mesh or points (completeness)")
    ap.add_argument("--gt_accuracy", help="separate ground truth for the accuracy term")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--spacing", type=float, default=DEFAULT_SPACING_MM,
                    help="mean sample spacing on meshes, in scene units (default 0.2 mm)")
    ap.add_argument("--cap", type=float, default=DEFAULT_CAP_MM, help="distance cap (default 20)")
    ap.add_argument("--max_points", type=int, default=DEFAULT_MAX_POINTS,
                    help="cap on samples per mesh (memory)")
    ap.add_argument("--seed", type=int, default=0, help="surface sampling seed")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.spacing > 0 or not args.cap > 0:
        print("error: --spacing and --cap must be positive", file=sys.stderr)
        return 2
    try:
        result = chamfer_files(args.pred, args.gt, args.gt_accuracy, args.spacing, args.cap,
                               args.max_points, args.seed)
    except GeometryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
