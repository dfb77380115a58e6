"""The run side of the web app: `python train.py ...` in a subprocess, watched through progress.json.

One run at a time (a second start is refused while one runs). The child's stdout/stderr go to
<exp_dir>/app_run.log, so an error is shown with the command line's own message (the log's tail)
even when it stops before the trainer exists (a bad conf, a missing scene). When the run is done the
target mesh is offered as .ply/.obj/.glb (models/mesh_export.py; files train.py did not write
itself are converted from target.ply) and as a preview .glb with the cameras for the 3D view.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import trimesh

from datasets.dtu import decompose_projection
from evaluation.silhouette import read_check
from models.mesh_export import export_formats
from sam_utils.lifting import load_final
from systems.atomic import atomic_write
from systems.config import Conf
from systems.progress import PROGRESS_FILE, read_progress

ROOT = Path(__file__).resolve().parents[1]
LOG_NAME = "app_run.log"
TAIL_LINES = 25
DOWNLOAD_FORMATS = ("ply", "obj", "glb")
CAMERA_SIZE = 0.06           # camera pyramids in the preview: this fraction of the cameras' spread
CAMERA_RGBA = (255, 140, 0, 255)


class RunManager:
    """Starts and watches one `train.py` run of the scene with the given conf and extra overrides."""

    def __init__(self, conf_path, data_dir, overrides: list[str] | None = None, python: str = sys.executable):
        self.conf_path = Path(conf_path)
        self.data_dir = Path(data_dir).resolve()
        self.case = self.data_dir.name
        self.overrides = [f'dataset.data_dir = "{self.data_dir.as_posix()}"', *(overrides or [])]
        conf = Conf.from_file(self.conf_path, case=self.case, overrides="\n".join(self.overrides))
        exp = Path(conf.get("general.base_exp_dir", str))
        self.exp_dir = exp if exp.is_absolute() else (ROOT / exp).resolve()
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._finished: dict | None = None        # the downloads once the run is done (made once)

    def command(self) -> list[str]:
        cmd = [self.python, "train.py", "--conf", str(self.conf_path), "--case", self.case,
               "--format", ",".join(DOWNLOAD_FORMATS)]
        for line in self.overrides:
            cmd += ["--override", line]
        return cmd

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> str:
        """Launch the run; returns a message for the page (a refusal while one runs)."""
        with self._lock:
            if self.running():
                return f"a run is already in progress (pid {self.proc.pid}); wait for it to finish"
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            (self.exp_dir / PROGRESS_FILE).unlink(missing_ok=True)   # the last run's state is not this run's
            env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
            log = open(self.exp_dir / LOG_NAME, "w")
            log.write("$ " + shlex.join(self.command()) + "\n")
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            self.started_at, self._finished = time.time(), None
            return f"started: {shlex.join(self.command())}"

    def log_tail(self, n: int = TAIL_LINES) -> str:
        try:
            lines = (self.exp_dir / LOG_NAME).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def status(self) -> dict:
        """progress.json's state plus the process's: status in idle|running|done|error, 'message'."""
        if self.proc is None:
            return {"status": "idle", "message": "no run started from this page yet"}
        rc = self.proc.poll()
        prog = read_progress(self.exp_dir) or {}
        out = {**prog, "pid": self.proc.pid, "returncode": rc}
        if rc is None:
            out["status"] = "running"
            out.setdefault("stage", "starting")
        elif rc == 0 and prog.get("status") == "done":
            out["status"] = "done"
        else:
            out["status"] = "error"
            out["error"] = prog.get("error") or (f"train.py exited with code {rc}" if rc else
                                                  f"train.py ended without marking {PROGRESS_FILE} done")
            out["log_tail"] = self.log_tail()
        return out

    def downloads(self) -> dict | None:
        """{'files': [ply, obj, glb], 'preview': glb with cameras} once done (made once), else None."""
        if self.status()["status"] != "done":
            return None
        if self._finished is None:
            self._finished = {**finish_meshes(self.exp_dir / "meshes", self.data_dir),
                              "warnings": run_warnings(self.exp_dir), "silhouette": run_silhouette(self.exp_dir)}
        return self._finished


def run_warnings(exp_dir: Path) -> list[str]:
    """The lifting's warnings (masks/final.json: a rolled-back round, a prompt view that lost its mask)."""
    return list((load_final(exp_dir) or {}).get("warnings") or [])


