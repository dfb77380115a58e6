"""A run's live state in <exp_dir>/progress.json, for the web app (webapp/) and anyone watching a run.

The trainer calls `start` when a stage begins, `step` every iteration (cheap: the file is rewritten
at most every `min_interval` seconds), `round` after each lifting round, and the command line
`done` / `error` at the end. Every write is atomic (systems/atomic.py), so a reader never sees
a half-written file. Schema (all keys always present):

    {"status": "running" | "done" | "error", "stage": str, "iteration": int, "until": int,
     "round": int | null, "n_accepted": int | null, "n_views": int | null,
     "loss": [[iteration, total_loss], ...]   (at most MAX_LOSS_POINTS, thinned evenly),
     "contact_sheet": path relative to exp_dir | null, "error": str | null, "updated": unix time}
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from systems.atomic import atomic_write_text

PROGRESS_FILE = "progress.json"
MAX_LOSS_POINTS = 500      # the loss curve is halved (every other point dropped) when it grows past this
MIN_INTERVAL_S = 1.0       # step() rewrites the file at most this often


def read_progress(exp_dir) -> dict | None:
    """The last progress written to exp_dir, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(exp_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


class ProgressLog:
    """Writes <exp_dir>/progress.json; nothing is written before the first call."""

    def __init__(self, exp_dir, min_interval: float = MIN_INTERVAL_S, max_points: int = MAX_LOSS_POINTS):
        self.path = Path(exp_dir) / PROGRESS_FILE
        self.min_interval, self.max_points = min_interval, max(2, max_points)
        self.state = {"status": "running", "stage": "", "iteration": 0, "until": 0, "round": None,
                      "n_accepted": None, "n_views": None, "loss": [], "contact_sheet": None, "error": None,
                      "updated": 0.0}
        self._last_write = 0.0

    def start(self, stage: str, until: int = 0, iteration: int | None = None) -> None:
        """A stage begins (training up to iteration `until`, or 0 for a stage without iterations)."""
        self.state.update(status="running", stage=stage, until=int(until), error=None)
        if iteration is not None:
            self.state["iteration"] = int(iteration)
        self.write()

    def stage(self, name: str) -> None:
        """A stage without iterations (segmenter, projection, meshing)."""
        self.start(name, 0)

    def step(self, iteration: int, loss: float | None = None) -> None:
        """Iteration reached; `loss` (a float, when the caller has one) joins the curve."""
        self.state["iteration"] = int(iteration)
        if loss is not None and math.isfinite(loss):
            curve = self.state["loss"]
            curve.append([int(iteration), float(loss)])
            if len(curve) > self.max_points:
                del curve[1::2]       # keep the first point and every other one: even thinning
        if time.time() - self._last_write >= self.min_interval:
            self.write()

    def round(self, report: dict, contact_sheet=None, n_views: int | None = None) -> None:
        """A lifting round finished: report is sam_utils.lifting's (round, n_accepted, ...)."""
        self.state["round"] = int(report.get("round", 0))
        if "n_accepted" in report:
            self.state["n_accepted"] = int(report["n_accepted"])
        elif self.state["round"] == 0:
            self.state["n_accepted"] = 1          # the prompt's own view
        if n_views is not None:
            self.state["n_views"] = int(n_views)
        if contact_sheet is not None:
            sheet = Path(contact_sheet)
            try:
                sheet = sheet.resolve().relative_to(self.path.parent.resolve())
            except ValueError:
                pass                              # outside exp_dir: keep it as given
            self.state["contact_sheet"] = sheet.as_posix()
        self.write()

    def done(self) -> None:
        self.state.update(status="done", stage="done", error=None)
        self.write()

    def error(self, message: str) -> None:
        self.state.update(status="error", error=str(message))
        self.write()

    def write(self) -> Path:
        self.state["updated"] = time.time()
        atomic_write_text(self.path, json.dumps(self.state))
        self._last_write = self.state["updated"]
        return self.path
