"""Hash-grid encoding throughput: forward + backward of out.float().square().sum() on the GPU.

Protocol: 2^20 random points in [0, 1]^3, the default 16-level / 2^19 config, median of 20 timed
iterations (CUDA events) after 3 warm-ups. Backends: torch eager, torch.compile, Triton with
fp32/fp16/bf16 table reads, tiny-cuda-nn when importable.

    python bench/hashgrid.py            # table
    python bench/hashgrid.py --check    # first compare Triton vs torch outputs/gradients on the GPU
    python bench/hashgrid.py --sweep    # Triton launch knobs (table dtype, block, warps, x-neighbour chunks)
"""
import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.hashgrid import HashGrid, _import_error, encode_torch  # noqa: E402

TCNN_REFERENCE_MPTS = 262.0   # tiny-cuda-nn fp16, same protocol (fwd + bwd, 2^20 points)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def time_step(step, warmup: int, iters: int) -> float:
    """Median milliseconds of step() over `iters` runs after `warmup` runs (CUDA events)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def make_step(encode, params, x):
    """One training-style step: forward, loss, backward into params.grad (reset to None first)."""
    def step():
        params.grad = None
        encode(x).float().square().sum().backward()
    return step


def bench_cases(args, x):
    """[(name, ms)] for every available backend."""
    cases = [("torch eager", "torch", "fp32", False), ("torch.compile", "torch", "fp32", True)]
    cases += [(f"triton {d}", "triton", d, False) for d in DTYPES]
    if _import_error("tinycudann") is None:
        cases += [("tcnn fp16", "tcnn", "fp16", False), ("tcnn fp32", "tcnn", "fp32", False)]
    else:
        print("tiny-cuda-nn not importable: skipped")
    results = []
    for name, backend, dtype, compiled in cases:
        grid = HashGrid(backend=backend, param_dtype=DTYPES[dtype]).cuda()
        encode = torch.compile(grid) if compiled else grid
        try:
            ms = time_step(make_step(encode, grid.params, x), args.warmup, args.iters)
        except Exception as exc:  # keep benchmarking the other backends
            print(f"{name}: failed ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        results.append((name, ms))
        del grid, encode
        torch.cuda.empty_cache()
    return results


def print_table(results, n_points):
    compiled = dict(results).get("torch.compile")
    print(f"\n{n_points} points, fwd+bwd, {torch.cuda.get_device_name()}")
    print(f"{'backend':<16}{'median ms':>10}{'M pts/s':>10}{'x tcnn 262':>12}{'x compile':>11}")
    for name, ms in results:
        mpts = n_points / ms / 1e3
        vs_compile = f"{compiled / ms:>11.2f}" if compiled else f"{'-':>11}"
        print(f"{name:<16}{ms:>10.3f}{mpts:>10.1f}{mpts / TCNN_REFERENCE_MPTS:>12.2f}{vs_compile}")


def check(x):
    """Max |triton - torch| of outputs and gradients (params and x) for each table dtype."""
    from models.hashgrid_triton import encode_triton
    torch.manual_seed(0)
    grid = HashGrid().cuda()
    with torch.no_grad():
        grid.params.uniform_(-1, 1)
    g = torch.randn(len(x), grid.n_output_dims, device=x.device)
    for name, dtype in DTYPES.items():
        read = None if dtype == torch.float32 else dtype
        res = []
        for fn in (lambda xx, p: encode_torch(xx, p, grid.layout, read),
                   lambda xx, p: encode_triton(xx, p, grid.layout, dtype)):
            xx = x.clone().requires_grad_(True)
            p = grid.params.detach().clone().requires_grad_(True)
            out = fn(xx, p)
            (out * g).sum().backward()
            res.append((out.detach(), p.grad, xx.grad))
        errs = [(a - b).abs().max().item() for a, b in zip(*res)]
        scale = [b.abs().max().item() for b in res[0]]
        print(f"check {name}: max err out {errs[0]:.2e} (|out| {scale[0]:.2f}), d params {errs[1]:.2e} "
              f"(|g| {scale[1]:.2f}), d x {errs[2]:.2e} (|g| {scale[2]:.1f})")
        del res
        torch.cuda.empty_cache()


def sweep(args, x):
    """Time Triton launch configurations and print them fastest first (with forward-only times)."""
    import models.hashgrid_triton as ht
    rows = []
    cases = [(d, ht.TritonConfig(block=b, num_warps=w, levels_per_program=4, merge_x=m))
             for d, b, w, m in itertools.product(["fp32", "fp16", "bf16"], [128, 256], [4, 8], [False, True])]
    cases += [("fp32", ht.TritonConfig(levels_per_program=1)), ("fp32", ht.TritonConfig(vec_atomics=False)),
              ("fp32", ht.TritonConfig(pair_loads=False))]
    for dtype, cfg in cases:
        grid = HashGrid(backend="triton", param_dtype=DTYPES[dtype]).cuda()
        encode = lambda xx, c=cfg, g=grid: ht.encode_triton(xx, g.params, g.layout, g.param_dtype, c)  # noqa: E731
        try:
            ms = time_step(make_step(encode, grid.params, x), args.warmup, args.iters)
            with torch.no_grad():
                fwd_ms = time_step(lambda: encode(x), args.warmup, args.iters)
            rows.append((ms, fwd_ms, dtype, cfg))
        except Exception as exc:
            print(f"{dtype} {cfg}: failed ({type(exc).__name__}: {str(exc)[:300]})")
    print(f"\n{'ms':>8} {'fwd ms':>8} {'M pts/s':>8}  dtype  config")
    for ms, fwd_ms, dtype, cfg in sorted(rows, key=lambda r: r[0]):
        print(f"{ms:8.3f} {fwd_ms:8.3f} {len(x) / ms / 1e3:8.1f}  {dtype}   {cfg}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-points", type=int, default=20)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="compare Triton vs torch first")
    parser.add_argument("--sweep", action="store_true", help="time Triton launch configurations")
    parser.add_argument("--no-table", action="store_true", help="skip the backend table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/hashgrid.py needs a CUDA GPU; none found, nothing to do.")
        return
    x = torch.rand(2**args.log2_points, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    if args.check:
        check(x[:2**16])
    if args.sweep:
        sweep(args, x)
    if not args.no_table:
        print_table(bench_cases(args, x), len(x))


if __name__ == "__main__":
    main()
