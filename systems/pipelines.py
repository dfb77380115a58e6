"""Pipelines: the sequence of stages a run goes through, and their resumable state.

- ScenePipeline: full-scene NeuS (no prompt).
- NTO3DPipeline: the prompt's mask -> lifting rounds (scene + occupancy head, segmenter re-prompted
  from projections) -> target-only reconstruction -> target mesh.
"""
from __future__ import annotations

import json
import time

import numpy as np

from evaluation.metrics import mask_iou
from sam_utils.lifting import LiftingSettings, MaskStore, final_masks, run_round, save_round, view_angles
from systems.config import Conf
from sam_utils.visibility import known_pixels
from sam_utils.vote_weight import error_rates, round_boxes, vote_weight
from systems.projection import load_gt_masks, project_views, projection_matrices, upsample_masks
from systems.stages import INSTANCE, LiftStage, LossWeights, SceneStage, TargetStage


def build_pipeline(conf: Conf, trainer):
    n = conf.section("nto3d")
    if not n.get("enabled", bool):
        n.mark_read()
        return ScenePipeline(trainer)
    return NTO3DPipeline(n, trainer)


class ScenePipeline:
    heads: dict = {}
    phase = "scene"

    def __init__(self, trainer):
        self.stage = SceneStage(trainer.weights, trainer.background)

    def run(self, tr) -> None:
        tr.run_steps(self.stage, tr.max_iters)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NTO3DPipeline:
    """One prompt -> lifted masks in every view -> target-only field. Phases: init, lift, target, done."""

    heads = {INSTANCE: (1, "sigmoid")}

    def __init__(self, c: Conf, trainer):
        self.instance_weight = c.get("instance_weight", float)
        self.focus_margin = c.get("focus_margin", float)
        self.warmup_iters = c.get("warmup_iters", int)
        self.round_iters = c.get("round_iters", int)
        self.prompt_file = c.get("prompt_file", str)
        self.gt_mask_dir = c.get("gt_mask_dir", str)
        self.segmenter_kind = c.get("segmenter", str)
        self.sam_model_type = c.get("sam.model_type", str)
        conf_checkpoint = c.get("sam.checkpoint", str)  # read first: every key is read, override or not
        self.sam_checkpoint = trainer.options.get("sam_checkpoint") or conf_checkpoint
        self.grabcut_kw = dict(crop_margin=c.get("grabcut.crop_margin", float),
                               workers=c.get("grabcut.workers", int))
        lc = c.section("lifting")
        # the segmenter's error profile sets how far to trust its masks (confs/synthetic.conf explains)
        sc = lc.section(f"per_segmenter.{self.segmenter_kind}")
        self.settings = LiftingSettings(
            accept_iou=sc.get("accept_iou", float), converge_eps=lc.get("converge_eps", float),
            max_rounds=lc.get("max_rounds", int), proj_threshold=lc.get("proj_threshold", float),
            n_positive=lc.get("n_positive", int), n_negative=lc.get("n_negative", int), cascade=lc.get("cascade", bool),
            view_radius_deg=lc.get("view_radius_deg", float), known_depth_tol=lc.get("known_depth_tol", float),
            depth_split_tol=lc.get("depth_split_tol", float), depth_split_keep=lc.get("depth_split_keep", float),
            depth_split_ignore=lc.get("depth_split_ignore", bool))
        self.negative_weight = sc.get("negative_weight", float)   # the first rounds' (and, if fixed, every round's)
        self.adaptive_weight = lc.get("adaptive_negative_weight", bool)
        lc.section("per_segmenter").mark_read()
        self.render_level = lc.get("render_level", int)
        self.final_render_level = lc.get("final_render_level", int)
        tc = c.section("target")
        self.target_iters = tc.get("iters", int)
        self.target_mask_weight = tc.get("mask_weight", float)
        self.random_background = tc.get("random_background", bool)
        self.mesh_occupancy = tc.get("mesh_occupancy_threshold", float)
        self.prompt_override = trainer.options.get("prompt")
        ds = trainer.dataset
        self.store = MaskStore(ds.n_images, ds.H, ds.W)
        self.final: np.ndarray | None = None
        self.phase, self.phase_start = "init", 0
        self._segmenter = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        final = None if self.final is None else np.packbits(self.final, axis=-1)
        return {"phase": self.phase, "phase_start": self.phase_start, "store": self.store.state_dict(),
                "final": final, "timings": self.timings, "negative_weight": self.negative_weight}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.phase, self.phase_start = state["phase"], state["phase_start"]
        self.store.load_state_dict(state["store"])
        self.timings = dict(state.get("timings", {}))
        self.negative_weight = state.get("negative_weight", self.negative_weight)
        if state["final"] is not None:
            n, h, w = self.store.masks.shape
            self.final = np.unpackbits(state["final"], axis=-1, count=w).astype(bool).reshape(n, h, w)

    # ------------------------------------------------------------ helpers
    def segmenter(self, tr):
        if self._segmenter is None:
            from sam_utils.segmenter import build_segmenter

            if self.segmenter_kind == "sam":
                kw = dict(sam_model_type=self.sam_model_type, sam_checkpoint=self.sam_checkpoint,
                          device=str(tr.device), cache_dir=tr.dataset.data_dir / "sam_feat")
            else:
                kw = dict(self.grabcut_kw)
            self._segmenter = build_segmenter(self.segmenter_kind, **kw)
            print(f"[nto3d] segmenter: {self._segmenter.name}")
        return self._segmenter

    def prompt(self, tr):
        from sam_utils.prompts import load_prompt_file

        if self.prompt_override is not None:
            p, source = self.prompt_override, "--prompt_points/--prompt_box"
        else:
            path = tr.dataset.data_dir / self.prompt_file
            p, source = load_prompt_file(path), str(path)
        scale = tr.dataset.W / tr.dataset.full_size[1]  # prompts are in full-resolution pixels
        return p.scaled(scale).validate(tr.dataset.H, tr.dataset.W, source), source

    def _tick(self, name: str, t0: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.time() - t0

    # ------------------------------------------------------------ phases
    def run(self, tr) -> None:
        images = [im for im in tr.dataset.images.cpu().numpy()]  # N x (H,W,3) uint8
        gt = load_gt_masks(tr.dataset, self.gt_mask_dir)
        out_dir = tr.exp_dir / "masks"
        if self.phase == "init":
            t0 = time.time()
            self._initial_mask(tr, images, out_dir)
            self._tick("initial_mask", t0)
        if self.phase == "lift":
            self._lift(tr, images, gt, out_dir)
        if self.phase == "target":
            t0 = time.time()
            stage = TargetStage(self._weights(tr, self.target_mask_weight), self.final, tr.device,
                                self.random_background, tr.background)
            tr.run_steps(stage, self.phase_start + self.target_iters, self.phase_start, self.target_iters, "target")
            self.phase = "done"
            self._tick("target_train", t0)
        (tr.exp_dir / "timings.json").write_text(json.dumps(self.timings, indent=1))

    def _weights(self, tr, mask_weight: float) -> LossWeights:
        return LossWeights(color=tr.weights.color, eikonal=tr.weights.eikonal, mask=mask_weight,
                           instance=self.instance_weight, instance_negative=self.negative_weight)

    def _initial_mask(self, tr, images, out_dir) -> None:
        from sam_utils.segmenter import check_nonempty

        prompt, source = self.prompt(tr)
        seg = self.segmenter(tr)
        res = check_nonempty(seg.predict_cascade(prompt.view, images[prompt.view], prompt),
                             view=prompt.view, source=source)
        self.store.set_prompt_mask(prompt.view, res.mask)
        report = {"round": 0, "prompt": prompt.to_dict(), "source": source, "mask_pixels": int(res.mask.sum())}
        self.store.history.append(report)
        folder = save_round(out_dir, self.store, report, images, self.store.masks.astype(np.float32), 0.5)
        tr.progress.round(report, folder / "contact_sheet.png", len(images))
        self.phase, self.phase_start = "lift", tr.iteration
        tr.save()

    def _update_negative_weight(self, report: dict, prompt_view: int) -> None:
        """Re-estimate the background weight from the accepted answers' errors (sam_utils/vote_weight.py)."""
        # store.lifted: the round's thresholded projections, set by run_round
        rates = error_rates(self.store.masks, self.store.lifted, round_boxes(report, prompt_view))
        if rates is not None:
            self.negative_weight = vote_weight(*rates)
            report.update(recall_estimate=rates[0], fp_rate_estimate=rates[1], negative_weight=self.negative_weight)

    def _lift(self, tr, images, gt, out_dir) -> None:
        s = self.settings
        stage = LiftStage(self._weights(tr, tr.weights.mask), tr.background, tr.device, self.focus_margin)
        stage.set_masks(self.store.masks, self.store.accepted, self.store.unsure)
        prompt_view = next(v for v, src in enumerate(self.store.source) if src == "prompt")
        angles = view_angles(tr.dataset.poses[:, :3, 3].cpu().numpy())
        nominal = self.warmup_iters + s.max_rounds * self.round_iters
        while True:
            t0 = time.time()
            done = self.store.rounds_done
            until = self.phase_start + self.warmup_iters + done * self.round_iters
            tr.run_steps(stage, until, self.phase_start, nominal, desc=f"lift (round {done})")
            self._tick("lift_train", t0)
            if done > 0 and (self.store.converged or done >= s.max_rounds):
                break
            t0 = time.time()
            tr.progress.stage(f"projection (round {done + 1})")
            known = surface = None
            if s.known_depth_tol > 0 or s.depth_split_tol > 0:
                proj, points, valid = project_views(tr, self.render_level, surface=True)
                centres = tr.dataset.poses[:, :3, 3].double().cpu().numpy()        # (N,3) unit coordinates
                surface = (np.linalg.norm(points - centres[:, None, None], axis=-1), valid)
            else:
                proj = project_views(tr, self.render_level)
            if s.known_depth_tol > 0:
                known = upsample_masks(known_pixels(points, valid, projection_matrices(tr.dataset),
                                                    self.store.accepted, (tr.dataset.H, tr.dataset.W),
                                                    s.known_depth_tol), tr.dataset.H, tr.dataset.W)
            self._tick("projection", t0)
            t0 = time.time()
            tr.progress.stage(f"segmenter (round {done + 1})")
            report = run_round(self.store, proj, images, self.segmenter(tr), s, prompt_view,
                               seed=tr.iteration, gt_masks=gt, angles=angles, known=known, surface=surface)
            self._tick("segmenter", t0)
            if self.adaptive_weight:
                self._update_negative_weight(report, prompt_view)
                stage.w.instance_negative = self.negative_weight
            folder = save_round(out_dir, self.store, report, images, proj, s.proj_threshold)
            tr.progress.round(report, folder / "contact_sheet.png", len(images))
            msg = f"[lift] round {report['round']}: accepted {report['n_accepted']}/{report['n_candidates']} " \
                  f"prompted views (of {len(images)}), " \
                  f"change {report['mean_change']:.3f}"
            if "negative_weight" in report:
                msg += f", background weight {report['negative_weight']:.2f}"
            if "iou_gt_mean" in report:
                msg += f", IoU vs gt mean {report['iou_gt_mean']:.3f} worst {report['iou_gt_worst']:.3f}"
            print(msg)
            stage.set_masks(self.store.masks, self.store.accepted, self.store.unsure)
            tr.save()
        t0 = time.time()
        self.final = final_masks(project_views(tr, self.final_render_level), s.proj_threshold)
        self._tick("projection", t0)
        if gt is not None:
            ious = [mask_iou(m, g) for m, g in zip(self.final, gt)]
            self.store.history.append({"final": True, "iou_gt": ious, "iou_gt_mean": float(np.mean(ious)),
                                       "iou_gt_worst": float(np.min(ious)), "render_level": self.final_render_level})
            print(f"[lift] lifted masks (level {self.final_render_level}): IoU vs gt mean {np.mean(ious):.3f} "
                  f"worst {np.min(ious):.3f}")
        tr.write_mesh("scene")
        self.phase, self.phase_start = "target", tr.iteration
        tr.save()
