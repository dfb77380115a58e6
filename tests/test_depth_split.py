"""Cutting segmenter answers at rendered-depth jumps (sam_utils/depth_split.py) and its use in run_round."""
import numpy as np

from sam_utils.depth_split import depth_edges, split_at_depth_edges
from sam_utils.prompts import Prompt

H, W = 64, 80


def _scene():
    """A near disc (the target, depth 1) in front of a far wall (depth 2) on its right; empty elsewhere."""
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 32) ** 2 + (xx - 30) ** 2 <= 12 ** 2
    wall = (xx >= 38) & (xx < 70) & (yy >= 10) & (yy < 54)
    depth = np.where(disc, 1.0, np.where(wall, 2.0, 0.0))
    valid = disc | wall
    return disc, wall, depth, valid


def _prompt(x=30, y=32):
    return Prompt(0, np.array([[x, y]], float), np.array([1]), None)


def test_edges_mark_both_sides_of_a_jump_and_the_silhouette():
    depth = np.ones((4, 6))
    depth[:, 3:] = 1.5
    valid = np.ones((4, 6), bool)
    e = depth_edges(depth, valid, 0.02)
    assert e[:, 2:4].all() and not e[:, :2].any() and not e[:, 4:].any()
    assert not depth_edges(depth, valid, 0.6).any()          # a 50% jump is below a 60% tolerance
    valid[:, 5] = False                                      # empty space counts as far
    assert depth_edges(depth, valid, 0.6)[:, 4:].all()


def test_leak_onto_the_wall_behind_is_cut_off():
    disc, wall, depth, valid = _scene()
    answer = disc | wall                                     # a colour segmenter's leak
    out = split_at_depth_edges(answer, depth, valid, _prompt(), disc, 0.02, 0.5)
    assert (out & disc).sum() == disc.sum()                  # all of the target kept, edge pixels included
    assert not (out & wall & ~disc).any()
    # without the prompt point the projection alone keeps the disc
    out2 = split_at_depth_edges(answer, depth, valid, None, disc, 0.02, 0.5)
    assert (out2 == out).all()


def test_pieces_inside_the_projection_survive_self_occlusion_edges():
    disc, wall, depth, valid = _scene()
    depth = depth.copy()
    head = disc & (np.arange(H)[:, None] < 26)               # the disc's top in front of its bottom
    depth[head] = 0.8
    out = split_at_depth_edges(disc | wall, depth, valid, _prompt(30, 40), disc, 0.02, 0.5)
    assert (out & disc).sum() >= disc.sum() - 3 and not (out & wall & ~disc).any()  # junction pixels may go


def test_low_resolution_depth_is_upsampled():
    disc, wall, depth, valid = _scene()
    for o in (1, 2):                                         # rendered at 1/4 resolution (block centres)
        out = split_at_depth_edges(disc | wall, depth[o::4, o::4], valid[o::4, o::4], _prompt(), disc, 0.02, 0.5)
        assert (out & disc).sum() >= 0.9 * disc.sum()        # the disc is 7 depth pixels across
        assert (out & wall & ~disc).sum() <= 0.05 * wall.sum()


def test_run_round_accepts_the_cut_answer():
    """A leaking answer fails acceptance as given; cut at the depth jump it passes and is stored cut."""
    from sam_utils.lifting import LiftingSettings, MaskStore, run_round
    from sam_utils.segmenter import SegResult, Segmenter

    disc, wall, depth, valid = _scene()

    class Leaky(Segmenter):
        name = "leaky"

        def predict(self, view, image, prompt, mask_input=None):
            return SegResult(disc | wall, 1.0, None)

    n = 2
    images = [np.zeros((H, W, 3), np.uint8)] * n
    proj = np.stack([disc.astype(np.float32)] * n)
    surface = (np.stack([depth] * n), np.stack([valid] * n))
    for tol, accepted, ignore in ((0.0, False, False), (0.02, True, False), (0.02, True, True)):
        s = LiftingSettings(accept_iou=0.8, converge_eps=0.03, max_rounds=2, proj_threshold=0.5, n_positive=3,
                            n_negative=2, cascade=False, view_radius_deg=180.0, depth_split_tol=tol,
                            depth_split_ignore=ignore)
        store = MaskStore(n, H, W)
        store.set_prompt_mask(0, disc)
        rep = run_round(store, proj, images, Leaky(), s, prompt_view=0, gt_masks=np.stack([disc] * n),
                        surface=surface)
        assert bool(store.accepted[1]) == accepted
        if accepted:
            assert (store.masks[1] == disc).mean() > 0.99
            assert rep["views"]["1"]["split_removed"] > 0.5
            assert rep["views"]["1"]["iou_gt_segmenter"] > 0.95 > rep["views"]["1"]["iou_gt_segmenter_unsplit"]
            cut = wall & ~store.masks[1]                 # the leak: no vote (ignore) or a background vote
            assert (store.unsure[1] == (cut if ignore else False)).all() and cut.sum() > 500
