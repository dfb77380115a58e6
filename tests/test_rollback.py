"""A lifting round whose field spills further past the prompt view's mask than the best round's did (the
other views voting in surface the prompt view shows as background) is rolled back: the field and the
labels go back to that round's and lifting ends. The rounds' projections are scripted here; the
pipeline, its field and the segmenter are real (tiny scene, the degraded oracle)."""
import json

import cv2
import numpy as np
import torch

from evaluation.report import write_report
from systems.nto3d import Lifted
from tests.oracles import DegradedOracle
from tests.runs import make_run


def lifting_run(scene, exp, max_rounds):
    r = make_run(scene, exp, f"nto3d.lifting.max_rounds = {max_rounds}", "train.save_every = 0", scene_only=False)
    r.pipeline._segmenter = DegradedOracle.from_scene(scene)
    return r


def grown(mask: np.ndarray, px: int) -> np.ndarray:
    """mask dilated by px pixels (eroded for px < 0)."""
    op = cv2.dilate if px >= 0 else cv2.erode
    return op(mask.astype(np.uint8), np.ones((2 * abs(px) + 1, 2 * abs(px) + 1), np.uint8)) > 0


def script(p, rounds: dict):
    """Make p._lifted return rounds[k](p) as round k's projection (k = the round about to run, or after
    the last one), the prompt view's carried target empty."""
    def lifted(level, judged=False):
        proj = rounds[min(p.store.rounds_done + 1, max(rounds))](p).astype(np.float32)
        return Lifted(proj, proj, np.zeros(proj.shape, bool), None)
    p._lifted = lifted


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def drive(p, rounds: int):
    """Call next_segment as the trainer would, without training, until the lifting phase ends (or
    `rounds` segments have passed); returns the model's tensors as each call found them: [k] is the
    field that round k's projection came from (k >= 1)."""
    it, after = 0, []
    for _ in range(rounds + 2):
        seg = p.next_segment(it)
        if p.phase != "lift":
            return after
        after.append(params(p.model))
        with torch.no_grad():                     # stands for the segment's training: the field moves
            for t in p.model.parameters():
                t.add_(0.01)
        it = seg.until
    return after


def test_a_round_that_spills_past_the_prompt_views_mask_is_rolled_back(tiny_scene, tmp_path):
    r = lifting_run(tiny_scene, tmp_path, max_rounds=4)
    p = r.pipeline
    pv = 0
    prompt = lambda p, px=0: grown(p.store.masks[pv], px)[None] if px else p.store.masks[pv:pv + 1]  # noqa: E731
    # round 1: the field knows the prompt view only; 2 and 3: it agrees with the prompt (the other
    # views change: no convergence); 4: it has grown past the prompt view's mask there
    rounds = {1: lambda p: np.concatenate([prompt(p), np.zeros_like(p.gt[1:])]),
              2: lambda p: np.concatenate([prompt(p), p.gt[1:]]),
              3: lambda p: np.concatenate([prompt(p), np.stack([grown(m, 2) for m in p.gt[1:]])]),
              4: lambda p: np.concatenate([prompt(p, 3), p.gt[1:]])}
    script(p, rounds)
    after = drive(p, 6)
    assert p.phase == "target" and p.store.rounds_done == 3         # round 4 never ran
    rb = p.rolled_back
    assert rb["round"] == 4 and rb["to_round"] == 2 and rb["best_spill"] == 0.0
    assert rb["spill"] > p.n.lifting.rollback_spill
    # the field is the one round 2 was judged on, not round 3's
    state = p.model.state_dict()
    assert all(torch.equal(state[k], after[2][k]) for k in state)
    assert not all(torch.equal(state[k], after[3][k]) for k in state)
    # the labels are those the round-2 field was trained on: the prompt view and round 1's answers
    assert set(p.store.round_of[p.store.accepted].tolist()) <= {0, 1}
    final = p.store.history[-1]
    assert final["final"] and final["rolled_back"] == rb and p.best is None
    # said in the log, masks/final.json and the run's report
    on_disk = json.loads((r.exp_dir / "masks" / "final.json").read_text())
    assert on_disk["rolled_back"]["to_round"] == 2 and "rolled back to round 2" in on_disk["warnings"][0]
    page = write_report(r.exp_dir, n_renders=0).read_text()
    assert "<h2>Warnings</h2>" in page and "rolled back to round 2" in page and "rolled_back_to_round" in page


def test_the_training_after_the_last_round_is_judged_too(tiny_scene, tmp_path):
    """max_rounds reached without convergence: the field the lifting ends on is judged as a round's
    would be; one that spills no further keeps it, and so does one that sheds a rim of the prompt's mask
    (px < 0: a segmenter's mask that took in a neighbour is shed that way, and the agreement falls)."""
    for px, rolled in ((3, True), (0, False), (-3, False)):
        r = lifting_run(tiny_scene, tmp_path / f"px{px}", max_rounds=2)
        p = r.pipeline
        rounds = {1: lambda p: np.stack([p.store.masks[0]] + [np.zeros_like(m) for m in p.gt[1:]]),
                  2: lambda p: np.concatenate([p.store.masks[:1], p.gt[1:]]),
                  3: lambda p, px=px: np.concatenate([grown(p.store.masks[0], px)[None], p.gt[1:]])}
        script(p, rounds)
        after = drive(p, 4)
        assert p.phase == "target" and p.store.rounds_done == 2 and not p.store.converged
        assert (p.rolled_back is not None) == rolled
        warnings = json.loads((r.exp_dir / "masks" / "final.json").read_text())["warnings"]
        assert any("rolled back" in w for w in warnings) == rolled
        state = p.model.state_dict()       # round 2's field, or the one its segment trained
        assert all(torch.equal(state[k], after[2][k]) for k in state) == rolled
