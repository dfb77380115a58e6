"""Iterative mask lifting: projections of the 3D occupancy field -> prompts -> segmenter -> accepted masks.

The pipeline renders the occupancy (instance) field into every view; `run_round` turns each
projection into a prompt (interior positives, a ring of negatives, the box), asks the segmenter,
and accepts a view's new mask only when it agrees with the projection (IoU >= the segmenter's
accept_iou). The store keeps every view's current mask with its provenance (round, source, IoUs),
so a bad segmenter answer in one view is never trained on, and the loop stops once the lifted
masks stop changing (mean change < converge_eps) or after max_rounds.

The lifted result of a view is the field's projection, not the segmenter's mask: the field is
trained on all accepted masks at once, so a 3D point's label is a vote of every view that sees
it, and one view's segmentation error is outvoted; the projection is cut to the 3D piece through
the click (connectivity.py), so a neighbour the segmenter took in does not survive.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .contact_sheet import contact_sheet
from .masks import mask_iou, pack_masks, unpack_masks
from .prompts import prompts_from_mask
from .segmenter import Segmenter


@dataclass
class SegmenterTrust:
    """How far to trust one segmenter's answers (conf: nto3d.lifting.per_segmenter.<kind>)."""

    accept_iou: float        # accept an answer when IoU(answer, projection) >= this (on known pixels)
    min_recall: float        # ... and it covers this much of the projection's known target (not a part of it)
    negative_weight: float   # an accepted mask's background pixels count this many times its target pixels


@dataclass
class LiftingSettings:
    """conf section nto3d.lifting."""

    converge_eps: float      # converged when the lifted masks change less than this (mean 1 - IoU)
    max_rounds: int
    proj_threshold: float    # projection probability that counts as "target"
    n_positive: int
    n_negative: int
    cascade: bool            # SAM's points -> mask_input -> box cascade (method.md)
    render_level: int        # round projections rendered at 1/level, upsampled
    final_render_level: int  # the lifted masks (target-stage supervision) at 1/level
    connect_voxel: float     # target surface apart from the click's piece by gaps of voxels this many samples wide is not target
    connect_bridge: int      # ... gaps of up to 2 x this many voxels are closed first
    connect_edge: float      # a pixel whose surface point jumps more than this many samples from a neighbour's is on a depth edge
    unseen: str              # surface no accepted view sees: "unknown" (neither prompted from nor judged on) | "head" (the head's guess)
    rollback_spill: float    # a round whose prompt-view projection spills this much more past the prompt's mask (its area) than the best round's is rolled back
    per_segmenter: dict[str, SegmenterTrust]


class MaskStore:
    """Per-view pseudo masks (N,H,W) with provenance; resumable through state_dict()."""

    def __init__(self, n_views: int, height: int, width: int):
        self.masks = np.zeros((n_views, height, width), dtype=bool)
        self.accepted = np.zeros(n_views, dtype=bool)
        self.source = ["" for _ in range(n_views)]          # "prompt" | "segmenter"
        self.round_of = np.full(n_views, -1, dtype=np.int64)
        self.lifted = np.zeros((n_views, height, width), dtype=bool)  # last round's thresholded projections
        self.history: list[dict] = []                       # one report per round
        self.converged = False

    @property
    def rounds_done(self) -> int:
        """Segmenter rounds run so far (the prompt's own entry, if any, is not a round)."""
        return sum(1 for h in self.history if "views" in h)

    @property
    def prompt_view(self) -> int | None:
        return next((v for v, src in enumerate(self.source) if src == "prompt"), None)

    def set_prompt_mask(self, view: int, mask: np.ndarray) -> None:
        self.masks[view] = mask
        self.accepted[view] = True
        self.source[view] = "prompt"
        self.round_of[view] = 0

    def labels(self) -> dict:
        """What the field is trained on (masks, acceptance, provenance), kept to roll a round back."""
        return {"masks": pack_masks(self.masks), "accepted": self.accepted.copy(), "source": list(self.source),
                "round_of": self.round_of.copy()}

    def set_labels(self, labels: dict) -> None:
        self.masks = unpack_masks(labels["masks"])
        self.accepted = np.asarray(labels["accepted"], dtype=bool)
        self.source, self.round_of = list(labels["source"]), np.asarray(labels["round_of"])

    def state_dict(self) -> dict:
        return {**self.labels(), "history": self.history, "converged": self.converged,
                "lifted": pack_masks(self.lifted)}

    def load_state_dict(self, state: dict) -> None:
        self.set_labels(state)
        self.history = list(state["history"])
        self.converged = bool(state["converged"])
        self.lifted = unpack_masks(state["lifted"])


