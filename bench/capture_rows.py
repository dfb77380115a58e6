r"""Issue 18's GPU rows: imported captures (lego, fox), one click each, GrabCut, side by side on one GPU.

    python bench/capture_rows.py --data_root gpu_data --exp_root exp/capture --out $OUT/capture

Each scene folder (default lego_cap and fox_cap under --data_root: scripts/import_scene.py output
with a prompt.json from bench/capture_prompt.py) gets its own `train.py --conf confs/capture.conf`
process, all at once on the one GPU, the CPU cores split between them (GrabCut threads, OpenMP).
Per scene, when its run has ended:
- lifted masks' IoU against the scene's mask/ over all views, mean / worst (scenes with mask/ only):
  the run's own figure for the lifted masks that supervise the target stage (nto3d.gt_mask_dir =
  mask), read from its last checkpoint (else from its log line);
- the target mesh's silhouette IoU against mask/ (scripts/eval_silhouette.py, started as soon as
  that run ends, its views split over processes);
- wall time click -> target mesh: from the start of train.py to meshes/target.ply;
- OUT/<scene>_view<k>.png: the photo of view k beside the target mesh rendered from that camera
  (evaluation/mesh_render.py), and the last lifting round's contact sheet: its path and a reduced
  JPEG copy in OUT.
Prints one markdown row per scene and writes OUT/capture_rows.json. --deadline kills the runs still
going at that point, so that the JSON is written within one device call.

The scene folders (from ../shared/data, on a machine that has it; README "Your own capture"):
    python scripts/import_scene.py ../shared/data/nerf_synthetic_lego --out gpu_data/lego_cap --downscale 2
    python bench/capture_prompt.py gpu_data/lego_cap --from_mask
    python scripts/import_scene.py ../shared/data/instant_ngp_fox --out gpu_data/fox_cap --downscale 2 \
        --image-format jpg --jpeg-quality 92
    python bench/capture_prompt.py gpu_data/fox_cap --point 250,470 --box 105,70,505,610
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from bench.lifting_suite import Job, run_jobs  # noqa: E402
from datasets.dtu import IMAGE_EXTS  # noqa: E402
from evaluation.mesh_render import camera_from_world_mat, render_mesh, scaled_intrinsics  # noqa: E402
from systems.atomic import atomic_write_image, atomic_write_text  # noqa: E402
from systems.checkpoint import CheckpointError, load_latest  # noqa: E402

SCENES = ("lego_cap", "fox_cap")
LIFTED_LINE = re.compile(r"\[lift\] lifted masks \(level \d+\): IoU vs gt mean ([\d.]+) worst ([\d.]+)")
SHEET_WIDTH = 1600            # the contact sheet's copy in OUT is at most this wide (JPEG)
LOG_TAIL = 300                # lines of each log copied to OUT
MAKE_HINT = ("make each with scripts/import_scene.py and bench/capture_prompt.py (the commands: "
             "python bench/capture_rows.py --help), or pass --data_root / --scenes")


def check_scene(folder: Path) -> list[str]:
    """What a scene folder lacks for a run (empty: ready)."""
    if not folder.is_dir():
        return [f"{folder} not found"]
    problems = [f"{folder / f} missing" for f in ("cameras_sphere.npz", "prompt.json") if not (folder / f).is_file()]
    if not images(folder):
        problems.append(f"{folder / 'image'} holds no images")
    return problems


def images(folder: Path) -> list[Path]:
    d = folder / "image"
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS) if d.is_dir() else []


def train_argv(args, scene: Path, exp_dir: Path, threads: int) -> list[str]:
    argv = [args.python, str(ROOT / "train.py"), "--conf", args.conf, "--case", scene.name]
    for o in [f'dataset.data_dir = "{scene}"', f'general.base_exp_dir = "{exp_dir}"',
              f"nto3d.grabcut.workers = {threads}"] + args.override:
        argv += ["--override", o]
    return argv


def silhouette_argv(args, scene: Path, exp_dir: Path, threads: int) -> list[str]:
    return [args.python, str(ROOT / "scripts" / "eval_silhouette.py"), "--mesh", str(exp_dir / "meshes" / "target.ply"),
            "--scene", str(scene), "--mask_dir", "mask", "--workers", str(threads),
            "--json", str(exp_dir / "silhouette.json")]


def final_lift(exp_dir: Path, log: Path) -> dict:
    """The run's final lifted masks (those the target stage trains on): IoU against the gt masks per view
    and the prompt view's agreement with the prompt's mask, from the last checkpoint's lifting history;
    else mean / worst IoU from the log line; {} when the run has neither."""
    try:
        state = load_latest(exp_dir / "checkpoints", "cpu")
        final = next(h for h in state["pipeline"]["store"]["history"] if h.get("final"))
        out = {"prompt_agreement": final.get("prompt_agreement"), "source": "checkpoint"}
        if "iou_gt" in final:
            ious = [float(v) for v in final["iou_gt"]]
            out.update(mean=float(np.mean(ious)), worst=min(ious), worst_view=int(np.argmin(ious)), per_view=ious)
        return out
    except (CheckpointError, OSError, KeyError, TypeError, StopIteration, AttributeError):
        pass
    hits = LIFTED_LINE.findall(log.read_text(errors="replace") if log.is_file() else "")
    return {"mean": float(hits[-1][0]), "worst": float(hits[-1][1]), "source": "log"} if hits else {}


def rounds(exp_dir: Path) -> dict:
    """Lifting rounds run and the last one's acceptance and contact sheet (masks/round_NN/)."""
    folders = sorted((exp_dir / "masks").glob("round_[0-9][0-9]"))
    out = {"rounds": max(0, len(folders) - 1)}              # round_00 is the prompt's own mask
    if folders:
        out["contact_sheet"] = str(folders[-1] / "contact_sheet.png")
        try:
            rep = json.loads((folders[-1] / "report.json").read_text())
            out["accepted"] = f"{rep['n_accepted']}/{rep['n_candidates']}"     # absent in round_00
        except (OSError, ValueError, KeyError):
            pass
    return out


