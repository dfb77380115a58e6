"""Lifting rounds: prompts from projections, acceptance against the projection, convergence, records."""
import json

import cv2
import numpy as np
import pytest

from sam_utils.lifting import MaskStore, SegmenterTrust, final_masks, run_round, save_round
from sam_utils.masks import mask_iou
from sam_utils.segmenter import SegResult, Segmenter
from tests.oracles import lifting_settings

H, W, N = 96, 128, 6
TRUST = SegmenterTrust(accept_iou=0.8, min_recall=0.7, negative_weight=1.0)
SETTINGS = lifting_settings(TRUST)


def disc(cx, cy, r):
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


GT = np.stack([disc(45 + 3 * v, 48, 24) for v in range(N)])          # the target in each view
DISTRACTOR = np.stack([disc(90 + 2 * v, 44, 16) for v in range(N)])  # a touching neighbour


class OracleSegmenter(Segmenter):
    """Returns the ground-truth mask degraded per view: 'erode', 'distractor' (adds the neighbour), 'empty'."""

    name = "oracle"

    def __init__(self, degrade: dict[int, str]):
        self.degrade, self.calls = degrade, []

    def predict(self, view, image, prompt, mask_input=None):
        self.calls.append((view, prompt))
        assert prompt.labels[prompt.points[:, 0].astype(int) >= 0].sum() >= 1  # at least one positive point
        m = GT[view].copy()
        kind = self.degrade.get(view)
        if kind == "erode":
            m = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        elif kind == "distractor":
            m |= DISTRACTOR[view]
        elif kind == "empty":
            m[:] = False
        return SegResult(m, 1.0, None)


def soft(mask, blur=5):
    """A projection-like soft map: the mask blurred a little."""
    return cv2.GaussianBlur(mask.astype(np.float32), (blur, blur), 0)


def images():
    return [np.zeros((H, W, 3), np.uint8) for _ in range(N)]


def test_prompts_come_from_the_projection_and_corrupted_views_are_rejected():
    store = MaskStore(N, H, W)
    store.set_prompt_mask(0, GT[0])
    seg = OracleSegmenter({2: "erode", 3: "distractor", 4: "empty"})
    report = run_round(store, np.stack([soft(m) for m in GT]), images(), seg, SETTINGS, TRUST, prompt_view=0, gt_masks=GT)
    assert [v for v, _ in seg.calls] == [1, 2, 3, 4, 5]               # every view but the prompt view
    for v, prompt in seg.calls:
        pos = prompt.points[prompt.labels == 1].astype(int)
        neg = prompt.points[prompt.labels == 0].astype(int)
        assert GT[v][pos[:, 1], pos[:, 0]].all() and not GT[v][neg[:, 1], neg[:, 0]].any()
        x0, y0, x1, y1 = prompt.box
        ys, xs = np.nonzero(GT[v])
        assert x0 <= xs.min() and y0 <= ys.min() and x1 >= xs.max() and y1 >= ys.max()
    acc = {int(k): v["accepted"] for k, v in report["views"].items()}
    assert acc == {0: True, 1: True, 2: True, 3: False, 4: False, 5: True}
    assert not store.masks[3].any() and not store.masks[4].any()   # rejected answers are never stored
    assert np.array_equal(store.masks[2], seg.predict(2, None, seg.calls[1][1]).mask)
    lifted = final_masks(np.stack([soft(m) for m in GT]), SETTINGS.proj_threshold)
    ious = [mask_iou(lifted[v], GT[v]) for v in range(N)]
    assert min(ious) >= 0.99                      # the lifted masks are the projections, in every view
    assert report["iou_gt_worst"] == pytest.approx(min(ious))
    assert report["views"]["3"]["iou_gt_segmenter"] < 0.8 <= report["views"]["1"]["iou_gt_segmenter"]


def test_rounds_converge_when_masks_stop_changing():
    store = MaskStore(N, H, W)
    store.set_prompt_mask(0, GT[0])
    proj = np.stack([soft(m) for m in GT])
    seg = OracleSegmenter({})
    first = run_round(store, proj, images(), seg, SETTINGS, TRUST, prompt_view=0)
    assert first["mean_change"] == pytest.approx(1.0) and not store.converged
    second = run_round(store, proj, images(), seg, SETTINGS, TRUST, prompt_view=0)
    assert second["mean_change"] < SETTINGS.converge_eps and store.converged
    assert store.rounds_done == 2 and first["round"] == 1 and second["round"] == 2


def test_a_projection_that_disagrees_never_replaces_an_accepted_mask():
    store = MaskStore(N, H, W)
    store.set_prompt_mask(0, GT[0])
    empty_proj = np.zeros((N, H, W), np.float32)
    run_round(store, empty_proj, images(), OracleSegmenter({}), SETTINGS, TRUST, prompt_view=0)
    assert store.accepted.tolist() == [True] + [False] * (N - 1)   # no projection -> no prompt -> not accepted
    assert not store.converged                                     # nothing was lifted yet
    assert store.source[0] == "prompt"


def test_store_state_round_trip_and_round_files(tmp_path):
    store = MaskStore(N, H, W)
    store.set_prompt_mask(0, GT[0])
    proj = np.stack([soft(m) for m in GT])
    report = run_round(store, proj, images(), OracleSegmenter({3: "distractor"}), SETTINGS, TRUST, prompt_view=0)
    other = MaskStore(N, H, W)
    other.load_state_dict(store.state_dict())
    assert np.array_equal(other.masks, store.masks) and np.array_equal(other.accepted, store.accepted)
    assert np.array_equal(other.lifted, store.lifted) and other.lifted.any()
    assert other.rounds_done == 1 and other.source == store.source
    out = save_round(tmp_path, store, report, images(), proj, SETTINGS.proj_threshold)
    assert len(list(out.glob("[0-9][0-9][0-9].png"))) == N
    saved = json.loads((out / "report.json").read_text())
    assert saved["views"]["3"]["accepted"] is False and saved["views"]["1"]["prompt"] is not None
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 0 and sheet.std() > 0


def test_prompt_points_come_from_the_known_part_of_a_projection_only():
    """An extrapolated blob (surface no accepted view sees) is no evidence: no prompt point there, neither
    positive nor negative; the box still spans the whole projection (the segmenter may look there), and
    the answer is judged on the known pixels."""
    store = MaskStore(N, H, W)
    store.set_prompt_mask(0, GT[0])
    proj = np.stack([soft(GT[v] | DISTRACTOR[v]) for v in range(N)])      # the head took in the neighbour ...
    unknown = np.stack([cv2.dilate(DISTRACTOR[v].astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
                        for v in range(N)]) & ~GT                           # ... where no accepted view has looked
    seg = OracleSegmenter({})
    report = run_round(store, proj, images(), seg, SETTINGS, TRUST, 0, known=~unknown)
    for v, prompt in seg.calls:
        xy = prompt.points.astype(int)
        assert not unknown[v][xy[:, 1], xy[:, 0]].any()
        assert prompt.box[2] >= np.nonzero(DISTRACTOR[v].any(0))[0].max() - 1
    assert all(report["views"][str(v)]["accepted"] for v in range(1, N))   # the gt answer agrees where known
    seg_all = OracleSegmenter({})
    run_round(MaskStore(N, H, W), proj, images(), seg_all, SETTINGS, TRUST, 0)
    assert any(unknown[v][p.points[:, 1].astype(int), p.points[:, 0].astype(int)].any() for v, p in seg_all.calls)