def final_masks(projections: np.ndarray, threshold: float) -> np.ndarray:
    """The lifted result per view: the field's thresholded projection (N,H,W) bool."""
    return projections >= threshold


MIN_KNOWN_FRACTION = 0.3   # below this known fraction (of answer | projection) an answer is judged on the prior


def agreement(mask: np.ndarray, proj: np.ndarray, known: np.ndarray | None) -> tuple[float, float, float]:
    """(IoU, recall of the projection's target, known fraction of their union), on known pixels only:
    surface no accepted view has seen is no evidence for or against an answer."""
    if known is None:
        known = np.ones_like(mask)
    m, p = mask & known, proj & known
    union = mask | proj
    inter = float((m & p).sum())
    frac = float((union & known).sum() / max(union.sum(), 1))
    return mask_iou(m, p), inter / max(float(p.sum()), 1.0) if p.any() else 1.0, frac


def run_round(store: MaskStore, projections: np.ndarray, images: list[np.ndarray], segmenter: Segmenter,
              settings: LiftingSettings, trust: SegmenterTrust, prompt_view: int, seed: int = 0,
              gt_masks: np.ndarray | None = None, known: np.ndarray | None = None) -> dict:
    """One lifting round over every view but the prompt view. projections (N,H,W) in [0,1].

    known (N,H,W) bool: pixels whose projected label rests on evidence (surface an accepted view sees);
    None: every pixel. Prompt points come from the known part of the projection, the box from all of it.
    An answer is accepted when, on known pixels, it agrees with the projection (IoU >= accept_iou) and
    covers its target (recall >= min_recall: a part is not the whole); where less than
    MIN_KNOWN_FRACTION of it is known, it is judged on every pixel (the projection's prior there).
    Returns (and appends to store.history) a report with per-view IoUs, acceptance and the mean
    change of the lifted masks since the previous round.
    """
    n = len(images)
    proj_masks = final_masks(projections, settings.proj_threshold)
    round_idx = store.rounds_done + 1
    views, prompts, no_prompt = [], [], []
    for v in range(n):
        if v == prompt_view:
            continue
        # prompt points only where the projection rests on evidence; the box from all of it
        p = prompts_from_mask(projections[v], view=v, threshold=settings.proj_threshold,
                              n_positive=settings.n_positive, n_negative=settings.n_negative, rng=seed + v,
                              known=None if known is None else known[v])
        (views.append(v), prompts.append(p)) if p is not None else no_prompt.append(v)
    results = segmenter.predict_views(views, [images[v] for v in views], prompts, cascade=settings.cascade) \
        if views else []

    per_view: dict[int, dict] = {}
    for v, prompt, res in zip(views, prompts, results):
        iou_proj, recall, known_frac = agreement(res.mask, proj_masks[v], None if known is None else known[v])
        if known_frac < MIN_KNOWN_FRACTION:
            iou_proj, recall, _ = agreement(res.mask, proj_masks[v], None)
        accept = iou_proj >= trust.accept_iou and recall >= trust.min_recall
        if accept:
            store.masks[v] = res.mask
            store.source[v], store.round_of[v] = "segmenter", round_idx
        store.accepted[v] = accept
        per_view[v] = {"iou_projection": iou_proj, "recall_projection": recall, "known_fraction": known_frac,
                       "accepted": bool(accept), "score": float(res.score), "prompt": prompt.to_dict()}
        if gt_masks is not None:
            per_view[v]["iou_gt_segmenter"] = mask_iou(res.mask, gt_masks[v])
    for v in no_prompt:
        store.accepted[v] = False
        per_view[v] = {"iou_projection": 0.0, "accepted": False, "score": 0.0, "prompt": None}
    if gt_masks is not None:
        for v in range(n):
            entry = per_view.setdefault(v, {"accepted": bool(store.accepted[v]), "prompt": None})
            entry["iou_gt_lifted"] = mask_iou(proj_masks[v], gt_masks[v])

    # the change of the lifted masks (the projections) since the last round; the segmenter's own
    # answers are not a measure: GrabCut's drift a round while the projections hold still
    mean_change = float(np.mean([1.0 - mask_iou(a, b) for a, b in zip(proj_masks, store.lifted)]))
    store.lifted = proj_masks
    # a round that accepts nothing has not converged: it has not started
    store.converged = bool(store.accepted.sum() > 1) and mean_change < settings.converge_eps
    report = {"round": round_idx, "mean_change": mean_change, "n_accepted": int(store.accepted.sum()),
              "n_candidates": len(views) + len(no_prompt), "converged": store.converged,
              "prompt_agreement": mask_iou(proj_masks[prompt_view], store.masks[prompt_view]),
              "views": {str(k): per_view[k] for k in sorted(per_view)}}
    if gt_masks is not None:
        ious = [per_view[v]["iou_gt_lifted"] for v in range(n)]
        report["iou_gt_mean"], report["iou_gt_worst"] = float(np.mean(ious)), float(np.min(ious))
    store.history.append(report)
    return report


