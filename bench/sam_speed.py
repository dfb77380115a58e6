"""SAM speed with random weights (speed does not depend on them): encoding all views with an empty
and with a warm embedding cache, and one lifting round of the batched prompt decoder.

    python bench/sam_speed.py --model vit_h --views 49 --width 800 --height 600
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sam_utils.embedding_cache import EmbeddingCache  # noqa: E402
from sam_utils.prompts import prompts_from_mask  # noqa: E402
from sam_utils.sam_model import SamSegmenter, build_random_sam, random_model_id  # noqa: E402


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--views", type=int, default=49)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--height", type=int, default=600)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.views)]
    yy, xx = np.mgrid[:args.height, :args.width]
    blob = ((xx - args.width / 2) ** 2 + (yy - args.height / 2) ** 2 < (args.height / 5) ** 2).astype(np.float32)
    prompts = [prompts_from_mask(blob, view=v, rng=v) for v in range(args.views)]
    root = Path(tempfile.mkdtemp(prefix="sam_feat_"))
    model = build_random_sam(args.model, 0)
    seg = SamSegmenter(model, args.model, EmbeddingCache(root, args.model, random_model_id(args.model, 0)), device=device)
    views = list(range(args.views))
    _, t_cold = timed(lambda: seg.embeddings(views, images))
    seg.cache = EmbeddingCache(root, args.model, random_model_id(args.model, 0))  # fresh memory: disk only
    _, t_warm = timed(lambda: seg.embeddings(views, images))
    _, t_round = timed(lambda: seg.predict_views(views, images, prompts, cascade=True))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    shutil.rmtree(root, ignore_errors=True)
    print(f"| model | views | encode all (cold cache) s | per view ms | reload from cache s | one round (cascade, {args.views} views) s | peak GPU GB |")
    print(f"| {args.model} | {args.views} | {t_cold:.2f} | {1000 * t_cold / args.views:.0f} | {t_warm:.2f} | {t_round:.2f} | {peak:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
