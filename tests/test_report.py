"""report.html: built for a run folder made with the lifting code itself (rounds from a degraded
ground-truth segmenter on a tiny synthetic scene, the true target mesh as the run's mesh), it embeds
the prompt view, the per-round plots, contact sheets and mesh renders as real, non-blank images."""
import base64
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from evaluation.mesh_render import camera_from_world_mat, render_mesh
from evaluation.metrics import chamfer_files
from evaluation.report import write_report
from sam_utils.lifting import MaskStore, SegmenterTrust, run_round, save_round
from sam_utils.prompts import load_prompt_file
from systems.outputs import silhouette_check
from systems.progress import ProgressLog
from tests.oracles import DegradedOracle, lifting_settings

TRUST = SegmenterTrust(accept_iou=0.5, min_recall=0.7, negative_weight=1.0)
SETTINGS = lifting_settings(TRUST, converge_eps=0.01, max_rounds=3, n_negative=2, cascade=False)


@pytest.fixture(scope="module")
def run_dir(tiny_scene, tmp_path_factory):
    exp = tmp_path_factory.mktemp("run")
    read = lambda d: np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127  # noqa: E731
                               for f in sorted((tiny_scene / d).glob("*.png"))])
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in sorted((tiny_scene / "image").glob("*.png"))]
    gt = read("gt/target_mask")
    seg = DegradedOracle.from_scene(tiny_scene)
    prompt = load_prompt_file(tiny_scene / "prompt.json")
    store = MaskStore(*gt.shape)
    store.set_prompt_mask(prompt.view, seg.predict(prompt.view, images[prompt.view], prompt).mask)
    log = ProgressLog(exp)
    report0 = {"round": 0, "prompt": prompt.to_dict(), "source": "prompt.json", "mask_pixels": int(store.masks[0].sum())}
    folder = save_round(exp / "masks", store, report0, images, store.masks.astype(np.float32), 0.5)
    log.round(report0, folder / "contact_sheet.png", len(images))
    for r in range(2):   # "projections": the ground truth, blurred more in the first round
        proj = np.stack([cv2.GaussianBlur(g.astype(np.float32), (0, 0), 3.0 - r) for g in gt])
        rep = run_round(store, proj, images, seg, SETTINGS, TRUST, prompt.view, seed=r, gt_masks=gt)
        folder = save_round(exp / "masks", store, rep, images, proj, 0.5)
        log.round(rep, folder / "contact_sheet.png", len(images))
    for it in range(0, 200, 10):
        log.step(it, 1.0 / (1 + it))
    log.done()
    (exp / "timings.json").write_text(json.dumps({"initial_mask": 0.1, "lift_train": 12.0, "projection": 3.0,
                                                  "segmenter": 1.5, "target_train": 20.0}))
    (exp / "meshes").mkdir()
    shutil.copy(tiny_scene / "gt" / "target.ply", exp / "meshes" / "target.ply")
    metrics = chamfer_files(exp / "meshes" / "target.ply", tiny_scene / "gt" / "target_visible.ply",
                            tiny_scene / "gt" / "target.ply", 2.0)
    (exp / "meshes" / "target_00000200.json").write_text(json.dumps(metrics))
    return exp


def _images(page: str) -> dict[str, np.ndarray]:
    out = {}
    for ident, data in re.findall(r'<img id="([^"]+)" src="data:image/\w+;base64,([^"]+)"', page):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None, f"{ident} does not decode"
        out[ident] = img
    return out


def test_report_embeds_plots_sheets_and_renders(run_dir, tiny_scene):
    path = write_report(run_dir, tiny_scene)
    assert path == run_dir / "report.html" and path.is_file()
    page = path.read_text()
    assert "src=\"http" not in page and "<link" not in page        # self-contained
    imgs = _images(page)
    want = {"img-prompt", "img-iou", "img-agreement", "img-accepted", "img-timings", "img-loss",
            "img-sheet-00", "img-sheet-01", "img-sheet-02", "img-render-0"}
    assert want <= set(imgs), sorted(want - set(imgs))
    for ident, img in imgs.items():
        assert min(img.shape[:2]) >= 60, (ident, img.shape)
        assert img.reshape(-1, 3).std(0).max() > 10, f"{ident} is (nearly) blank"
    assert len([k for k in imgs if k.startswith("img-render-")]) >= 2
    metrics = json.loads((run_dir / "meshes" / "target_00000200.json").read_text())
    assert f"{metrics['overall']:.4g}" in page                           # the Chamfer table
    assert "<td>2</td>" in page or "rounds" in page


def test_mesh_render_matches_the_scene_mask(tiny_scene):
    """The rasteriser draws the true target mesh where the scene's own renderer saw the target:
    rendered silhouette vs gt/target_mask of view 0 (the masks include occlusion by other objects,
    which the lone mesh does not have, so IoU is high but below 1)."""
    import trimesh

    mesh = trimesh.load(tiny_scene / "gt" / "target.ply", force="mesh")
    K, R, t = camera_from_world_mat(np.load(tiny_scene / "cameras_sphere.npz")["world_mat_0"])
    gt = cv2.imread(str(tiny_scene / "gt" / "target_mask" / "000.png"), cv2.IMREAD_GRAYSCALE) > 127
    rgb, mask = render_mesh(mesh, K, R, t, *gt.shape)
    inter, union = (mask & gt).sum(), (mask | gt).sum()
    assert inter / union > 0.85, f"IoU {inter / union:.3f}"
    assert (gt & ~mask).sum() < 0.1 * gt.sum()             # nearly every target pixel is drawn (occlusion only removes)
    shade = rgb[mask].astype(float).mean(1)
    assert shade.std() > 5                                               # shaded, not flat


def test_report_shows_the_runs_silhouette_check(run_dir, tiny_scene, tmp_path):
    """Where the run kept a silhouette check of its target mesh (systems.outputs.silhouette_check), the report
    shows its mean and worst view and the sheet; without one, no such section."""
    exp = tmp_path / "run"
    shutil.copytree(run_dir, exp)
    assert "Silhouette check" not in write_report(exp, tiny_scene).read_text()
    kept = silhouette_check(exp / "meshes" / "target.ply", tiny_scene, "gt/target_mask")
    page = write_report(exp, tiny_scene).read_text()
    worst = int(np.argmin(kept["per_view"]))
    assert f"mean IoU {kept['mean']:.4f} over 8 views; worst view {worst}: {kept['per_view'][worst]:.4f}" in page
    assert kept["mean"] > 0.85                                  # the true target mesh (masks hold occlusion)
    assert _images(page)["img-silhouette"].shape[1] == 3 * 240  # 8 views: rows of 3 tiles
