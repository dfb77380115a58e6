"""Prompts: derived from masks (interior positives, ring negatives, box), loaded, parsed, validated."""
import json

import cv2
import numpy as np
import pytest

from sam_utils.errors import PromptError
from sam_utils.prompts import Prompt, load_prompt_file, parse_cli_prompt, prompts_from_mask

H, W = 150, 200
YY, XX = np.mgrid[:H, :W]


def _disc(cx, cy, r):
    return (XX - cx) ** 2 + (YY - cy) ** 2 <= r ** 2


def _dist_inside(mask):
    return cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]


def _dist_outside(mask):
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def _at(mask_or_map, pts):
    pts = np.round(pts).astype(int)
    return mask_or_map[pts[:, 1], pts[:, 0]]


def _check(mask, p, margin=4.0, ring=None):
    pos, neg = p.points[p.labels == 1], p.points[p.labels == 0]
    assert len(pos) == 5 and len(neg) == 4
    assert (_at(_dist_inside(mask), pos) >= margin - 1e-6).all(), "positives: inside, off the border"
    assert not _at(mask, neg).any(), "negatives must be outside the mask"
    if ring is not None:
        assert (_at(_dist_outside(mask), neg) <= ring + 1e-6).all(), "negatives must stay in the ring"
    rows, cols = np.nonzero(mask)
    x0, y0, x1, y1 = p.box
    assert x0 <= cols.min() and y0 <= rows.min() and x1 >= cols.max() and y1 >= rows.max()
    assert x0 >= 0 and y0 >= 0 and x1 <= W - 1 and y1 <= H - 1
    p.validate(H, W, source="test")
    return pos, neg


def test_disc_prompts_spread_inside_with_ring_negatives():
    mask = _disc(90, 70, 40)
    p = prompts_from_mask(mask.astype(np.float32), view=3, ring_px=15, rng=0)
    assert p.view == 3
    pos, neg = _check(mask, p, ring=15)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
    assert d.min() > 15, "positives should be spread over the object"
    dn = np.linalg.norm(neg[:, None] - neg[None], axis=-1) + np.eye(len(neg)) * 1e9
    assert dn.min() > 30, "negatives should be spread around the object"
    assert np.linalg.norm(pos[0] - [90, 70]) < 2, "first positive is the deepest interior point"
    q = prompts_from_mask(mask.astype(np.float32), view=3, ring_px=15, rng=0)
    assert np.array_equal(p.points, q.points) and np.array_equal(p.box, q.box)


def test_two_blobs_get_positives_in_both():
    a, b = _disc(50, 75, 25), _disc(150, 75, 20)
    mask = a | b
    p = prompts_from_mask(mask.astype(np.float32), view=0, rng=1)
    pos, _ = _check(mask, p)
    assert _at(a, pos).any() and _at(b, pos).any()


def test_noise_speck_gets_no_positive():
    main, speck = _disc(80, 75, 35), _disc(185, 10, 2)
    p = prompts_from_mask((main | speck).astype(np.float32), view=0, rng=0)
    pos = p.points[p.labels == 1]
    assert _at(main, pos).all()
    assert p.box[2] < 130, "the box ignores the dropped speck"


@pytest.mark.parametrize("shape", ["ring", "L"])
def test_nonconvex_shapes(shape):
    if shape == "ring":
        mask = _disc(100, 75, 60) & ~_disc(100, 75, 35)
    else:
        mask = np.zeros((H, W), bool)
        mask[20:130, 30:60] = True
        mask[100:130, 30:170] = True
    p = prompts_from_mask(mask.astype(np.float32), view=0, ring_px=12, rng=0)
    _check(mask, p, ring=12)


def test_soft_map_and_confident_negatives():
    prob = cv2.GaussianBlur(_disc(100, 75, 40).astype(np.float32), (0, 0), 4)
    p = prompts_from_mask(prob, view=0, rng=0)
    assert (_at(prob, p.points[p.labels == 1]) > 0.9).all()
    assert (_at(prob, p.points[p.labels == 0]) < 0.1).all()


def test_empty_and_tiny_masks_give_none():
    assert prompts_from_mask(np.zeros((H, W), np.float32), view=0) is None
    assert prompts_from_mask(_disc(50, 50, 1).astype(np.float32), view=0) is None
    with pytest.raises(PromptError):
        prompts_from_mask(np.zeros((H, W, 3), np.float32), view=0)


def test_object_filling_image_has_positives_off_the_image_edge():
    p = prompts_from_mask(np.ones((H, W), np.float32), view=0, rng=0)
    assert p.labels.sum() == 5 and (p.labels == 0).sum() == 0
    assert (p.points[:, 0] >= 4).all() and (p.points[:, 1] >= 4).all()


