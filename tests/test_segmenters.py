"""Segmenters: factory, GrabCut fallback (synthetic + real DTU), SAM weights errors, tiny random SAM."""
import subprocess
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sam_utils.errors import PromptError, SamCheckpointError, SegmenterError
from sam_utils.grabcut import GrabCutSegmenter
from sam_utils.prompts import Prompt, load_prompt_file, prompts_from_mask
from sam_utils.sam_model import SAM_FILE_SIZES, SAM_URLS, SamSegmenter, load_sam
from sam_utils.segmenter import SegResult, check_nonempty
from sam_utils.segmenters import build_segmenter

ROOT = Path(__file__).resolve().parents[1]
SCAN = "data/dtu_scan65"
REAL_VIEWS = [0, 12, 24, 36, 48]
# Observed (200x150, prompts from the GT mask, crop_margin 0.2): 0.983 0.987 0.980 0.798 0.931, mean 0.936.
REAL_MEAN_IOU_MIN, REAL_VIEW_IOU_MIN = 0.90, 0.70
CONF_GRABCUT = dict(crop_margin=0.2, workers=0)   # confs/synthetic.conf nto3d.grabcut


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _textured_disc(H=120, W=160, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 85) ** 2 + (yy - 58) ** 2 <= 38 ** 2
    bg = np.array([60, 110, 170]) + rng.normal(0, 12, (H, W, 3))
    stripes = 25 * np.sin(xx / 3.0)[..., None]
    fg = np.array([210, 140, 50]) + stripes + rng.normal(0, 12, (H, W, 3))
    img = np.where(disc[..., None], fg, bg).clip(0, 255).astype(np.uint8)
    return img, disc


def test_unknown_kind_lists_choices():
    with pytest.raises(SegmenterError, match=r"'sam', 'grabcut'"):
        build_segmenter("magic")
    with pytest.raises(SegmenterError, match="sam_model_type"):
        build_segmenter("sam")


def test_grabcut_settings_come_from_the_conf():
    """crop_margin and workers have no code defaults (the conf's nto3d.grabcut holds them)."""
    for missing in ("crop_margin", "workers"):
        with pytest.raises(TypeError, match=missing):
            GrabCutSegmenter(**{k: v for k, v in CONF_GRABCUT.items() if k != missing})


# ----------------------------------------------------------------------------- GrabCut

def test_grabcut_synthetic_disc():
    img, disc = _textured_disc()
    seg = build_segmenter("grabcut", **CONF_GRABCUT)
    assert seg.name == "grabcut"
    r = seg.predict(0, img, Prompt(0, [[85, 58]], [1], [40, 15, 130, 100]))
    assert r.mask.shape == disc.shape and r.mask.dtype == bool
    assert _iou(r.mask, disc) >= 0.9 and r.score == 1.0
    assert r.low_res_logits is None


def test_grabcut_point_only_and_mask_input():
    img, disc = _textured_disc(seed=1)
    whole = GrabCutSegmenter(crop_margin=0.0, workers=1)                # see the xfail test below
    r = whole.predict(0, img, Prompt(0, [[85, 58]], [1]))               # box grown around the point
    assert _iou(r.mask, disc) >= 0.85
    seg = GrabCutSegmenter(**CONF_GRABCUT)
    prior = cv2.GaussianBlur(disc.astype(np.float32), (0, 0), 3)
    r2 = seg.predict(0, img, Prompt(0, [[85, 58]], [1]), mask_input=prior)
    assert _iou(r2.mask, disc) >= 0.9
    with pytest.raises(SegmenterError, match="view 4: .*RGB uint8"):
        seg.predict(4, img[..., :2], Prompt(4, [[85, 58]], [1]))
    r3 = seg.predict_cascade(0, img, Prompt(0, [[85, 58]], [1], [40, 15, 130, 100]))
    assert _iou(r3.mask, disc) >= 0.9


@pytest.mark.xfail(strict=True, reason="known weakness: one point and no box at the conf's crop_margin "
                   "(the crop around the point's grown box leaves too little background: IoU ~0.02)")
