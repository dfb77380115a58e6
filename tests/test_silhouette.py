"""Silhouette check (evaluation/silhouette.py, scripts/eval_silhouette.py): rasteriser rules and the
ground-truth target mesh of a synthetic scene against its gt/target_mask."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from datasets.dtu import DatasetError
from datasets.synthetic import make_scene
from evaluation.silhouette import check_paths, evaluate_silhouettes, rasterize, silhouette
from systems.outputs import silhouette_check

ROOT = Path(__file__).resolve().parents[1]
# The renderer's masks count a ray as a hit within a fraction of a pixel of the surface, so they are
# up to half a pixel wider at the outline than a pixel-centre rasterisation: at 240x180 (a target of
# ~1900 pixels) that costs under 1 % IoU, hence 0.99 for "IoU 1".
EDGE_IOU = 0.99


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene("easy", tmp_path_factory.mktemp("sil") / "easy", n_views=4, width=240, height=180,
                      seed=0, gt_resolution=192)


def scaled(mesh: trimesh.Trimesh, factor: float) -> trimesh.Trimesh:
    centre = mesh.vertices.mean(axis=0)
    return trimesh.Trimesh(centre + factor * (mesh.vertices - centre), mesh.faces, process=False)


def test_rasterize_covers_pixel_centres():
    # a square from 0.5 to 4.5 (two triangles, either winding): pixel centres 1..4 -> 16 pixels
    uv = np.array([[0.5, 0.5], [4.5, 0.5], [4.5, 4.5], [0.5, 4.5]])
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]]):
        img = rasterize(uv, np.array(faces), 8, 8)
        assert img.sum() == 16 and img[1:5, 1:5].all()
    # centres on an edge count; a triangle off the image or degenerate adds nothing
    img = rasterize(np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 3.0], [20, 20], [30, 20], [20, 30]]),
                    np.array([[0, 1, 2], [3, 4, 5], [0, 0, 1]]), 8, 8)
    assert img.sum() == 6 and img[1, 1] and img[1, 3] and img[3, 1] and not img[3, 3]


def test_triangles_behind_the_camera_are_skipped():
    world_mat = np.eye(4)
    world_mat[:3, :3] = [[10, 0, 5], [0, 10, 5], [0, 0, 1]]              # K, camera at the origin
    tri = trimesh.Trimesh([[-1, -1, 2], [1, -1, 2], [0, 1, 2]], [[0, 1, 2]], process=False)
    assert silhouette(tri, world_mat, 11, 11).sum() > 10
    behind = trimesh.Trimesh(tri.vertices * [1, 1, -1], tri.faces, process=False)
    assert silhouette(behind, world_mat, 11, 11).sum() == 0


def test_gt_target_mesh_matches_its_masks(scene):
    res = evaluate_silhouettes(scene / "gt" / "target.ply", scene, "gt/target_mask")
    assert len(res["per_view"]) == 4 and min(res["per_view"]) >= EDGE_IOU
    assert res["mean_iou"] == pytest.approx(np.mean(res["per_view"]))
    # the whole scene's mesh explains the any-surface masks too
    assert evaluate_silhouettes(scene / "gt" / "scene.ply", scene)["mean_iou"] >= EDGE_IOU


def tinted(sheet: np.ndarray) -> tuple[int, int]:
    """Pixels of a silhouette sheet (RGB) tinted red (mesh only) and blue (mask only)."""
    r, g, b = (sheet[..., k].astype(int) for k in range(3))
    return int(((r > g + 60) & (r > b + 60)).sum()), int(((b > g + 40) & (b > r + 60)).sum())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_shrunk_or_grown_mesh_scores_lower(scene, tmp_path, factor):
    gt = evaluate_silhouettes(scene / "gt" / "target.ply", scene, "gt/target_mask", sheet=True)
    scaled(trimesh.load(scene / "gt" / "target.ply", process=False), factor).export(tmp_path / "m.ply")
    res = evaluate_silhouettes(tmp_path / "m.ply", scene, "gt/target_mask", sheet=True)
    assert all(r < g - 0.05 for r, g in zip(res["per_view"], gt["per_view"]))
    assert res["mean_iou"] < 0.9
    # the sheet shows what is wrong: a shrunk mesh leaves mask-only (blue) pixels, a grown one mesh-only (red)
    (red0, blue0), (red, blue) = tinted(gt["sheet"]), tinted(res["sheet"])
    missing, extra = (blue - blue0, red - red0) if factor < 1 else (red - red0, blue - blue0)
    assert missing > 400 and extra < missing / 10, (red0, blue0, red, blue)


def test_a_runs_check_is_kept_beside_the_mesh_and_read_back_while_the_mesh_is_unchanged(scene, tmp_path):
    """systems.outputs.silhouette_check: the figures and the sheet beside the mesh; read back while the mesh
    is not newer and the mask folder is the same, computed again otherwise (a shrunk mesh scores lower)."""
    mesh = tmp_path / "target.ply"
    shutil.copy(scene / "gt" / "target.ply", mesh)
    first = silhouette_check(mesh, scene, "gt/target_mask")
    json_path, sheet_path = check_paths(mesh)
    kept = json.loads(json_path.read_text())
    assert kept["per_view"] == first["per_view"] and kept["mean_iou"] == first["mean"]
    assert first["mask_dir"] == "gt/target_mask" and first["sheet"] == sheet_path
    assert cv2.imread(str(sheet_path)).shape == (2 * 180, 2 * 240, 3)      # 4 views, 2 x 2 tiles
    json_path.write_text(json.dumps({**kept, "mean_iou": 0.123}))          # a kept figure is read, not recomputed
    assert silhouette_check(mesh, scene, "gt/target_mask")["mean"] == 0.123
    scaled(trimesh.load(mesh, process=False), 0.8).export(mesh)
    later = json_path.stat().st_mtime + 5
    os.utime(mesh, (later, later))                                         # a newer mesh: computed again
    shrunk = silhouette_check(mesh, scene, "gt/target_mask")["mean"]
    assert 0.123 < shrunk < first["mean"] - 0.1
    whole = silhouette_check(mesh, scene, "mask")                          # other masks: computed again
    assert whole["mask_dir"] == "mask" and whole["mean"] < shrunk      # the scene's masks hold far more


def test_eval_silhouette_cli(scene, tmp_path):
    out = subprocess.run([sys.executable, "scripts/eval_silhouette.py", "--mesh", scene / "gt" / "target.ply",
                          "--scene", scene, "--mask_dir", "gt/target_mask", "--json", tmp_path / "s.json",
                          "--sheet", tmp_path / "sheet.png"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "s.json").read_text())
    assert set(res) == {"mean_iou", "per_view"} and len(res["per_view"]) == 4
    assert f"mean IoU {res['mean_iou']:.4f} over 4 views" in out.stdout
    assert cv2.imread(str(tmp_path / "sheet.png")).shape == (2 * 180, 2 * 240, 3)      # 4 views, 2 x 2 tiles
    with pytest.raises(DatasetError, match="no_such_dir"):
        evaluate_silhouettes(scene / "gt" / "target.ply", scene, "no_such_dir")
