"""Tests of evaluation/metrics.py and scripts/eval_mesh.py on meshes with known distances."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from evaluation.metrics import (DEFAULT_DENSITY, GeometryError, chamfer, load_geometry,
                                mask_iou, sample_surface)

ROOT = Path(__file__).resolve().parents[1]
SIDE = 20.0                         # plate side length, mm


def plate(offset=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """A SIDE x SIDE square in the z = 0 plane, centred at the origin, shifted by `offset`."""
    h = SIDE / 2
    v = np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], float) + offset
    return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)


def test_sample_surface_density_and_support():
    pts = sample_surface(plate(), density=DEFAULT_DENSITY, seed=0)
    assert len(pts) == int(np.ceil(SIDE ** 2 * DEFAULT_DENSITY))
    assert np.all(pts[:, 2] == 0) and np.abs(pts[:, :2]).max() <= SIDE / 2
    # uniform: each quadrant holds about a quarter of the samples
    quadrant = (pts[:, 0] > 0) * 2 + (pts[:, 1] > 0)
    assert np.allclose(np.bincount(quadrant) / len(pts), 0.25, atol=0.02)
    assert np.array_equal(pts, sample_surface(plate(), seed=0))
    with pytest.warns(UserWarning, match="capped"):
        assert len(sample_surface(plate(), max_points=100)) == 100


def test_chamfer_of_mesh_with_itself_is_zero():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    a = sample_surface(sphere, seed=0)
    assert chamfer(a, a)["overall"] == 0.0
    b = sample_surface(sphere, seed=1)       # different samples: only sampling noise remains
    assert chamfer(a, b)["overall"] < 0.15


@pytest.mark.parametrize("d", [0.3, 0.5, 1.0])
def test_chamfer_of_translated_copy_is_the_offset(d):
    gt = sample_surface(plate(), seed=0)
    pred = sample_surface(plate((0, 0, d)), seed=1)
    res = chamfer(pred, gt)
    for key in ("accuracy", "completeness", "overall"):
        assert res[key] == pytest.approx(d, abs=0.04), key   # sampling noise ~0.02 mm


def test_chamfer_distances_are_capped():
    gt = sample_surface(plate(), seed=0)
    res = chamfer(gt + [0, 0, 1000.0], gt, cap=20.0)
    assert res == {"accuracy": 20.0, "completeness": 20.0, "overall": 20.0}
    assert chamfer(gt + [0, 0, 5.0], gt, cap=2.0)["overall"] == 2.0


def test_accuracy_and_completeness_are_asymmetric():
    gt = sample_surface(plate(), seed=0)
    half = gt[gt[:, 0] < 0]               # a prediction covering only half the object
    res = chamfer(half, gt)
    assert res["accuracy"] == 0.0
    # gt points at x in [0, 10] are ~x away: mean over all gt = 0.5 * 5
    assert res["completeness"] == pytest.approx(0.25 * SIDE / 2, rel=0.05)
    assert chamfer(gt, half)["accuracy"] == pytest.approx(res["completeness"])
    # a separate full gt for accuracy: the extra half of pred is no longer an error
    full = chamfer(gt, half, gt_accuracy_points=gt)
    assert full["accuracy"] == 0.0 and full["completeness"] < 0.15


def test_mask_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert mask_iou(a, b) == 1.0
    a[:5] = True
    assert mask_iou(a, b) == 0.0
    b[:, :5] = True
    assert mask_iou(a, b) == pytest.approx(25 / 75)
    assert mask_iou(a, a) == 1.0
    with pytest.raises(ValueError, match="shape"):
        mask_iou(a, a[:5])


def test_load_geometry(tmp_path):
    plate().export(tmp_path / "m.ply")
    plate().export(tmp_path / "m.obj")
    trimesh.PointCloud(np.eye(3)).export(tmp_path / "p.ply")
    for name in ("m.ply", "m.obj"):
        mesh = load_geometry(tmp_path / name)
        assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) == 2
    pts = load_geometry(tmp_path / "p.ply")
    assert isinstance(pts, np.ndarray) and pts.shape == (3, 3)
    with pytest.raises(GeometryError, match="missing.ply"):
        load_geometry(tmp_path / "missing.ply")
    (tmp_path / "bad.ply").write_bytes(b"garbage")
    with pytest.raises(GeometryError, match="bad.ply"):
        load_geometry(tmp_path / "bad.ply")


def run_cli(*args):
    return subprocess.run([sys.executable, "scripts/eval_mesh.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_eval_mesh_cli(tmp_path):
    plate((0, 0, 0.5)).export(tmp_path / "pred.ply")
    plate().export(tmp_path / "gt.ply")
    gt_points = sample_surface(plate(), seed=3)
    trimesh.PointCloud(gt_points[gt_points[:, 0] < 0]).export(tmp_path / "gt_half.ply")
    out = run_cli("--pred", tmp_path / "pred.ply", "--gt", tmp_path / "gt.ply",
                  "--json", tmp_path / "res" / "r.json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["overall"] == pytest.approx(0.5, rel=0.06)
    assert res["n_pred"] == res["n_gt"] == int(np.ceil(SIDE ** 2 * DEFAULT_DENSITY))
    assert json.loads((tmp_path / "res" / "r.json").read_text()) == res
    # visible-points gt for completeness, full mesh for accuracy; coarser spacing
    out = run_cli("--pred", tmp_path / "gt.ply", "--gt", tmp_path / "gt_half.ply",
                  "--gt_accuracy", tmp_path / "gt.ply", "--spacing", 0.5)
    res = json.loads(out.stdout)
    assert res["n_gt"] == int((gt_points[:, 0] < 0).sum()) and res["n_pred"] == 1600
    assert res["accuracy"] < 0.4 and res["completeness"] < 0.4
    bad = run_cli("--pred", tmp_path / "nope.ply", "--gt", tmp_path / "gt.ply")
    assert bad.returncode != 0 and "nope.ply" in bad.stderr
