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


def _lift_stage(scene, batch_rays: int, masked, accepted, mask_weight: float):
    """A LiftStage on `scene` whose views `masked` hold a 10 x 10 mask, the views `accepted` accepted."""
    ds = DTUDataset(scene)
    masks = np.zeros((ds.n_images, ds.H, ds.W), bool)
    masks[masked, 20:30, 40:50] = True
    ok = np.zeros(ds.n_images, bool)
    ok[accepted] = True
    w = LossWeights(color=1.0, eikonal=0.1, mask=mask_weight, instance=0.1, instance_negative=3.0)
    stage = LiftStage(RaySampler(ds, batch_rays, torch.Generator().manual_seed(0)), w, torch.zeros(3),
                      focus_margin=0.5)
    stage.set_masks(masks, ok)
    return ds, stage, masks


def test_accepted_half_of_a_batch_samples_inside_the_focus_box(tiny_scene):
    ds, stage, _ = _lift_stage(tiny_scene, 2000, masked=[2], accepted=[2], mask_weight=0.0)
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


def test_a_focused_ray_weighs_the_accepted_share_in_the_scene_losses(tiny_scene):
    """Before the first round the focused half is all the prompt view's: its colours must not weigh
    N times those of any other view (a floater in front of the prompt view's surface fits them)."""
    ds, stage, masks = _lift_stage(tiny_scene, 200, masked=slice(None), accepted=[0], mask_weight=0.5)
    batch = stage.batch()
    batch.setdefault("mask", torch.ones(200, 1))
    assert (batch["view"][100:] == 0).all() and (batch["view"][:100] != 0).any()
    out = {INSTANCE: torch.full((200, 1), 0.5), "color": batch["rgb"].clone(), "eikonal": torch.tensor(0.0),
           "opacity": batch["mask"].clone()}
    n = ds.n_images

    def colour_error(rows: slice) -> tuple[float, float]:
        """(colour loss, summed per-ray error) with the rays `rows` rendered wrong."""
        bad = dict(out, color=out["color"].clone())
        bad["color"][rows] = 1.0 - bad["color"][rows]
        per_ray = (bad["color"] - batch["rgb"]).abs().mean(-1)
        return float(stage.losses(bad, batch)["color"][1]), float(per_ray[rows].sum())

    loss, err = colour_error(slice(100, 200))            # every focused ray wrong: weighs 1/N
    assert np.isclose(loss, err / n / (100 + 100 / n), rtol=1e-4)
    loss, err = colour_error(slice(0, 100))              # every uniform ray wrong: full weight
    assert np.isclose(loss, err / (100 + 100 / n), rtol=1e-4)
    # every view accepted: the focused rays weigh as much as the uniform ones (a plain mean)
    stage.set_masks(masks, np.ones(n, bool))
    batch = stage.batch()
    assert torch.equal(batch["scene_weight"], torch.ones(200, 1))
