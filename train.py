"""NTO3D command line (NeuS conventions): parse, resolve the conf, hand over to systems/."""
from __future__ import annotations

import argparse
import sys

from systems.runner import run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="NTO3D: target-object 3D reconstruction from one click")
    p.add_argument("--conf", required=True, help="pyhocon conf, e.g. confs/synthetic.conf")
    p.add_argument("--case", required=True, help="scene name, substituted for CASE_NAME in the conf")
    p.add_argument("--mode", default="train", choices=["train", "validate_mesh", "validate_image"])
    p.add_argument("--is_continue", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--mcube_threshold", type=float, default=None, help="iso-level for marching cubes")
    p.add_argument("--mcube_resolution", type=int, default=None, help="grid resolution for marching cubes")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no GPU is present)")
    g = p.add_argument_group("target prompt (NTO3D runs; default: the scene's prompt file)")
    g.add_argument("--prompt_view", type=int, default=0, help="view index the prompt refers to")
    g.add_argument("--prompt_points", default=None, help='positive points "x,y;x,y" (full-resolution pixels)')
    g.add_argument("--prompt_negative", default=None, help='background points "x,y;x,y"')
    g.add_argument("--prompt_box", default=None, help='box "x0,y0,x1,y1"')
    g.add_argument("--sam_checkpoint", default=None, help="SAM checkpoint file (overrides nto3d.sam.checkpoint)")
    p.add_argument("--override", action="append", default=[],
                   help="extra HOCON line(s), e.g. --override 'train.max_iters = 500'")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
