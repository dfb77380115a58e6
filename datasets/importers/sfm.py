"""A folder of photos (or a video's frames) -> COLMAP sparse model, with pycolmap on the CPU.

Stages: SIFT features (one shared camera unless per_image), exhaustive matching (sequential for
long sequences), incremental mapping. The largest model is written to work_dir/sparse/0;
images it leaves out are reported by the COLMAP loader.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from ..dtu import IMAGE_EXTS
from .colmap_io import SUPPORTED
from .errors import SceneImportError

EXHAUSTIVE_MAX = 60          # more photos than this -> sequential matching (video-like order)
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def _pycolmap():
    try:
        import pycolmap
    except ImportError as exc:
        raise SceneImportError("structure from motion needs pycolmap: pip install 'pycolmap>=4.0,<5' "
                               "(CPU wheels on PyPI), or run COLMAP yourself and import its "
                               "sparse model with --format colmap") from exc
    return pycolmap


def extract_frames(video: Path, out_dir: Path, n_frames: int, log=print) -> Path:
    """Write n_frames evenly spaced frames of `video` as out_dir/NNNNN.jpg; returns out_dir."""
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if not cap.isOpened() or total <= 0:
        raise SceneImportError(f"cannot read video {video}; convert it to mp4 (H.264) or extract "
                               "frames into a folder and import that")
    out_dir.mkdir(parents=True, exist_ok=True)
    want = set(np.linspace(0, total - 1, min(n_frames, total)).round().astype(int).tolist())
    k = 0
    for idx in range(total):
        ok, frame = cap.read()
        if not ok:
            break
        if idx in want:
            cv2.imwrite(str(out_dir / f"{k:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            k += 1
    cap.release()
    log(f"[sfm] {k} frames from {video.name}")
    return out_dir


def run_sfm(image_dir, work_dir, camera_model: str = "SIMPLE_RADIAL", max_image_size: int = 1600,
            per_image: bool = False, num_threads: int | None = None, seed: int = 0,
            verbose: bool = False, log=print) -> Path:
    """SfM on every image of image_dir -> the largest model's folder (work_dir/sparse/0)."""
    pycolmap = _pycolmap()
    image_dir, work_dir = Path(image_dir), Path(work_dir)
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if len(names) < 3:
        raise SceneImportError(f"{image_dir} holds {len(names)} photos; SfM needs at least 3 "
                               f"({'/'.join(IMAGE_EXTS)}), ideally 30+ around the object")
    if camera_model not in SUPPORTED:
        raise SceneImportError(f"--camera-model {camera_model}: choose one of {', '.join(SUPPORTED)}")
    threads = num_threads or min(os.cpu_count() or 1, 8)
    if not verbose and hasattr(pycolmap, "logging"):
        pycolmap.logging.minloglevel = 1            # COLMAP's own INFO lines off: our stages instead
    if hasattr(pycolmap, "set_random_seed"):
        pycolmap.set_random_seed(seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    db = work_dir / "database.db"
    db.unlink(missing_ok=True)
    t0 = time.time()

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extract = pycolmap.FeatureExtractionOptions()
    extract.num_threads = threads
    extract.max_image_size = max_image_size
    mode = pycolmap.CameraMode.PER_IMAGE if per_image else pycolmap.CameraMode.SINGLE
    log(f"[sfm] 1/3 features: {len(names)} photos (max side {max_image_size} px, {threads} threads)")
    pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=mode,
                              reader_options=reader, extraction_options=extract,
                              device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    if len(names) <= EXHAUSTIVE_MAX:
        log(f"[sfm] 2/3 matching: exhaustive, {len(names) * (len(names) - 1) // 2} pairs "
            f"({time.time() - t0:.0f} s)")
        pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
    else:
        log(f"[sfm] 2/3 matching: sequential ({len(names)} photos in name order) "
            f"({time.time() - t0:.0f} s)")
        pycolmap.match_sequential(db, matching_options=matching, device=pycolmap.Device.cpu)

    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.random_seed = seed
    out = work_dir / "sparse"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"[sfm] 3/3 mapping ({time.time() - t0:.0f} s)")
    bar = _Progress(len(names), log)
    models = pycolmap.incremental_mapping(db, image_dir, out, options=opts,
                                          initial_image_pair_callback=lambda: bar.step(2),
                                          next_image_callback=lambda: bar.step(1))
    bar.close()
    if not models:
        raise SceneImportError(f"SfM found no model in {image_dir}: the photos do not overlap "
                               "enough (take more, 60-80% overlap, sharp, textured object/background)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    final = work_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    best.write_binary(str(final))
    log(f"[sfm] done: {best.num_reg_images()} of {len(names)} photos registered, "
        f"{best.num_points3D()} points, {len(models)} model(s) ({time.time() - t0:.0f} s)")
    return final


class _Progress:
    """Registered-image counter on a tqdm bar (plain log lines without tqdm)."""

    def __init__(self, total: int, log):
        self.n, self.total, self.log = 0, total, log
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="[sfm] registered", unit="img", disable=None)
        except ImportError:
            self.bar = None

    def step(self, k: int):
        self.n += k
        if self.bar is not None:
            self.bar.update(min(k, self.total - self.bar.n))
        elif self.n % 10 < k:
            self.log(f"[sfm] registered {self.n}/{self.total}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
