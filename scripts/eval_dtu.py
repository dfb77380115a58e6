"""DTU MVS's official Chamfer protocol for one scan (observation mask, box, ground plane), as JSON.

Usage (from the repository root)::

    python scripts/eval_dtu.py --mesh exp/scan65/meshes/scene.ply --scan 65 --dtu_root DTU
                               [--clean_scene data/dtu_scan65 [--clean_mask_dir mask] [--clean_dilate 24]]
                               [--json out.json] [--spacing 0.2] [--max_dist 20] [--patch 60] [--clamped]

--dtu_root holds DTU's Points/stl/stlNNN_total.ply and ObsMask/ObsMaskN_10.mat, ObsMask/PlaneN.mat
(the "SampleSet" and "Points" downloads). The mesh must be in DTU's world coordinates (mm), as this
project's meshes/*.ply are. --clean_scene first removes the vertices that fall outside the scan's
object masks (dilated by --clean_dilate pixels) in any view, as NeuS-style evaluations do; the
folder is the scan in the NeuS/IDR layout (cameras_sphere.npz + mask/). Steps and keys:
evaluation/dtu_protocol.py.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trimesh  # noqa: E402

from datasets.dtu import DatasetError, load_masks_and_cameras  # noqa: E402
from evaluation.dtu_protocol import (CLEAN_DILATE_PX, PATCH_MM, clean_mesh, dtu_paths,  # noqa: E402
                                     evaluate_dtu, load_obs_mask, load_plane)
from evaluation.metrics import (DEFAULT_MAX_DIST_MM, DEFAULT_SPACING_MM, GeometryError,  # noqa: E402
                                load_geometry, report)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mesh", required=True, help="predicted mesh (or point cloud), DTU world coordinates")
    ap.add_argument("--scan", required=True, type=int, help="DTU scan number, e.g. 65")
    ap.add_argument("--dtu_root", required=True, help="folder holding DTU's Points/ and ObsMask/")
    ap.add_argument("--clean_scene", help="NeuS-layout scan folder: pre-clean the mesh with its masks")
    ap.add_argument("--clean_mask_dir", default="mask", help="mask folder inside --clean_scene")
    ap.add_argument("--clean_dilate", type=int, default=CLEAN_DILATE_PX,
                    help=f"mask dilation radius in pixels for the cleaning (default {CLEAN_DILATE_PX})")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--spacing", type=float, default=DEFAULT_SPACING_MM,
                    help="sampling and down-sampling distance in mm (default 0.2)")
    ap.add_argument("--max_dist", type=float, default=DEFAULT_MAX_DIST_MM,
                    help="distances at or beyond this are outliers (default 20 mm)")
    ap.add_argument("--patch", type=float, default=PATCH_MM, help="margin around DTU's box (default 60 mm)")
    ap.add_argument("--clamped", action="store_true",
                    help="clamp outliers to max_dist instead of dropping them (not DTU's rule)")
    ap.add_argument("--seed", type=int, default=0, help="down-sampling order seed")
    return ap.parse_args(argv)


def run(args) -> dict:
    """The evaluation of parse_args' namespace -> result dict (raises GeometryError / DatasetError)."""
    paths = dtu_paths(args.dtu_root, args.scan)
    pred = load_geometry(args.mesh)
    extra = {}
    if args.clean_scene:
        if not isinstance(pred, trimesh.Trimesh):
            raise GeometryError(f"{args.mesh} holds points; --clean_scene cleans meshes only")
        world_mats, _, masks = load_masks_and_cameras(args.clean_scene, args.clean_mask_dir)
        n_faces = len(pred.faces)
        pred = clean_mesh(pred, world_mats, masks, args.clean_dilate)
        if len(pred.faces) == 0:
            raise GeometryError(f"cleaning with {Path(args.clean_scene) / args.clean_mask_dir} removed every "
                                f"face of {args.mesh}; is the mesh in the scan's world coordinates?")
        extra = {"clean_faces_before": n_faces, "clean_faces_after": len(pred.faces)}
    stl = load_geometry(paths["stl"])
    stl = stl.vertices if isinstance(stl, trimesh.Trimesh) else stl
    obs_mask, bb, res = load_obs_mask(paths["obs_mask"])
    result = evaluate_dtu(pred, stl, obs_mask, bb, res, load_plane(paths["plane"]), args.spacing,
                          args.max_dist, args.patch, args.seed, "clamp" if args.clamped else "drop")
    return {**result, **extra}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.spacing > 0 or not args.max_dist > 0 or args.patch < 0 or args.clean_dilate < 0:
        print("error: --spacing and --max_dist must be positive, --patch and --clean_dilate >= 0",
              file=sys.stderr)
        return 2
    return report(lambda: run(args), args.json, (GeometryError, DatasetError))

if __name__ == "__main__":
    sys.exit(main())
