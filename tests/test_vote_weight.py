"""The background weight of the occupancy vote from a segmenter's measured errors (sam_utils/vote_weight.py)."""
import cv2
import numpy as np
import pytest

from sam_utils.vote_weight import WEIGHT_RANGE, error_rates, round_boxes, vote_weight

H, W = 60, 80
BOX = [10.0, 10.0, 69.0, 49.0]


def disc(cx=40, cy=30, r=12):
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_symmetric_errors_weigh_one_and_the_weight_follows_the_error_profile():
    assert vote_weight(0.9, 0.1) == pytest.approx(1.0)
    over = vote_weight(0.98, 0.28)     # GrabCut on `occluded` (recall 0.98, precision 0.70)
    under = vote_weight(0.85, 0.05)    # drops parts, rarely claims background
    assert over == pytest.approx(np.log(0.72 / 0.02) / np.log(0.98 / 0.28))
    assert over > 2.5 and under < 1.5
    assert vote_weight(0.3, 0.4) == WEIGHT_RANGE[1]                  # no better than chance


def test_error_rates_count_inside_the_prompt_box():
    consensus = np.stack([disc(), disc()])
    dilated = cv2.dilate(consensus[0].astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    masks = np.stack([dilated, consensus[1] & (np.mgrid[:H, :W][0] < 30)])   # over / top half only
    r, f = error_rates(masks, consensus, {0: BOX})
    x0, y0, x1, y1 = (int(c) for c in BOX)
    bg = (~consensus[0][y0:y1 + 1, x0:x1 + 1]).sum()
    assert r == 1.0 and f == pytest.approx((dilated & ~consensus[0]).sum() / bg)
    r, f = error_rates(masks, consensus, {1: BOX})
    assert 0.4 < r < 0.6 and f == 0.0
    assert error_rates(masks, np.zeros_like(consensus), {0: BOX}) is None


def test_round_boxes_take_accepted_answers_only():
    report = {"views": {"0": {"accepted": True, "prompt": {"box": BOX}},            # the user's view
                        "1": {"accepted": True, "prompt": {"box": BOX}},
                        "2": {"accepted": False, "prompt": {"box": BOX}},
                        "3": {"accepted": True, "prompt": None}}}
    assert round_boxes(report, prompt_view=0) == {1: BOX}
