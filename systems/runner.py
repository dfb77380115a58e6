"""Turn parsed command-line arguments into a Trainer run (train / validate_mesh / validate_image)."""
from __future__ import annotations

import argparse

import torch

from evaluation.report import write_report
from systems.config import Conf
from systems.trainer import Trainer


def resolve_device(gpu: int) -> torch.device:
    if torch.cuda.is_available():
        if gpu >= torch.cuda.device_count():
            raise SystemExit(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) present")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    print("[device] no CUDA device found: running on the CPU (slow; use a small conf)")
    return torch.device("cpu")


def run(args: argparse.Namespace) -> int:
    conf = Conf.from_file(args.conf, case=args.case, overrides="\n".join(args.override))
    device = resolve_device(args.gpu)
    is_continue = args.is_continue or args.mode != "train"
    options = {"sam_checkpoint": args.sam_checkpoint}
    if args.prompt_points or args.prompt_box or args.prompt_negative:
        from sam_utils.prompts import parse_cli_prompt

        options["prompt"] = parse_cli_prompt(args.prompt_view, args.prompt_points, args.prompt_box,
                                             negative=args.prompt_negative)
    trainer = Trainer(conf, device, is_continue=is_continue, options=options)
    if args.mode == "train":
        try:
            trainer.train()
            trainer.progress.stage("mesh")
            trainer.validate_mesh(args.mcube_resolution, args.mcube_threshold)
            if trainer.pipeline.phase == "done":
                trainer.validate_image(view=0)
            write_report(trainer.exp_dir, trainer.dataset.data_dir)
        except BaseException as e:
            trainer.progress.error(f"{type(e).__name__}: {e}")   # the message the command line ends with
            raise
        trainer.progress.done()
    elif args.mode == "validate_mesh":
        trainer.validate_mesh(args.mcube_resolution, args.mcube_threshold)
    else:
        trainer.validate_image(view=0)
    return 0
