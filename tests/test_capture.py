"""Issue 18's capture rows on the CPU: JPEG views from the importer, the benchmark prompt (deepest point
of a mask), and bench/capture_rows.py's figures from a finished run folder (a sphere as its target
mesh inside imported lego views), plus its refusal of missing scenes."""
import argparse
import json
import time

import cv2
import numpy as np
import pytest
import trimesh

from bench.capture_prompt import deepest_point
from bench.capture_prompt import main as prompt_main
from bench.capture_rows import SHEET_WIDTH, figures, table
from bench.capture_rows import main as rows_main
from bench.lifting_suite import Job
from datasets.dtu import DTUDataset
from datasets.importers import SceneImportError, import_scene
from evaluation.silhouette import evaluate_silhouettes
from sam_utils.masks import mask_box
from sam_utils.prompts import load_prompt_file
from scripts.eval_silhouette import main as silhouette_main

QUIET = dict(log=lambda *a: None)
VIEWS = "0:100:20"                  # 5 lego views at 100x100


def _lego(shared_dir):
    src = shared_dir / "data" / "nerf_synthetic_lego"
    if not src.is_dir():
        pytest.skip(f"{src} not found (see ../shared/data/README.md)")
    return src


@pytest.fixture(scope="module")
def lego_pair(shared_dir, tmp_path_factory):
    """The same 5 lego views imported as PNG and as JPEG."""
    src, tmp = _lego(shared_dir), tmp_path_factory.mktemp("cap")
    png = import_scene(src, tmp / "lego_cap", views=VIEWS, downscale=8, **QUIET)
    jpg = import_scene(src, tmp / "lego_jpg", views=VIEWS, downscale=8, image_format="jpg", jpeg_quality=90,
                       **QUIET)
    return png, jpg


def test_jpeg_views_load_and_match_the_png_import(lego_pair):
    png, jpg = lego_pair
    assert sorted(p.name for p in (jpg.out / "image").iterdir()) == [f"{i:03d}.jpg" for i in range(5)]
    assert sorted(p.suffix for p in (jpg.out / "mask").iterdir()) == [".png"] * 5      # masks stay lossless
    a, b = DTUDataset(png.out), DTUDataset(jpg.out)
    assert (b.n_images, b.H, b.W) == (5, 100, 100)
    assert np.array_equal(a.masks.numpy(), b.masks.numpy())
    np.testing.assert_allclose(a.world_mats, b.world_mats)
    diff = np.abs(a.images.numpy().astype(float) - b.images.numpy().astype(float))
    assert 0 < diff.mean() < 3.0                       # lossy, but the same pictures
    size = {k: sum(p.stat().st_size for p in (r.out / "image").iterdir()) for k, r in (("png", png), ("jpg", jpg))}
    assert size["jpg"] < size["png"]


def test_bad_image_format_is_refused(shared_dir, tmp_path):
    for fmt, q in (("webp", 95), ("jpg", 0)):
        with pytest.raises(SceneImportError, match="--image-format"):
            import_scene(_lego(shared_dir), tmp_path / "x", image_format=fmt, jpeg_quality=q, **QUIET)
    assert not (tmp_path / "x").exists()


def test_deepest_point_is_farthest_from_the_border():
    """A C-shaped mask, whose centroid is off the mask: brute-force distances to the background and
    the image edge agree with the pick."""
    m = np.zeros((40, 60), bool)
    m[5:35, 5:50] = True
    m[12:28, 20:60] = False                            # the opening of the C reaches the right edge
    x, y = deepest_point(m)
    assert m[y, x]
    bg = np.argwhere(~np.pad(m, 1)) - 1                # background pixels incl. a ring outside the image
    inside = np.argwhere(m)
    depth = np.sqrt(((inside[:, None, :] - bg[None]) ** 2).sum(-1)).min(1)
    assert depth[np.flatnonzero((inside == [y, x]).all(1))[0]] == pytest.approx(depth.max())
    cy, cx = inside.mean(0)
    assert not m[round(cy), round(cx)]                # the centroid would have missed the object


def test_capture_prompt_from_mask_and_from_a_point(lego_pair, capsys):
    scene = lego_pair[0].out
    assert prompt_main([str(scene), "--from_mask"]) == 0
    p = load_prompt_file(scene / "prompt.json")
    mask = cv2.imread(str(scene / "mask" / "000.png"), cv2.IMREAD_GRAYSCALE) > 127
    (x, y), = p.points.astype(int)
    assert p.view == 0 and p.labels.tolist() == [1] and mask[y, x]
    assert p.box.tolist() == list(mask_box(mask))
    before = (scene / "prompt.json").read_text()
    assert prompt_main([str(scene), "--point", "150,20"]) == 2          # off the 100x100 image
    assert "outside the image" in capsys.readouterr().err
    assert (scene / "prompt.json").read_text() == before
    with pytest.raises(SystemExit, match="not found"):
        prompt_main([str(scene.parent / "nope"), "--from_mask"])


