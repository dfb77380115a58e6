"""Photos -> pycolmap SfM -> DTU layout, on 12 fox views (downscaled): every view registers and the
imported cameras agree with instant-ngp's transforms.json up to a similarity."""
import json
import time

import cv2
import numpy as np
import pytest

from datasets.dtu import DTUDataset
from datasets.importers import import_scene

pycolmap = pytest.importorskip("pycolmap", reason="pycolmap not installed (requirements.txt)")

N_VIEWS, STEP, SIZE = 12, 5, (270, 480)
MAX_ROT_ERR_DEG = 2.0


def _chordal_mean(rots: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(rots.sum(0))
    return u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt


def test_sfm_on_fox_subset_matches_transforms(shared_dir, tmp_path):
    src = shared_dir / "data" / "instant_ngp_fox"
    if not src.is_dir():
        pytest.skip(f"{src} not found (see ../shared/data/README.md)")
    frames = json.loads((src / "transforms.json").read_text())["frames"][::STEP][:N_VIEWS]
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in frames:
        img = cv2.imread(str(src / f["file_path"]))
        cv2.imwrite(str(photos / src.joinpath(f["file_path"]).name),
                    cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA))
    t0 = time.time()
    res = import_scene(photos, tmp_path / "fox", "images", sfm_max_size=max(SIZE), threads=2,
                       log=lambda *a: None)
    took = time.time() - t0
    ds = DTUDataset(tmp_path / "fox")
    assert ds.n_images == N_VIEWS and (ds.W, ds.H) == SIZE            # nothing dropped
    assert (tmp_path / "fox" / "sfm" / "model" / "points3D.bin").is_file()
    assert res.sphere.method == "points"
    names = json.loads((tmp_path / "fox" / "import_report.json").read_text())["names"]
    gl = {src.joinpath(f["file_path"]).name: np.asarray(f["transform_matrix"]) for f in frames}
    c2w_gt = np.stack([gl[n] @ np.diag([1, -1, -1, 1.0]) for n in names])        # OpenCV axes
    r_gt = c2w_gt[:, :3, :3].transpose(0, 2, 1)                                   # world -> cam
    r_sfm = ds.poses[:, :3, :3].double().numpy().transpose(0, 2, 1)
    # world_gt = s Q world_sfm + T  =>  R_sfm = R_gt Q
    q = _chordal_mean(np.einsum("nji,njk->nik", r_gt, r_sfm))
    rel = np.einsum("nij,njk->nik", r_gt.transpose(0, 2, 1) @ r_sfm, q.T[None].repeat(N_VIEWS, 0))
    err = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    # centres: the same similarity maps SfM's camera centres onto transforms.json's
    c_sfm = ds.to_world(ds.poses[:, :3, 3].double().numpy()) @ q.T
    c_gt = c2w_gt[:, :3, 3]
    a, b = c_sfm - c_sfm.mean(0), c_gt - c_gt.mean(0)
    s = (a * b).sum() / (a * a).sum()
    centre_err = np.linalg.norm(s * a - b, axis=1).max() / np.linalg.norm(b, axis=1).max()
    print(f"\nSfM on {N_VIEWS} fox views {SIZE[0]}x{SIZE[1]}: {took:.1f} s, rotation error "
          f"max {err.max():.3f} deg / mean {err.mean():.3f} deg, centre error {centre_err:.2%} "
          "of the camera spread")
    assert err.max() < MAX_ROT_ERR_DEG, err
    assert centre_err < 0.05