def render_pair(scene: Path, mesh: trimesh.Trimesh, view: int, height: int) -> np.ndarray:
    """(h, 2w, 3) uint8 RGB: view's photo | the mesh rendered from its camera, h = min(height, image's)."""
    photo = cv2.cvtColor(cv2.imread(str(images(scene)[view]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    s = min(1.0, height / photo.shape[0])
    h, w = round(photo.shape[0] * s), round(photo.shape[1] * s)
    K, R, t = camera_from_world_mat(np.load(scene / "cameras_sphere.npz")[f"world_mat_{view}"])
    rgb, _ = render_mesh(mesh, scaled_intrinsics(K, s), R, t, h, w)
    return np.concatenate([cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA), rgb], axis=1)


def figures(args, scene: Path, job: Job, sil: Job | None, out: Path) -> dict:
    """Everything the row needs from one finished (or killed) run; files copied into out."""
    exp_dir = Path(job.extra["exp_dir"])
    r = {"scene": str(scene), "views": len(images(scene)), "rc": job.rc, "train_s": job.seconds,
         "exp_dir": str(exp_dir), "has_masks": (scene / "mask").is_dir()}
    if job.rc is not None and job.rc < 0:                    # run_jobs: -2 never started, -9 killed
        r["note"] = "not started (deadline)" if job.rc == -2 else f"killed after {job.seconds:.0f} s (deadline)"
    first = images(scene)[:1]
    if first:
        img = cv2.imread(str(first[0]), cv2.IMREAD_UNCHANGED)
        r["size"] = f"{img.shape[1]}x{img.shape[0]}"
    mesh_path = exp_dir / "meshes" / "target.ply"
    if mesh_path.is_file() and job.started and mesh_path.stat().st_mtime > job.started:
        r["click_to_mesh_s"] = mesh_path.stat().st_mtime - job.started
    if (exp_dir / "timings.json").is_file():
        r["stages_s"] = json.loads((exp_dir / "timings.json").read_text())
    r["lift"] = final_lift(exp_dir, job.log)
    r.update(rounds(exp_dir))
    sheet = Path(r.get("contact_sheet", ""))
    if sheet.is_file():
        img = cv2.cvtColor(cv2.imread(str(sheet)), cv2.COLOR_BGR2RGB)
        s = min(1.0, SHEET_WIDTH / img.shape[1])
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        r["contact_sheet_copy"] = str(atomic_write_image(out / f"{scene.name}_contact_sheet.jpg", small,
                                                         (cv2.IMWRITE_JPEG_QUALITY, 85)))
    if sil is not None and (exp_dir / "silhouette.json").is_file() and sil.rc == 0:
        res = json.loads((exp_dir / "silhouette.json").read_text())
        r["silhouette_iou"] = {"mean": res["mean_iou"], "worst": min(res["per_view"]), "per_view": res["per_view"]}
    if "click_to_mesh_s" in r:
        try:
            mesh = trimesh.load(mesh_path, process=False, force="mesh")
        except (ValueError, OSError) as exc:                 # an empty target mesh (the run warned)
            mesh, r["note"] = trimesh.Trimesh(), f"target mesh unreadable: {exc}"
        r["mesh_faces"] = int(len(mesh.faces))
        if not len(mesh.faces):
            r.setdefault("note", "empty target mesh (see the contact sheet)")
        if len(mesh.faces) and 0 <= args.render_view < r["views"]:
            pair = render_pair(scene, mesh, args.render_view, args.panel_height)
            png = atomic_write_image(out / f"{scene.name}_view{args.render_view}.png", pair,
                                     (cv2.IMWRITE_PNG_COMPRESSION, 9))
            r["render"] = {"path": str(png), "kb": png.stat().st_size / 1024, "view": args.render_view}
    if job.log.is_file():
        tail = job.log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        atomic_write_text(out / f"{scene.name}.log", "\n".join(tail) + "\n")
    return r


def _pair(d: dict | None) -> str:
    return "-" if not d or "mean" not in d else f"{d['mean']:.3f} / {d['worst']:.3f}"


def table(rows: dict) -> str:
    head = ("scene", "views", "size", "lifted IoU vs mask/: mean / worst", "prompt agreement",
            "target silhouette IoU: mean / worst",
            "click -> target mesh", "rounds (last accepted)", "render", "contact sheet", "note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        t = r.get("click_to_mesh_s")
        time_cell = f"{t:.0f} s" if t is not None else "-"
        note = r.get("note", "" if r["rc"] == 0 else f"failed (rc {r['rc']}), see {name}.log")
        agree = r["lift"].get("prompt_agreement")
        cells = [name, str(r["views"]), r.get("size", "-"), _pair(r["lift"]),
                 "-" if agree is None else f"{agree:.3f}", _pair(r.get("silhouette_iou")),
                 time_cell, f"{r.get('rounds', '-')} ({r.get('accepted', '-')})",
                 Path(r["render"]["path"]).name if r.get("render") else "-", r.get("contact_sheet", "-"), note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_root", default="gpu_data", help="folder holding the scene folders")
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), help=f"scene folders (default {' '.join(SCENES)})")
    ap.add_argument("--exp_root", default="exp/capture", help="run folders (checkpoints: keep off --out)")
    ap.add_argument("--out", required=True, help="where the JSON, PNGs, contact sheets and log tails go")
    ap.add_argument("--conf", default="confs/capture.conf")
    ap.add_argument("--override", action="append", default=[], help="HOCON line for every run")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: cores / scenes)")
    ap.add_argument("--deadline", type=float, default=330.0, help="seconds after which running jobs are killed")
    ap.add_argument("--render_view", type=int, default=0, help="view of the photo | render PNG")
    ap.add_argument("--panel_height", type=int, default=480, help="pixels (at most the image's own height)")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    args = ap.parse_args(argv)
    scenes = [(Path(args.data_root) / s).resolve() for s in args.scenes]   # the jobs run in the repository root
    problems = [p for s in scenes for p in check_scene(s)]
    if problems:
        raise SystemExit("error: the capture scenes are not ready:\n  " + "\n  ".join(problems) + f"\n{MAKE_HINT}")
    out, exp_root = Path(args.out).resolve(), Path(args.exp_root).resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // len(scenes))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1",
               PYTHONUNBUFFERED="1")
    jobs, sil_jobs = {}, {}
    for s in scenes:
        exp_dir = exp_root / s.name
        shutil.rmtree(exp_dir, ignore_errors=True)          # a stale mesh or checkpoint must not stand in
        jobs[s.name] = Job(f"train {s.name}", train_argv(args, s, exp_dir, threads), exp_dir / "train.log",
                           extra={"exp_dir": str(exp_dir)})
        if (s / "mask").is_dir():
            sil_jobs[s.name] = Job(f"silhouette {s.name}", silhouette_argv(args, s, exp_dir, threads),
                                   exp_dir / "silhouette.log", after=f"train {s.name}")
    all_jobs = list(jobs.values()) + list(sil_jobs.values())
    t0 = time.time()
    print(f"[capture] {len(scenes)} runs at once, {threads} threads each, deadline {args.deadline:.0f} s", flush=True)
    run_jobs(all_jobs, len(all_jobs), None, env, t0 + args.deadline)
    rows = {}
    for s in scenes:
        try:
            rows[s.name] = figures(args, s, jobs[s.name], sil_jobs.get(s.name), out)
        except Exception as exc:  # one scene's figures must not cost the other's row and the JSON
            traceback.print_exc()
            rows[s.name] = {"scene": str(s), "views": len(images(s)), "rc": jobs[s.name].rc, "lift": {},
                            "exp_dir": jobs[s.name].extra["exp_dir"], "note": f"figures failed: {exc!r}"}
    wall = time.time() - t0
    text = table(rows)
    command = shlex.join(["python", "bench/capture_rows.py"] + list(sys.argv[1:] if argv is None else argv))
    print("\n" + text + f"\n\n{command}: {wall:.0f} s wall")
    report = {"command": command, "wall_s": wall, "gpu": gpu_name(), "conf": args.conf, "overrides": args.override,
              "threads": threads, "deadline_s": args.deadline, "scenes": rows, "table": text,
              "jobs": [{"name": j.name, "rc": j.rc, "seconds": j.seconds, "log": str(j.log)} for j in all_jobs]}
    atomic_write_text(out / "capture_rows.json", json.dumps(report, indent=1) + "\n")
    print(f"[capture] -> {out / 'capture_rows.json'}")
    return 0 if all(j.rc == 0 for j in all_jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
