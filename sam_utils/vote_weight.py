"""How much a segmenter's "background" weighs against its "target" in the occupancy vote, from its errors.

The occupancy head is trained (BCE) on every accepted mask, so a 3D point ends up "target" when the
views that call it target outweigh those that call it background: pos >= w * neg. If a segmenter
finds a target pixel with probability r (recall) and wrongly claims a nearby background pixel with
probability f, the log-likelihood ratio of one "target" answer is log(r / f) and of one "background"
answer log((1 - f) / (1 - r)); their ratio is the weight w that makes the vote a likelihood test.

The rates are estimated against the current consensus (the thresholded projections) inside each
accepted answer's prompt box, the only region where the segmenter decides anything. An
over-segmenting segmenter (GrabCut on `occluded`: high recall, many false positives) gets a high w,
one that drops parts (GrabCut on `thin`'s striped lamp base) a low one. CPU loop study (ideal field,
bench/RESULTS.md): `thin` w -> 1.6, `occluded` w -> 2.2.
"""
from __future__ import annotations

import numpy as np

RATE_CLIP = (0.005, 0.995)   # keeps the logarithms finite with few pixels
WEIGHT_RANGE = (1.0, 5.0)    # never trust "background" less than "target"; 5: beyond any measured optimum


def error_rates(masks: np.ndarray, consensus: np.ndarray, boxes: dict[int, list[float]]) -> tuple[float, float] | None:
    """(recall, false-positive rate) of masks (N,H,W) against consensus (N,H,W), pooled over the views
    of `boxes` ({view: [x0, y0, x1, y1]} prompt boxes in pixels). None when nothing can be counted."""
    tp = fn = fp = bg = 0
    for v, box in boxes.items():
        x0, y0, x1, y1 = (int(round(c)) for c in box)
        g, p = masks[v, y0:y1 + 1, x0:x1 + 1], consensus[v, y0:y1 + 1, x0:x1 + 1]
        tp += int((g & p).sum())
        fn += int((~g & p).sum())
        fp += int((g & ~p).sum())
        bg += int((~p).sum())
    if tp + fn == 0 or bg == 0:
        return None
    return tp / (tp + fn), fp / bg


def vote_weight(recall: float, fp_rate: float) -> float:
    """Weight of a background answer relative to a target answer: log((1-f)/(1-r)) / log(r/f), clipped."""
    r, f = np.clip(recall, *RATE_CLIP), np.clip(fp_rate, *RATE_CLIP)
    if r <= f:  # the segmenter is no better than chance here: its target answers carry nothing
        return WEIGHT_RANGE[1]
    return float(np.clip(np.log((1 - f) / (1 - r)) / np.log(r / f), *WEIGHT_RANGE))


def round_boxes(report: dict, prompt_view: int) -> dict[int, list[float]]:
    """{view: prompt box} of the round's accepted answers (run_round's report; not the user's prompt view)."""
    out = {}
    for key, entry in report["views"].items():
        prompt = entry.get("prompt")
        if int(key) != prompt_view and entry.get("accepted") and prompt and prompt.get("box") is not None:
            out[int(key)] = prompt["box"]
    return out
