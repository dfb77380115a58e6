"""The lifting suite (issue 15): scenes x network seeds in one call, several runs at once on one GPU.

    python bench/lifting_suite.py --seeds 3 --parallel 8 --target_iters 0 \\
        --scan65 gpu_data/dtu_scan65 --data_root gpu_data --exp_root exp/suite \\
        --deadline 540 --copy_to $OUT/suite

Every run is `bench/run.py --json --propagation` in its own process, with general.seed = 0..K-1;
synthetic scenes are generated first where missing (under --data_root, as parallel jobs). At the
end one markdown table (bench/RESULTS.md's format) and a JSON summary: per scene the lifted masks'
mean IoU (median over seeds and the worst seed), the worst view over all seeds, rounds, run time,
and the baselines of the same runs: the segmenter alone prompted from ground truth, and click
propagation (systems/propagation.py). `--summarize` rebuilds both from an earlier call's run JSONs
(e.g. those `--copy_to` brought back from the device: `--summarize --exp_root DIR`). `--deadline`
kills what still runs after that many seconds so the summary is written within a device call.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lifting_record import stopped_run  # noqa: E402
from bench.suite_table import markdown_table, summarize_scene  # noqa: E402
from bench.target_cut_ab import table as cut_ab_table  # noqa: E402
from evaluation.silhouette import check_paths  # noqa: E402
from systems.atomic import atomic_write_text  # noqa: E402
from datasets.synthetic_presets import PRESETS  # noqa: E402

SCAN65 = "dtu_scan65"
POLL_S = 0.5


@dataclass
class Job:
    """One subprocess: a scene generation or a run; `after` names the generation it waits for."""

    name: str
    argv: list[str]
    log: Path
    after: str | None = None
    proc: subprocess.Popen | None = None
    log_file: object = None
    rc: int | None = None
    started: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def case_name(args, preset: str) -> str:
    """bench/run.py's folder name of a synthetic scene."""
    return f"{preset}_{args.views}v_{args.width}x{args.height}_s{args.scene_seed}"


def scene_ready(folder: Path) -> bool:
    return (folder / "scene.json").is_file()          # make_scene writes it last


def scene_list(args) -> list[str]:
    """--scenes, else every preset; + dtu_scan65 with --scan65 (a folder given is a scene to run, whether
    --scenes names it or not); --summarize: those with runs under EXP_ROOT."""
    scenes = list(args.scenes or PRESETS)
    if (args.scan65 or (args.summarize and not args.scenes)) and SCAN65 not in scenes:
        scenes.append(SCAN65)
    if args.summarize and not args.scenes:
        scenes = [s for s in scenes if (Path(args.exp_root) / s).is_dir()]
    for s in scenes:
        if s == SCAN65 and not args.scan65 and not args.summarize:
            raise SystemExit(f"scene {SCAN65}: give its folder with --scan65 DIR (e.g. ../shared/data/{SCAN65})")
        if s != SCAN65 and s not in PRESETS:
            raise SystemExit(f"unknown scene {s!r}: choose among {', '.join(PRESETS)} and {SCAN65}")
    return scenes


def run_dir(args, scene: str, seed: int) -> Path:
    return Path(args.exp_root) / scene / f"seed{seed}"


def run_argv(args, scene: str, seed: int, threads: int) -> list[str]:
    """bench/run.py command line of one run (its JSON goes to run_dir/run.json)."""
    out = run_dir(args, scene, seed)
    argv = [args.python, str(ROOT / "bench" / "run.py"), "--exp_root", str(out), "--json", str(out / "run.json")]
    if scene == SCAN65:
        argv += ["--scene", str(Path(args.scan65).resolve()), "--conf", args.scan_conf]
    else:
        argv += ["--preset", scene, "--views", str(args.views), "--width", str(args.width), "--height", str(args.height),
                 "--seed", str(args.scene_seed), "--data_root", args.data_root, "--conf", args.conf]
    if not args.no_propagation:
        argv.append("--propagation")
    if args.target_iters == 0:
        argv.append("--no_mesh")                      # lifting only: no target mesh to measure
    elif args.cut_ab:
        argv.append("--cut_ab")
    if seed > 0:
        argv.append("--no_alone")                     # the segmenter alone is the same for every network seed
    overrides = [f"general.seed = {seed}", f"nto3d.grabcut.workers = {threads}"]
    if args.target_iters is not None:
        overrides.append(f"nto3d.target.iters = {args.target_iters}")
    for o in overrides + args.override:
        argv += ["--override", o]
    return argv


