"""Click propagation (systems/propagation.py), the baseline without lifting, on a small `occluded` scene
with exact geometry (the renders' first-hit points as the depth source) and ground-truth segmenters."""
import json

import numpy as np
import pytest
import torch

from datasets.dtu import DTUDataset
from datasets.sphere_tracer import render_view
from datasets.synthetic import make_scene
from datasets.synthetic_cameras import Camera
from datasets.synthetic_presets import build_preset
from sam_utils.masks import mask_box, mask_iou
from sam_utils.prompts import load_prompt_file
from systems.propagation import Surfaces, back_project, click_propagation, propagate_prompts, render_surfaces, visible_in
from tests.oracles import ObjectOracle, PartOracle

N_VIEWS, W, H = 10, 112, 84
MIN_TARGET_PX = 30           # views with fewer target pixels do not count as seeing the target


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Scene folder, its dataset, exact Surfaces, renders and gt target masks."""
    out = make_scene("occluded", tmp_path_factory.mktemp("prop") / "occluded", n_views=N_VIEWS, width=W, height=H,
                     gt_resolution=32)
    meta = json.loads((out / "scene.json").read_text())
    sc, _ = build_preset("occluded", meta["seed"])
    cams = np.load(out / "cameras_sphere.npz")
    renders = [render_view(sc, Camera.from_world_mat(cams[f"world_mat_{i}"]), W, H, meta["sphere_center"],
                           meta["sphere_radius"], "cpu") for i in range(N_VIEWS)]
    ds = DTUDataset(out)
    points = np.stack([ds.to_unit(r.points.astype(np.float64)) for r in renders]).astype(np.float32)
    surfaces = Surfaces(points, np.stack([r.hit for r in renders]), level=1)
    gt = np.stack([r.object_id == sc.target_index for r in renders])
    return dict(out=out, ds=ds, surfaces=surfaces, renders=renders, gt=gt, prompt=load_prompt_file(out / "prompt.json"))


def _on_target(prompt, gt):
    rows, cols = np.round(prompt.points[:, 1]).astype(int), np.round(prompt.points[:, 0]).astype(int)
    return gt[rows, cols][prompt.labels == 1]


def test_propagated_prompts_land_on_the_target_where_it_is_seen(scene):
    gt, ds = scene["gt"], scene["ds"]
    prompts = propagate_prompts(ds, scene["surfaces"], scene["prompt"], gt[0])
    seeing = [v for v in range(1, N_VIEWS) if gt[v].sum() >= MIN_TARGET_PX]
    assert len(prompts) >= 0.8 * len(seeing) and 0 not in prompts
    for v, p in prompts.items():
        assert p.n_positive >= 1 and _on_target(p, gt[v]).all(), v
        x0, y0, x1, y1 = mask_box(gt[v])
        slack = 0.1 * max(x1 - x0, y1 - y0) + 2                      # the box grows by 5% of its size
        assert p.box[0] >= x0 - slack and p.box[1] >= y0 - slack and p.box[2] <= x1 + slack and p.box[3] <= y1 + slack
    # without the depth test, points the prompt view sees but another view does not (hidden by the can
    # or behind the snowman) are projected anyway and some positives land on other objects
    loose = propagate_prompts(ds, scene["surfaces"], scene["prompt"], gt[0], depth_tol=1e9)
    assert not all(_on_target(p, gt[v]).all() for v, p in loose.items())


def test_click_propagation_with_a_perfect_segmenter_gets_most_of_the_target(scene):
    gt = scene["gt"]
    oracle = ObjectOracle([r.object_id for r in scene["renders"]])
    masks = click_propagation(None, scene["ds"], scene["prompt"], gt[0], oracle, 1, 0, surfaces=scene["surfaces"],
                              images=[r.rgb for r in scene["renders"]])
    ious = np.array([mask_iou(m, g) for m, g in zip(masks, gt)])
    assert masks.shape == gt.shape and ious[0] == 1.0
    assert ious.mean() >= 0.8 and np.median(ious) >= 0.85, ious.round(3)
    # the box around what the prompt view saw clips the target in views that see other sides of it
    assert ious.min() < 0.95


def test_click_propagation_hands_back_what_an_ambiguous_segmenter_says(scene):
    """The baseline has no vote: a segmenter answering with a part in some views is taken as it is."""
    gt = scene["gt"]
    half = [g & (np.arange(W)[None, :] < np.median(np.nonzero(g)[1])) for g in gt]   # a consistent "part"
    oracle = PartOracle(list(gt), half, part_views=[1, 3, 5])
    masks = click_propagation(None, scene["ds"], scene["prompt"], gt[0], oracle, 1, 0, surfaces=scene["surfaces"],
                              images=[r.rgb for r in scene["renders"]])
    for v in (1, 3, 5):
        assert np.array_equal(masks[v], half[v])
    assert oracle.kind(0) == "whole" and np.array_equal(masks[0], gt[0])


class SphereField:
    """Stands in for a trained model: the renderer sees a sphere of radius R at the origin (unit coords)."""

    R = 0.4

    def __init__(self):
        self.renderer = self

    def eval(self):
        pass

    def train(self):
        pass

    def render_heads(self, o, d, near, far, heads):
        b = (o * d).sum(-1, keepdim=True)
        disc = b * b - ((o * o).sum(-1, keepdim=True) - self.R ** 2)
        t = -b - torch.sqrt(disc.clamp(min=0.0))
        return {"depth": torch.where(disc > 0, t, far), "opacity": (disc > 0).float()}


def test_render_surfaces_puts_rendered_depth_on_the_surface_and_back_on_its_pixels(scene):
    ds = scene["ds"]
    surf = render_surfaces(SphereField(), ds, level=2, chunk=1000)
    assert surf.points.shape == (N_VIEWS, H // 2, W // 2, 3) and 0.02 < surf.hit.mean() < 0.9
    radius = np.linalg.norm(surf.points[surf.hit], axis=-1)
    assert np.allclose(radius, SphereField.R, atol=1e-4)
    full = np.ones((H, W), bool)
    for v in (0, 5):
        pts = back_project(ds, surf, v, mask=full)
        assert len(pts) == surf.hit[v].sum()
        uv, seen = visible_in(ds, surf, pts, v)
        assert seen.all()                               # every point is seen by its own view, on its own pixel
        rows, cols = np.nonzero(surf.hit[v])
        assert np.allclose(uv, np.c_[(cols + 0.5) * 2 - 0.5, (rows + 0.5) * 2 - 0.5], atol=1e-3)
        far_side = -pts                                 # the antipodes: behind the sphere from this view
        assert not visible_in(ds, surf, far_side, v)[1].any()
