"""Tests of evaluation/sampling.py, evaluation/metrics.py and scripts/eval_mesh.py on known geometry."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

import evaluation.sampling as sampling
from tests.dtu_reference import ref_downsample, ref_sample
from evaluation.metrics import (GeometryError, chamfer, chamfer_files, load_geometry, mask_iou,
                                outlier_mean, prediction_points)
from sam_utils.masks import disagreement

ROOT = Path(__file__).resolve().parents[1]
SIDE = 20.0                         # plate side length, mm


def plate(offset=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """A SIDE x SIDE square in the z = 0 plane, centred at the origin, shifted by `offset`."""
    h = SIDE / 2
    v = np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], float) + offset
    return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)


def test_triangle_grid_matches_the_rule_by_hand():
    # unit right triangle, d = 0.2: thr = 0.2, n1 = n2 = 5, grid (i + .5)/5 + (j + .5)/5 < 1 <=> i + j <= 3
    tri = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]], float)
    pts = sampling.sample_triangles(tri, 0.2)
    expect = sorted(((i + 0.5) / 5, (j + 0.5) / 5) for i in range(6) for j in range(6) if i + j <= 3)
    assert sorted(map(tuple, np.round(pts[:, :2], 12))) == sorted(map(tuple, np.round(expect, 12)))
    # a skewed, a degenerate and a too-small triangle: as the independent per-triangle loop says
    tris = np.array([[[0, 0, 0], [3, 0, 0], [2.5, 0.4, 0]], [[0, 0, 0], [1, 1, 1], [2, 2, 2]],
                     [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]]], float)
    ref = ref_sample(np.zeros((0, 3)), np.zeros((0, 3), int), 0.2)
    for t in tris:
        ref = np.concatenate([ref, ref_sample(t, [[0, 1, 2]], 0.2)[3:]])
    assert np.allclose(np.sort(sampling.sample_triangles(tris, 0.2), axis=0), np.sort(ref, axis=0))
    # every vertex first, then the grid; about 1 / d^2 points per unit area on a plate
    pts = sampling.sample_mesh(plate(), 0.2)
    assert np.array_equal(pts[:4], plate().vertices) and 0.6 * SIDE ** 2 / 0.04 < len(pts) <= SIDE ** 2 / 0.04
    with pytest.raises(ValueError, match="positive"):
        sampling.sample_triangles(tri, 0.0)


@pytest.mark.parametrize("pair_chunk", [sampling.PAIR_CHUNK, 997])
def test_downsampling_is_the_sequential_greedy_rule(monkeypatch, pair_chunk):
    monkeypatch.setattr(sampling, "PAIR_CHUNK", pair_chunk)        # slabs must not lose pairs
    pts = np.random.default_rng(0).random((6000, 3)) * [4.0, 4.0, 0.5]
    order = np.random.default_rng(1).permutation(len(pts))
    keep = sampling.downsample_mask(pts, 0.2, order=order)
    # the independent loop visits the same order (it shuffles with the same generator state)
    expect = ref_downsample(pts, 0.2, np.random.default_rng(1))
    assert keep.sum() == len(expect)
    assert np.array_equal(np.sort(pts[keep], axis=0), np.sort(expect, axis=0))
    kept = pts[keep]
    assert cKDTree(kept).query(kept, k=2)[0][:, 1].min() > 0.2       # kept points are spacing apart
    assert cKDTree(kept).query(pts[~keep])[0].max() <= 0.2           # and every dropped one is covered
    with pytest.raises(ValueError, match="permutation"):
        sampling.downsample_mask(pts, 0.2, order=np.zeros(len(pts), int))


@pytest.mark.parametrize("d", [0.3, 0.5, 1.0])
def test_chamfer_of_translated_plate_is_the_offset(tmp_path, d):
    plate((0, 0, d)).export(tmp_path / "pred.ply")
    plate().export(tmp_path / "gt.ply")
    res = chamfer_files(tmp_path / "pred.ply", tmp_path / "gt.ply")
    # pred's samples are gt's own grid lifted by d: accuracy is exactly d; each gt sample is d above
    # and r in-plane from the down-sampled pred, r as between the plate and its own down-sampling
    assert res["accuracy"] == pytest.approx(d, abs=1e-6)               # .ply stores float32
    down, _ = prediction_points(plate(), 0.2, seed=0)
    r = cKDTree(down).query(sampling.sample_mesh(plate(), 0.2))[0]
    assert res["completeness"] == pytest.approx(np.sqrt(d ** 2 + r ** 2).mean(), rel=1e-6)
    assert res["overall"] == pytest.approx((res["accuracy"] + res["completeness"]) / 2)
    assert res["accuracy_outliers"] == res["completeness_outliers"] == 0.0
    assert res["n_pred"] == len(down) < res["n_pred_samples"] and res["outlier_rule"] == "drop"


def test_outliers_are_dropped_not_clamped():
    gt = sampling.sample_mesh(plate(), 0.5)
    far = gt[:100] + [0, 0, 1000.0]
    pred = np.concatenate([gt + [0, 0, 0.5], far])
    res = chamfer(pred, gt)
    frac = len(far) / len(pred)
    assert res["accuracy"] == pytest.approx(0.5) and res["accuracy_outliers"] == pytest.approx(frac)
    assert res["completeness"] == pytest.approx(0.5) and res["completeness_outliers"] == 0.0
    clamped = chamfer(pred, gt, outliers="clamp")
    assert clamped["accuracy"] == pytest.approx((1 - frac) * 0.5 + frac * 20.0)
    assert clamped["outlier_rule"] == "clamp" and clamped["accuracy_outliers"] == pytest.approx(frac)
    # a distance exactly at max_dist is an outlier (DTU keeps d < max_dist)
    assert outlier_mean(np.array([1.0, 20.0]), 20.0) == (1.0, 0.5)
    assert np.isnan(outlier_mean(np.array([25.0]), 20.0)[0])
    with pytest.raises(ValueError, match="outliers"):
        outlier_mean(np.ones(3), 20.0, "cap")


def test_accuracy_and_completeness_are_asymmetric():
    gt = sampling.sample_mesh(plate(), 0.2)
    half = gt[gt[:, 0] < 0]               # a prediction covering only half the object
    res = chamfer(half, gt)
    assert res["accuracy"] == 0.0
    # gt points at x in [0, 10] are ~x away: mean over all gt = 0.5 * 5
    assert res["completeness"] == pytest.approx(0.25 * SIDE / 2, rel=0.05)
    assert chamfer(gt, half)["accuracy"] == pytest.approx(res["completeness"])
    # a separate full gt for accuracy: the extra half of pred is no longer an error
    full = chamfer(gt, half, gt_accuracy_points=gt)
    assert full["accuracy"] == 0.0 and full["completeness"] < 0.15


def test_point_cloud_prediction_is_only_downsampled():
    pts = np.random.default_rng(0).random((4000, 3)) * [5, 5, 0]
    down, n = prediction_points(pts, 0.2, seed=0)
    assert n == len(pts) and 0 < len(down) < len(pts)
    assert np.array_equal(np.sort(down, axis=0), np.sort(pts[sampling.downsample_mask(pts, 0.2, 0)], axis=0))


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


def test_disagreement_says_which_mask_holds_what_the_other_lacks():
    obj = np.zeros((40, 40), bool)
    obj[10:30, 10:30] = True
    spilled = obj.copy()
    spilled[10:30, 30:40] = True                      # the prompt's mask ran onto the background (border)
    assert "spilled" in disagreement(obj, spilled) and "keeps 67%" in disagreement(obj, spilled)   # 400 of 600
    assert "missed" in disagreement(spilled, obj) and "33%" in disagreement(spilled, obj)
    elsewhere = np.zeros_like(obj)
    elsewhere[0:5, 0:5] = True
    assert "another object" in disagreement(elsewhere, obj)


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
    gt_points = sampling.sample_mesh(plate(), 0.3)
    trimesh.PointCloud(gt_points[gt_points[:, 0] < 0]).export(tmp_path / "gt_half.ply")
    out = run_cli("--pred", tmp_path / "pred.ply", "--gt", tmp_path / "gt.ply",
                  "--json", tmp_path / "res" / "r.json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["overall"] == pytest.approx(0.5, abs=0.01)
    assert res["n_gt"] == len(sampling.sample_mesh(plate(), 0.2))
    assert json.loads((tmp_path / "res" / "r.json").read_text()) == res
    # visible-points gt for completeness, full mesh for accuracy; coarser spacing; far part clamped
    out = run_cli("--pred", tmp_path / "gt.ply", "--gt", tmp_path / "gt_half.ply",
                  "--gt_accuracy", tmp_path / "gt.ply", "--spacing", 0.5, "--max_dist", 0.01, "--clamped")
    res = json.loads(out.stdout)
    assert res["n_gt"] == int((gt_points[:, 0] < 0).sum()) and res["outlier_rule"] == "clamp"
    assert res["accuracy"] == 0.0 and 0 < res["completeness"] <= 0.01
    bad = run_cli("--pred", tmp_path / "nope.ply", "--gt", tmp_path / "gt.ply")
    assert bad.returncode != 0 and "nope.ply" in bad.stderr
