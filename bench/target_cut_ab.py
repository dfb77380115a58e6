"""The target mesh's cut, A/B on one finished run: the same fields meshed without the support plane, cut by
it (systems/target_supervision.target_sdf_fn) and also filled where it encloses space (models.mesh.fill_enclosed:
the run's own), so it is measured without training twice; and `off_target`,
what a synthetic target mesh holds that is not the target.

    python bench/target_cut_ab.py EXP_DIR [EXP_DIR ...] [--resolution R] [--out DIR] [--json FILE]

EXP_DIR: a finished NTO3D run (its config.conf and last checkpoint, phase "done"). Per run and variant
(none, plane, fill): Chamfer against the scene's gt/ (the run's eval spacing), and on synthetic scenes the
shares of vertices >= 5 mm inside / outside the exact target (off_target), the vertex count and the
meshing time; the plane in world units, and on synthetic scenes its height under the exact target (the
table top is z = 0). Meshes go to DIR/<run name>/target_<variant>.ply (default: a `cut_ab` folder inside
each run). `bench/run.py --cut_ab` (and so bench/lifting_suite.py --cut_ab) runs it on each run's pipeline
before its checkpoints go.
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
import trimesh  # noqa: E402

from datasets.synthetic_presets import PRESETS, build_preset  # noqa: E402
from evaluation.metrics import GeometryError, chamfer_files, load_geometry  # noqa: E402
from sam_utils.support_plane import to_world  # noqa: E402
from systems.atomic import atomic_write, atomic_write_text  # noqa: E402
from systems.config import Conf  # noqa: E402
from systems.outputs import extract_world_mesh  # noqa: E402
from systems.runner import build_run, resolve_device  # noqa: E402
from systems.target_supervision import target_sdf_fn  # noqa: E402

VARIANTS = ("none", "plane", "fill")
OFF_TARGET_MM = 5.0   # a target-mesh vertex this far inside or outside the exact target is counted off it


def off_target(mesh: Path, data_dir: Path, mm: float = OFF_TARGET_MM) -> dict | None:
    """Synthetic scenes: the shares of the target mesh's vertices at least `mm` inside and outside the exact
    target (inner walls; extra surface): what a failing accuracy is made of. None for other scenes."""
    meta = data_dir / "scene.json"
    info = json.loads(meta.read_text()) if meta.is_file() else {}
    if info.get("preset") not in PRESETS:
        return None
    try:
        geom = load_geometry(mesh)
    except GeometryError as e:        # no target mesh (an empty one when no target was found)
        print(f"[bench] off target: {e}")
        return None
    verts = torch.as_tensor(np.asarray(geom.vertices if hasattr(geom, "vertices") else geom), dtype=torch.float32)
    scene, _ = build_preset(info["preset"], int(info.get("seed", 0)))
    d = scene.target.shape.sdf(verts)
    return {"mm": mm, "inside": float((d <= -mm).float().mean()), "outside": float((d >= mm).float().mean())}


def support_world(plane: np.ndarray | None, scale_mat: np.ndarray, data_dir: Path) -> dict | None:
    """The support plane (4,) (unit coordinates) in world units: {"plane": [n, d]}, and on synthetic scenes
    (whose table top is z = 0) "z_mm": the plane's lowest and highest z under the exact target's footprint."""
    if plane is None:
        return None
    world = to_world(plane, scale_mat)
    n, d = world[:3], world[3]
    out = {"plane": [round(float(x), 5) for x in world]}
    gt = data_dir / "gt" / "target.ply"
    if (data_dir / "scene.json").is_file() and gt.is_file():
        v = np.asarray(load_geometry(gt).vertices)
        foot = v[v[:, 2] < float(np.min(v[:, 2])) + 5.0][:, :2]          # the exact target's lowest 5 mm
        z = -(foot @ n[:2] + d) / n[2]
        out["z_mm"] = [round(float(z.min()), 2), round(float(z.max()), 2)]
    return out


def cut_ab(exp_dir: Path, out: Path, resolution: int | None = None, gpu: int = 0) -> dict:
    """cut_ab_pipeline on a finished run loaded from its folder."""
    run = build_run(Conf.from_file(exp_dir / "config.conf"), resolve_device(gpu), is_continue=True)
    if getattr(run.pipeline, "phase", None) != "done":
        raise SystemExit(f"{exp_dir}: the run has not finished its target stage "
                         f"(phase {getattr(run.pipeline, 'phase', None)})")
    return cut_ab_pipeline(run.pipeline, out, resolution)


def own_variant(p) -> str:
    """The variant a run's own target mesh is: the fill where its mesh stands on a plane."""
    return "fill" if p.mesh_support() is not None else "none"


