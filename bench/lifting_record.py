"""The lifting's figures of one bench run, as bench/run.py's result keys: from the pipeline's history in
memory (bench/run.py) or from the files the run wrote (masks/round_NN/report.json, masks/final.json), so
that a run stopped in its target stage (a device call's deadline) still reports its lifting."""
from __future__ import annotations

import json
from pathlib import Path

from sam_utils.lifting import load_final, load_rounds

DEVICE_LINE = "[bench] device: "      # bench/run.py's first line of a run names its device after this


def lifting_fields(history: list[dict]) -> dict:
    """history: the lifting's entries in order (round 0's prompt, the rounds' reports, the final masks' entry)."""
    rounds = [h for h in history if "views" in h]
    final = next((h for h in history if h.get("final")), rounds[-1] if rounds else {})
    last = rounds[-1] if rounds else {}
    return {"rounds": len(rounds), "converged": bool(last.get("converged")), "n_accepted": last.get("n_accepted"),
            "iou_mean": final.get("iou_gt_mean"), "iou_worst": final.get("iou_gt_worst"),
            "iou_views": final.get("iou_gt"),
            "prompt_agreement": [h.get("prompt_agreement") for h in rounds] + [final.get("prompt_agreement")],
            "rolled_back": final.get("rolled_back"),
            "rounds_iou": [(h["round"], h.get("iou_gt_mean"), h.get("iou_gt_worst"), h["n_accepted"],
                            h["n_candidates"], h["mean_change"]) for h in rounds]}


def stopped_run(folder: Path, rc: int | None) -> dict | None:
    """The lifting's result of a run under folder that ended without its JSON (killed, rc), when its lifting
    finished (masks/final.json written): bench/run.py's lifting keys, `partial` saying so, and the device its
    run.log names; else None."""
    finals = sorted(Path(folder).rglob("masks/final.json"))
    exp_dir = finals[-1].parent.parent if finals else None
    final = load_final(exp_dir) if exp_dir is not None else None
    if final is None:
        return None
    history = [report for _, report in load_rounds(exp_dir)] + [final]
    timings = exp_dir / "timings.json"
    log = Path(folder) / "run.log"
    device = next((line[len(DEVICE_LINE):].strip() for line in log.read_text(errors="replace").splitlines()
                   if line.startswith(DEVICE_LINE)), None) if log.is_file() else None
    return {**lifting_fields(history), "partial": f"stopped after its lifting (rc {rc})", "exp_dir": str(exp_dir),
            **({"device": device} if device else {}),
            **({"stages": json.loads(timings.read_text())} if timings.is_file() else {})}
