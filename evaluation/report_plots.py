"""The run report's matplotlib figures (headless Agg backend), each returned as PNG bytes.

Inputs are the per-round reports of sam_utils.lifting (masks/round_NN/report.json) and the
pipeline's timings.json; a figure whose data the run does not have is None.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIG_SIZE = (5.0, 3.2)    # inches
DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _lifting_rounds(rounds: list[dict]) -> list[dict]:
    """The segmenter rounds (round >= 1, with per-view entries), in order."""
    return sorted((r for r in rounds if "views" in r), key=lambda r: r["round"])


def iou_plot(rounds: list[dict]) -> bytes | None:
    """Mean and worst-view IoU of the lifted masks with the ground truth per round (scenes with gt/)."""
    rs = [r for r in _lifting_rounds(rounds) if "iou_gt_mean" in r]
    if not rs:
        return None
    x = [r["round"] for r in rs]
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    ax.plot(x, [r["iou_gt_mean"] for r in rs], "o-", label="mean")
    ax.plot(x, [r["iou_gt_worst"] for r in rs], "s--", label="worst view")
    ax.set(xlabel="lifting round", ylabel="IoU with ground truth", ylim=(0, 1.02), title="Lifted masks vs ground truth")
    ax.set_xticks(x)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def agreement_plot(rounds: list[dict], accept_iou: float | None = None) -> bytes | None:
    """Per-view IoU of the segmenter's answer with the field's projection, per round (accepted in green)."""
    rs = _lifting_rounds(rounds)
    if not any(v.get("prompt") is not None for r in rs for v in r["views"].values()):
        return None                        # no view was prompted: nothing to show
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    means = []
    for r in rs:
        judged = [v for v in r["views"].values() if v.get("prompt") is not None and "iou_projection" in v]
        acc = [v["iou_projection"] for v in judged if v.get("accepted")]
        rej = [v["iou_projection"] for v in judged if not v.get("accepted")]
        ax.scatter([r["round"]] * len(acc), acc, c="tab:green", s=14, alpha=0.7, label="accepted" if r is rs[0] else None)
        ax.scatter([r["round"]] * len(rej), rej, c="tab:orange", s=14, alpha=0.7, label="rejected" if r is rs[0] else None)
        means.append(sum(v["iou_projection"] for v in judged) / max(len(judged), 1))
    ax.plot([r["round"] for r in rs], means, "k-", lw=1, label="mean")
    if accept_iou is not None:
        ax.axhline(accept_iou, color="grey", ls=":", label="accept_iou")
    ax.set(xlabel="lifting round", ylabel="IoU(answer, projection)", ylim=(0, 1.02), title="Agreement per view")
    ax.set_xticks([r["round"] for r in rs])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def accepted_plot(rounds: list[dict], n_views: int | None = None) -> bytes | None:
    """Accepted views (and prompted candidates) per round."""
    rs = _lifting_rounds(rounds)
    if not rs:
        return None
    x = [r["round"] for r in rs]
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    ax.bar(x, [r.get("n_candidates", 0) for r in rs], color="lightgrey", label="prompted views")
    ax.bar(x, [r["n_accepted"] for r in rs], color="tab:green", width=0.5, label="accepted")
    if n_views:
        ax.axhline(n_views, color="k", ls=":", lw=1, label=f"all views ({n_views})")
    ax.set(xlabel="lifting round", ylabel="views", title="Accepted views")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    return _png(fig)


def timings_plot(timings: dict[str, float]) -> bytes | None:
    """Seconds spent per stage (timings.json)."""
    items = [(k, float(v)) for k, v in timings.items() if isinstance(v, (int, float))]
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(FIG_SIZE[0], 0.45 * len(items) + 1.2))
    names, secs = zip(*items)
    ax.barh(names, secs, color="tab:blue")
    for i, s in enumerate(secs):
        ax.text(s, i, f" {s:.1f} s", va="center", fontsize=8)
    ax.set(xlabel="seconds", title=f"Stage timings (total {sum(secs):.1f} s)")
    ax.set_xlim(0, max(secs) * 1.25 + 1e-9)
    ax.invert_yaxis()
    return _png(fig)


def loss_plot(loss: list[list[float]]) -> bytes | None:
    """Total loss against iteration (progress.json's curve)."""
    if len(loss) < 2:
        return None
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    ax.plot([p[0] for p in loss], [p[1] for p in loss], lw=1)
    ax.set(xlabel="iteration", ylabel="total loss", title="Training loss", yscale="log")
    ax.grid(alpha=0.3)
    return _png(fig)
