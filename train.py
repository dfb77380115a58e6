"""NTO3D command line (NeuS conventions): parse, resolve the conf, hand over to systems/."""
from __future__ import annotations

import argparse
import sys

from systems.runner import KNOWN_ERRORS, run

PROMPT_OPTIONS = ("--prompt_points", "--prompt_negative", "--prompt_box")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="NTO3D: target-object 3D reconstruction from one click")
    p.add_argument("--conf", required=True, help="pyhocon conf, e.g. confs/synthetic.conf")
    p.add_argument("--case", required=True, help="scene name, substituted for CASE_NAME in the conf")
    p.add_argument("--mode", default="train", choices=["train", "validate_mesh", "validate_image"])
    p.add_argument("--is_continue", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--mcube_threshold", type=float, default=None, help="iso-level for marching cubes")
    p.add_argument("--mcube_resolution", type=int, default=None, help="grid resolution for marching cubes")
    p.add_argument("--format", default="ply", help="mesh formats, comma-separated: ply, obj, glb, textured "
                   "(UV-textured obj/glb, xatlas)")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no GPU is present)")
    g = p.add_argument_group("target prompt (NTO3D runs; default: the scene's prompt file)")
    g.add_argument("--prompt_view", type=int, default=0, help="view index the prompt refers to")
    g.add_argument("--prompt_points", default=None, help='positive points "x,y;x,y" (full-resolution pixels)')
    g.add_argument("--prompt_negative", default=None, help='background points "x,y;x,y"')
    g.add_argument("--prompt_box", default=None, help='box "x0,y0,x1,y1"')
    g.add_argument("--sam_checkpoint", default=None, help="SAM checkpoint file (overrides nto3d.sam.checkpoint)")
    p.add_argument("--override", action="append", default=[],
                   help="extra HOCON line(s), e.g. --override 'train.max_iters = 500'")
    p.add_argument("--debug", action="store_true", help="show the traceback of known errors too")
    return p.parse_args(_join_prompt_values(sys.argv[1:] if argv is None else list(argv)))


def _join_prompt_values(argv: list[str]) -> list[str]:
    """'--prompt_points -5,20' -> '--prompt_points=-5,20': argparse would take '-5,20' for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in PROMPT_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KNOWN_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