def cut_ab_pipeline(p, out: Path, resolution: int | None = None, own: Path | None = None) -> dict:
    """{variant: {"chamfer", "off_target", "vertices", "watertight", "mesh_s"}}, "support" (the plane,
    support_world) and "resolution", for an NTO3D pipeline after its target stage. No plane found: the
    "plane" and "fill" variants are the "none" one. own: the run's target mesh at this resolution, with its
    Chamfer JSON beside it: it stands for its variant (own_variant) instead of meshing it again."""
    t, ds, v = p.n.target, p.dataset, p.s.validate
    if t.mesh_cut != "hull":
        raise SystemExit(f"nto3d.target.mesh_cut is {t.mesh_cut!r}; the support plane cuts the hull's mesh")
    res = resolution or v.mesh_resolution
    cell = 2.0 * p.s.model.bound / res
    support = p.mesh_support()
    result = {"support": support_world(support, ds.scale_mat, ds.data_dir), "resolution": res}
    out.mkdir(parents=True, exist_ok=True)
    for name in VARIANTS if support is not None else VARIANTS[:1]:
        path = out / f"target_{name}.ply"
        if own is not None and name == own_variant(p):
            shutil.copyfile(own, path)
            mesh, mesh_s = trimesh.load(path, force="mesh", process=False), None
            ev = own.with_suffix(".json")
            chamfer = json.loads(ev.read_text()) if ev.is_file() else None
        else:
            t0 = time.time()
            plane = None if name == "none" else support
            fn = target_sdf_fn(p.model, ds, p.final, p.unknown, t, cell, plane)
            mesh = extract_world_mesh(fn, ds.scale_mat, res, v.mesh_threshold, p.s.model.bound, v.mesh_chunk,
                                      ds.device, keep_largest=True, support=plane if name == "fill" else None)
            mesh_s = time.time() - t0
            atomic_write(path, lambda tmp: mesh.export(tmp, file_type="ply"))
            gt = ds.data_dir / "gt"
            chamfer = chamfer_files(path, gt / "target_visible.ply", gt / "target.ply", v.eval_spacing) \
                if (gt / "target.ply").is_file() and len(mesh.faces) else None
        result[name] = {"chamfer": chamfer, "off_target": off_target(path, ds.data_dir),
                        "vertices": len(mesh.vertices), "watertight": bool(mesh.is_watertight), "mesh_s": mesh_s}
    for name in VARIANTS[1:]:
        result.setdefault(name, result["none"])
    return result


def table(rows: dict[str, dict]) -> str:
    """Markdown: one line per run and variant."""
    lines = ["| run | variant | Chamfer (acc / comp) | >= 5 mm inside / outside | vertices | watertight | mesh s |",
             "|---|---|---|---|---|---|---|"]
    for run, r in rows.items():
        for name in VARIANTS:
            x = r[name]
            c = x["chamfer"]
            ch = "-" if c is None else f"{c['overall']:.3f} ({c['accuracy']:.3f} / {c['completeness']:.3f})"
            o = x["off_target"]
            off = "-" if o is None else f"{100 * o['inside']:.1f} % / {100 * o['outside']:.1f} %"
            ms = "run's own" if x["mesh_s"] is None else f"{x['mesh_s']:.1f}"
            lines.append(f"| {run} | {name} | {ch} | {off} | {x['vertices']} | {x['watertight']} | {ms} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp_dirs", nargs="+", type=Path)
    ap.add_argument("--resolution", type=int, default=None, help="marching-cubes grid (default: the run's conf)")
    ap.add_argument("--out", type=Path, default=None, help="meshes under OUT/<run name>/ (default: EXP_DIR/cut_ab)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--gpu", type=int, default=0)
    a = ap.parse_args()
    rows = {}
    for exp in a.exp_dirs:
        name = exp.resolve().parent.name + "/" + exp.name
        rows[name] = cut_ab(exp, (a.out / name) if a.out else exp / "cut_ab", a.resolution, a.gpu)
        print(f"[cut_ab] {name}: support plane {rows[name]['support']}, " + ", ".join(
            f"{k} {rows[name][k]['chamfer']['overall']:.3f}" for k in VARIANTS if rows[name][k]["chamfer"]))
    print(table(rows))
    if a.json:
        atomic_write_text(a.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
