"""The generic training loop: optimisation steps, learning-rate schedule, logging, checkpoints.

It knows no NTO3D: a pipeline (systems/pipeline.py) hands it training segments (a name, the
iteration to train up to, the learning-rate window) and, each step, one batch's loss terms.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from systems import checkpoint as ckpt
from systems.schedule import lr_factor
from systems.atomic import atomic_write_text
from systems.config import Conf
from systems.settings import TrainSettings

LAYOUT = 2   # checkpoint layout; 1 = before the pipeline/trainer split (no "layout" key)


class TrainingDiverged(RuntimeError):
    """The loss or the networks became NaN/Inf; no checkpoint was written from that state."""


# conf keys whose change makes a checkpoint meaningless (network shapes, what the run reconstructs)
FIXED_ON_RESUME = ("model.", "dataset.data_dir", "dataset.downscale", "nto3d.enabled", "nto3d.segmenter",
                   "features.enabled", "features.rank", "features.channels")


def check_resume_conf(saved: str, current: str, folder: Path) -> None:
    """Refuse a resume whose conf changes a key of FIXED_ON_RESUME (naming it); list other changes."""
    old, new = Conf.from_string(saved, "checkpoint"), Conf.from_string(current, "conf")
    keys = sorted(set(old.leaf_keys()) | set(new.leaf_keys()))
    changed = {k: (old.tree.get(k, None), new.tree.get(k, None)) for k in keys
               if old.tree.get(k, None) != new.tree.get(k, None)}
    fixed = [k for k in changed if any(k == f or (f.endswith(".") and k.startswith(f)) for f in FIXED_ON_RESUME)]
    if fixed:
        detail = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
        raise ckpt.CheckpointError(f"--is_continue: the conf changed what the checkpoints in {folder} were "
                                   f"trained for ({detail}); restore those keys, or train into a new "
                                   "general.base_exp_dir")
    if changed:
        print("[resume] conf keys changed since the checkpoint: " + ", ".join(changed))


@dataclass
class Segment:
    """A stretch of training: up to iteration `until`, learning rate on the window [lr_start, lr_start + lr_len)."""

    name: str
    until: int
    lr_start: int
    lr_len: int


class Trainer:
    """Optimises a pipeline's model: steps, schedule, checkpoints (with the pipeline's state), logs."""

    def __init__(self, pipeline, optimizer: torch.optim.Optimizer, settings: TrainSettings, exp_dir: Path,
                 generator: torch.Generator, conf_text: str):
        self.pipeline, self.optimizer, self.s = pipeline, optimizer, settings
        self.exp_dir, self.generator, self.conf_text = Path(exp_dir), generator, conf_text
        self.iteration = 0
        self.resumed_conf: str | None = None     # the conf text of the checkpoint resumed from
        self.writer: SummaryWriter | None = None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"layout": LAYOUT, "model": self.pipeline.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "rng": ckpt.rng_state(self.generator), "conf": self.conf_text,
                "pipeline": self.pipeline.state_dict()}

    def resume(self) -> None:
        folder = self.exp_dir / "checkpoints"
        state = ckpt.load_latest(folder, map_location=self.generator.device)
        if state is None:
            raise FileNotFoundError(f"--is_continue: no checkpoint in {folder}; train first (drop --is_continue)")
        if state.get("layout") != LAYOUT:
            raise ckpt.CheckpointError(
                f"{folder}: the checkpoint is from an older layout ({state.get('layout', 1)}, this code reads "
                f"{LAYOUT}); retrain, or use the commit that wrote it")
        check_resume_conf(state["conf"], self.conf_text, folder)
        self.resumed_conf = state["conf"]
        self.pipeline.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        ckpt.restore_rng_state(state["rng"], self.generator)
        self.pipeline.load_state_dict(state["pipeline"])
        print(f"[resume] {folder} at iteration {self.iteration}")

    def _diverged(self, what: str) -> TrainingDiverged:
        last = ckpt.list_checkpoints(self.exp_dir / "checkpoints")
        kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written"
        return TrainingDiverged(f"training diverged at iteration {self.iteration}: {what} is NaN/Inf; {kept}. "
                                "Lower train.lr_grid / train.lr_mlp (or check the data) and train again")

    def save(self) -> Path:
        """An atomic checkpoint; refused (TrainingDiverged) when a network holds NaN/Inf."""
        params = [p.detach() for p in self.pipeline.model.parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise self._diverged("a network parameter")
        return ckpt.save_checkpoint(self.exp_dir / "checkpoints", self.iteration, self.state_dict(),
                                    self.s.keep_checkpoints)

    # ---------------------------------------------------------------- training
    def _set_lr(self, seg: Segment) -> None:
        f = lr_factor(self.iteration - seg.lr_start, self.s.warmup_iters, seg.lr_len, self.s.lr_min_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f

    def step(self, seg: Segment) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached loss tensors (no host sync)."""
        terms, extras = self.pipeline.losses(self.iteration)
        loss = sum(w * v for w, v in terms.values())
        self._set_lr(seg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        stats = {k: v.detach() for k, (_, v) in terms.items()}
        stats["total"] = loss.detach()
        stats.update(extras)
        return stats

    def open_outputs(self) -> None:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        name = "config.conf"
        if self.resumed_conf is not None and self.resumed_conf != self.conf_text:
            name = f"config_resumed_{self.iteration:08d}.conf"   # the run's first conf stays as it was
        atomic_write_text(self.exp_dir / name, self.conf_text)
        if self.writer is None:
            self.writer = SummaryWriter(str(self.exp_dir / "logs"))

    def run_segment(self, seg: Segment) -> None:
        """Train up to seg.until with logging, checkpoints and validation outputs."""
        self.pipeline.model.train()
        sums: dict[str, torch.Tensor] = {}
        n_sum = 0
        bar = tqdm(total=seg.until, initial=self.iteration, desc=seg.name, dynamic_ncols=True)
        progress = self.pipeline.progress
        progress.start(seg.name, seg.until, self.iteration)
        while self.iteration < seg.until:
            for k, v in self.step(seg).items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1
            bar.update(1)
            it = self.iteration
            if it % self.s.log_every == 0 or it == seg.until:
                means = {k: float(v) / n_sum for k, v in sums.items()}  # one host sync per log interval
                if not math.isfinite(means["total"]):
                    bar.close()
                    raise self._diverged("the loss")
                for k, val in means.items():
                    self.writer.add_scalar(f"{seg.name.split()[0]}/{k}", val, it)
                bar.set_postfix(loss=f"{means['total']:.4f}", s=f"{means.get('inv_s', 0.0):.0f}")
                progress.step(it, means["total"])
                sums, n_sum = {}, 0
            else:
                progress.step(it)
            if self.s.save_every > 0 and it % self.s.save_every == 0:
                self.save()
            if self.s.val_image_every > 0 and it % self.s.val_image_every == 0:
                self.pipeline.validate_image(it)
            if self.s.val_mesh_every > 0 and it % self.s.val_mesh_every == 0:
                self.pipeline.write_mesh(it)
        bar.close()

    def fit(self) -> None:
        """Run the pipeline's segments until it has none left; a checkpoint after each one's set-up."""
        start, it0 = time.time(), self.iteration
        self.open_outputs()
        while (seg := self.pipeline.next_segment(self.iteration)) is not None:
            self.save()
            self.run_segment(seg)
        self.save()
        print(f"[train] {self.iteration - it0} iterations in {time.time() - start:.1f} s -> {self.exp_dir}")
