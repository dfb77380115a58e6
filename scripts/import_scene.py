#!/usr/bin/env python
"""Import a capture (COLMAP, transforms.json, Blender, LLFF, or plain photos) into the DTU layout.

Examples (from the repository root):
    python scripts/import_scene.py ~/captures/mug --out data/mug                  # photos -> SfM
    python scripts/import_scene.py ~/colmap_proj --out data/proj --format colmap
    python scripts/import_scene.py ../shared/data/nerf_synthetic_lego --out data/lego --downscale 2
    python scripts/import_scene.py ../shared/data/instant_ngp_fox --out data/fox --downscale 2 --image-format jpg
    python scripts/import_scene.py ../shared/data/llff_fern --out data/fern
Then check data/NAME/sphere_overlay.png: the tinted disk is what will be reconstructed.
"""
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.dtu import DatasetError  # noqa: E402
from datasets.importers import FORMATS, IMAGE_FORMATS, import_scene  # noqa: E402
from sam_utils.errors import PromptError  # noqa: E402
from sam_utils.prompts import load_prompt_file, parse_cli_prompt  # noqa: E402


def _numbers(n: int, name: str):
    def parse(text: str):
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError:
            vals = []
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"{name}: expected {n} comma-separated numbers")
        return vals
    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("src", type=pathlib.Path, help="capture folder (or transforms.json / video file)")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output scene folder, e.g. data/NAME")
    ap.add_argument("--format", default="auto", choices=FORMATS, help="source format (default: auto)")
    ap.add_argument("--force", action="store_true", help="replace an existing, non-empty --out")
    ap.add_argument("--downscale", type=float, default=1.0, help="shrink the written images by this")
    ap.add_argument("--image-format", default="png", choices=IMAGE_FORMATS,
                    help="written views: png (lossless, default) or jpg (far smaller for photos)")
    ap.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    ap.add_argument("--views", default=None, help='subset in source order: "0:40:2" or "0,3,7"')
    ap.add_argument("--background", default="white",
                    help="colour behind transparent pixels of RGBA images: white, black or R,G,B")
    g = ap.add_argument_group("bounding sphere (default: from masks, sparse points, LLFF bounds or "
                              "where the cameras look)")
    g.add_argument("--sphere", type=_numbers(4, "--sphere"), help="cx,cy,cz,r in source world units")
    g.add_argument("--box", type=_numbers(6, "--box"), help="x0,y0,z0,x1,y1,z1 in source world units")
    g.add_argument("--margin", type=float, default=1.1, help="sphere radius factor (default 1.1)")
    g = ap.add_argument_group("format options")
    g.add_argument("--images", type=pathlib.Path, help="COLMAP: the folder the model's image names are in")
    g.add_argument("--drop-unregistered", action="store_true",
                   help="COLMAP/SfM: import the registered views, skip the others (with a warning)")
    g.add_argument("--splits", default=None, help="Blender: splits to read, e.g. train or train,val")
    g.add_argument("--llff-factor", type=int, default=None, help="LLFF: read images_N (default: smallest)")
    g = ap.add_argument_group("structure from motion (--format images)")
    g.add_argument("--camera-model", default="SIMPLE_RADIAL",
                   help="SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL (default), RADIAL or OPENCV")
    g.add_argument("--sfm-max-size", type=int, default=1600, help="longest side used for features")
    g.add_argument("--per-image-camera", action="store_true", help="one camera per photo (zooms)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: all, max 8)")
    g.add_argument("--video-frames", type=int, default=100, help="frames taken from a video")
    g = ap.add_argument_group("prompt check (warns when the prompted object leaves the sphere)")
    g.add_argument("--prompt", type=pathlib.Path, help="anno_box.json-style prompt file")
    g.add_argument("--prompt_view", type=int, default=0, help="view of --prompt_points/--prompt_box")
    g.add_argument("--prompt_points", default=None, help='"x,y;x,y" pixels of the imported images')
    g.add_argument("--prompt_box", default=None, help='"x0,y0,x1,y1"')
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prompt = None
        if args.prompt is not None:
            prompt = load_prompt_file(args.prompt)
        elif args.prompt_points or args.prompt_box:
            prompt = parse_cli_prompt(args.prompt_view, args.prompt_points, args.prompt_box)
        res = import_scene(
            args.src, args.out, args.format, downscale=args.downscale, views=args.views,
            background=args.background, sphere=args.sphere, box=args.box, margin=args.margin,
            prompt=prompt, force=args.force, image_format=args.image_format,
            jpeg_quality=args.jpeg_quality, images=args.images,
            drop_unregistered=args.drop_unregistered,
            splits=args.splits.split(",") if args.splits else None, llff_factor=args.llff_factor,
            camera_model=args.camera_model, sfm_max_size=args.sfm_max_size,
            per_image=args.per_image_camera, threads=args.threads, video_frames=args.video_frames)
    except (DatasetError, PromptError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"{res.n_views} views -> {res.out} (sphere: {res.sphere.method})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
