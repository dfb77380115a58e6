"""End-to-end benchmark: generate a synthetic scene (if missing), run the pipeline, print a table.

    python bench/run.py --preset occluded --views 49 --width 800 --height 600 \
        --conf confs/synthetic.conf [--override 'train.batch_rays = 8192'] [--compare 'KEY = V' ...]

Each run reports wall time per stage, iterations/s, rays/s, peak GPU memory, Chamfer against
gt/ (mm) and target-mask IoU (NTO3D runs). `--compare` runs a second configuration in the same
process so speed-ups are ratios taken side by side. `--full_scene` switches NTO3D off.
`--compare_from target` starts the second run from the first run's checkpoint at the start of the
target stage (same lifted masks, the lifting not run twice): an ablation of the target stage alone.
`--repeat K` runs every configuration with K network seeds and prints medians.
`--features_ablation CHECKPOINT` (a SAM checkpoint, or `random`) is that ablation for the SAM feature
loss: target stage without, then with the loss, the second run given `--features_time_ratio` of the
first's iterations (its measured it/s ratio) so both train for about the same time.
`--propagation` adds the click-propagation baseline (systems/propagation.py) to each NTO3D run: the
scene field as the lifting left it (the checkpoint at the start of the target stage, kept for this),
the segmenter prompted once per view from the back-projected click and prompt mask; its IoU vs gt.
bench/lifting_suite.py runs this over scenes x seeds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.lifting_record import DEVICE_LINE, lifting_fields  # noqa: E402
from bench.target_cut_ab import cut_ab_pipeline, off_target  # noqa: E402
from datasets.synthetic import make_scene  # noqa: E402
from evaluation.segmentation import segmenter_alone_ious  # noqa: E402
from evaluation.metrics import GeometryError  # noqa: E402
from sam_utils.masks import mask_iou  # noqa: E402
from systems.atomic import atomic_write_text  # noqa: E402
from systems.config import Conf  # noqa: E402
from systems.outputs import silhouette_check  # noqa: E402
from systems.propagation import click_propagation  # noqa: E402
from systems.runner import build_run  # noqa: E402


def run_once(args, case: str, extra: list[str], tag: str, resume_from: Path | None = None,
             save=lambda result: None) -> dict:
    """One configuration end to end; resume_from: a checkpoint to continue from (copied into this run);
    save(result): writes the results so far with this one (before --cut_ab's extra meshes)."""
    exp_dir = Path(args.exp_root) / case / tag
    overrides = [f'general.base_exp_dir = "{exp_dir}"', f'dataset.data_dir = "{args.data_root}/{case}"']
    if args.full_scene:
        overrides.append("nto3d.enabled = false")
    conf = Conf.from_file(args.conf, case=case, overrides="\n".join(overrides + args.override + extra))
    if args.compare_from or (args.propagation and conf.get("nto3d.target.iters", int) > 0):
        overrides.append("train.keep_checkpoints = 0")  # the base run's target-stage start must survive
        conf = Conf.from_file(args.conf, case=case, overrides="\n".join(overrides + args.override + extra))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{DEVICE_LINE}{device_name}", flush=True)       # a run stopped before its JSON still names it
    if resume_from is not None:
        shutil.rmtree(exp_dir / "checkpoints", ignore_errors=True)
        (exp_dir / "checkpoints").mkdir(parents=True)
        shutil.copy2(resume_from, exp_dir / "checkpoints" / resume_from.name)
    t0 = time.time()
    run = build_run(conf, device, is_continue=resume_from is not None)
    tr, p = run.trainer, run.pipeline
    t_load = time.time() - t0
    it0 = tr.iteration  # > 0 when resumed
    t1 = time.time()
    tr.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_train = time.time() - t1
    t2 = time.time()
    mesh = None if args.no_mesh else p.write_mesh(tr.iteration)
    t_mesh = time.time() - t2
    n_it = tr.iteration - it0
    result = {"tag": tag, "iterations": n_it, "load_s": t_load, "train_s": t_train, "mesh_s": t_mesh,
              "total_s": time.time() - t0, "eval_s": p.meshes.eval_seconds,
              "click_to_mesh_s": time.time() - t0 - p.meshes.eval_seconds,   # what a user waits (no gt to score)
              "it_per_s": n_it / max(t_train, 1e-9),
              "rays_per_s": n_it * tr.s.batch_rays / max(t_train, 1e-9),
              "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0,
              "backend": p.model.sdf.encoding.backend, "exp_dir": str(exp_dir),
              "device": device_name}
    if getattr(p, "phase", None) == "done":
        result["target_start"] = p.phase_start
        masks = p.dataset.data_dir / p.n.gt_mask_dir if p.n.gt_mask_dir else None
        if mesh is not None and masks is not None and masks.is_dir():   # issue 16's check for real scans
            result["silhouette_iou"] = target_silhouette(mesh, p)
        if mesh is not None:
            result["off_target"] = off_target(mesh, p.dataset.data_dir)
    ev = mesh.with_suffix(".json") if mesh is not None else None
    if ev is not None and ev.is_file():
        result["chamfer"] = json.loads(ev.read_text())
    timings = tr.exp_dir / "timings.json"
    if timings.is_file():
        result["stages"] = json.loads(timings.read_text())
    store = getattr(p, "store", None)
    if run.features is not None and run.features.encode_seconds:
        result["feature_encode_s"] = run.features.encode_seconds
    if store is not None and store.history:
        result.update(lifting_fields(store.history))
        result["alone"] = segmenter_alone(p) if resume_from is None and not args.no_alone else None  # the base run has it
    if mesh is not None and args.cut_ab and getattr(p, "phase", None) == "done":
        save(result)                 # the run's own figures first: a run stopped during the extra meshes keeps them
        result["cut_ab"] = cut_ab_pipeline(p, exp_dir / "cut_ab", own=mesh)
    if store is not None and store.history and args.propagation:   # last: it loads another checkpoint
        result["propagation"] = propagation_baseline(p, exp_dir / "checkpoints")
    return result


def target_silhouette(mesh: Path, p) -> dict:
    """{"mean", "worst"}: IoU of the target mesh's silhouette against the scene's masks (p.n.gt_mask_dir) in
    every view (systems.outputs.silhouette_check, kept beside the mesh); an empty mesh (no target found) has
    none: 0."""
    try:
        sil = silhouette_check(mesh.with_name("target.ply"), p.dataset.data_dir, p.n.gt_mask_dir)   # the latest copy
    except GeometryError as e:
        print(f"[bench] silhouette: {e}")
        return {"mean": 0.0, "worst": 0.0}
    return {"mean": sil["mean"], "worst": sil["worst"]}


def propagation_baseline(p, ckpt_dir: Path) -> dict | None:
    """Click propagation from the scene field at the end of the lifting: the run's model itself when the
    target stage did not train, else the checkpoint saved at its start (loaded into the model: call
    this after the run's outputs are written). The prompt view's mask is the segmenter's answer to the
    user's prompt, as in the run's round 0. IoU per view vs the gt masks."""
    if p.gt is None:
        return None
    t0 = time.time()
    field = "final"
    if p.phase == "done" and p.n.target.iters > 0:
        ckpt = ckpt_dir / f"ckpt_{p.phase_start:06d}.pth"
        if not ckpt.is_file():
            print(f"[propagation] {ckpt} missing: the target stage's field is used (no occluders)")
            field = "target stage"
        else:
            p.model.load_state_dict(torch.load(ckpt, map_location=p.dataset.device, weights_only=False)["model"])
            field = f"lift (iteration {p.phase_start})"
    prompt, _ = p.prompt()
    s = p.n.lifting
    seg = p.segmenter()
    prompt_mask = seg.predict_cascade(prompt.view, p.images[prompt.view], prompt).mask
    masks = click_propagation(p.model, p.dataset, prompt, prompt_mask, seg, s.render_level, p.s.validate.render_chunk,
                              images=p.images, n_positive=s.n_positive, n_negative=0, cascade=s.cascade)
    ious = [mask_iou(m, g) for m, g in zip(masks, p.gt)]
    print(f"[propagation] click propagation ({field} field): IoU vs gt mean {np.mean(ious):.3f} worst {np.min(ious):.3f}")
    return {"iou": ious, "iou_mean": float(np.mean(ious)), "iou_worst": float(np.min(ious)), "field": field,
            "seconds": time.time() - t0}


def segmenter_alone(p) -> list[float] | None:
    """The run's segmenter on every view, prompted from its ground-truth mask (no lifting)."""
    if p.gt is None:
        return None
    s = p.n.lifting
    return segmenter_alone_ious(p.segmenter(), p.images, p.gt, s.n_positive, s.n_negative, s.cascade)


def print_medians(results: list[dict]) -> None:
    """Median (min - max) over the seeds of each configuration's IoU, Chamfer and time (--repeat)."""
    metrics = {"iou mean": lambda r: r.get("iou_mean"), "iou worst": lambda r: r.get("iou_worst"),
               "chamfer": lambda r: r.get("chamfer", {}).get("overall"), "total s": lambda r: r["total_s"]}
    for tag in ("base", "compare"):
        rows = [r for r in results if r["tag"].startswith(tag + "_s")]
        cells = []
        for name, get in metrics.items():
            vals = [v for v in map(get, rows) if v is not None]
            if vals:
                cells.append(f"{name} {np.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})")
        if rows:
            print(f"{tag}, median over {len(rows)} seeds: " + "; ".join(cells))


NEVER = 10**9   # an iteration no run reaches


def add_features_ablation(args) -> None:
    """Both runs build the feature head (so the second can resume from the first); the base run never
    trains it (start_iter beyond any run), the second trains it from the start of the target stage."""
    conf = Conf.from_file(args.conf, case="ablation", overrides="\n".join(args.override))
    iters = round(conf.get("nto3d.target.iters", int) * args.features_time_ratio)
    args.override.append(f'features {{ enabled = true, stages = [target], start_iter = {NEVER}, '
                         f'sam.checkpoint = "{args.features_ablation}" }}')
    args.compare += ["features.start_iter = 0", f"nto3d.target.iters = {iters}"]
    args.compare_from = "target"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="occluded")
    ap.add_argument("--views", type=int, default=49)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conf", default="confs/synthetic.conf")
    ap.add_argument("--override", action="append", default=[], help="HOCON line for every run")
    ap.add_argument("--compare", action="append", default=[], help="HOCON line for a second run")
    ap.add_argument("--compare_from", choices=["target"], default=None,
                    help="start the --compare run from the base run's checkpoint at this stage")
    ap.add_argument("--full_scene", action="store_true", help="switch NTO3D off (full-scene NeuS)")
    ap.add_argument("--data_root", default="data")
    ap.add_argument("--exp_root", default="exp/bench")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each configuration with general.seed = 0..K-1 and print medians (the lifting's "
                         "outcome varies with the initialisation)")
    ap.add_argument("--scene", default=None, help="an existing DTU-layout scene folder instead of a synthetic one")
    ap.add_argument("--features_ablation", default=None, metavar="CHECKPOINT",
                    help="target stage without / with the SAM feature loss (SAM checkpoint path or 'random')")
    ap.add_argument("--no_mesh", action="store_true", help="skip the final mesh and its Chamfer (lifting-only runs)")
    ap.add_argument("--cut_ab", action="store_true", help="also mesh the target with and without the support "
                    "plane (bench/target_cut_ab.py), on the same fields")
    ap.add_argument("--no_alone", action="store_true", help="skip the segmenter-alone baseline (it does not depend "
                    "on the network seed: one run per scene is enough)")
    ap.add_argument("--propagation", action="store_true",
                    help="also run the click-propagation baseline (no lifting) on each NTO3D run's scene field")
    ap.add_argument("--features_time_ratio", type=float, default=0.72,
                    help="iterations of the run with features, as a fraction of the base run's (equal time)")
    args = ap.parse_args(argv)
    if args.features_ablation:
        add_features_ablation(args)

    case = f"{args.preset}_{args.views}v_{args.width}x{args.height}_s{args.seed}"
    if args.scene:
        args.data_root, case = str(Path(args.scene).resolve().parent), Path(args.scene).name
    scene = Path(args.data_root) / case
    t0 = time.time()
    if not args.scene and not (scene / "cameras_sphere.npz").is_file():
        make_scene(args.preset, scene, n_views=args.views, width=args.width, height=args.height, seed=args.seed,
                   progress=True)
    print(f"[bench] scene {scene} ready in {time.time() - t0:.1f} s")
    results = []

    def save(rows: list[dict]) -> None:
        if args.json:
            atomic_write_text(Path(args.json), json.dumps(rows, indent=1))
    for k in range(args.repeat):  # --repeat K: the same pair of runs with general.seed = 0 .. K-1
        seed, sfx = ([f"general.seed = {k}"], f"_s{k}") if args.repeat > 1 else ([], "")
        results.append(run_once(args, case, seed, "base" + sfx, save=lambda r: save(results + [r])))
        if args.compare:
            resume = None
            if args.compare_from:
                if "target_start" not in results[-1]:
                    raise SystemExit("--compare_from target: the base run did not reach the end of the target stage")
                resume = Path(results[-1]["exp_dir"]) / "checkpoints" / f"ckpt_{results[-1]['target_start']:06d}.pth"
            results.append(run_once(args, case, args.compare + seed, "compare" + sfx, resume))
    keys = ["tag", "backend", "iterations", "train_s", "mesh_s", "total_s", "it_per_s", "rays_per_s", "peak_gpu_gb"]
    print("\n| " + " | ".join(keys + ["chamfer", "iou mean/worst"]) + " |")
    for r in results:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        ch = r.get("chamfer", {}).get("overall")
        iou = f"{r['iou_mean']:.3f}/{r['iou_worst']:.3f}" if r.get("iou_mean") is not None else "-"
        print("| " + " | ".join(cells + [f"{ch:.3f}" if ch is not None else "-", iou]) + " |")
    for r in results:
        if r.get("rounds_iou"):
            print(f"\n{r['tag']}: round | IoU mean / worst (lifted) | accepted / prompted | mean change")
            for rd, m, w, a, c, ch in r["rounds_iou"]:
                print(f"  {rd} | {m if m is None else round(m, 3)} / {w if w is None else round(w, 3)} | {a}/{c} | {ch:.3f}")
            print(f"  lifted masks: {r['iou_mean']:.3f} / {r['iou_worst']:.3f}; converged {r['converged']}")
        if r.get("alone"):
            print(f"  segmenter alone (prompts from gt): {np.mean(r['alone']):.3f} / {np.min(r['alone']):.3f}")
        if r.get("propagation"):
            print(f"  click propagation: {r['propagation']['iou_mean']:.3f} / {r['propagation']['iou_worst']:.3f}")
        if r.get("feature_encode_s"):
            print(f"  {r['tag']}: feature source (SAM encoder, all views) {r['feature_encode_s']:.1f} s")
        if r.get("stages"):
            print("  stages s: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()))
    if args.repeat > 1:
        print_medians(results)
    if args.compare and args.repeat == 1:
        print(f"speed-up (it/s compare / base): {results[1]['it_per_s'] / results[0]['it_per_s']:.2f}x")
    save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