def clear_rounds(folder: Path) -> None:
    """Remove an earlier run's masks/round_NN/ and final.json from folder: a fresh run in the same
    experiment folder must not show (or report) rounds it did not run."""
    for old in Path(folder).glob("round_*"):
        shutil.rmtree(old, ignore_errors=True)
    (Path(folder) / "final.json").unlink(missing_ok=True)


def load_rounds(exp_dir: Path) -> list[tuple[Path, dict]]:
    """(folder, report) of every masks/round_NN/ with a readable report.json, in round order."""
    out = []
    for folder in sorted((Path(exp_dir) / "masks").glob("round_[0-9][0-9]")):
        try:
            out.append((folder, json.loads((folder / "report.json").read_text())))
        except (OSError, ValueError):
            continue
    return out


def load_final(exp_dir: Path) -> dict | None:
    """masks/final.json (the final masks' entry: prompt-view agreement, warnings, IoU with ground truth),
    None until the lifting has finished (or when unreadable)."""
    try:
        return json.loads((Path(exp_dir) / "masks" / "final.json").read_text())
    except (OSError, ValueError):
        return None


def save_round(folder: Path, store: MaskStore, report: dict, images: list[np.ndarray],
               projections: np.ndarray, threshold: float) -> Path:
    """Write masks/round_NN/ (per-view PNG masks, report.json, contact sheet), whole or not at all: the
    files go to a hidden folder that replaces round_NN in one rename."""
    out = Path(folder) / f"round_{report['round']:02d}"
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        lifted = final_masks(projections, threshold)
        for v, m in enumerate(lifted):
            _imwrite(tmp / f"{v:03d}.png", m.astype(np.uint8) * 255)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        labels = [f"{v} {'seg ok' if store.accepted[v] else '-'}" for v in range(len(images))]
        sheet = contact_sheet(images, lifted, store.accepted, labels)
        _imwrite(tmp / "contact_sheet.png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path} (disk full or not writable?)")
