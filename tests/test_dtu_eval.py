"""DTU's Chamfer protocol: evaluation/metrics.py against an independent implementation of the rules
(tests/dtu_reference.py) on the mesh pairs of issue 20, outliers, the self-Chamfer floor, and
scripts/eval_dtu.py on files written in DTU's formats."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import trimesh

from evaluation.dtu_protocol import clean_mesh, observed
from evaluation.metrics import chamfer_files
from tests.dtu_reference import ref_chamfer, ref_cull, ref_downsample, ref_sample

ROOT = Path(__file__).resolve().parents[1]
D = 0.2                                                      # DTU spacing, mm


def base_mesh(scale: float = 1.0, sections: int = 32) -> trimesh.Trimesh:
    """A torus (major radius 10 mm, tube 4 mm, times `scale`): small, curved, not convex."""
    return trimesh.creation.torus(10.0 * scale, 4.0 * scale, major_sections=sections, minor_sections=sections)


def issue_pairs() -> dict:
    """Issue 20's predictions against the base mesh, built small."""
    gt = base_mesh()
    rng = np.random.default_rng(0)
    v, f = trimesh.remesh.subdivide(gt.vertices, gt.faces)
    return {"normals +0.5": trimesh.Trimesh(gt.vertices + 0.5 * gt.vertex_normals, gt.faces, process=False),
            "jitter 0.2": trimesh.Trimesh(gt.vertices + rng.normal(0, 0.2, gt.vertices.shape), gt.faces,
                                          process=False),
            "other surface": trimesh.creation.box((30.0, 30.0, 6.0)),
            "subdivided 4x": trimesh.Trimesh(v, f, process=False),
            "decimated ~10%": base_mesh(sections=10)}


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dtu") / "gt.ply"
    base_mesh().export(path)
    return path


@pytest.mark.parametrize("name", list(issue_pairs()))
def test_matches_independent_dtu_rules(tmp_path, gt_file, name):
    pred = issue_pairs()[name]
    pred.export(tmp_path / "pred.ply")
    ours = chamfer_files(tmp_path / "pred.ply", gt_file)
    # the reference reads the same float32 files, samples per triangle, shuffles with its own seed
    p, g = trimesh.load(tmp_path / "pred.ply", process=False), trimesh.load(gt_file, process=False)
    data = ref_downsample(ref_sample(p.vertices, p.faces, D), D, np.random.default_rng(123))
    stl = ref_sample(g.vertices, g.faces, D)
    ref = ref_chamfer(data, stl, stl, 20.0)
    for key, value in zip(("accuracy", "completeness", "overall"), ref):
        assert ours[key] == pytest.approx(value, rel=0.02), (name, key, ours[key], value)


