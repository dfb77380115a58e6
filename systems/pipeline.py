"""Pipelines own the data, the model and the stages of a run (nerfstudio's split); the trainer only optimises.

The narrow interface the trainer uses:
- `next_segment(iteration)`: do the work due before the next stretch of training (a lifting round,
  say) and return that stretch as a Segment, or None when the run is finished. Called again after a
  resume, it returns the interrupted segment without redoing its set-up.
- `losses(iteration)`: one batch of the current stage rendered and scored: {name: (weight, value)}.
- `state_dict()` / `load_state_dict()`: what a resume needs besides the networks and optimiser.
- `validate_image(iteration)`, `write_mesh(iteration)`: the run's outputs.
Optional behaviour around a batch (cos-anneal, SAM feature distillation) comes as Hooks.
"""
from __future__ import annotations

from pathlib import Path

import torch

from datasets.dtu import DTUDataset, near_far_from_sphere
from systems.outputs import MeshWriter, render_view, save_validation_image
from systems.progress import ProgressLog
from systems.schedule import cos_anneal_ratio
from systems.settings import Settings
from systems.stages import LossWeights, RaySampler, SceneStage
from systems.trainer import Segment


class Hook:
    """Optional behaviour around a batch: extra heads to render, render options, extra loss terms."""

    def render_heads(self, iteration: int, stage) -> tuple[str, ...]:
        return ()

    def render_options(self, iteration: int) -> dict:
        return {}

    def losses(self, iteration: int, stage, out: dict, batch: dict) -> dict:
        return {}

    def validation_heads(self) -> tuple[str, ...]:
        return ()

    def validation_panels(self, rendered: dict) -> list:
        return []


class CosAnneal(Hook):
    """NeuS's cos-anneal ratio for the renderer, ramped over `iters` training iterations."""

    def __init__(self, iters: int):
        self.iters = iters

    def render_options(self, iteration: int) -> dict:
        return {"cos_anneal_ratio": cos_anneal_ratio(iteration, self.iters)}


class Pipeline:
    """Base: data, model, ray sampler, hooks and outputs; subclasses choose the stages."""

    heads: dict = {}   # SDF-network heads the pipeline needs: name -> (channels, activation)

    def __init__(self, settings: Settings, dataset: DTUDataset, model, sampler: RaySampler, hooks: list[Hook],
                 exp_dir: Path):
        self.s, self.dataset, self.model, self.sampler, self.hooks = settings, dataset, model, sampler, hooks
        self.exp_dir = Path(exp_dir)
        t = settings.train
        self.weights = LossWeights(color=t.color_weight, eikonal=t.eikonal_weight, mask=t.mask_weight, instance=0.0)
        self.background = torch.tensor(t.background, dtype=torch.float32, device=dataset.device)
        self.meshes = MeshWriter(model, dataset, settings.validate, settings.model.bound, exp_dir)
        self.progress = ProgressLog(exp_dir)       # progress.json for the web app and watchers
        self.formats: tuple[str, ...] = ("ply",)   # mesh formats of the run's final mesh (train.py --format)
        self.stage = None

    # ------------------------------------------------------------ training
    def losses(self, iteration: int) -> tuple[dict, dict]:
        """Loss terms of one batch of the current stage, and extra stats to log (detached)."""
        stage = self.stage
        batch = stage.batch()
        o, d = batch["rays_o"], batch["rays_d"]
        near, far = near_far_from_sphere(o, d)
        heads = tuple(stage.heads) + sum((h.render_heads(iteration, stage) for h in self.hooks), ())
        options = {k: v for h in self.hooks for k, v in h.render_options(iteration).items()}
        out = self.model.renderer.render(o, d, near, far, batch["background"], heads=heads, **options)
        terms = stage.losses(out, batch)
        for h in self.hooks:
            terms.update(h.losses(iteration, stage, out, batch))
        return terms, {"inv_s": out["inv_s"]}

    def next_segment(self, iteration: int) -> Segment | None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------ outputs
    def validate_image(self, iteration: int, view: int | None = None) -> Path:
        """validations/<iter>_<view>.png: colour | ground truth | normals (| hook panels)."""
        v = self.s.validate
        every = max(1, self.s.train.val_image_every)
        view = (iteration // every) % self.dataset.n_images if view is None else view
        heads = sum((h.validation_heads() for h in self.hooks), ())
        self.model.eval()
        rendered = render_view(self.model, self.dataset, view, v.resolution_level, v.render_chunk,
                               self.background, heads)
        self.model.train()
        panels = [p for h in self.hooks for p in h.validation_panels(rendered)]
        path = self.exp_dir / "validations" / f"{iteration:08d}_{view:03d}.png"
        save_validation_image(path, rendered, self.dataset.poses[view].cpu().numpy(), panels)
        return path

    def write_mesh(self, iteration: int, resolution: int | None = None, threshold: float | None = None) -> Path:
        """The mesh of what the run reconstructs (the scene here)."""
        return self.meshes.write("scene", self.model.sdf.sdf, iteration, resolution, threshold, formats=self.formats)


class ScenePipeline(Pipeline):
    """Full-scene NeuS: one segment of train.max_iters iterations."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.stage = SceneStage(self.sampler, self.weights, self.background)

    def next_segment(self, iteration: int) -> Segment | None:
        n = self.s.train.max_iters
        return Segment("train", n, 0, n) if iteration < n else None
