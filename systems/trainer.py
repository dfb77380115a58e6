"""The training loop: experiment folder, optimisation steps, logging, checkpoints, validation."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets.dtu import near_far_from_sphere
from systems import checkpoint as ckpt
from systems.builders import build_dataset, build_model, build_optimizer
from systems.config import Conf
from systems.distill import build_feature_distiller
from systems.pipelines import build_pipeline
from systems.progress import ProgressLog
from systems.stages import INSTANCE, LossWeights
from systems.schedule import cos_anneal_ratio, lr_factor
from systems.validation import extract_world_mesh, render_view, save_validation_image


class Trainer:
    """Owns the experiment: data, model, optimiser, iteration counter and the outputs on disk."""

    def __init__(self, conf: Conf, device: torch.device, is_continue: bool = False, options: dict | None = None):
        """options: command-line extras for the pipeline ('prompt': a Prompt, 'sam_checkpoint': a path)."""
        self.conf, self.device = conf, device
        self.options = options or {}
        g = conf.section("general")
        self.exp_dir = Path(g.get("base_exp_dir", str))
        seed = g.get("seed", int)
        torch.manual_seed(seed)
        np.random.seed(seed)

        t = conf.section("train")
        self.max_iters = t.get("max_iters", int)
        self.batch_rays = t.get("batch_rays", int)
        self.warmup_iters = t.get("warmup_iters", int)
        self.lr_min_ratio = t.get("lr_min_ratio", float)
        self.anneal_iters = t.get("cos_anneal_iters", int)
        self.weights = LossWeights(color=t.get("color_weight", float), eikonal=t.get("eikonal_weight", float),
                                   mask=t.get("mask_weight", float), instance=0.0)
        self.background = torch.tensor(t.get("background", list), dtype=torch.float32, device=device)
        self.log_every = t.get("log_every", int)
        self.save_every = t.get("save_every", int)
        self.val_image_every = t.get("val_image_every", int)
        self.val_mesh_every = t.get("val_mesh_every", int)
        self.keep_checkpoints = t.get("keep_checkpoints", int)

        v = conf.section("validate")
        self.val_level = v.get("resolution_level", int)
        self.val_chunk = v.get("render_chunk", int)
        self.mesh_resolution = v.get("mesh_resolution", int)
        self.mesh_threshold = v.get("mesh_threshold", float)
        self.mesh_chunk = v.get("mesh_chunk", int)
        self.eval_spacing = v.get("eval_spacing", float)

        self.dataset = build_dataset(conf, device)
        if self.weights.mask > 0 and self.dataset.masks is None:
            raise ValueError(f"train.mask_weight > 0 in {conf.source} but {self.dataset.data_dir}/mask/ is "
                             "missing or dataset.load_masks is false: add masks or set mask_weight = 0")
        self.pipeline = build_pipeline(conf, self)
        self.features = build_feature_distiller(conf, self)  # None when features.enabled = false
        heads = {**self.pipeline.heads, **(self.features.heads if self.features is not None else {})}
        self.model = build_model(conf, heads).to(device)
        if self.features is not None:
            self.model.add_module("features", self.features.to(device))  # optimised and checkpointed
        self.bound = conf.get("model.bound", float)
        self.optimizer = build_optimizer(conf, self.model)
        conf.check_all_read()

        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.iteration = 0
        self.deadline: float | None = None  # time.time() after which run_steps returns (benchmarks)
        self.writer: SummaryWriter | None = None
        self.progress = ProgressLog(self.exp_dir)  # <exp_dir>/progress.json for watchers (webapp/)
        if is_continue:
            self.resume()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "rng": ckpt.rng_state(self.generator), "conf": self.conf.to_text(),
                "pipeline": self.pipeline.state_dict()}

    def resume(self) -> None:
        state = ckpt.load_latest(self.exp_dir / "checkpoints", map_location=self.device)
        if state is None:
            raise FileNotFoundError(f"--is_continue: no checkpoint in {self.exp_dir / 'checkpoints'}; "
                                    "train first (drop --is_continue)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        ckpt.restore_rng_state(state["rng"], self.generator)
        self.pipeline.load_state_dict(state.get("pipeline", {}))
        print(f"[resume] {self.exp_dir / 'checkpoints'} at iteration {self.iteration}")

    def save(self) -> Path:
        return ckpt.save_checkpoint(self.exp_dir / "checkpoints", self.iteration, self.state_dict(), self.keep_checkpoints)

    # ---------------------------------------------------------------- training
    def _set_lr(self, phase_start: int, phase_len: int) -> None:
        f = lr_factor(self.iteration - phase_start, self.warmup_iters, phase_len, self.lr_min_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f

    def train_step(self, stage, phase_start: int = 0, phase_len: int | None = None) -> dict[str, torch.Tensor]:
        """One optimisation step of `stage`; returns detached loss tensors (no host sync)."""
        batch = stage.batch(self)
        o, d = batch["rays_o"], batch["rays_d"]
        near, far = near_far_from_sphere(o, d)
        occ = self.model.occupancy
        if occ is not None and occ.step(self.iteration, self.model.sdf.sdf, self.mesh_chunk):
            near, far = occ.ray_bounds(o, d, near, far)
        heads = stage.heads + (self.features.render_heads(self, stage) if self.features is not None else ())
        out = self.model.renderer.render(o, d, near, far, batch["background"],
                                         cos_anneal_ratio(self.iteration, self.anneal_iters), heads=heads)
        terms = stage.losses(out, batch)
        if self.features is not None:
            terms.update(self.features.losses(self, stage, out, batch))
        loss = sum(w * v for w, v in terms.values())
        self._set_lr(phase_start, self.max_iters if phase_len is None else phase_len)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        stats = {k: v.detach() for k, (_, v) in terms.items()}
        stats["total"], stats["inv_s"] = loss.detach(), out["inv_s"]
        return stats

    def open_outputs(self) -> None:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        (self.exp_dir / "config.conf").write_text(self.conf.to_text())
        if self.writer is None:
            self.writer = SummaryWriter(str(self.exp_dir / "logs"))

    def run_steps(self, stage, until: int, phase_start: int = 0, phase_len: int | None = None,
                  desc: str = "train") -> None:
        """Train `stage` up to iteration `until` with logging, checkpoints and validation images."""
        self.open_outputs()
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        n_sum = 0
        bar = tqdm(total=until, initial=self.iteration, desc=desc, dynamic_ncols=True)
        self.progress.start(desc, until, self.iteration)
        while self.iteration < until:
            if self.deadline is not None and time.time() > self.deadline:
                print(f"[train] time budget reached at iteration {self.iteration}")
                break
            for k, v in self.train_step(stage, phase_start, phase_len).items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1
            bar.update(1)
            it = self.iteration
            if it % self.log_every == 0 or it == until:
                means = {k: float(v) / n_sum for k, v in sums.items()}  # one host sync per log interval
                for k, val in means.items():
                    self.writer.add_scalar(f"{stage.name}/{k}", val, it)
                bar.set_postfix(loss=f"{means['total']:.4f}", l1=f"{means['color']:.4f}", s=f"{means['inv_s']:.0f}")
                sums, n_sum = {}, 0
                self.progress.step(it, means["total"])
            self.progress.step(it)
            if self.save_every > 0 and it % self.save_every == 0:
                self.save()
            if self.val_image_every > 0 and it % self.val_image_every == 0:
                self.validate_image()
            if self.val_mesh_every > 0 and it % self.val_mesh_every == 0:
                self.validate_mesh()
        bar.close()

    def train(self) -> None:
        start = time.time()
        self.pipeline.run(self)
        self.save()
        print(f"[train] {self.iteration} iterations in {time.time() - start:.1f} s -> {self.exp_dir}")

    # ---------------------------------------------------------------- validation
    def validate_image(self, view: int | None = None) -> Path:
        view = (self.iteration // max(1, self.val_image_every)) % self.dataset.n_images if view is None else view
        self.model.eval()
        heads = tuple(self.features.heads) if self.features is not None else ()
        rendered = render_view(self.model, self.dataset, view, self.val_level, self.val_chunk, self.background, heads)
        self.model.train()
        path = self.exp_dir / "validations" / f"{self.iteration:08d}_{view:03d}.png"
        pca = self.features.pca_image(rendered) if self.features is not None else None
        save_validation_image(path, rendered, self.dataset.poses[view].cpu().numpy(), [pca] if pca is not None else [])
        return path

    def validate_mesh(self, resolution: int | None = None, threshold: float | None = None) -> Path:
        """The mesh of what the run reconstructs: the target after an NTO3D run, else the scene."""
        which = "target" if self.pipeline.phase in ("target", "done") else "scene"
        return self.write_mesh(which, resolution, threshold)

    def write_mesh(self, which: str, resolution: int | None = None, threshold: float | None = None) -> Path:
        """Write meshes/<which>_<iter>.ply and meshes/<which>.ply (world space); evaluate against gt/.

        The target mesh is the SDF's zero level set where the occupancy head says "target",
        reduced to its largest connected component.
        """
        res = resolution or self.mesh_resolution
        thr = self.mesh_threshold if threshold is None else threshold
        sdf_fn = self._target_sdf(res) if which == "target" else self.model.sdf.sdf
        self.model.eval()
        mesh = extract_world_mesh(sdf_fn, self.dataset.scale_mat, res, thr, self.bound, self.mesh_chunk,
                                  self.device, keep_largest=which == "target")
        self.model.train()
        folder = self.exp_dir / "meshes"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{which}_{self.iteration:08d}.ply"
        mesh.export(path)
        shutil.copyfile(path, folder / f"{which}.ply")
        print(f"[mesh] {which}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> {path}")
        if len(mesh.faces) == 0:
            hint = (" the occupancy head claims no surface: see masks/round_*/contact_sheet.png" if which == "target"
                    else " train longer or lower --mcube_threshold")
            print(f"[mesh] WARNING: the {which} mesh is empty;{hint}")
            return path
        self._evaluate_mesh(path, which)
        return path

    def _target_sdf(self, resolution: int):
        """SDF pushed outside (to one grid cell) wherever the occupancy head says "not the target"."""
        occ = self.pipeline.mesh_occupancy
        cell = 2.0 * self.bound / resolution

        def sdf_fn(x: torch.Tensor) -> torch.Tensor:
            out = self.model.sdf(x, (INSTANCE,))
            return torch.where(out[INSTANCE] >= occ, out["sdf"], out["sdf"].clamp(min=cell))

        return sdf_fn

    def _evaluate_mesh(self, path: Path, which: str) -> dict | None:
        """Chamfer against the scene's ground truth (gt/<which>_visible.ply for completeness)."""
        from evaluation.metrics import chamfer_files

        gt_dir = self.dataset.data_dir / "gt"
        if not (gt_dir / f"{which}.ply").is_file():
            return None
        result = chamfer_files(path, gt_dir / f"{which}_visible.ply", gt_dir / f"{which}.ply", self.eval_spacing)
        path.with_suffix(".json").write_text(json.dumps(result, indent=2))
        print(f"[eval] {which} Chamfer (world units): " + json.dumps({k: round(v, 4) for k, v in result.items()
                                                                     if isinstance(v, float)}))
        return result
