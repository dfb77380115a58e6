"""Lift-stage batches and losses: rays of accepted views come from around their masks, and a pseudo
mask's background pixels weigh instance_negative times its target pixels."""
import numpy as np
import torch

from datasets.dtu import DTUDataset
from systems.stages import INSTANCE, LiftStage, LossWeights, RaySampler, focus_boxes


def test_focus_boxes_grow_the_mask_box_and_cover_empty_views():
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 10:20, 30:40] = True                      # a 10 x 10 box at x 30..39, y 10..19
    boxes = focus_boxes(masks, 0.5)
    assert boxes[0].tolist() == [25, 5, 44, 24]        # 5 pixels (half the size) each side
    assert boxes[1].tolist() == [0, 0, 59, 39]         # no mask: the whole image
    assert focus_boxes(masks, 10.0)[0].tolist() == [0, 0, 59, 39]   # clipped to the image


def test_accepted_half_of_a_batch_samples_inside_the_focus_box(tiny_scene):
    ds = DTUDataset(tiny_scene)
    masks = np.zeros((ds.n_images, ds.H, ds.W), bool)
    masks[2, 20:30, 40:50] = True
    accepted = np.zeros(ds.n_images, bool)
    accepted[2] = True
    w = LossWeights(color=1.0, eikonal=0.1, mask=0.0, instance=0.1, instance_negative=3.0)
    stage = LiftStage(RaySampler(ds, 2000, torch.Generator().manual_seed(0)), w, torch.zeros(3), focus_margin=0.5)
    stage.set_masks(masks, accepted)
    batch = stage.batch()
    half = batch["view"][1000:], batch["pixel"][1000:]
    assert (half[0] == 2).all()
    u, v = half[1][:, 0], half[1][:, 1]
    assert u.min() >= 35 and u.max() <= 54 and v.min() >= 15 and v.max() <= 34
    assert u.max() - u.min() >= 15                     # spread over the box, not a corner
    inside = batch["instance_target"][1000:, 0]
    assert 0.1 < inside.float().mean() < 0.5           # the mask is a quarter of the focus box
    # the loss: a wrong "target" answer on a background pixel costs 3x a wrong answer on a target pixel
    t = torch.tensor([[1.0], [0.0]])
    out = {INSTANCE: torch.tensor([[0.2], [0.8]]), "color": torch.zeros(2, 3), "eikonal": torch.tensor(0.0)}
    b = {"instance_target": t, "instance_weight": torch.ones(2, 1), "rgb": torch.zeros(2, 3)}
    both = stage.losses(out, b)["instance"][1]
    out[INSTANCE] = torch.tensor([[0.2], [0.0]])
    only_pos = stage.losses(out, b)["instance"][1]
    bce = -np.log(0.2)
    assert np.isclose(float(both), (bce + 3 * bce) / 4, rtol=1e-3)   # weighted mean over the rays' weights
    assert float(only_pos) < float(both) / 3
