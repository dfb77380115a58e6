"""Iterative mask lifting: projections of the 3D occupancy field -> prompts -> segmenter -> accepted masks.

The trainer renders the occupancy (instance) field into every view; `run_round` turns each
projection into a prompt (interior positives, a ring of negatives, the box), asks the segmenter,
and accepts a view's new mask only when it agrees with the projection (IoU >= accept_iou). The
store keeps every view's current mask with its provenance (round, source, IoUs), so a bad
segmenter answer in one view is never trained on, and the loop stops once accepted masks stop
changing (mean change < converge_eps) or after max_rounds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import mask_iou

from .prompts import Prompt, prompts_from_mask
from .segmenter import Segmenter


@dataclass
class LiftingSettings:
    accept_iou: float        # accept a segmenter mask when IoU(mask, projection) >= this
    converge_eps: float      # converged when the mean per-view mask change (1 - IoU) is below this
    max_rounds: int
    proj_threshold: float    # projection probability that counts as "target"
    n_positive: int
    n_negative: int
    cascade: bool            # SAM's points -> mask_input -> box cascade (method.md)


class MaskStore:
    """Per-view pseudo masks (N,H,W) with provenance; resumable through state_dict()."""

    def __init__(self, n_views: int, height: int, width: int):
        self.masks = np.zeros((n_views, height, width), dtype=bool)
        self.accepted = np.zeros(n_views, dtype=bool)
        self.source = ["" for _ in range(n_views)]          # "prompt" | "segmenter"
        self.round_of = np.full(n_views, -1, dtype=np.int64)
        self.history: list[dict] = []                       # one report per round
        self.converged = False

    @property
    def rounds_done(self) -> int:
        """Segmenter rounds run so far (the prompt's own entry, if any, is not a round)."""
        return sum(1 for h in self.history if "views" in h)

    def set_prompt_mask(self, view: int, mask: np.ndarray) -> None:
        self.masks[view] = mask
        self.accepted[view] = True
        self.source[view] = "prompt"
        self.round_of[view] = 0

    def accepted_views(self) -> list[int]:
        return [int(v) for v in np.flatnonzero(self.accepted)]

    def state_dict(self) -> dict:
        return {"masks": np.packbits(self.masks, axis=-1), "shape": self.masks.shape, "accepted": self.accepted,
                "source": list(self.source), "round_of": self.round_of, "history": self.history,
                "converged": self.converged}

    def load_state_dict(self, state: dict) -> None:
        n, h, w = state["shape"]
        self.masks = np.unpackbits(state["masks"], axis=-1, count=w).astype(bool).reshape(n, h, w)
        self.accepted = np.asarray(state["accepted"], dtype=bool)
        self.source = list(state["source"])
        self.round_of = np.asarray(state["round_of"])
        self.history = list(state["history"])
        self.converged = bool(state["converged"])


def final_masks(store: MaskStore, projections: np.ndarray, threshold: float) -> np.ndarray:
    """The lifted result per view: the accepted segmenter mask, else the thresholded projection."""
    out = projections >= threshold
    out[store.accepted] = store.masks[store.accepted]
    return out


def run_round(store: MaskStore, projections: np.ndarray, images: list[np.ndarray], segmenter: Segmenter,
              settings: LiftingSettings, prompt_view: int, seed: int = 0,
              gt_masks: np.ndarray | None = None) -> dict:
    """One lifting round over every view but the prompt view. projections (N,H,W) in [0,1].

    Returns (and appends to store.history) a report with per-view IoUs, acceptance and the mean
    change of the masks since the previous round.
    """
    n = len(images)
    proj_masks = projections >= settings.proj_threshold
    round_idx = store.rounds_done + 1
    views, prompts = [], []
    no_prompt = []
    for v in range(n):
        if v == prompt_view:
            continue
        p = prompts_from_mask(projections[v], view=v, threshold=settings.proj_threshold,
                              n_positive=settings.n_positive, n_negative=settings.n_negative, rng=seed + v)
        (views.append(v), prompts.append(p)) if p is not None else no_prompt.append(v)
    results = segmenter.predict_views(views, [images[v] for v in views], prompts, cascade=settings.cascade) \
        if views else []

    per_view: dict[int, dict] = {}
    changes = []
    for v, prompt, res in zip(views, prompts, results):
        iou_proj = mask_iou(res.mask, proj_masks[v])
        accept = iou_proj >= settings.accept_iou
        was = bool(store.accepted[v])
        if accept:
            changes.append(1.0 - mask_iou(res.mask, store.masks[v]) if was else 1.0)
            store.masks[v] = res.mask
            store.source[v], store.round_of[v] = "segmenter", round_idx
        elif was:
            changes.append(1.0)
        store.accepted[v] = accept
        per_view[v] = {"iou_projection": iou_proj, "accepted": bool(accept), "score": float(res.score),
                       "prompt": prompt.to_dict()}
    for v in no_prompt:
        changes.append(1.0 if store.accepted[v] else 0.0)
        store.accepted[v] = False
        per_view[v] = {"iou_projection": 0.0, "accepted": False, "score": 0.0, "prompt": None}
    if gt_masks is not None:
        lifted = final_masks(store, projections, settings.proj_threshold)
        for v in range(n):
            entry = per_view.setdefault(v, {"accepted": True, "prompt": None})
            entry["iou_gt_projection"] = mask_iou(proj_masks[v], gt_masks[v])
            entry["iou_gt_lifted"] = mask_iou(lifted[v], gt_masks[v])

    mean_change = float(np.mean(changes)) if changes else 0.0
    # a round that accepts nothing has not converged: it has not started
    store.converged = bool(store.accepted.sum() > 1) and mean_change < settings.converge_eps
    report = {"round": round_idx, "mean_change": mean_change, "n_accepted": int(store.accepted.sum()),
              "converged": store.converged, "views": {str(k): per_view[k] for k in sorted(per_view)}}
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
    lifted = final_masks(store, projections, threshold)
    for v, m in enumerate(lifted):
        cv2.imwrite(str(out / f"{v:03d}.png"), m.astype(np.uint8) * 255)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    labels = [f"{v} {'ok' if store.accepted[v] else 'proj'}" for v in range(len(images))]
    sheet = contact_sheet(images, lifted, store.accepted, labels)
    cv2.imwrite(str(out / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out


__all__ = ["LiftingSettings", "MaskStore", "Prompt", "final_masks", "run_round", "save_round"]