def build_jobs(args, scenes: list[str]) -> list[Job]:
    """Generation jobs for the missing synthetic scenes, then the runs (seed-major: every scene's seed 0 first)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = []
    for s in scenes:
        folder = Path(args.data_root) / case_name(args, s)
        if s != SCAN65 and not scene_ready(folder):
            argv = [args.python, str(ROOT / "scripts" / "make_synthetic.py"), "--preset", s, "--out", str(folder),
                    "--views", str(args.views), "--width", str(args.width), "--height", str(args.height),
                    "--seed", str(args.scene_seed), "--gt_resolution", str(args.gt_resolution)]
            jobs.append(Job(f"make {s}", argv, Path(args.exp_root) / s / "make_scene.log"))
    made = {j.name for j in jobs}
    for k in range(args.first_seed, args.seeds):
        for s in scenes:
            after = f"make {s}" if f"make {s}" in made else None
            cleanup = [] if args.keep_checkpoints else [run_dir(args, s, k)]
            jobs.append(Job(f"{s} seed {k}", run_argv(args, s, k, threads), run_dir(args, s, k) / "run.log", after,
                            extra={"scene": s, "seed": k, "folder": run_dir(args, s, k),
                                   "cleanup": cleanup}))
    return jobs


def run_jobs(jobs: list[Job], parallel: int, timeout_s: float | None, env: dict, deadline: float | None = None) -> None:
    """Start jobs as slots free up (a run only once its scene generation succeeded); wait for all.
    timeout_s: a job running longer is killed; deadline (time.time()): then every running job is killed
    and none is started (so that the summary is written within a device call's limit)."""
    pending, running, done = list(jobs), [], {}
    while pending or running:
        late = deadline is not None and time.time() > deadline
        if late and pending:
            for j in pending:
                j.rc = -2
            print(f"[suite] deadline: {len(pending)} job(s) not started: {', '.join(j.name for j in pending)}", flush=True)
            pending = []
        for j in list(running):
            if j.proc.poll() is None and not late and not (timeout_s and time.time() - j.started > timeout_s):
                continue
            if j.proc.poll() is None:
                j.proc.kill()
                j.proc.wait()
            j.rc, j.seconds = j.proc.returncode, time.time() - j.started
            j.log_file.close()
            running.remove(j)
            done[j.name] = j
            print(f"[suite] {j.name}: {'ok' if j.rc == 0 else f'FAILED rc {j.rc}, see {j.log}'} ({j.seconds:.0f} s)",
                  flush=True)
            for folder in j.extra.get("cleanup", []):
                for ckpts in sorted(Path(folder).rglob("checkpoints")):
                    shutil.rmtree(ckpts, ignore_errors=True)
        for j in list(pending):
            if len(running) >= parallel:
                break
            if j.after is not None and j.after not in done:
                continue
            pending.remove(j)
            if j.after is not None and done[j.after].rc != 0:
                j.rc = -1
                done[j.name] = j
                print(f"[suite] {j.name}: skipped ({j.after} failed)", flush=True)
                continue
            j.log.parent.mkdir(parents=True, exist_ok=True)
            j.started = time.time()
            j.log_file = open(j.log, "w")
            j.proc = subprocess.Popen(j.argv, stdout=j.log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            running.append(j)
            print(f"[suite] start {j.name}: {shlex.join(j.argv)}", flush=True)
        time.sleep(POLL_S)


def keep_stopped_liftings(jobs: list[Job]) -> None:
    """A run that ended without its JSON (killed at the deadline in its target stage) but whose lifting
    finished gets a run.json of its lifting figures, marked partial: the call's GPU time is not lost."""
    for j in jobs:
        folder = j.extra.get("folder")
        if folder is None or j.rc == 0 or (folder / "run.json").is_file():
            continue
        rec = stopped_run(folder, j.rc)
        if rec is not None:
            atomic_write_text(folder / "run.json", json.dumps([{**rec, "total_s": None}], indent=1))
            print(f"[suite] {j.name}: its lifting finished; kept as a partial run ({rec['iou_mean']} mean IoU)")


def read_run(path: Path) -> dict | None:
    """The base result of one run's JSON (bench/run.py writes a list), None when missing or unreadable."""
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results[0] if results else None


def collect(args, scenes: list[str]) -> dict:
    """Summary of every scene from the run JSONs under --exp_root."""
    out = {}
    for s in scenes:
        runs = {k: read_run(run_dir(args, s, k) / "run.json") for k in range(args.seeds)}
        out[s] = summarize_scene(runs)
    return out


SHEET_PX, SHEET_QUALITY = 1200, 75   # contact sheets brought back as JPEG, longest side / quality


def run_pictures(folder: Path) -> list[tuple[Path, str]]:
    """(file, name to copy it as) of one run's pictures: the first and the last lifting round's contact
    sheets (the round that decides, the end) and the target mesh's silhouette sheet where written."""
    sheets = sorted(folder.rglob("masks/round_*/contact_sheet.png"))
    sheets = [f for f in sheets if f.parent.name != "round_00"]
    out = [(f, f"{f.parent.name}.jpg") for f in (sorted({sheets[0], sheets[-1]}) if sheets else [])]
    return out + [(f, f.name) for f in folder.rglob(f"meshes/{check_paths('target.ply')[1].name}")]


def copy_results(args, scenes: list[str], summary_path: Path, dest: Path) -> None:
    """The summary and every run's JSON, log and first / last round contact sheets (small JPEGs) into dest,
    under the --exp_root layout (--summarize --exp_root DEST rebuilds the table from them elsewhere)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(summary_path, dest / "summary.json")
    for s in scenes:
        for k in range(args.seeds):
            out = dest / s / f"seed{k}"
            for name in ("run.json", "run.log"):
                f = run_dir(args, s, k) / name
                if f.is_file():
                    out.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, out / name)
            for sheet, name in run_pictures(run_dir(args, s, k)):
                im = cv2.imread(str(sheet))
                if im is None:
                    continue
                scale = min(1.0, SHEET_PX / max(im.shape[:2]))
                im = cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                out.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out / name), im, [cv2.IMWRITE_JPEG_QUALITY, SHEET_QUALITY])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", nargs="+", default=None,
                    help=f"presets ({', '.join(PRESETS)}) and/or {SCAN65} (default: all presets, + {SCAN65} with --scan65)")
    ap.add_argument("--seeds", type=int, default=3, help="network seeds per scene: general.seed = 0..K-1")
    ap.add_argument("--first_seed", type=int, default=0, help="run only seeds FIRST..K-1 (the rest of a suite "
                    "split over device calls; --summarize --seeds K reads them all)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at once (they share the GPU)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per run (GrabCut workers, OpenMP); "
                    "0: cores / --parallel")
    ap.add_argument("--scan65", default=None, metavar="DIR", help=f"the {SCAN65} scene folder (DTU layout with mask/)")
    ap.add_argument("--views", type=int, default=49)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--height", type=int, default=600)
    ap.add_argument("--scene_seed", type=int, default=0, help="the synthetic scenes' layout seed")
    ap.add_argument("--gt_resolution", type=int, default=256, help="marching-cubes resolution of generated gt meshes")
    ap.add_argument("--conf", default="confs/bench_lift.conf", help="conf of the synthetic scenes")
    ap.add_argument("--scan_conf", default="confs/dtu_lift.conf", help=f"conf of {SCAN65}")
    ap.add_argument("--target_iters", type=int, default=None,
                    help="nto3d.target.iters for every run (0: lifting only: no target stage, no mesh)")
    ap.add_argument("--override", action="append", default=[], help="HOCON line for every run")
    ap.add_argument("--no_propagation", action="store_true", help="skip the click-propagation baseline")
    ap.add_argument("--cut_ab", action="store_true", help="each run also meshes its target with and without the "
                    "support plane (bench/target_cut_ab.py); a second table")
    ap.add_argument("--keep_checkpoints", action="store_true", help="keep each run's checkpoints (default: "
                    "deleted when the run ends; hundreds of MB each at 800x600)")
    ap.add_argument("--data_root", default="data")
    ap.add_argument("--exp_root", default="exp/suite")
    ap.add_argument("--json", default=None, help="summary JSON (default: EXP_ROOT/summary.json)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds after which a job is killed")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after the start at which every job still "
                    "running is killed and no other starts; the summary is written from what finished")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the jobs")
    ap.add_argument("--summarize", action="store_true", help="no runs: rebuild the table from EXP_ROOT's run JSONs")
    ap.add_argument("--copy_to", default=None, metavar="DIR", help="also copy the summary and the runs' JSONs and "
                    "logs here (e.g. $OUT on the device), in EXP_ROOT's layout")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.parallel < 1 or not 0 <= args.first_seed < args.seeds:
        raise SystemExit("--seeds and --parallel must be >= 1, and 0 <= --first_seed < --seeds")
    scenes = scene_list(args)

    t0 = time.time()
    jobs = []
    if not args.summarize:
        env = dict(os.environ)
        threads = str(args.threads or max(1, (os.cpu_count() or 1) // args.parallel))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
        jobs = build_jobs(args, scenes)
        for k in range(args.first_seed, args.seeds):   # a stale run.json must not stand in for a failed run
            for s in scenes:
                (run_dir(args, s, k) / "run.json").unlink(missing_ok=True)
        run_jobs(jobs, args.parallel, args.timeout, env, None if args.deadline is None else t0 + args.deadline)
        keep_stopped_liftings(jobs)
    summary = collect(args, scenes)
    wall = time.time() - t0
    command = shlex.join(["python", "bench/lifting_suite.py"] + list(sys.argv[1:] if argv is None else argv))
    table = markdown_table(summary, command, args, wall if jobs else None)
    ab = {f"{s}/seed{k}": r["cut_ab"] for s in scenes for k in range(args.seeds)
          if (r := read_run(run_dir(args, s, k) / "run.json")) and r.get("cut_ab")}
    if ab:
        table += "\n\nThe target mesh's cut on the same fields (bench/target_cut_ab.py):\n\n" + cut_ab_table(ab)
    print("\n" + table)
    report = {"command": command, "wall_s": wall if jobs else None, "parallel": args.parallel, "seeds": args.seeds,
              "size": [args.views, args.width, args.height], "conf": args.conf, "scan_conf": args.scan_conf,
              "target_iters": args.target_iters, "overrides": args.override, "scenes": summary,
              "jobs": [{"name": j.name, "rc": j.rc, "seconds": j.seconds, "log": str(j.log)} for j in jobs],
              "table": table}
    out = Path(args.json) if args.json else Path(args.exp_root) / "summary.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"[suite] summary -> {out}")
    if args.copy_to:
        copy_results(args, scenes, out, Path(args.copy_to))
    failed = [j.name for j in jobs if j.rc != 0]
    if failed:
        print(f"[suite] {len(failed)} job(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
