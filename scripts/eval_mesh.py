"""Chamfer distance of a predicted mesh against ground truth on DTU's protocol, printed as JSON.

Usage (from the repository root)::

    python scripts/eval_mesh.py --pred exp/x/mesh.ply --gt gt/target_visible.ply [--gt_accuracy gt/target.ply]
                                [--json out.json] [--spacing 0.2] [--max_dist 20] [--seed 0] [--clamped]

DTU's rules (evaluation/metrics.py): the predicted mesh is sampled per triangle on DTU's grid plus
its vertices and down-sampled to --spacing (0.2 mm; a point cloud is only down-sampled); a gt mesh
is sampled the same way without down-sampling, gt points are used as they are. Distances >=
--max_dist (DTU: 20 mm) are outliers, dropped from the means; their fractions are printed as
accuracy_outliers / completeness_outliers. `--clamped` counts them as max_dist instead (the older
metric of this project; not comparable with DTU figures).
`--gt_accuracy` gives a separate reference (e.g. the full closed mesh) for the accuracy term while
`--gt` (e.g. visible points) is used for completeness. For a real DTU scan with its observation
mask and ground plane use scripts/eval_dtu.py.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluation.metrics import (  # noqa: E402  (after the sys.path insert)
    DEFAULT_MAX_DIST_MM, DEFAULT_SPACING_MM, chamfer_files, report)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pred", required=True, help="predicted mesh or point cloud")
    ap.add_argument("--gt", required=True, help="ground-truth mesh or points (completeness)")
    ap.add_argument("--gt_accuracy", help="separate ground truth for the accuracy term")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--spacing", type=float, default=DEFAULT_SPACING_MM,
                    help="sampling and down-sampling distance, in scene units (default 0.2 mm)")
    ap.add_argument("--max_dist", type=float, default=DEFAULT_MAX_DIST_MM,
                    help="distances at or beyond this are outliers (default 20 mm)")
    ap.add_argument("--clamped", action="store_true",
                    help="clamp outliers to max_dist instead of dropping them (older, non-DTU metric)")
    ap.add_argument("--seed", type=int, default=0, help="down-sampling order seed")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.spacing > 0 or not args.max_dist > 0:
        print("error: --spacing and --max_dist must be positive", file=sys.stderr)
        return 2
    return report(lambda: chamfer_files(args.pred, args.gt, args.gt_accuracy, args.spacing, args.max_dist,
                                        outliers="clamp" if args.clamped else "drop", seed=args.seed),
                  args.json)

if __name__ == "__main__":
    sys.exit(main())
