"""NTO3D: one prompt -> lifted masks in every view -> the target alone -> the target's mesh.

Phases (resumable): "init" (the segmenter answers the user's prompt), "lift" (scene + occupancy
head; between segments a lifting round re-prompts every view from the head's projections, cut to
the 3D piece through the click),
"target" (the target-only field against the lifted masks), "done".
"""
from __future__ import annotations

import json
import time
from typing import NamedTuple

import cv2
import numpy as np

from sam_utils.connectivity import keep_connected
from sam_utils.lifting import MaskStore, clear_rounds, final_masks, run_round, save_round
from sam_utils.masks import disagreement, mask_iou, pack_masks, unpack_masks
from sam_utils.errors import PromptError
from sam_utils.prompts import Prompt, load_prompt_file
from sam_utils.segmenter import Segmenter, check_nonempty
from sam_utils.segmenters import build_segmenter
from sam_utils.support_plane import to_world as plane_to_world
from sam_utils.surface import Surface, carried_labels
from systems.atomic import atomic_write_text
from systems.config import ConfigError
from systems.pipeline import Pipeline
from systems.projection import load_gt_masks, project_views, projection_matrices, upsample
from systems.stages import INSTANCE, LiftStage, LossWeights, TargetStage
from systems.target_supervision import target_constraints, target_sdf_fn
from systems.trainer import Segment


PROTECT_ERODE = 0.01         # the prompt mask's interior, carried to every view: eroded by this share of the image diagonal
PROMPT_AGREEMENT_WARN = 0.8   # warn when the prompt view's lifted mask agrees less than this with the prompt's


class Lifted(NamedTuple):
    """One rendering of the lifted result, all (N,H,W): see NTO3DPipeline._lifted."""

    cut: np.ndarray              # float32 target probability, carried and cut
    head: np.ndarray             # float32 the occupancy head's projection as rendered
    carried: np.ndarray          # bool the prompt view's carried target that the cut kept
    known: np.ndarray | None     # bool surface an accepted view sees (None: not judged, or lifting.unseen = head)