# ----------------------------------------------------------------------------- files

def test_load_original_schema(tmp_path):
    f = tmp_path / "anno.json"
    f.write_text(json.dumps({"frames": [
        {"index": 0, "point": [[10, 20]], "label": [1], "box": [1, 2, 30, 40]},
        {"index": 5, "point": [[11, 21], [50, 60]], "label": [1, 0]}]}))
    p = load_prompt_file(f)
    assert p.view == 0 and p.points.tolist() == [[10, 20]] and p.box.tolist() == [1, 2, 30, 40]
    q = load_prompt_file(f, view=5)
    assert q.view == 5 and q.labels.tolist() == [1, 0] and q.box is None
    with pytest.raises(PromptError, match=r"no frame with index 7.*\[0, 5\]"):
        load_prompt_file(f, view=7)


def test_load_our_schema_round_trip(tmp_path):
    p = Prompt(4, [[10, 20], [30, 40], [5, 5]], [1, 1, 0], [0, 0, 60, 70])
    f = tmp_path / "p.json"
    f.write_text(json.dumps(p.to_dict()))
    q = load_prompt_file(f)
    assert q.view == 4 and np.array_equal(q.points, p.points) and np.array_equal(q.labels, p.labels)
    assert np.array_equal(q.box, p.box)
    with pytest.raises(PromptError, match="view 4"):
        load_prompt_file(f, view=2)


def test_load_real_anno_box(shared_dir):
    p = load_prompt_file(shared_dir / "data/dtu_scan65/anno_box.json", view=0)
    assert p.view == 0 and p.points.tolist() == [[226, 211]] and p.labels.tolist() == [1]
    assert p.box.tolist() == [25, 24, 500, 560]
    p.validate(600, 800, source="anno_box.json")
    small = p.scaled(0.25)
    small.validate(150, 200, source="anno_box.json")
    assert np.allclose(small.points, [[226.5 * 0.25 - 0.5, 211.5 * 0.25 - 0.5]])


@pytest.mark.parametrize("content,match", [
    (None, "not found"), ("{not json", "not valid JSON"), ('{"something": 1}', "unknown schema"),
    ('{"frames": []}', "non-empty"), ('{"frames": [{"index": 0, "point": [[1, 2, 3]]}]}', "malformed")])
def test_bad_files_name_the_file(tmp_path, content, match):
    f = tmp_path / "bad_prompt.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(PromptError, match=match) as e:
        load_prompt_file(f)
    assert "bad_prompt.json" in str(e.value)


# ----------------------------------------------------------------------------- command line

def test_parse_cli_prompt():
    p = parse_cli_prompt(2, "10,20; 30,40", box="1,2,50,60", negative="5,5")
    assert p.view == 2 and p.points.tolist() == [[10, 20], [30, 40], [5, 5]]
    assert p.labels.tolist() == [1, 1, 0] and p.box.tolist() == [1, 2, 50, 60]
    q = parse_cli_prompt(0, "10,20;30,40", box=None)
    assert q.labels.tolist() == [1, 1] and q.box is None
    assert parse_cli_prompt(0, None, box="0,0,9,9").points.shape == (0, 2)


@pytest.mark.parametrize("points,box,negative,bad", [
    ("10;20", None, None, "'10'"), ("10,20", "1,2,3", None, "'1,2,3'"),
    ("a,b", None, None, "'a,b'"), ("10,20", None, "5", "'5'"), (None, None, None, "at least one")])
def test_parse_cli_prompt_errors_quote_the_text(points, box, negative, bad):
    with pytest.raises(PromptError, match=bad):
        parse_cli_prompt(0, points, box=box, negative=negative)


@pytest.mark.parametrize("prompt,match", [
    (Prompt(1, [[250, 10]], [1]), "outside the image"),
    (Prompt(1, [[10, -1]], [1]), "outside the image"),
    (Prompt(1, [[10, 10]], [0]), "no positive point and no box"),
    (Prompt(1, [[10, 10]], [1], [50, 10, 40, 60]), "degenerate"),
    (Prompt(1, [[10, 10]], [1], [0, 0, 300, 60]), "box .* outside"),
    (Prompt(1, [[10, 10], [20, 20]], [1]), "2 points but 1 labels"),
    (Prompt(1, [[10, 10]], [2]), "labels must be 1")])
def test_validate_names_the_source(prompt, match):
    with pytest.raises(PromptError, match=match) as e:
        prompt.validate(H, W, source="--prompt_points")
    assert "--prompt_points" in str(e.value) and "view 1" in str(e.value)


def test_box_only_prompt_is_valid():
    Prompt(0, np.zeros((0, 2)), [], [10, 10, 50, 50]).validate(H, W, source="x")
