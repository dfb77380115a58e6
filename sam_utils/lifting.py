"""Iterative mask lifting: projections of the 3D occupancy field -> prompts -> segmenter -> accepted masks.

The trainer renders the occupancy (instance) field into every view; `run_round` turns each
projection into a prompt (interior positives, a ring of negatives, the box), asks the segmenter,
and accepts a view's new mask only when it agrees with the projection (IoU >= accept_iou). The
store keeps every view's current mask with its provenance (round, source, IoUs), so a bad
segmenter answer in one view is never trained on, and the loop stops once accepted masks stop
changing (mean change of the lifted masks < converge_eps) or after max_rounds.

The lifted result of a view is the field's projection, not the segmenter's mask: the field is
trained on all accepted masks at once, so a 3D point's label is a vote of every view that sees
it, and one view's segmentation error is outvoted (bench/RESULTS.md: GrabCut alone 0.71 mean IoU
on `occluded`, an ideal vote over its 49 masks 0.90, 0.98 with negatives weighted 3x).
Optionally (view_radius_deg < 180) views are taken in order of proximity: a round prompts only
views within that angle of an accepted view, where the projection rests on surfaces that accepted
views have labelled (measured worse than all views on `occluded`, so off by default).
Optionally (depth_split_tol > 0) every answer is first cut at the depth jumps of the rendered scene
(depth_split.py), so leaks onto objects behind or in front of the target stop voting; the cut pieces
then cast no vote (store.unsure) or a background vote. The user's own mask is never cut: its
pieces beyond the target's own depth jumps (arms, a lamp's head) hold no click (RESULTS.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import mask_iou

from .depth_split import split_at_depth_edges
from .prompts import Prompt, prompts_from_mask
from .segmenter import Segmenter


MIN_KNOWN_FRACTION = 0.3   # an answer judged on fewer known pixels than this (of mask | projection) waits


@dataclass
class LiftingSettings:
    accept_iou: float        # accept a segmenter mask when IoU(mask, projection) >= this
    converge_eps: float      # converged when the lifted masks change less than this (mean 1 - IoU)
    max_rounds: int
    proj_threshold: float    # projection probability that counts as "target"
    n_positive: int
    n_negative: int
    cascade: bool            # SAM's points -> mask_input -> box cascade (method.md)
    view_radius_deg: float   # prompt only views within this angle of an accepted view (>= 180: all)
    known_depth_tol: float = 0.0  # > 0: judge answers only on pixels an accepted view sees (visibility.py)
    depth_split_tol: float = 0.0  # > 0: cut answers at rendered-depth jumps of this (relative) size (depth_split.py)
    depth_split_keep: float = 0.5  # ... keeping pieces with a positive point or this fraction in the projection
    depth_split_ignore: bool = False  # cut pieces cast no vote (True) instead of a background vote (False)


class MaskStore:
    """Per-view pseudo masks (N,H,W) with provenance; resumable through state_dict()."""

    def __init__(self, n_views: int, height: int, width: int):
        self.masks = np.zeros((n_views, height, width), dtype=bool)
        self.accepted = np.zeros(n_views, dtype=bool)
        self.source = ["" for _ in range(n_views)]          # "prompt" | "segmenter"
        self.round_of = np.full(n_views, -1, dtype=np.int64)
        self.reached = np.zeros(n_views, dtype=bool)        # views some round has prompted
        self.lifted = np.zeros((n_views, height, width), dtype=bool)  # last round's thresholded projections
        self.unsure = np.zeros((n_views, height, width), dtype=bool)  # pixels an accepted mask casts no vote on
        self.history: list[dict] = []                       # one report per round
        self.converged = False

    @property
    def rounds_done(self) -> int:
        """Segmenter rounds run so far (the prompt's own entry, if any, is not a round)."""
        return sum(1 for h in self.history if "views" in h)

    def set_prompt_mask(self, view: int, mask: np.ndarray) -> None:
        self.masks[view] = mask
        self.accepted[view] = True
        self.reached[view] = True
        self.source[view] = "prompt"
        self.round_of[view] = 0

    def accepted_views(self) -> list[int]:
        return [int(v) for v in np.flatnonzero(self.accepted)]

    def state_dict(self) -> dict:
        return {"masks": np.packbits(self.masks, axis=-1), "shape": self.masks.shape, "accepted": self.accepted,
                "source": list(self.source), "round_of": self.round_of, "history": self.history,
                "converged": self.converged, "reached": self.reached,
                "lifted": np.packbits(self.lifted, axis=-1), "unsure": np.packbits(self.unsure, axis=-1)}

    def load_state_dict(self, state: dict) -> None:
        n, h, w = state["shape"]
        self.masks = np.unpackbits(state["masks"], axis=-1, count=w).astype(bool).reshape(n, h, w)
        self.accepted = np.asarray(state["accepted"], dtype=bool)
        self.source = list(state["source"])
        self.round_of = np.asarray(state["round_of"])
        self.history = list(state["history"])
        self.converged = bool(state["converged"])
        self.reached = np.asarray(state["reached"], dtype=bool)
        self.lifted = np.unpackbits(state["lifted"], axis=-1, count=w).astype(bool).reshape(n, h, w)
        if "unsure" in state:  # checkpoints before the depth split's ignore mode have none
            self.unsure = np.unpackbits(state["unsure"], axis=-1, count=w).astype(bool).reshape(n, h, w)


def final_masks(projections: np.ndarray, threshold: float) -> np.ndarray:
    """The lifted result per view: the field's thresholded projection (a vote of all accepted views)."""
    return projections >= threshold


def view_angles(centres: np.ndarray) -> np.ndarray:
    """(N,N) angle in degrees between the directions of camera centres (N,3) seen from the scene centre."""
    d = centres / np.linalg.norm(centres, axis=1, keepdims=True).clip(min=1e-12)
    return np.degrees(np.arccos(np.clip(d @ d.T, -1.0, 1.0)))


def candidate_views(accepted: np.ndarray, angles: np.ndarray, radius_deg: float) -> np.ndarray:
    """(N,) bool: views within radius_deg of an accepted view (all views when radius_deg >= 180)."""
    if radius_deg >= 180.0 or not accepted.any():
        return np.ones(len(accepted), bool)
    return (angles[accepted] <= radius_deg).any(axis=0)


def agreement(mask: np.ndarray, proj_mask: np.ndarray, known: np.ndarray | None) -> tuple[float, float]:
    """(IoU of a segmenter mask with the projection, fraction of their union that is known).

    With `known` (H,W) the IoU is taken on known pixels only: surface that no accepted view has seen
    is not evidence against an answer (a partial projection of a view no accepted view is near).
    """
    if known is None:
        return mask_iou(mask, proj_mask), 1.0
    union = mask | proj_mask
    frac = float((union & known).sum() / max(union.sum(), 1))
    return mask_iou(mask & known, proj_mask & known), frac


def run_round(store: MaskStore, projections: np.ndarray, images: list[np.ndarray], segmenter: Segmenter,
              settings: LiftingSettings, prompt_view: int, seed: int = 0,
              gt_masks: np.ndarray | None = None, angles: np.ndarray | None = None,
              known: np.ndarray | None = None, surface: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """One lifting round over the candidate views but the prompt view. projections (N,H,W) in [0,1].

    angles: (N,N) degrees between views (view_angles); None = every view is a candidate.
    known: (N,H,W) bool pixels some accepted view sees (visibility.known_pixels); None = all. An
    answer is accepted when it agrees with the projection on known pixels and at least
    MIN_KNOWN_FRACTION of the pixels either claims are known.
    surface: (depth (N,h,w), valid (N,h,w)) rendered with the projections; with depth_split_tol > 0
    each answer is first cut at its depth jumps (depth_split.py) and only the target's pieces kept;
    with depth_split_ignore the cut pieces go to store.unsure (no vote) instead of counting as background.
    Returns (and appends to store.history) a report with per-view IoUs, acceptance and the mean
    change of the lifted masks since the previous round. The round has not converged while it reached
    views that no earlier round had (the candidate set grew).
    """
    n = len(images)
    proj_masks = final_masks(projections, settings.proj_threshold)
    round_idx = store.rounds_done + 1
    cand = np.ones(n, bool) if angles is None else candidate_views(store.accepted, angles, settings.view_radius_deg)
    grew = bool((cand & ~store.reached).any())
    store.reached |= cand
    views, prompts = [], []
    no_prompt = []
    for v in range(n):
        if v == prompt_view or not cand[v]:
            continue
        p = prompts_from_mask(projections[v], view=v, threshold=settings.proj_threshold,
                              n_positive=settings.n_positive, n_negative=settings.n_negative, rng=seed + v)
        (views.append(v), prompts.append(p)) if p is not None else no_prompt.append(v)
    results = segmenter.predict_views(views, [images[v] for v in views], prompts, cascade=settings.cascade) \
        if views else []

    per_view: dict[int, dict] = {}
    split = surface is not None and settings.depth_split_tol > 0
    for v, prompt, res in zip(views, prompts, results):
        mask = res.mask
        if split:
            mask = split_at_depth_edges(res.mask, surface[0][v], surface[1][v], prompt, proj_masks[v],
                                        settings.depth_split_tol, settings.depth_split_keep)
        iou_proj, known_frac = agreement(mask, proj_masks[v], None if known is None else known[v])
        accept = iou_proj >= settings.accept_iou and known_frac >= MIN_KNOWN_FRACTION
        if accept:
            store.masks[v] = mask
            store.unsure[v] = (res.mask & ~mask) if split and settings.depth_split_ignore else False
            store.source[v], store.round_of[v] = "segmenter", round_idx
        store.accepted[v] = accept
        per_view[v] = {"iou_projection": iou_proj, "known_fraction": known_frac, "accepted": bool(accept),
                       "score": float(res.score), "prompt": prompt.to_dict()}
        if split:
            per_view[v]["split_removed"] = float((res.mask & ~mask).sum() / max(res.mask.sum(), 1))
        if gt_masks is not None:
            per_view[v]["iou_gt_segmenter"] = mask_iou(mask, gt_masks[v])
            if split:
                per_view[v]["iou_gt_segmenter_unsplit"] = mask_iou(res.mask, gt_masks[v])
    for v in no_prompt:
        store.accepted[v] = False
        per_view[v] = {"iou_projection": 0.0, "accepted": False, "score": 0.0, "prompt": None}
    if gt_masks is not None:
        for v in range(n):
            entry = per_view.setdefault(v, {"accepted": bool(store.accepted[v]), "prompt": None})
            entry["iou_gt_lifted"] = mask_iou(proj_masks[v], gt_masks[v])

    # the change of the lifted masks (the projections) since the last round; the segmenter's own
    # answers are not a measure: GrabCut's drift 0.16-0.2 a round while the projections hold still
    mean_change = float(np.mean([1.0 - mask_iou(a, b) for a, b in zip(proj_masks, store.lifted)]))
    store.lifted = proj_masks
    # a round that accepts nothing has not converged: it has not started
    store.converged = bool(store.accepted.sum() > 1) and not grew and mean_change < settings.converge_eps
    report = {"round": round_idx, "mean_change": mean_change, "n_accepted": int(store.accepted.sum()),
              "n_candidates": int(cand.sum()), "converged": store.converged, "views": {str(k): per_view[k] for k in sorted(per_view)}}
    if gt_masks is not None:
        ious = [per_view[v]["iou_gt_lifted"] for v in range(n)]
        report["iou_gt_mean"], report["iou_gt_worst"] = float(np.mean(ious)), float(np.min(ious))
    store.history.append(report)
    return report


def save_round(folder: Path, store: MaskStore, report: dict, images: list[np.ndarray],
               projections: np.ndarray, threshold: float) -> Path:
    """Write masks_round_NN/ (per-view PNG masks, report.json, contact sheet)."""
    import cv2

    from .contact_sheet import contact_sheet

    out = Path(folder) / f"round_{report['round']:02d}"
    out.mkdir(parents=True, exist_ok=True)
    lifted = final_masks(projections, threshold)
    for v, m in enumerate(lifted):
        cv2.imwrite(str(out / f"{v:03d}.png"), m.astype(np.uint8) * 255)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    labels = [f"{v} {'seg ok' if store.accepted[v] else '-'}" for v in range(len(images))]
    sheet = contact_sheet(images, lifted, store.accepted, labels)
    cv2.imwrite(str(out / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out


__all__ = ["LiftingSettings", "MaskStore", "Prompt", "candidate_views", "final_masks", "run_round", "save_round",
           "view_angles"]