def test_grabcut_single_point_at_conf_crop_margin():
    img, disc = _textured_disc(seed=1)
    r = GrabCutSegmenter(**CONF_GRABCUT).predict(0, img, Prompt(0, [[85, 58]], [1]))
    assert _iou(r.mask, disc) >= 0.85


def test_grabcut_downscales_large_images():
    img, disc = _textured_disc()
    big = cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST)
    big_disc = cv2.resize(disc.astype(np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST) > 0
    r = GrabCutSegmenter(max_side=160, **CONF_GRABCUT).predict(0, big, Prompt(0, [[340, 232]], [1], [160, 60, 520, 400]))
    assert r.mask.shape == (480, 640) and _iou(r.mask, big_disc) >= 0.9


def _small_object_with_arm(H=600, W=800, seed=0):
    """A 70 px disc with a 5 px wide arm, far smaller than the textured 800x600 image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    obj = (xx - 400) ** 2 + (yy - 300) ** 2 <= 35 ** 2
    obj |= (np.abs(yy - 300) <= 2) & (xx >= 400) & (xx <= 470)
    bg = np.array([60, 110, 170]) + 40 * np.sin(xx / 7.0)[..., None] + rng.normal(0, 10, (H, W, 3))
    fg = np.array([220, 140, 60]) + rng.normal(0, 10, (H, W, 3))
    return np.where(obj[..., None], fg, bg).clip(0, 255).astype(np.uint8), obj


def test_grabcut_crop_keeps_thin_parts():
    """Shrinking the whole 800x600 image to 256 px leaves the arm < 2 px wide and blurs the outline
    (observed IoU 0.94); a crop around the box keeps the object's own resolution (observed 1.0)."""
    img, obj = _small_object_with_arm()
    arm = obj & ~((np.mgrid[:600, :800][1] - 400) ** 2 + (np.mgrid[:600, :800][0] - 300) ** 2 <= 37 ** 2)
    p = Prompt(0, [[400, 300], [400, 200]], [1, 0], [360, 260, 475, 340])
    whole = GrabCutSegmenter(crop_margin=0.0, workers=1).predict(0, img, p).mask
    crop = GrabCutSegmenter(crop_margin=0.2, workers=1).predict(0, img, p).mask
    assert crop.shape == obj.shape and not crop[:200].any()        # pasted back, nothing off the crop
    assert _iou(crop, obj) >= 0.97 and (crop & arm).sum() >= 0.9 * arm.sum()
    assert _iou(crop, obj) > _iou(whole, obj) + 0.03


def test_grabcut_threads_give_the_sequential_answers():
    imgs, prompts = [], []
    for seed in range(4):
        img, _ = _small_object_with_arm(seed=seed)
        imgs.append(img)
        prompts.append(Prompt(seed, [[400 + seed, 300]], [1], [360, 260, 475, 340]))
    seq = GrabCutSegmenter(crop_margin=0.2, workers=1).predict_views(list(range(4)), imgs, prompts, cascade=True)
    par = GrabCutSegmenter(crop_margin=0.2, workers=3).predict_views(list(range(4)), imgs, prompts, cascade=True)
    assert all((a.mask == b.mask).all() and a.score == b.score for a, b in zip(seq, par))
    with pytest.raises(SegmenterError, match="4 views, 3 images"):
        GrabCutSegmenter(crop_margin=0.2, workers=2).predict_views(list(range(4)), imgs[:3], prompts)


def test_prompt_shifted_onto_a_crop():
    p = Prompt(2, [[10, 10], [50, 40], [95, 5]], [1, 1, 0], [5, 5, 90, 45])
    q = p.shifted(-20, -5, width=60, height=50)
    assert q.view == 2 and q.points.tolist() == [[30, 35]] and q.labels.tolist() == [1]
    assert q.box.tolist() == [0, 0, 59, 40]


def _real_view(shared_dir, v, size=None):
    d = shared_dir / SCAN
    img = iio.imread(sorted((d / "image").glob("*.png"))[v])[..., :3]
    gt = iio.imread(sorted((d / "mask").glob("*.png"))[v])
    gt = (gt[..., 0] if gt.ndim == 3 else gt) > 127
    if size is not None:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        gt = cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return img, gt


def test_grabcut_real_scan_segmenter_alone(shared_dir):
    """Prompts from each view's GT mask (the 'segmenter alone' setting), 200x150."""
    seg, ious = GrabCutSegmenter(**CONF_GRABCUT), []
    views = [_real_view(shared_dir, v, (200, 150)) for v in REAL_VIEWS]
    results = seg.predict_views(REAL_VIEWS, [im for im, _ in views],
                                [prompts_from_mask(gt.astype(np.float32), v, rng=0)
                                 for v, (_, gt) in zip(REAL_VIEWS, views)])
    ious = [_iou(r.mask, gt) for r, (_, gt) in zip(results, views)]
    print("GrabCut IoU per view", dict(zip(REAL_VIEWS, np.round(ious, 3))))
    assert np.mean(ious) >= REAL_MEAN_IOU_MIN and min(ious) >= REAL_VIEW_IOU_MIN, ious


def test_grabcut_real_user_click(shared_dir):
    """The shipped one-click prompt (point + box) on full-resolution view 0 (observed IoU 0.987)."""
    img, gt = _real_view(shared_dir, 0)
    p = load_prompt_file(shared_dir / SCAN / "anno_box.json", view=0)
    p.validate(*gt.shape, source="anno_box.json")
    r = check_nonempty(GrabCutSegmenter(**CONF_GRABCUT).predict(0, img, p), view=0, source="anno_box.json")
    assert _iou(r.mask, gt) >= 0.95


def test_check_nonempty():
    empty = SegResult(np.zeros((10, 10), bool), 0.9, None)
    with pytest.raises(PromptError, match=r"anno_box.json: the prompt on view 3 gave an empty mask"):
        check_nonempty(empty, view=3, source="anno_box.json")
    full = SegResult(np.ones((10, 10), bool), 0.9, None)
    assert check_nonempty(full, view=3, source="x") is full


# ----------------------------------------------------------------------------- SAM weights

def test_missing_checkpoint_names_file_url_and_script(tmp_path):
    f = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(SamCheckpointError) as e:
        load_sam("vit_b", f)
    msg = str(e.value)
    assert str(f) in msg and SAM_URLS["vit_b"] in msg and "download_sam.sh vit_b" in msg
    with pytest.raises(SamCheckpointError, match="download_sam.sh vit_h"):
        build_segmenter("sam", sam_model_type="vit_h", sam_checkpoint=None)


def test_wrong_model_type_is_named(tmp_path, sam_setup):
    f = tmp_path / "tiny.pth"
    torch.save(sam_setup[0].model.state_dict(), f)      # a random tiny SAM's weights
    with pytest.raises(SamCheckpointError) as e:
        load_sam("vit_b", f)
    assert "looks like a SAM tiny checkpoint" in str(e.value) and str(f) in str(e.value)
    assert SAM_URLS["vit_b"] in str(e.value)
    g = tmp_path / "vitb_like.pth"                     # only the key the type is inferred from
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, g)
    with pytest.raises(SamCheckpointError, match="looks like a SAM vit_b checkpoint.*vit_h"):
        load_sam("vit_h", g)


