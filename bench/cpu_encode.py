"""CPU time of the pure-PyTorch hash-grid encoding in a training-shaped step, against a git revision's.

The encoding's share of a training step of the SDF field on the CPU: forward, d(out)/dx with create_graph
(the normals and the eikonal term), backward of both into the table; then whole steps (losses and backward)
of a scene run under confs/tiny.conf on a generated 8-view 96x72 scene. Medians of --iters after 3 warm-ups,
the current tree and --baseline's `models/hashgrid.py` alternating in one process (same threads, same load).

    python bench/cpu_encode.py --baseline HEAD~1
"""
import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.synthetic import make_scene  # noqa: E402
from models import hashgrid  # noqa: E402
from systems.config import Conf  # noqa: E402
from systems.runner import build_run  # noqa: E402

# (levels, log2 table size, base resolution, per-level scale): confs/tiny.conf's and synthetic_cpu.conf's grids
GRIDS = {"tiny": (6, 12, 8, 1.6), "cpu": (8, 15, 16, 1.6)}


def module_at(rev: str):
    """models/hashgrid.py as of git revision `rev`, imported under another name (it imports the current
    tree's models.grid_layout)."""
    source = subprocess.run(["git", "show", f"{rev}:models/hashgrid.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "hashgrid_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("hashgrid_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_ms(encode, params, layout, x) -> float:
    t = time.perf_counter()
    y = encode(x, params, layout)
    gx, = torch.autograd.grad(y.sum(), x, create_graph=True)
    (y.square().sum() + gx.square().sum()).backward()
    return (time.perf_counter() - t) * 1e3


@contextmanager
def encoding(fn):
    """HashGrid's torch backend runs `fn` inside (it calls the module's encode_torch)."""
    own = hashgrid.encode_torch
    hashgrid.encode_torch = fn
    try:
        yield
    finally:
        hashgrid.encode_torch = own


def training_steps(base, iters: int) -> tuple[float, float]:
    """Median ms of a tiny.conf scene run's losses + backward, with the baseline's and the current encoding."""
    folder = Path(tempfile.mkdtemp())
    make_scene("easy", folder / "scene", n_views=8, width=96, height=72, seed=0)
    lines = [f'dataset.data_dir = "{folder / "scene"}"', f'general.base_exp_dir = "{folder / "exp"}"',
             "nto3d.enabled = false"]
    conf = Conf.from_file(ROOT / "confs" / "tiny.conf", case="bench", overrides="\n".join(lines))
    pipeline = build_run(conf, torch.device("cpu")).pipeline
    times = {"base": [], "cur": []}
    for i in range(iters + 3):
        for key, fn in (("base", base.encode_torch), ("cur", hashgrid.encode_torch)):
            with encoding(fn):
                t = time.perf_counter()
                terms, _ = pipeline.losses(i)
                sum(w * v for w, v in terms.values()).backward()
                if i >= 3:
                    times[key].append((time.perf_counter() - t) * 1e3)
    return statistics.median(times["base"]), statistics.median(times["cur"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    ap.add_argument("--points", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--iters", type=int, default=21)
    args = ap.parse_args()
    base = module_at(args.baseline)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; baseline {args.baseline}")
    print(f"{'grid':<6}{'points':>8}{'baseline ms':>13}{'current ms':>12}{'speed-up':>10}{'max |diff|':>12}")
    for name, (levels, log2, base_res, scale) in GRIDS.items():
        grid = hashgrid.HashGrid(3, levels, 2, log2, base_res, scale, backend="torch")
        params = grid.params.detach().uniform_(-1, 1).requires_grad_(True)
        for n in args.points:
            x = torch.rand(n, 3, generator=torch.Generator().manual_seed(n)).requires_grad_(True)
            diff = (base.encode_torch(x, params, grid.layout) - hashgrid.encode_torch(x, params, grid.layout)).abs()
            times = {"base": [], "cur": []}
            for i in range(args.iters + 3):
                for key, fn in (("base", base.encode_torch), ("cur", hashgrid.encode_torch)):
                    ms = step_ms(fn, params, grid.layout, x)
                    if i >= 3:
                        times[key].append(ms)
            b, c = statistics.median(times["base"]), statistics.median(times["cur"])
            print(f"{name:<6}{n:>8}{b:>13.1f}{c:>12.1f}{b / c:>9.2f}x{diff.max().item():>12.2e}")
    b, c = training_steps(base, args.iters)
    print(f"tiny.conf training step (losses + backward): baseline {b:.1f} ms, current {c:.1f} ms, {b / c:.2f}x")


if __name__ == "__main__":
    main()
