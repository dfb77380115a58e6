"""The whole NTO3D run on a tiny scene with a ground-truth-backed segmenter: rounds on disk, a target
mesh closer to the target than the scene mesh is, and resume of the SAM stages. (The CPU field is
too coarse for the acceptance test to pass views here; lifting quality is measured on the GPU.)"""
import json

import cv2
import numpy as np
import pytest
import torch

from evaluation.metrics import chamfer_files
from sam_utils.segmenter import SegResult, Segmenter
from systems.config import Conf
from systems.trainer import Trainer
from tests.conftest import ROOT


class GroundTruthSegmenter(Segmenter):
    """Answers every prompt with the view's ground-truth target mask (a perfect segmenter)."""

    name = "ground-truth"

    def __init__(self, scene):
        files = sorted((scene / "gt" / "target_mask").glob("*.png"))
        self.masks = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127 for f in files]

    def predict(self, view, image, prompt, mask_input=None):
        return SegResult(self.masks[view].copy(), 1.0, None)


def make(scene, exp, *overrides, is_continue=False):
    lines = [f'dataset.data_dir = "{scene}"', f'general.base_exp_dir = "{exp}"', "nto3d.lifting.max_rounds = 2",
             "nto3d.lifting.accept_iou = 0.5",  # the tiny CPU field projects coarsely; the segmenter is perfect
             *overrides]
    conf = Conf.from_file(ROOT / "confs" / "tiny.conf", case="t", overrides="\n".join(lines))
    tr = Trainer(conf, torch.device("cpu"), is_continue=is_continue)
    tr.pipeline._segmenter = GroundTruthSegmenter(scene)
    return tr


@pytest.fixture(scope="module")
def run(tiny_scene, tmp_path_factory):
    tr = make(tiny_scene, tmp_path_factory.mktemp("nto3d"))
    tr.train()
    return tr


def test_rounds_are_recorded(run):
    masks = run.exp_dir / "masks"
    assert (masks / "round_00" / "contact_sheet.png").is_file()          # the prompt's own mask
    reports = [json.loads((masks / f"round_{r:02d}" / "report.json").read_text()) for r in (1, 2)]
    assert [r["round"] for r in reports] == [1, 2]
    assert all("iou_gt_lifted" in v for v in reports[-1]["views"].values())
    assert run.pipeline.phase == "done"
    timings = json.loads((run.exp_dir / "timings.json").read_text())
    assert {"lift_train", "projection", "segmenter", "target_train"} <= set(timings)


def test_target_mesh_is_the_target(run, tiny_scene):
    """target.ply is closer to gt/target.ply than the full-scene mesh is (the table and distractors are gone)."""
    meshes = run.exp_dir / "meshes"
    target_path = run.validate_mesh(resolution=64)
    assert target_path.name.startswith("target_")
    gt = tiny_scene / "gt"
    to_target = chamfer_files(target_path, gt / "target_visible.ply", gt / "target.ply", 2.0)["overall"]
    scene_to_target = chamfer_files(meshes / "scene.ply", gt / "target_visible.ply", gt / "target.ply", 2.0)["overall"]
    # measured on CPU: 12.5 mm vs 17.0 mm (ratio 0.73); the GPU rows of bench/RESULTS.md measure quality
    assert to_target < 0.8 * scene_to_target


def test_resume_keeps_the_lifting_state(run, tiny_scene):
    again = make(tiny_scene, run.exp_dir, is_continue=True)
    assert again.pipeline.phase == "done"
    assert np.array_equal(again.pipeline.store.masks, run.pipeline.store.masks)
    assert np.array_equal(again.pipeline.final, run.pipeline.final)