def test_unreadable_and_unknown(tmp_path):
    f = tmp_path / "truncated.pth"
    f.write_bytes(b"not a torch file")
    with pytest.raises(SamCheckpointError, match="could not be read"):
        load_sam("vit_l", f)
    with pytest.raises(SegmenterError, match="vit_h"):
        load_sam("vit_x", f)


def test_vit_t_needs_mobile_sam(tmp_path):
    try:
        import mobile_sam  # noqa: F401
        pytest.skip("mobile_sam is installed")
    except ImportError:
        pass
    f = tmp_path / "mobile_sam.pt"
    torch.save({"image_encoder.layers.0.blocks.0.weight": torch.zeros(1)}, f)
    with pytest.raises(SamCheckpointError, match="mobilesam-mirror"):
        load_sam("vit_t", f)


def test_download_script_usage_and_table():
    r = subprocess.run(["bash", str(ROOT / "scripts/download_sam.sh"), "vit_x"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    for t in ("vit_h", "vit_l", "vit_b", "vit_t"):
        assert t in r.stderr
    text = (ROOT / "scripts/download_sam.sh").read_text()
    for t, url in SAM_URLS.items():                   # the script and sam_model.py must agree
        assert url in text and str(SAM_FILE_SIZES[t]) in text, t


# ----------------------------------------------------------------------------- tiny random SAM

@pytest.fixture(scope="module")
def sam_setup(tmp_path_factory):
    seg = build_segmenter("sam", sam_model_type="tiny", cache_dir=tmp_path_factory.mktemp("sam_feat"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    prompts = [Prompt(v, [[20 + v, 20], [40, 30 - v]], [1, 0], [5, 5, 55, 40]) for v in range(3)]
    return seg, images, prompts


def test_sam_predict_shapes_and_matches_sam_predictor(sam_setup):
    seg, images, prompts = sam_setup
    assert seg.name == "sam:tiny"
    r = seg.predict(0, images[0], prompts[0])
    assert r.mask.shape == (48, 64) and r.mask.dtype == bool
    assert r.low_res_logits.shape == (256, 256) and r.low_res_logits.dtype == np.float32
    masks, scores, low = seg.predictor(0, images[0]).predict(prompts[0].points, prompts[0].labels,
                                                            prompts[0].box, multimask_output=False)
    assert np.array_equal(masks[0], r.mask) and np.isclose(scores[0], r.score, atol=1e-6)
    assert np.allclose(low[0], r.low_res_logits, atol=1e-5)


def test_sam_batched_views_equal_per_view(sam_setup):
    seg, images, prompts = sam_setup
    views = [0, 1, 2]
    batched = seg.predict_views(views, images, prompts)
    for b, v in zip(batched, views):
        s = seg.predict(v, images[v], prompts[v])
        assert b.mask.shape == (48, 64)
        assert (b.mask != s.mask).mean() < 1e-3 and abs(b.score - s.score) < 1e-4
        assert np.allclose(b.low_res_logits, s.low_res_logits, atol=1e-3)
    chunked = SamSegmenter(seg.model, "tiny", seg.cache, decode_batch_size=2).predict_views(
        views, images, prompts)                                    # decoder calls of 2 + 1 views
    for a, b in zip(chunked, batched):
        assert np.allclose(a.low_res_logits, b.low_res_logits, atol=1e-3)
    cascaded = seg.predict_views(views, images, prompts, cascade=True)
    assert [r.mask.shape for r in cascaded] == [(48, 64)] * 3
    single = seg.predict_cascade(2, images[2], prompts[2])       # one view: the cascade costs 3 decodes
    assert (cascaded[2].mask != single.mask).mean() < 1e-3
    assert abs(cascaded[2].score - single.score) < 1e-4
    assert not np.allclose(single.low_res_logits, batched[2].low_res_logits), "the cascade refines"


def test_sam_mixed_prompts_and_mask_input(sam_setup):
    seg, images, prompts = sam_setup
    mixed = [prompts[0], Prompt(1, [[10, 10]], [1]), Prompt(2, np.zeros((0, 2)), [], [0, 0, 30, 30])]
    out = seg.predict_views([0, 1, 2], images, mixed)
    assert [r.mask.shape for r in out] == [(48, 64)] * 3
    prob = np.zeros((48, 64), np.float32)
    prob[10:30, 10:40] = 1
    assert seg.predict(0, images[0], prompts[0], mask_input=prob).mask.shape == (48, 64)
    with pytest.raises(SegmenterError, match="mask_input"):
        seg.predict(0, images[0], prompts[0], mask_input=np.zeros((10, 10)))
    padded = SamSegmenter(seg.model, "tiny", seg.cache, pad_points=True)  # one batch, -1 padding
    out_pad = padded.predict_views([0, 1, 2], images, mixed)
    assert [r.mask.shape for r in out_pad] == [(48, 64)] * 3
    with pytest.raises(SegmenterError, match="RGB uint8"):
        seg.predict(0, images[0].astype(np.float32) / 255, prompts[0])
    with pytest.raises(SegmenterError, match="one image and one prompt per view"):
        seg.predict_views([0, 1], images, prompts)
