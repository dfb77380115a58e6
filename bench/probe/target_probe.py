"""Where a synthetic run's target mesh lies off the target, and which views let it stay (bench only).

python bench/probe/target_probe.py EXP_DIR [--raw_resolution 256] [--out DIR]
EXP_DIR: a finished NTO3D run on a synthetic scene (its config.conf and last checkpoint). Prints, for the
target mesh's vertices >= 5 mm from the exact target, the nearest scene object and, per group, in how many
views they project into the lifted mask, into the unknown (occluded-target) pixels, or outside both; the
same for the target field's raw mesh (no hull cut). --out: the meshes and the masks (bit-packed) there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from datasets.synthetic_presets import build_preset  # noqa: E402
from models.mesh import evaluate_grid, largest_component, marching_cubes, to_world  # noqa: E402
from systems.config import Conf  # noqa: E402
from systems.projection import projection_matrices  # noqa: E402
from systems.runner import build_run, resolve_device  # noqa: E402

FAR_MM = (2.0, 5.0, 10.0, 20.0)


def view_classes(ds, P, final, unknown, verts_world) -> np.ndarray:
    """(M,3) counts per vertex: views where it projects into final, into unknown only, outside both."""
    X = torch.as_tensor(ds.to_unit(verts_world), dtype=torch.float64)
    out = np.zeros((len(X), 3), np.int64)
    n, H, W = final.shape
    for v in range(n):
        x = X @ torch.as_tensor(P[v][:, :3]).T + torch.as_tensor(P[v][:, 3])
        z = x[:, 2]
        uv = (x[:, :2] / z.clamp(min=1e-9)[:, None]).round().long().numpy()
        ok = (z.numpy() > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        r, c = uv[ok, 1], uv[ok, 0]
        f = final[v][r, c]
        u = unknown[v][r, c] & ~f if unknown is not None else np.zeros_like(f)
        idx = np.nonzero(ok)[0]
        out[idx[f], 0] += 1
        out[idx[u], 1] += 1
        out[idx[~f & ~u], 2] += 1
    return out


def describe(name, verts, scene, ds, P, final, unknown):
    p = torch.as_tensor(verts, dtype=torch.float32)
    names = [o.name for o in scene.objects]
    ti = next(i for i, o in enumerate(scene.objects) if o.is_target)
    d = torch.stack([scene.sdf(p, None, only=i) for i in range(len(names))], 1).abs()
    dt = d[:, ti]
    print(f"\n{name}: {len(verts)} vertices; bounds {verts.min(0).round(1)} .. {verts.max(0).round(1)}")
    print("  " + ", ".join(f">= {t:g} mm: {int((dt >= t).sum())}" for t in FAR_MM))
    far = (dt >= 5.0).numpy()
    if not far.any():
        return
    near = d[far].argmin(1).numpy()
    cls = view_classes(ds, P, final, unknown, verts[far])
    for k in np.unique(near):
        s = near == k
        z = verts[far][s, 2]
        c = cls[s]
        print(f"  nearest {names[k]:>8}: {int(s.sum()):6d} verts, off target median {dt[far][s].median():5.1f} mm "
              f"max {dt[far][s].max():5.1f}, z {z.min():6.1f}..{z.max():6.1f}; views in mask / unknown only / "
              f"outside (median) {np.median(c[:, 0]):.0f} / {np.median(c[:, 1]):.0f} / {np.median(c[:, 2]):.0f}")
    # the far vertices that the hull keeps because every view has them in mask | unknown
    hidden = cls[:, 2] == 0
    print(f"  far vertices outside no view's mask|unknown: {int(hidden.sum())}/{len(cls)}; of these, seen as "
          f"unknown in >= 1 view: {int((hidden & (cls[:, 1] > 0)).sum())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp_dir")
    ap.add_argument("--raw_resolution", type=int, default=256)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    exp = Path(a.exp_dir)
    run = build_run(Conf.from_file(exp / "config.conf"), resolve_device(0), is_continue=True)
    p = run.pipeline
    ds = p.dataset
    meta = json.loads((Path(ds.data_dir) / "scene.json").read_text())
    scene, _ = build_preset(meta["preset"], meta["seed"])
    P = projection_matrices(ds)
    final, unknown = p.final, p.unknown
    print(f"final masks {final.shape}, target px share {final.mean():.4f}; unknown px share "
          f"{0 if unknown is None else unknown.mean():.4f}, views with unknown "
          f"{0 if unknown is None else int(unknown.any((1, 2)).sum())}")
    mesh_path = sorted((exp / "meshes").glob("target_*.ply"))[-1]
    tm = trimesh.load(mesh_path, process=False)
    describe(f"target mesh {mesh_path.name}", np.asarray(tm.vertices), scene, ds, P, final, unknown)
    b = p.s.model.bound
    res = a.raw_resolution
    vals = evaluate_grid(p.model.sdf.sdf, [-b] * 3, [b] * 3, res, 1 << 18, ds.device)
    raw = to_world(largest_component(marching_cubes(vals, 0.0, [-b] * 3, [b] * 3)), ds.scale_mat)
    describe(f"raw target field, largest component (resolution {res})", np.asarray(raw.vertices), scene, ds, P,
             final, unknown)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        tm.export(out / mesh_path.name)
        raw.export(out / "raw_target_field.ply")
        np.savez_compressed(out / "masks.npz", final=np.packbits(final, -1),
                            unknown=np.packbits(unknown if unknown is not None else np.zeros_like(final), -1),
                            shape=np.array(final.shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