def run_silhouette(exp_dir: Path) -> dict | None:
    """The target mesh's silhouette check the run kept (train.py, where its conf names masks), else None."""
    return read_check(Path(exp_dir) / "meshes" / "target.ply")


def done_text(dl: dict) -> str:
    """What the page says under the run's status once it is done: the mesh, how well it fits the scene's
    masks where the run checked it, and what to look at."""
    text = f"mesh: {dl['n_vertices']} vertices, {dl['n_faces']} faces · `{dl['mesh']}`"
    if dl["n_faces"] == 0:
        text += "\n\n**the mesh is empty**: the occupancy head claims no surface; see the contact sheets"
    sil = dl.get("silhouette")
    if sil:
        text += (f"\n\nsilhouette against `{sil['mask_dir']}/`: mean IoU {sil['mean']:.3f} · worst view "
                 f"{sil['worst_view']}: {sil['worst']:.3f} (`{sil['sheet']}`: green agree, red mesh only, "
                 f"blue mask only)")
    return text + "".join(f"\n\n**warning**: {w}" for w in dl.get("warnings", []))


def finish_meshes(mesh_dir: Path, data_dir: Path) -> dict:
    """target.{ply,obj,glb} (converting from target.ply what is missing or older) and a preview .glb."""
    ply = mesh_dir / "target.ply"
    if not ply.is_file():
        ply = mesh_dir / "scene.ply"                  # a full-scene run (nto3d.enabled = false)
    mesh = trimesh.load(ply, force="mesh", process=False)
    base = ply.with_suffix("")
    stale = [f for f in DOWNLOAD_FORMATS[1:] if not base.with_suffix(f".{f}").is_file()
             or base.with_suffix(f".{f}").stat().st_mtime < ply.stat().st_mtime]
    colors = np.asarray(mesh.visual.vertex_colors) if getattr(mesh.visual, "kind", None) == "vertex" else None
    if stale and len(mesh.faces):
        export_formats(mesh, stale, base, colors)
    files = [str(base.with_suffix(f".{f}")) for f in DOWNLOAD_FORMATS if base.with_suffix(f".{f}").is_file()]
    preview = None
    if len(mesh.faces):
        preview = mesh_dir / f"{base.name}_preview.glb"
        scene = trimesh.Scene(mesh)
        cams = camera_pyramids(data_dir / "cameras_sphere.npz")
        if cams is not None:
            scene.add_geometry(cams, geom_name="cameras")
        atomic_write(preview, lambda tmp: tmp.write_bytes(scene.export(file_type="glb")))
    return {"files": files, "preview": None if preview is None else str(preview), "mesh": str(ply),
            "n_vertices": len(mesh.vertices), "n_faces": len(mesh.faces)}


def camera_pyramids(cameras_npz: Path) -> trimesh.Trimesh | None:
    """One small pyramid per camera (apex at the centre, base towards the view) in world units."""
    if not cameras_npz.is_file():
        return None
    npz = np.load(cameras_npz)
    poses = [decompose_projection(npz[k])[1] for k in sorted((k for k in npz if k.startswith("world_mat_")
                                                              and not k.startswith("world_mat_inv")),
                                                             key=lambda k: int(k.rsplit("_", 1)[1]))]
    if not poses:
        return None
    centres = np.array([p[:3, 3] for p in poses])
    size = CAMERA_SIZE * max(float(np.ptp(centres, axis=0).max()), 1e-6)
    parts = []
    for pose in poses:
        c, R = pose[:3, 3], pose[:3, :3]                 # camera-to-world (OpenCV: z forward, y down)
        corners = np.array([[-1, -0.75, 1.5], [1, -0.75, 1.5], [1, 0.75, 1.5], [-1, 0.75, 1.5]]) * size
        verts = np.vstack([c, c + corners @ R.T])
        faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [1, 3, 2], [1, 4, 3]])
        parts.append(trimesh.Trimesh(verts, faces, process=False))
    cams = trimesh.util.concatenate(parts)
    cams.visual = trimesh.visual.ColorVisuals(cams, vertex_colors=np.tile(CAMERA_RGBA, (len(cams.vertices), 1)))
    return cams
