"""The lifting suite's summary: per scene, figures over the network seeds from bench/run.py results, and
the markdown table for bench/RESULTS.md (bench/lifting_suite.py prints it)."""
from __future__ import annotations

import statistics
import time

COLUMNS = ("scene", "seeds ok", "lifted mean IoU: median / worst seed", "worst view (seed, view)", "rounds",
           "s per run, click -> target mesh (scoring apart): median / max",
           "segmenter alone (gt prompts): mean / worst view",
           "click propagation mean IoU: median / worst seed (worst view)", "lifting beats propagation (seeds)",
           "target Chamfer mm: mean / worst seed (accuracy / completeness)",
           "target mesh silhouette IoU: mean / worst seed (worst view)")


def _per_seed(runs: dict, get) -> dict:
    """{seed: value} of the runs that finished and have the value."""
    out = {}
    for seed, r in runs.items():
        v = get(r) if r is not None else None
        if v is not None:
            out[seed] = v
    return out


def _spread(values: dict) -> dict | None:
    """median, worst (min) and the worst's seed of {seed: value}."""
    if not values:
        return None
    worst_seed = min(values, key=lambda s: (values[s], s))
    return {"median": statistics.median(values.values()), "worst": values[worst_seed], "worst_seed": worst_seed,
            "per_seed": values}


def _worst_view(runs: dict) -> dict | None:
    """The lowest per-view IoU over all seeds: value, seed, view (view None when the run kept no list)."""
    best = None
    for seed, r in runs.items():
        if r is None or r.get("iou_worst") is None:
            continue
        views = r.get("iou_views")
        view = min(range(len(views)), key=views.__getitem__) if views else None
        if best is None or r["iou_worst"] < best["iou"]:
            best = {"iou": r["iou_worst"], "seed": seed, "view": view}
    return best


def _prop(r: dict, key: str):
    return (r.get("propagation") or {}).get(key)


def _chamfer(runs: dict) -> dict | None:
    """The target mesh's Chamfer over the seeds (runs with a target stage): mean, the worst (highest)
    seed with its accuracy and completeness (mm, the DTU-rule metric of evaluation/metrics.py)."""
    ch = _per_seed(runs, lambda r: (r.get("chamfer") or {}).get("overall"))
    if not ch:
        return None
    worst = max(ch, key=lambda k: (ch[k], k))
    c = runs[worst]["chamfer"]
    return {"mean": statistics.fmean(ch.values()), "worst": ch[worst], "worst_seed": worst,
            "accuracy": c.get("accuracy"), "completeness": c.get("completeness"), "per_seed": ch,
            "off_target": runs[worst].get("off_target")}


def _silhouette(runs: dict) -> dict | None:
    """The target mesh's silhouette IoU against the scene's masks over the seeds: mean, the worst seed's
    mean and the worst view of any seed."""
    sil = _per_seed(runs, lambda r: r.get("silhouette_iou"))
    if not sil:
        return None
    worst = min(sil, key=lambda k: (sil[k]["mean"], k))
    return {"mean": statistics.fmean(v["mean"] for v in sil.values()), "worst": sil[worst]["mean"],
            "worst_seed": worst, "worst_view": min(v["worst"] for v in sil.values())}


