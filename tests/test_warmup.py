"""The first lifting round waits for the scene's geometry (NTO3DPipeline._settled): the warm-up grows
round_iters / 2 at a time while the prompt view's rendered depth still moves, up to warmup_max_iters."""
import torch

from tests.oracles import DegradedOracle
from tests.runs import make_run


def start(scene, exp, *overrides):
    r = make_run(scene, exp, *overrides, scene_only=False)
    r.pipeline._segmenter = DegradedOracle.from_scene(scene)
    return r.pipeline


def train_a_little(p):
    """Stands in for the iterations between two looks: the field (and its depth) moves."""
    with torch.no_grad():
        for prm in p.model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))


def test_an_unsettled_field_delays_the_first_round_up_to_the_cap(tiny_scene, tmp_path):
    p = start(tiny_scene, tmp_path, "nto3d.warmup_settle = 0.005", "nto3d.warmup_max_iters = 400")
    assert p.next_segment(0).until == 300                  # the prompt's mask, then the fixed warm-up
    assert p.next_segment(300).until == 350                # a first look at the depth: nothing to compare with
    train_a_little(p)
    assert p.next_segment(350).until == 400 and p.store.rounds_done == 0   # still moving
    assert p.next_segment(400).until == 500 and p.store.rounds_done == 1   # the cap: round 1 runs
    assert p.state_dict()["warmup_len"] == 400


def test_a_settled_field_starts_at_the_second_look_and_a_fixed_warmup_at_once(tiny_scene, tmp_path):
    p = start(tiny_scene, tmp_path / "a", "nto3d.warmup_settle = 0.005")
    p.next_segment(0)
    assert p.next_segment(300).until == 350
    assert p.next_segment(350).until == 450 and p.store.rounds_done == 1       # the depth did not move
    q = start(tiny_scene, tmp_path / "b", "nto3d.warmup_settle = 0")
    q.next_segment(0)
    assert q.next_segment(300).until == 400 and q.store.rounds_done == 1