class NTO3DPipeline(Pipeline):
    heads = {INSTANCE: (1, "sigmoid")}

    def __init__(self, *args, prompt: Prompt | None = None, sam_checkpoint: str | None = None, **kw):
        """prompt: the command line's prompt (else the scene's prompt file); sam_checkpoint overrides the conf's."""
        super().__init__(*args, **kw)
        n = self.s.nto3d
        self.n = n
        if n.segmenter not in n.lifting.per_segmenter:
            raise ConfigError(f"nto3d.segmenter = {n.segmenter!r} but nto3d.lifting.per_segmenter has no "
                              f"'{n.segmenter}' entry: add its accept_iou and negative_weight")
        self.trust = n.lifting.per_segmenter[n.segmenter]
        self.prompt_override, self.sam_checkpoint = prompt, sam_checkpoint or n.sam.checkpoint
        ds = self.dataset
        self.store = MaskStore(ds.n_images, ds.H, ds.W)
        self.final: np.ndarray | None = None
        self.unknown: np.ndarray | None = None       # occluded-target pixels (N,H,W), unknown to the target stage
        self.support: np.ndarray | None = None       # the plane (4,) the target rests on (target_supervision)
        self.phase, self.phase_start = "init", 0
        self.timings: dict[str, float] = {}
        self._segmenter: Segmenter | None = None
        self._trained_since: float | None = None     # wall time the current segment's training began
        self.best: dict | None = None                # the least-spilling round's field and labels (_rolled_back)
        self.rolled_back: dict | None = None         # where lifting was rolled back, if it was
        self.images = list(ds.images.cpu().numpy())  # N x (H,W,3) uint8
        self.gt = load_gt_masks(ds, n.gt_mask_dir)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"phase": self.phase, "phase_start": self.phase_start,
                "store": self.store.state_dict(),
                "final": None if self.final is None else pack_masks(self.final), "timings": self.timings,
                "unknown": None if self.unknown is None else pack_masks(self.unknown),
                "support": None if self.support is None else self.support.tolist(),
                "best": self.best, "rolled_back": self.rolled_back}

    def load_state_dict(self, state: dict) -> None:
        self.phase, self.phase_start = state["phase"], state["phase_start"]
        self.store.load_state_dict(state["store"])
        self.timings = dict(state["timings"])
        self.final = None if state["final"] is None else unpack_masks(state["final"])
        self.unknown = None if state.get("unknown") is None else unpack_masks(state["unknown"])
        self.support = None if state.get("support") is None else np.asarray(state["support"], np.float64)
        self.best, self.rolled_back = state.get("best"), state.get("rolled_back")
        if self.phase in ("lift", "target", "done"):
            self.stage = self._stage_for(self.phase)

    # ------------------------------------------------------------ parts
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            n = self.n
            if n.segmenter == "sam":
                kw = dict(sam_model_type=n.sam.model_type, sam_checkpoint=self.sam_checkpoint,
                          device=str(self.dataset.device), cache_dir=self.dataset.data_dir / "sam_feat")
            else:
                kw = dict(crop_margin=n.grabcut.crop_margin, workers=n.grabcut.workers)
            self._segmenter = build_segmenter(n.segmenter, **kw)
            print(f"[nto3d] segmenter: {self._segmenter.name}")
        return self._segmenter

    def prompt(self) -> tuple[Prompt, str]:
        ds = self.dataset
        if self.prompt_override is not None:
            p, source = self.prompt_override, "--prompt_points/--prompt_box"
        else:
            path = ds.data_dir / self.n.prompt_file
            if not path.is_file():
                raise PromptError(f"prompt file {path} not found (conf key nto3d.prompt_file = "
                                  f"{self.n.prompt_file!r}): write one, or click with --prompt_points \"x,y\"")
            p, source = load_prompt_file(path), str(path)
        full_h, full_w = ds.full_size     # prompts are in full-resolution pixels
        p.validate(full_h, full_w, source, ds.n_images)
        return p.scaled(ds.W / full_w).validate(ds.H, ds.W, source), source

    def _weights(self, mask_weight: float) -> LossWeights:
        return LossWeights(color=self.weights.color, eikonal=self.weights.eikonal, mask=mask_weight,
                           instance=self.n.instance_weight, instance_negative=self.trust.negative_weight)

    def _stage_for(self, phase: str):
        if phase == "lift":
            stage = LiftStage(self.sampler, self._weights(self.weights.mask), self.background, self.n.focus_margin)
            stage.set_masks(self.store.masks, self.store.accepted)
            return stage
        t = self.n.target
        return TargetStage(self.sampler, self._weights(t.mask_weight), self.final, self.unknown, t, self.background,
                           self.n.focus_margin)

    def _tick(self, name: str, t0: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.time() - t0

    def _lifted(self, level: int, judged: bool = False) -> Lifted:
        """The lifted result at 1/level, upsampled (Lifted): the occupancy head's projection raised to
        target where the prompt view shows its mask's interior (`_carried`), cut to the 3D piece through
        the click (connectivity.py); the head's projection as rendered; the carried pixels that stayed;
        judged (a round's projections, whose answers are judged): the pixels whose surface an accepted
        view sees (or that show none)."""
        t0 = time.time()
        ds, s = self.dataset, self.n.lifting
        proj, points, valid = project_views(self.model, ds, level, self.s.validate.render_chunk, surface=True)
        n, h, w = valid.shape
        surf = Surface(points, valid, projection_matrices(ds), (ds.H, ds.W), self.n.target.depth_tol)
        grid = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in proj])
        carried = self._carried(surf)
        grid = np.maximum(grid, carried)
        centres = ds.poses[:, :3, 3].double().cpu().numpy()                       # (N,3) camera centres
        depth = np.linalg.norm(points - centres[:, None, None], axis=-1)          # (N,h,w) along each ray
        kept = keep_connected(points, valid, depth, grid, self._seeds(h, w), s.proj_threshold, s.connect_voxel,
                              s.connect_bridge, s.connect_edge)
        drop = (grid >= s.proj_threshold) & (kept < s.proj_threshold)
        raise_ = carried & (kept >= s.proj_threshold)
        known = None
        if judged and s.unseen == "unknown":
            known = surf.seen_by(np.flatnonzero(self.store.accepted)).cpu().numpy() | ~valid
        full = lambda g: np.stack([upsample(x, ds.H, ds.W, nearest=True) for x in g])   # noqa: E731
        cut, kept_carried = proj.copy(), full(raise_)
        cut[kept_carried] = 1.0
        cut[full(drop)] = 0.0
        self._tick("projection", t0)
        return Lifted(cut, proj, kept_carried, None if known is None else full(known))

    def _carried(self, surf: Surface) -> np.ndarray:
        """(N,h,w) bool on the surface grid: the pixels whose surface point the prompt view sees inside
        its mask's interior (eroded by PROTECT_ERODE of the image diagonal: a segmenter's mask spills
        past the silhouette). The user's intent carried over the reconstructed geometry: surface the
        prompt view shows as target is target in every view, whatever the occupancy head extrapolates
        or the other views' segmenter answers vote."""
        ds, pv = self.dataset, self.store.prompt_view
        erode = max(1, round(PROTECT_ERODE * float(np.hypot(ds.H, ds.W))))
        return carried_labels(surf, pv, self.store.masks[pv], erode)

    def _seeds(self, h: int, w: int) -> np.ndarray:
        """(K,3) (view, row, col) on an (h,w) grid: the prompt's positive points (a box alone: the
        deepest pixel of the prompt view's mask), the surface the user marked as the target."""
        ds, pv = self.dataset, self.store.prompt_view
        prompt, _ = self.prompt()
        xy = prompt.points[prompt.labels == 1]
        if len(xy) == 0:
            m = np.pad(self.store.masks[pv], 1).astype(np.uint8)
            dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
            xy = np.array([[c, r]], np.float64)
        col = np.clip(np.floor((xy[:, 0] + 0.5) * w / ds.W), 0, w - 1)
        row = np.clip(np.floor((xy[:, 1] + 0.5) * h / ds.H), 0, h - 1)
        return np.stack([np.full(len(xy), pv), row, col], 1).astype(np.int64)

    # ------------------------------------------------------------ phases
    def next_segment(self, iteration: int) -> Segment | None:
        if self._trained_since is not None and self.phase in ("lift", "target"):
            self._tick(f"{self.phase}_train", self._trained_since)
        seg = self._next(iteration)
        atomic_write_text(self.exp_dir / "timings.json", json.dumps(self.timings, indent=1))
        self._trained_since = time.time() if seg is not None else None
        return seg

    def _lift_segment(self) -> Segment:
        n, done = self.n, self.store.rounds_done
        until = self.phase_start + n.warmup_iters + done * n.round_iters
        nominal = n.warmup_iters + n.lifting.max_rounds * n.round_iters
        return Segment(f"lift (round {done})", until, self.phase_start, nominal)

    def _target_segment(self) -> Segment:
        return Segment("target", self.phase_start + self.n.target.iters, self.phase_start, self.n.target.iters)

    def _next(self, iteration: int) -> Segment | None:
        if self.phase == "init":
            self._initial_mask(iteration)
        if self.phase == "lift":
            seg = self._lift_segment()
            if iteration < seg.until:
                return seg
            done = self.store.rounds_done
            if done == 0 or not (self.store.converged or done >= self.n.lifting.max_rounds):
                if self._round(iteration):
                    return self._lift_segment()
            elif not self.store.converged:      # the training after the last round, judged as a round's
                self._rolled_back(self._lifted(self.n.lifting.render_level).cut, done + 1)
            self._finish_lift(iteration)
        if self.phase == "target":
            seg = self._target_segment()
            if iteration < seg.until:
                return seg
            self.phase = "done"
        return None

    def _initial_mask(self, iteration: int) -> None:
        t0 = time.time()
        clear_rounds(self.exp_dir / "masks")
        prompt, source = self.prompt()
        res = check_nonempty(self.segmenter().predict_cascade(prompt.view, self.images[prompt.view], prompt),
                             view=prompt.view, source=source)
        self.store.set_prompt_mask(prompt.view, res.mask)
        report = {"round": 0, "prompt": prompt.to_dict(), "source": source, "mask_pixels": int(res.mask.sum())}
        self.store.history.append(report)
        folder = save_round(self.exp_dir / "masks", self.store, report, self.images,
                            self.store.masks.astype(np.float32), 0.5)
        self.progress.round(report, folder / "contact_sheet.png", len(self.images))
        self.phase, self.phase_start = "lift", iteration
        self.stage = self._stage_for("lift")
        self._tick("initial_mask", t0)

    def _rolled_back(self, proj: np.ndarray, round_idx: int) -> bool:
        """Keep the field of the round whose prompt-view projection spills least past the prompt's mask (from
        round 2 on: round 1's field has learnt the prompt view alone); when a later one spills `rollback_spill`
        (of the mask's area) more, the other views are voting in surface the prompt view shows as background
        (a touching look-alike that GrabCut's colours take in, round after round): the field and the labels
        go back to that round's and lifting ends. A projection that sheds part of the prompt's mask is not
        judged here (the carried prompt guards the mask's interior; a segmenter's mask that took in a
        neighbour is shed that way). proj (N,H,W): the round's lifted projection."""
        if round_idx < 2:
            return False
        pv, s, best = self.store.prompt_view, self.n.lifting, self.best
        mask = self.store.masks[pv]
        spill = float(((proj[pv] >= s.proj_threshold) & ~mask).sum() / max(1, mask.sum()))
        if best is not None and spill > best["spill"] + s.rollback_spill:
            self.model.load_state_dict(best["model"])
            self.store.set_labels(best["labels"])
            warning = (f"at round {round_idx} the prompt view's lifted mask reaches past your prompt's mask by "
                       f"{spill:.3f} of its area, {best['spill']:.3f} at round {best['round']}: the other views "
                       f"are voting in surface it shows as background; rolled back to round {best['round']}'s field")
            self.rolled_back = {"round": round_idx, "spill": spill, "to_round": best["round"],
                                "best_spill": best["spill"], "warning": warning}
            print(f"[lift] WARNING: {warning}")
            return True
        if best is None or spill < best["spill"]:
            self.best = {"round": round_idx, "spill": spill, "labels": self.store.labels(),
                         "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        return False

    def _round(self, iteration: int) -> bool:
        """One lifting round; False when the field was rolled back instead (lifting ends)."""
        s = self.n.lifting
        self.progress.stage(f"projection (round {self.store.rounds_done + 1})")
        lifted = self._lifted(s.render_level, judged=True)
        if self._rolled_back(lifted.cut, self.store.rounds_done + 1):
            return False
        proj, carried = lifted.cut, lifted.carried
        self.progress.stage(f"segmenter (round {self.store.rounds_done + 1})")
        t0 = time.time()
        report = run_round(self.store, proj, self.images, self.segmenter(), s, self.trust, self.store.prompt_view,
                           seed=iteration, gt_masks=self.gt, known=lifted.known)
        self._tick("segmenter", t0)
        # an accepted answer is trained on with the prompt view's carried target added: never voted out
        fresh = np.flatnonzero(self.store.accepted & (self.store.round_of == report["round"]))
        self.store.masks[fresh] |= carried[fresh]
        report["carried_share"] = float(carried.sum() / max(1, (proj >= s.proj_threshold).sum()))
        folder = save_round(self.exp_dir / "masks", self.store, report, self.images, proj, s.proj_threshold)
        self.progress.round(report, folder / "contact_sheet.png", len(self.images))
        msg = (f"[lift] round {report['round']}: {report['n_accepted']}/{len(self.images)} views accepted (the "
               f"prompt view's included), change {report['mean_change']:.3f}")
        if "iou_gt_mean" in report:
            msg += f", IoU vs gt mean {report['iou_gt_mean']:.3f} worst {report['iou_gt_worst']:.3f}"
        print(msg)
        self.stage.set_masks(self.store.masks, self.store.accepted)
        return True

    def _finish_lift(self, iteration: int) -> None:
        s = self.n.lifting
        level = s.final_render_level
        lifted = self._lifted(level)
        cut, uncut = lifted.cut, lifted.head
        self.final = final_masks(cut, s.proj_threshold)
        uncut_masks = final_masks(uncut, s.proj_threshold)          # before the connectivity cut, for the record
        t0 = time.time()
        self.unknown, self.support, support_why = target_constraints(
            self.model, self.dataset, self.final, self.n.target, self.n.target.depth_tol, self.s.validate.render_chunk)
        self._tick("occlusion", t0)
        pv = self.store.prompt_view
        entry = {"final": True, "render_level": level,
                 "prompt_agreement": mask_iou(self.final[pv], self.store.masks[pv]),
                 "uncut_prompt_agreement": mask_iou(uncut_masks[pv], self.store.masks[pv]),
                 "rolled_back": self.rolled_back,
                 "support_plane": None if self.support is None else    # world units: n . x + d, the mesh's floor
                 [round(float(v), 5) for v in plane_to_world(self.support, self.dataset.scale_mat)],
                 "support_why": support_why}
        self.best = None                                 # the field is final: no checkpoint carries a copy
        entry["warnings"] = [self.rolled_back["warning"]] if self.rolled_back else []
        if entry["prompt_agreement"] < PROMPT_AGREEMENT_WARN:
            entry["warnings"].append(f"the lifted mask of the prompt view agrees with your prompt's mask only "
                                     f"{entry['prompt_agreement']:.2f} (IoU): "
                                     f"{disagreement(self.final[pv], self.store.masks[pv])}; see "
                                     f"{self.exp_dir / 'masks'} (round_00: your prompt's mask)")
            print(f"[lift] WARNING: {entry['warnings'][-1]}")
        if self.gt is not None:
            for key, masks in (("", self.final), ("uncut_", uncut_masks)):
                ious = [mask_iou(m, g) for m, g in zip(masks, self.gt)]
                entry.update({f"{key}iou_gt": ious, f"{key}iou_gt_mean": float(np.mean(ious)),
                              f"{key}iou_gt_worst": float(np.min(ious))})
            print(f"[lift] lifted masks (level {level}): IoU vs gt mean {entry['iou_gt_mean']:.3f} worst "
                  f"{entry['iou_gt_worst']:.3f}; before the connectivity cut {entry['uncut_iou_gt_mean']:.3f} / "
                  f"{entry['uncut_iou_gt_worst']:.3f}")
        self.store.history.append(entry)
        atomic_write_text(self.exp_dir / "masks" / "final.json", json.dumps(entry, indent=1))   # for the report
        t0, e0 = time.time(), self.meshes.eval_seconds
        self.meshes.write("scene", self.model.sdf.sdf, iteration)
        self._tick("scene_mesh", t0 + self.meshes.eval_seconds - e0)            # its evaluation (bench only) apart
        self.phase, self.phase_start = "target", iteration
        self.stage = self._stage_for("target")

    # ------------------------------------------------------------ outputs
    def write_mesh(self, iteration: int, resolution: int | None = None, threshold: float | None = None):
        """The target mesh once the target stage has begun, else the scene's."""
        if self.phase not in ("target", "done"):
            return super().write_mesh(iteration, resolution, threshold)
        res = resolution or self.s.validate.mesh_resolution
        return self.meshes.write("target", self._target_sdf(res), iteration, res, threshold, keep_largest=True,
                                 formats=self.formats, support=self.mesh_support())

    def mesh_support(self) -> np.ndarray | None:
        """The plane the target's mesh stands on (nto3d.target.support_ring > 0): cut below, filled above."""
        return self.support if self.n.target.support_ring > 0 else None

    def _target_sdf(self, resolution: int):
        """The target field's SDF pushed outside (to one grid cell) beyond the target, as nto3d.target.mesh_cut
        says (systems/target_supervision.py); the mesh is its zero level set's largest component."""
        return target_sdf_fn(self.model, self.dataset, self.final, self.unknown, self.n.target,
                             2.0 * self.s.model.bound / resolution, self.mesh_support())
