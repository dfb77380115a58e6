"""Each bad input raises its named error, naming the file at fault (real lego files where an image
is needed, tiny generated PNGs where sizes or textures must be wrong)."""
import json
import os

import cv2
import numpy as np
import pytest

from datasets.importers import (DuplicateViewError, ImageSizeError, IntrinsicsError,
                                MissingImageError, NormalisationError, RotationError,
                                SceneImportError, UnregisteredViewError, import_scene)
from datasets.importers.colmap import load_colmap
from datasets.importers.colmap_io import Camera, ImageEntry, rotmat_to_qvec, write_model
from scripts.import_scene import main as cli_main

QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def lego(shared_dir):
    src = shared_dir / "data" / "nerf_synthetic_lego"
    if not src.is_dir():
        pytest.skip(f"{src} not found (see ../shared/data/README.md)")
    return src, json.loads((src / "transforms_train.json").read_text())


def _write(tmp, meta, frames):
    """tmp/transforms.json with `frames` (file paths made absolute against lego's folder)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
    return tmp / "transforms.json"


def _frames(lego, n=4):
    src, meta = lego
    return [{**f, "file_path": str(src / f["file_path"])} for f in meta["frames"][:n]]


def test_missing_image(lego, tmp_path):
    fr = _frames(lego)
    fr[2]["file_path"] = str(tmp_path / "nowhere" / "r_x.png")
    path = _write(tmp_path, {"camera_angle_x": lego[1]["camera_angle_x"]}, fr)
    with pytest.raises(MissingImageError, match=r"transforms\.json.*r_x\.png.*put them there"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    assert path.is_file()


def test_duplicate_view(lego, tmp_path):
    fr = _frames(lego)
    _write(tmp_path, {"camera_angle_x": lego[1]["camera_angle_x"]}, fr + [fr[1]])
    with pytest.raises(DuplicateViewError, match=r"more than once: .*r_1"):
        import_scene(tmp_path / "transforms.json", tmp_path / "out", **QUIET)


@pytest.mark.parametrize("key,value", [("fl_x", 0.0), ("fl_x", -20.0), ("cx", 1e6)])
def test_degenerate_intrinsics(lego, tmp_path, key, value):
    _write(tmp_path, {"camera_angle_x": 0.69, key: value}, _frames(lego))
    with pytest.raises(IntrinsicsError, match=r"transforms\.json, view .*r_0: degenerate intrinsics"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)


@pytest.mark.parametrize("how,msg", [("scaled", "not orthonormal"), ("reflected", "reflection")])
def test_non_rotation(lego, tmp_path, how, msg):
    fr = _frames(lego)
    m = np.array(fr[3]["transform_matrix"])
    if how == "scaled":
        m[:3, :3] *= 2.0
    else:
        m[:3, 0] *= -1.0
    fr[3]["transform_matrix"] = m.tolist()
    _write(tmp_path, {"camera_angle_x": 0.69}, fr)
    with pytest.raises(RotationError, match=rf"frame 3 .*{msg}"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)


def _pngs(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return [folder / f"{i}.png" for i in range(len(sizes))]


def test_mixed_image_sizes(lego, tmp_path):
    files = _pngs(tmp_path / "img", [(64, 64), (64, 64), (48, 40)])
    fr = [{**f, "file_path": str(p)} for f, p in zip(_frames(lego, 3), files)]
    _write(tmp_path, {"camera_angle_x": 0.69}, fr)               # no w/h: sizes from the files
    with pytest.raises(ImageSizeError, match=r"different sizes: .*2\.png is 48x40"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)
    _write(tmp_path, {"camera_angle_x": 0.69, "w": 800, "h": 600}, fr[:2])
    with pytest.raises(ImageSizeError, match=r"0\.png is 64x64 but its camera .* 800x600"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)


def _model(tmp, names, cam_model="PINHOLE", params=(500.0, 500.0, 400.0, 400.0)):
    cams = {1: Camera(1, cam_model, 800, 800, np.array(params))}
    images = {}
    for k, name in enumerate(names):
        R = cv2.Rodrigues(np.array([0.0, 0.3 * k, 0.0]))[0]
        images[k + 1] = ImageEntry(k + 1, rotmat_to_qvec(R), np.array([0, 0, 4.0]), 1, name,
                                   np.zeros((0, 2)), np.zeros(0, np.int64))
    write_model(tmp / "sparse" / "0", cams, images, None, ".bin")


def _linked_images(lego, tmp, n):
    (tmp / "images").mkdir(parents=True)
    for i in range(n):
        os.symlink(lego[0] / "train" / f"r_{i}.png", tmp / "images" / f"r_{i}.png")


def test_unregistered_views(lego, tmp_path):
    _linked_images(lego, tmp_path, 4)
    _model(tmp_path, ["r_0.png", "r_1.png", "r_3.png"])
    with pytest.raises(UnregisteredViewError, match=r"1 image\(s\) in .*images have no camera .*"
                                                    r"images\.bin .*: r_2\.png; .*--drop-unregistered"):
        load_colmap(tmp_path)
    with pytest.warns(UserWarning, match="r_2.png"):
        scene = load_colmap(tmp_path, drop_unregistered=True)
    assert [v.name for v in scene.views] == ["r_0.png", "r_1.png", "r_3.png"]


def test_colmap_duplicate_and_unsupported_model(lego, tmp_path):
    _linked_images(lego, tmp_path, 2)
    _model(tmp_path, ["r_0.png", "r_1.png", "r_1.png"])
    with pytest.raises(DuplicateViewError, match=r"images\.bin registers .*r_1\.png"):
        load_colmap(tmp_path)
    _model(tmp_path, ["r_0.png", "r_1.png"], "FULL_OPENCV", [500.0, 500, 400, 400] + [0.0] * 8)
    with pytest.raises(IntrinsicsError, match=r"cameras\.bin, camera 1: camera model FULL_OPENCV"):
        load_colmap(tmp_path)


def test_no_sphere_found_asks_for_one(tmp_path):
    """Parallel cameras, textureless views, no bounds: the user must give --sphere/--box."""
    files = _pngs(tmp_path / "img", [(64, 48)] * 4)
    for p in files:
        cv2.imwrite(str(p), np.full((48, 64, 3), 128, np.uint8))
    fr = [{"file_path": str(p), "transform_matrix": [[1, 0, 0, 0.2 * i], [0, 1, 0, 0], [0, 0, 1, 0],
                                                     [0, 0, 0, 1]]} for i, p in enumerate(files)]
    _write(tmp_path, {"fl_x": 60.0}, fr)
    with pytest.raises(NormalisationError, match=r"--sphere cx,cy,cz,r or --box"):
        import_scene(tmp_path, tmp_path / "out", **QUIET)
    res = import_scene(tmp_path, tmp_path / "out", sphere=(0.3, 0, -3, 1.0), **QUIET)
    assert res.sphere.method == "user"
    npz = np.load(tmp_path / "out" / "cameras_sphere.npz")
    np.testing.assert_allclose(npz["scale_mat_0"], [[1, 0, 0, 0.3], [0, 1, 0, 0], [0, 0, 1, -3],
                                                    [0, 0, 0, 1]])


def test_cli_reports_named_error_and_options(lego, tmp_path, capsys):
    fr = _frames(lego)
    fr[0]["file_path"] = "gone.png"
    _write(tmp_path / "src", {"camera_angle_x": 0.69}, fr)
    assert cli_main([str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "MissingImageError" in err and "gone.png" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep")
    with pytest.raises(SceneImportError, match="--force"):
        import_scene(lego[0], tmp_path / "full", **QUIET)
    with pytest.raises(SceneImportError, match="--views"):
        import_scene(lego[0], tmp_path / "o2", views="0:x", **QUIET)


def test_video_frames_are_evenly_sampled(tmp_path):
    """A video source is cut into evenly spaced frames (grey level i * 12 marks frame i)."""
    from datasets.importers.sfm import extract_frames
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 12, np.uint8))
    writer.release()
    out = extract_frames(tmp_path / "v.avi", tmp_path / "frames", 5, log=lambda *a: None)
    files = sorted(out.glob("*.jpg"))
    levels = [cv2.imread(str(f)).mean() / 12 for f in files]
    assert len(files) == 5
    np.testing.assert_allclose(levels, [0, 5, 10, 14, 19], atol=0.4)   # linspace(0, 19, 5), rounded
    with pytest.raises(SceneImportError, match="cannot read video"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "f2", 5, log=lambda *a: None)
