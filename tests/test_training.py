"""End-to-end CPU training on a tiny generated scene: the mesh gets close to the ground truth,
checkpoints resume exactly, and train.py's command line works."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from evaluation.metrics import chamfer_files
from tests.conftest import ROOT
from tests.runs import make_run

EVAL_SPACING = 2.0   # mm between Chamfer surface samples (the scene is ~340 mm across)


def make_trainer(scene, exp_dir, *overrides, is_continue=False, device="cpu"):
    return make_run(scene, exp_dir, *overrides, is_continue=is_continue, device=device).trainer


def scene_chamfer(tr, scene) -> float:
    """Overall Chamfer, outliers clamped: most of an untrained mesh is >= 20 mm off on this tiny scene,
    and DTU's rule (dropping them) would hide exactly what this test measures."""
    path = tr.pipeline.write_mesh(tr.iteration)
    return chamfer_files(path, scene / "gt" / "scene_visible.ply", scene / "gt" / "scene.ply", EVAL_SPACING,
                         outliers="clamp")["overall"]


@pytest.fixture(scope="module")
def trained(tiny_scene, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp")
    tr = make_trainer(tiny_scene, exp, "train.max_iters = 400")
    untrained = scene_chamfer(tr, tiny_scene)
    tr.fit()
    return tr, untrained, scene_chamfer(tr, tiny_scene)


def test_training_brings_the_mesh_close_to_ground_truth(trained):
    """Chamfer (mm, clamped at 20 mm) after 400 CPU iterations is below a bound the untrained sphere fails.

    Measured: untrained 17.7, trained 13.6 on this 8-view 96x72 scene. Most of the remaining error
    is surface left under the table, which no camera sees (accuracy is not cropped to observed
    space yet); on the GPU at 49 views 800x600 the same code reaches 0.6 mm (bench/RESULTS.md).
    """
    _, untrained, after = trained
    bound = 15.5
    assert untrained > bound, f"the untrained SDF should fail the bound (got {untrained:.1f} mm)"
    assert after < bound, f"trained Chamfer {after:.1f} mm, expected < {bound} mm"
    assert after < 0.85 * untrained


def test_outputs_on_disk(trained):
    tr, _, _ = trained
    assert (tr.exp_dir / "config.conf").is_file()
    assert list((tr.exp_dir / "checkpoints").glob("ckpt_*.pth"))
    assert not list((tr.exp_dir / "checkpoints").glob("*.tmp"))
    mesh_json = json.loads(sorted((tr.exp_dir / "meshes").glob("scene_*.json"))[-1].read_text())
    assert {"accuracy", "completeness", "overall"} <= set(mesh_json)
    img = tr.pipeline.validate_image(tr.iteration, view=1)
    assert img.is_file()


def test_resume_reproduces_uninterrupted_training(tiny_scene, tmp_path):
    """20 + 20 iterations through a checkpoint equal 40 in one go (networks, optimiser and RNG restored)."""
    straight = make_trainer(tiny_scene, tmp_path / "a", "train.max_iters = 40")
    straight.fit()
    part = make_trainer(tiny_scene, tmp_path / "b", "train.max_iters = 20")
    part.fit()
    resumed = make_trainer(tiny_scene, tmp_path / "b", "train.max_iters = 40", is_continue=True)
    assert resumed.iteration == 20
    resumed.fit()
    for (name, p), q in zip(straight.pipeline.model.state_dict().items(), resumed.pipeline.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), f"{name} differs after resume"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: checkpoints loaded onto the GPU")
def test_resume_on_cuda(tiny_scene, tmp_path):
    """--is_continue on the GPU: the checkpoint is loaded with map_location=cuda, which moves the saved
    RNG states onto the GPU; restoring them must still work and training must go on."""
    make_trainer(tiny_scene, tmp_path, "train.max_iters = 10", device="cuda").fit()
    resumed = make_trainer(tiny_scene, tmp_path, "train.max_iters = 20", is_continue=True, device="cuda")
    assert resumed.iteration == 10
    resumed.fit()
    assert resumed.iteration == 20


def test_continue_without_checkpoint_is_a_clear_error(tiny_scene, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        make_trainer(tiny_scene, tmp_path / "none", is_continue=True)


def test_cli_validate_mesh(trained, tmp_path):
    """python train.py --mode validate_mesh --is_continue writes a world-space mesh from the checkpoint."""
    tr, _, _ = trained
    scene = tr.pipeline.dataset.data_dir
    cmd = [sys.executable, "train.py", "--conf", "confs/tiny.conf", "--case", "t", "--mode", "validate_mesh",
           "--is_continue", "--mcube_resolution", "48",
           "--override", f'dataset.data_dir = "{scene}"', "--override", f'general.base_exp_dir = "{tr.exp_dir}"',
           "--override", "nto3d.enabled = false"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[resume]" in out.stdout and "[mesh] scene" in out.stdout
    import trimesh
    mesh = trimesh.load(tr.exp_dir / "meshes" / "scene.ply")
    radius = tr.pipeline.dataset.scale_mat[0, 0]
    centre = tr.pipeline.dataset.scale_mat[:3, 3]
    assert np.linalg.norm(mesh.vertices - centre, axis=1).max() <= radius * 1.01  # world units, in the sphere