def summarize_scene(runs: dict) -> dict:
    """runs: {network seed: bench/run.py's result dict, or None when the run failed} -> the scene's figures.
    A partial result (a run stopped after its lifting, bench/lifting_record.stopped_run) counts in the
    lifting's figures, not as a finished seed."""
    lifted = _spread(_per_seed(runs, lambda r: r.get("iou_mean")))
    prop = _spread(_per_seed(runs, lambda r: _prop(r, "iou_mean")))
    prop_worst = _per_seed(runs, lambda r: _prop(r, "iou_worst"))
    alone = _per_seed(runs, lambda r: (sum(r["alone"]) / len(r["alone"]), min(r["alone"])) if r.get("alone") else None)
    # what a user waits: the run without its scoring against ground truth (records before eval_s: all of it)
    times = list(_per_seed(runs, lambda r: r.get("click_to_mesh_s", r.get("total_s"))).values())
    beats = [s for s in prop["per_seed"] if s in (lifted or {}).get("per_seed", {})] if prop else []
    won = [s for s in beats if runs[s]["iou_mean"] > prop["per_seed"][s]
           and runs[s]["iou_worst"] > prop_worst.get(s, float("inf"))]
    return {
        "seeds": len(runs), "seeds_ok": sum(r is not None and not r.get("partial") for r in runs.values()),
        "partial_seeds": sorted(s for s, r in runs.items() if r is not None and r.get("partial")),
        "failed_seeds": sorted(s for s, r in runs.items() if r is None),
        "device": next((r.get("device") for r in runs.values() if r is not None and r.get("device")), None),
        "lifted": lifted, "worst_view": _worst_view(runs),
        "rounds": _spread(_per_seed(runs, lambda r: r.get("rounds"))),
        "converged": sum(bool(r.get("converged")) for r in runs.values() if r is not None),
        "rolled_back": sum(bool(r.get("rolled_back")) for r in runs.values() if r is not None),
        "time_s": {"median": statistics.median(times), "max": max(times)} if times else None,
        "alone": {"mean": statistics.median(a for a, _ in alone.values()), "worst": min(w for _, w in alone.values())}
        if alone else None,
        "propagation": None if prop is None else {**prop, "worst_view": min(prop_worst.values()) if prop_worst else None},
        "beats_propagation": {"seeds": len(won), "of": len(beats)},
        "chamfer": _chamfer(runs),
        "silhouette": _silhouette(runs),
    }


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _off(off: dict | None) -> str:
    """The worst seed's target-mesh vertices off the exact target (bench/target_cut_ab.off_target), or nothing."""
    if not off:
        return ""
    return f"; vertices >= {off['mm']:g} mm inside / outside: {100 * off['inside']:.1f} % / {100 * off['outside']:.1f} %"


def table_row(scene: str, s: dict) -> str:
    lifted, wv, prop, alone = s["lifted"], s["worst_view"], s["propagation"], s["alone"]
    cells = [
        f"`{scene}`",
        f"{s['seeds_ok']}/{s['seeds']}" + (f" (+{len(s['partial_seeds'])} stopped after lifting)"
                                           if s.get("partial_seeds") else ""),
        "-" if lifted is None else f"{_f(lifted['median'])} / **{_f(lifted['worst'])}** (s{lifted['worst_seed']})",
        "-" if wv is None else f"{_f(wv['iou'])} (s{wv['seed']}" + ("" if wv["view"] is None else f" v{wv['view']}") + ")",
        "-" if s["rounds"] is None else _f(s["rounds"]["median"], "{:g}") + f" ({s['converged']} converged"
        + (f", {s['rolled_back']} rolled back)" if s.get("rolled_back") else ")"),
        "-" if s["time_s"] is None else f"{s['time_s']['median']:.0f} / {s['time_s']['max']:.0f}",
        "-" if alone is None else f"{_f(alone['mean'])} / {_f(alone['worst'])}",
        "-" if prop is None else f"{_f(prop['median'])} / {_f(prop['worst'])} (s{prop['worst_seed']}) "
                                 f"({_f(prop['worst_view'])})",
        f"{s['beats_propagation']['seeds']}/{s['beats_propagation']['of']}",
        "-" if not s.get("chamfer") else f"{_f(s['chamfer']['mean'])} / **{_f(s['chamfer']['worst'])}** "
                                         f"(s{s['chamfer']['worst_seed']}: {_f(s['chamfer']['accuracy'])} / "
                                         f"{_f(s['chamfer']['completeness'])}{_off(s['chamfer']['off_target'])})",
        "-" if not s.get("silhouette") else f"{_f(s['silhouette']['mean'])} / **{_f(s['silhouette']['worst'])}** "
                                            f"(s{s['silhouette']['worst_seed']}) ({_f(s['silhouette']['worst_view'])})",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_table(summary: dict, command: str, args, wall_s: float | None) -> str:
    """A bench/RESULTS.md entry: heading (date, device), command, settings, the table."""
    device = next((s["device"] for s in summary.values() if s.get("device")), "unknown device")
    lines = [f"### {time.strftime('%Y-%m-%d')} — {device}: lifting suite, {len(summary)} scene(s) x {args.seeds} seed(s)",
             f"Command: `{command}`.",
             f"Runs: synthetic {args.views} views {args.width}x{args.height} (`{args.conf}`)"
             + (f", dtu_scan65 (`{args.scan_conf}`)" if "dtu_scan65" in summary else "")
             + f"; nto3d.target.iters {'from the conf' if args.target_iters is None else args.target_iters}"
             f"; {args.parallel} run(s) at once on one GPU (times per run include that sharing)"
             + ("" if wall_s is None else f"; the call took {wall_s:.0f} s") + ".",
             "Lifting beats propagation on a seed when both its mean IoU and its worst view are higher.",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [table_row(scene, s) for scene, s in summary.items()]
    return "\n".join(lines)
