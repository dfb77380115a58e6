"""Build a run from a conf (data, model, optimiser, pipeline, trainer) and carry out a command-line mode."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.dtu import DatasetError
from evaluation.report import write_report
from models.mesh_export import parse_formats
from sam_utils.errors import PromptError, SamCheckpointError, SegmenterError
from sam_utils.prompts import Prompt, parse_cli_prompt
from systems.builders import build_dataset, build_model, build_optimizer
from systems.checkpoint import CheckpointError
from systems.config import Conf, ConfigError
from systems.distill import build_feature_distiller
from systems.nto3d import NTO3DPipeline
from systems.outputs import silhouette_check
from systems.pipeline import CosAnneal, Pipeline, ScenePipeline
from systems.settings import load_settings
from systems.stages import RaySampler
from systems.trainer import Trainer, TrainingDiverged

# errors whose message says what is wrong and how to fix it: the command line prints the message alone
KNOWN_ERRORS = (ConfigError, DatasetError, PromptError, SegmenterError, SamCheckpointError, CheckpointError,
                TrainingDiverged, FileNotFoundError)


@dataclass
class Run:
    """One experiment, built: the trainer optimises the pipeline, which owns data and model."""

    trainer: Trainer
    pipeline: Pipeline
    features: object | None      # the FeatureDistiller hook, or None

    @property
    def exp_dir(self) -> Path:
        return self.trainer.exp_dir


def resolve_device(gpu: int) -> torch.device:
    if torch.cuda.is_available():
        if gpu >= torch.cuda.device_count():
            raise SystemExit(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) present")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    print("[device] no CUDA device found: running on the CPU (slow; use a small conf)")
    return torch.device("cpu")


def build_run(conf: Conf, device: torch.device, is_continue: bool = False, prompt: Prompt | None = None,
              sam_checkpoint: str | None = None) -> Run:
    """Everything a run needs, in the order that fixes the networks' initialisation for a seed."""
    s = load_settings(conf)
    torch.manual_seed(s.general.seed)
    np.random.seed(s.general.seed)
    dataset = build_dataset(s.dataset, device)
    if s.train.mask_weight > 0 and dataset.masks is None:
        raise ConfigError(f"train.mask_weight > 0 in {conf.source} but {dataset.data_dir}/mask/ is "
                         "missing or dataset.load_masks is false: add masks or set mask_weight = 0")
    features = build_feature_distiller(s.features, dataset, sam_checkpoint, where=f"{conf.source} [features]")
    pipeline_cls = NTO3DPipeline if s.nto3d.enabled else ScenePipeline
    heads = {**pipeline_cls.heads, **(features.heads if features is not None else {})}
    model = build_model(s.model, heads).to(device)
    if features is not None:
        model.add_module("features", features.to(device))  # optimised and checkpointed with the model
    optimizer = build_optimizer(s.train, model)
    generator = torch.Generator(device=device).manual_seed(s.general.seed)
    sampler = RaySampler(dataset, s.train.batch_rays, generator)
    hooks = [CosAnneal(s.train.cos_anneal_iters)] + ([features] if features is not None else [])
    exp_dir = Path(s.general.base_exp_dir)
    extra = dict(prompt=prompt, sam_checkpoint=sam_checkpoint) if s.nto3d.enabled else {}
    pipeline = pipeline_cls(s, dataset, model, sampler, hooks, exp_dir, **extra)
    trainer = Trainer(pipeline, optimizer, s.train, exp_dir, generator, conf.to_text())
    if is_continue:
        trainer.resume()
    return Run(trainer, pipeline, features)


def check_target_silhouette(mesh: Path, data_dir: Path, mask_dir: str) -> None:
    """The target mesh against the scene's masks (nto3d.gt_mask_dir, where set and present) in every view,
    kept beside the mesh for the report; a failure warns, the run's outputs stand."""
    if not mask_dir or not (Path(data_dir) / mask_dir).is_dir() or not mesh.is_file():
        return
    try:
        res = silhouette_check(mesh, data_dir, mask_dir)
    except Exception as exc:  # noqa: BLE001 - an empty mesh or unreadable masks must not hide the outputs
        print(f"[silhouette] WARNING: no silhouette check of {mesh.name}: {type(exc).__name__}: {exc}")
        return
    print(f"[silhouette] {mesh.name} against {mask_dir}/: mean IoU {res['mean']:.4f}, worst view {res['worst_view']} "
          f"{res['worst']:.4f} -> {res['sheet']}")


def run(args: argparse.Namespace) -> int:
    conf = Conf.from_file(args.conf, case=args.case, overrides="\n".join(args.override))
    device = resolve_device(args.gpu)
    prompt = None
    if any(a is not None for a in (args.prompt_points, args.prompt_box, args.prompt_negative)):
        prompt = parse_cli_prompt(args.prompt_view, args.prompt_points, args.prompt_box, negative=args.prompt_negative)
    r = build_run(conf, device, is_continue=args.is_continue or args.mode != "train", prompt=prompt,
                  sam_checkpoint=args.sam_checkpoint)
    tr, p = r.trainer, r.pipeline
    p.formats = tuple(parse_formats(args.format))
    if args.mode == "train":
        try:
            tr.fit()
            p.progress.stage("mesh")
            mesh = p.write_mesh(tr.iteration, args.mcube_resolution, args.mcube_threshold)
            if getattr(p, "phase", None) == "done":
                p.validate_image(tr.iteration, view=0)
                check_target_silhouette(mesh.with_name("target.ply"), p.dataset.data_dir, p.n.gt_mask_dir)
        except BaseException as exc:
            p.progress.error(f"{type(exc).__name__}: {exc}")
            raise
        try:
            write_report(tr.exp_dir, p.dataset.data_dir)        # prints its path
        except Exception as exc:  # the run's outputs are complete; a report failure must not hide them
            print(f"[report] WARNING: the run report could not be written: {type(exc).__name__}: {exc}")
        p.progress.done()
    elif args.mode == "validate_mesh":
        p.write_mesh(tr.iteration, args.mcube_resolution, args.mcube_threshold)
    else:
        p.validate_image(tr.iteration, view=0)
    return 0