def test_far_stray_component_is_dropped_not_clamped(tmp_path, gt_file):
    stray = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
    stray.apply_translation([100.0, 0.0, 0.0])
    trimesh.util.concatenate([base_mesh(), stray]).export(tmp_path / "pred.ply")
    dropped = chamfer_files(tmp_path / "pred.ply", gt_file)
    clamped = chamfer_files(tmp_path / "pred.ply", gt_file, outliers="clamp")
    alone = chamfer_files(gt_file, gt_file)
    frac = dropped["accuracy_outliers"]
    assert 0.1 < frac < 0.4                                  # the stray's share of the samples
    # dropped: the figures are those of the mesh without the stray (its samples are the gt's own)
    assert dropped["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-9)
    assert dropped["completeness"] == pytest.approx(alone["completeness"], rel=0.05)
    assert clamped["accuracy"] == pytest.approx(frac * 20.0, rel=1e-6)   # clamped: the stray dominates
    assert clamped["accuracy"] > 10 * max(dropped["accuracy"], 0.1)


def test_self_chamfer_floor(tmp_path):
    mesh = base_mesh(scale=4.0, sections=96)                 # 112 mm across, 18k faces
    mesh.export(tmp_path / "m.ply")
    res = chamfer_files(tmp_path / "m.ply", tmp_path / "m.ply", tmp_path / "m.ply")
    assert res["n_pred_samples"] > 400_000
    assert res["overall"] <= 0.1 and res["accuracy_outliers"] == res["completeness_outliers"] == 0.0


# ----------------------------------------------------------------------------- the full protocol
SCAN = 65
BB = np.array([[-10.0, -10.0, -10.0], [30.0, 30.0, 30.0]])


def stl_points() -> np.ndarray:
    grid = np.array([[x, y, 0.0] for x in range(10) for y in range(10)])
    below = np.array([[20.0, 0.0, -5.0]])                    # under the plane: accuracy only
    far_above = np.array([[29.0, 29.0, 25.0]])               # above, far from any prediction
    return np.concatenate([grid, below, far_above])


def pred_points() -> np.ndarray:
    grid = np.array([[x, y, 0.5] for x in range(10) for y in range(10)])     # 0.5 mm above the STL
    extra = np.array([[0.0, 0.0, 3.0],        # 3 mm from the STL
                      [20.0, 0.0, -4.0],      # 1 mm from the point under the plane
                      [0.0, 0.0, 30.0],       # observed, 30 mm away: an outlier, dropped
                      [28.0, 28.0, 28.0],     # in the box, unobserved voxel: culled
                      [95.0, 0.0, 0.0],       # within BB + 2 * patch but beyond the mask grid: culled
                      [-80.0, 0.0, 0.0]])     # beyond BB - patch: culled
    return np.concatenate([grid, extra])


def write_dtu(root: Path, obs_mask: np.ndarray) -> None:
    (root / "Points" / "stl").mkdir(parents=True)
    (root / "ObsMask").mkdir()
    trimesh.PointCloud(stl_points()).export(root / "Points" / "stl" / f"stl{SCAN:03d}_total.ply")
    scipy.io.savemat(root / "ObsMask" / f"ObsMask{SCAN}_10.mat",
                     {"ObsMask": obs_mask, "BB": BB, "Res": np.array([[1.0]])})
    scipy.io.savemat(root / "ObsMask" / f"Plane{SCAN}.mat", {"P": np.array([[0.0], [0.0], [1.0], [1.0]])})


def obs_mask() -> np.ndarray:
    mask = np.ones((41, 41, 41), bool)                       # voxel i covers BB_min + i * Res
    mask[38, 38, 38] = False                                  # the voxel of (28, 28, 28)
    return mask


def run_eval_dtu(*args):
    return subprocess.run([sys.executable, "scripts/eval_dtu.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def eval_dtu_main():
    """scripts/eval_dtu.py's main(), imported in-process (no interpreter start per call)."""
    spec = importlib.util.spec_from_file_location("eval_dtu_script", ROOT / "scripts" / "eval_dtu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_eval_dtu_reproduces_hand_computed_result(tmp_path):
    write_dtu(tmp_path / "DTU", obs_mask())
    trimesh.PointCloud(pred_points()).export(tmp_path / "pred.ply")
    out = run_eval_dtu("--mesh", tmp_path / "pred.ply", "--scan", SCAN, "--dtu_root", tmp_path / "DTU",
                       "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    # by hand: 103 observed points (100 grid, the 3 mm, the 1 mm and the 30 mm ones); the 30 mm one dropped
    assert res["n_pred"] == 106 and res["n_pred_observed"] == 103
    assert res["accuracy"] == pytest.approx((100 * 0.5 + 3.0 + 1.0) / 102)
    assert res["accuracy_outliers"] == pytest.approx(1 / 103)
    # completeness: the 101 STL points above the plane; the grid ones are 0.5 mm away, the far one dropped
    assert res["n_stl"] == 102 and res["n_stl_above"] == 101
    assert res["completeness"] == pytest.approx(0.5) and res["completeness_outliers"] == pytest.approx(1 / 101)
    assert res["overall"] == pytest.approx((res["accuracy"] + res["completeness"]) / 2)
    assert json.loads((tmp_path / "r.json").read_text()) == res
    # the independent culling agrees on which points count
    data, above = ref_cull(pred_points(), stl_points(), obs_mask(), BB, 1.0, [0, 0, 1, 1], 60.0)
    assert len(data) == 103 and len(above) == 101
    assert observed(pred_points(), obs_mask(), BB, 1.0).sum() == 103


@pytest.mark.parametrize("missing", ["Points/stl/stl065_total.ply", "ObsMask/ObsMask65_10.mat",
                                     "ObsMask/Plane65.mat"])
def test_eval_dtu_names_the_missing_file(tmp_path, capsys, missing):
    write_dtu(tmp_path / "DTU", obs_mask())
    (tmp_path / "DTU" / missing).unlink()
    trimesh.PointCloud(pred_points()).export(tmp_path / "pred.ply")
    code = eval_dtu_main()(["--mesh", str(tmp_path / "pred.ply"), "--scan", str(SCAN),
                            "--dtu_root", str(tmp_path / "DTU")])
    out = capsys.readouterr()
    assert code == 1 and str(tmp_path / "DTU" / missing) in out.err and out.out == ""


def test_clean_mesh_keeps_what_every_view_sees(tiny_scene):
    from datasets.dtu import load_masks_and_cameras

    world_mats, _, masks = load_masks_and_cameras(tiny_scene, "gt/target_mask")
    target = trimesh.load(tiny_scene / "gt" / "target.ply", process=False)
    stray = trimesh.creation.icosphere(subdivisions=2, radius=4.0)
    stray.apply_translation(target.bounds.mean(axis=0) + [0.0, 0.0, 0.6 * np.ptp(target.bounds[:, 2]) + 12])
    cleaned = clean_mesh(trimesh.util.concatenate([target, stray]), world_mats, masks, dilate_px=2)
    assert len(cleaned.faces) >= 0.99 * len(target.faces)    # the target stays (its silhouette pixels)
    assert cleaned.vertices[:, 2].max() <= target.vertices[:, 2].max() + 1e-6   # the stray is gone
    assert len(clean_mesh(target, world_mats, np.zeros_like(masks), dilate_px=0).faces) == 0