def test_capture_rows_refuses_missing_scenes(tmp_path):
    (tmp_path / "lego_cap" / "image").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        rows_main(["--data_root", str(tmp_path), "--out", str(tmp_path / "out")])
    msg = str(exc.value)
    assert "fox_cap not found" in msg and "lego_cap/prompt.json missing" in msg and "import_scene.py" in msg
    assert not (tmp_path / "out").exists()


def _finished_run(scene, exp_dir, radius):
    """A run folder as train.py leaves it: a target mesh (a sphere at the scene's centre), rounds, a log."""
    (exp_dir / "meshes").mkdir(parents=True)
    centre = np.array(json.loads((scene / "import_report.json").read_text())["sphere"]["centre"])
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    mesh.apply_translation(centre)
    mesh.export(exp_dir / "meshes" / "target.ply")
    for k in (0, 1):
        folder = exp_dir / "masks" / f"round_{k:02d}"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "contact_sheet.png"), np.full((900, 2400, 3), 128, np.uint8))
        (folder / "report.json").write_text(json.dumps({"round": k, "n_accepted": 4, "n_candidates": 4}))
    (exp_dir / "train.log").write_text("[lift] round 1: accepted 4/4\n"
                                       "[lift] lifted masks (level 2): IoU vs gt mean 0.912 worst 0.801; surface\n")
    return centre


def test_capture_rows_figures_of_a_finished_run(lego_pair, tmp_path):
    """Lifted IoU from the log (no checkpoint), silhouette IoU over 2 worker processes = 1 process,
    the photo | render PNG (the sphere drawn where it projects), a reduced contact sheet, the row."""
    scene = lego_pair[0].out
    radius = 0.5 * json.loads((scene / "import_report.json").read_text())["sphere"]["radius"]
    exp_dir, out = tmp_path / "exp" / scene.name, tmp_path / "out"
    out.mkdir()
    started = time.time() - 5
    centre = _finished_run(scene, exp_dir, radius)
    sil_json = exp_dir / "silhouette.json"
    assert silhouette_main(["--mesh", str(exp_dir / "meshes" / "target.ply"), "--scene", str(scene),
                            "--workers", "2", "--json", str(sil_json)]) == 0
    one = evaluate_silhouettes(exp_dir / "meshes" / "target.ply", scene)
    assert json.loads(sil_json.read_text())["per_view"] == one["per_view"] and 0 < one["mean_iou"] < 1
    job = Job("train", [], exp_dir / "train.log", rc=0, started=started, seconds=9.0,
              extra={"exp_dir": str(exp_dir)})
    sil = Job("silhouette", [], exp_dir / "silhouette.log", rc=0)
    args = argparse.Namespace(render_view=1, panel_height=480)
    r = figures(args, scene, job, sil, out)
    assert r["lift"] == {"mean": 0.912, "worst": 0.801, "source": "log"}
    assert r["silhouette_iou"]["mean"] == pytest.approx(one["mean_iou"])
    assert 0 < r["click_to_mesh_s"] < 60 and r["rounds"] == 1 and r["accepted"] == "4/4"
    pair = cv2.cvtColor(cv2.imread(r["render"]["path"]), cv2.COLOR_BGR2RGB)
    assert pair.shape == (100, 200, 3)                 # at most the image's own height
    photo = cv2.cvtColor(cv2.imread(str(scene / "image" / "001.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(pair[:, :100].astype(int) - photo).max() <= 1
    ds = DTUDataset(scene)
    u, v = np.rint(ds.project(centre[None], 1)[0]).astype(int)
    assert (pair[v, 100 + u] < 250).any() and (pair[0, 100:] == 255).all()   # sphere at its centre, white corner
    sheet = cv2.imread(r["contact_sheet_copy"])
    assert sheet.shape[1] == SHEET_WIDTH and r["contact_sheet"].endswith("round_01/contact_sheet.png")
    row = table({scene.name: r}).splitlines()[-1]
    assert row.startswith(f"| {scene.name} | 5 | 100x100 | 0.912 / 0.801 |") and "lego_cap_view1.png" in row
