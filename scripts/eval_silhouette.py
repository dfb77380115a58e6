"""Silhouette IoU of a mesh against a scene's masks in every view (CPU rasterisation), as JSON.

Usage (from the repository root)::

    python scripts/eval_silhouette.py --mesh exp/scan65/meshes/target.ply --scene data/dtu_scan65
                                      [--mask_dir mask] [--json out.json] [--sheet sheet.png] [--workers 8]

The scene is in the NeuS/IDR layout (cameras_sphere.npz + one mask per view); the mesh is in the
scene's world coordinates (this project's meshes/*.ply are). --mask_dir is `mask` (DTU's object
masks) by default; for the built-in synthetic scenes use `gt/target_mask` to check a target mesh.
Prints per-view and mean IoU; --json writes {"mean_iou": ..., "per_view": [...]}; --sheet writes one
picture of every view (green: mesh and mask agree, red: mesh only, blue: mask only), to see where they differ.
A pixel is in the silhouette when its centre falls in a projected triangle (evaluation/silhouette.py).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.dtu import DatasetError  # noqa: E402
from evaluation.metrics import GeometryError, write_json  # noqa: E402
from evaluation.silhouette import evaluate_silhouettes  # noqa: E402
from systems.atomic import atomic_write_image  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mesh", required=True, help="mesh in the scene's world coordinates")
    ap.add_argument("--scene", required=True, help="scene folder (NeuS/IDR layout)")
    ap.add_argument("--mask_dir", default="mask", help="mask folder inside the scene (default mask)")
    ap.add_argument("--cameras", default="cameras_sphere.npz", help="cameras file inside the scene")
    ap.add_argument("--json", help="also write {mean_iou, per_view} to this file")
    ap.add_argument("--sheet", help="also write every view's agreement picture to this PNG / JPEG")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes the views are split over (default 0: by the pixels to raster, up to 8)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = evaluate_silhouettes(args.mesh, args.scene, args.mask_dir, args.cameras, args.workers,
                                      sheet=bool(args.sheet))
    except (GeometryError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for view, iou in enumerate(result["per_view"]):
        print(f"view {view:3d}  IoU {iou:.4f}")
    print(f"mean IoU {result['mean_iou']:.4f} over {len(result['per_view'])} views")
    if args.sheet:
        print(f"wrote {atomic_write_image(args.sheet, result.pop('sheet'))}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
