"""Triton hash-grid kernels vs the torch backend (itself checked against a loop reference).

Two suites:
  * ``test_interp_*``: the kernels on CPU through Triton's interpreter. TRITON_INTERPRET=1 must be set
    before triton is imported, so ``test_interpreter_suite`` re-runs this file in a subprocess with it;
    in a normal run the interp tests skip themselves.
  * ``test_cuda_*``: compiled kernels on the GPU (skipped without CUDA), full config at 2^16 points.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from models.hashgrid import encode_torch  # noqa: E402
from models.hashgrid_triton import TritonConfig, encode_triton  # noqa: E402
from tests.test_hashgrid import make_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.skipif(not INTERPRETING, reason="runs inside test_interpreter_suite's subprocess")
cuda = pytest.mark.skipif(INTERPRETING or not torch.cuda.is_available(), reason="needs a CUDA GPU")

FULL = dict(n_input_dims=3, n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
            base_resolution=16, per_level_scale=1.447)
SMALL = dict(n_input_dims=3, n_levels=6, n_features_per_level=2, log2_hashmap_size=9,
             base_resolution=4, per_level_scale=1.8)   # 2 dense + 4 hashed levels
ONE_PROGRAM = TritonConfig(block=512)   # the interpreter's cost grows with the number of programs
SUBPROCESS_TIMEOUT_S = 300
GRAD_ATOL = 1e-4          # fp32 sums of O(1) gradients (atomics change the summation order)
HALF_ATOL = {torch.float16: 2e-3, torch.bfloat16: 2e-2}   # fp16/bf16 table rounding vs fp32, O(1) values



def points(n, seed=1, device="cpu"):
    """Random points plus the cube's corners, centre and faces (x = 0 and x = 1 wrap-arounds)."""
    edges = torch.tensor([[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 1], [1, 0, 0], [1e-7, 1, 0.25]])
    g = torch.Generator().manual_seed(seed)
    return torch.cat([edges, torch.rand(n, 3, generator=g)]).to(device)


def value_atol(layout, interpreted):
    """The interpreter's fma rounds twice: frac may move by one float32 ulp of the finest pos."""
    if not interpreted:
        return 1e-5
    ulp = float(np.spacing(np.float32(layout.scales[-1] + 1)))
    return 1e-5 + 4 * ulp


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def run_both(grid, x, param_dtype=None, cfg=None, need_x=True):
    """(out, d params, d x) for torch and triton under the same random upstream gradient."""
    read = param_dtype if param_dtype not in (None, torch.float32) else None
    results = []
    for fn in (lambda x, p: encode_torch(x, p, grid.layout, read),
               lambda x, p: encode_triton(x, p, grid.layout, param_dtype or torch.float32, cfg)):
        xx = x.clone().requires_grad_(need_x)
        p = grid.params.detach().clone().requires_grad_(True)
        out = fn(xx, p)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
        (out * g).sum().backward()
        results.append((out.detach(), p.grad, xx.grad))
    return results


# ----------------------------------------------------------------------------- interpreter suite
def test_interpreter_suite():
    """Run the interp tests under TRITON_INTERPRET=1 in a fresh process and require them all to pass."""
    if INTERPRETING:
        pytest.skip("already inside the interpreter run")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "test_interp_"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    passed = re.search(r"(\d+) passed", summary)
    n_interp = sum(name.startswith("test_interp_") for name in globals())  # parametrized ones count more
    ok = r.returncode == 0 and passed and int(passed.group(1)) > n_interp and "skipped" not in summary
    assert ok, r.stdout[-4000:] + r.stderr[-4000:]


@interp
def test_interp_matches_torch_small_config():
    grid = make_grid(SMALL)
    x = points(300)
    (o_t, gp_t, gx_t), (o_k, gp_k, gx_k) = run_both(grid, x, cfg=ONE_PROGRAM)
    assert max_err(o_k, o_t) <= value_atol(grid.layout, True)
    assert max_err(gp_k, gp_t) <= GRAD_ATOL
    # d out / dx = scale * d out / dfrac: one-ulp frac differences are amplified by O(scale) weights
    assert max_err(gx_k, gx_t) <= 1e-5 * gx_t.abs().max().item() + 1e-3
    assert gp_t.abs().max() > 1 and gx_t.abs().max() > 1  # non-trivial gradients


@interp
@pytest.mark.parametrize("cfg", [TritonConfig(block=512, levels_per_program=1),
                                 TritonConfig(block=256, levels_per_program=4),
                                 TritonConfig(block=512, pair_loads=False),
                                 TritonConfig(block=512, merge_x=False)],
                         ids=["level-axis", "groups-of-4", "generic-tiles", "corner-by-corner"])
def test_interp_launch_shapes_agree(cfg):
    """Level loop inside the kernel vs level groups on a grid axis (partial last block and group),
    the F == 2 pair path vs the generic (B, F) tiles, x-neighbour chunks vs one load per corner
    (the merged path sums the corners in another order: equal up to rounding)."""
    grid = make_grid(SMALL)
    x = points(300)
    (_, _, _), (o_a, gp_a, gx_a) = run_both(grid, x, cfg=ONE_PROGRAM)
    (_, _, _), (o_b, gp_b, gx_b) = run_both(grid, x, cfg=cfg)
    assert max_err(o_a, o_b) <= 1e-6
    assert max_err(gp_a, gp_b) <= 1e-5 and max_err(gx_a, gx_b) <= 1e-4


@interp
@pytest.mark.parametrize("f", [1, 4])
def test_interp_other_feature_counts(f):
    """The generic (B, F) tile path for F != 2, values and both gradients."""
    grid = make_grid(dict(SMALL, n_features_per_level=f, n_levels=4))
    (o_t, gp_t, gx_t), (o_k, gp_k, gx_k) = run_both(grid, points(150), cfg=ONE_PROGRAM)
    assert max_err(o_k, o_t) <= value_atol(grid.layout, True)
    assert max_err(gp_k, gp_t) <= GRAD_ATOL
    assert max_err(gx_k, gx_t) <= 1e-5 * gx_t.abs().max().item() + 1e-3


@interp
@pytest.mark.parametrize("merge_x", [False, True], ids=["by-corner", "x-chunks"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_half_table_reads(dtype, merge_x):
    grid = make_grid(SMALL)
    x = points(200)
    cfg = TritonConfig(block=512, merge_x=merge_x)   # x-chunks: one 8-byte load per x-neighbour pair
    (o_t, gp_t, _), (o_k, gp_k, _) = run_both(grid, x, param_dtype=dtype, cfg=cfg, need_x=False)
    assert max_err(o_k, o_t) <= value_atol(grid.layout, True)
    assert gp_k.dtype == torch.float32 and max_err(gp_k, gp_t) <= GRAD_ATOL
    full = encode_torch(x, grid.params.detach(), grid.layout)
    assert 1e-5 < max_err(o_k, full) <= HALF_ATOL[dtype]   # rounded, but only by the table precision


@interp
def test_interp_full_config_few_points():
    grid = make_grid(FULL)
    x = points(10)
    (o_t, gp_t, _), (o_k, gp_k, _) = run_both(grid, x, cfg=TritonConfig(block=16), need_x=False)
    assert max_err(o_k, o_t) <= value_atol(grid.layout, True)
    assert max_err(gp_k, gp_t) <= GRAD_ATOL and (gp_k != 0).sum() > 16 * len(x)


@interp
def test_interp_state_dict_round_trip_torch_triton(monkeypatch):
    """Train one step with triton, load into a torch grid (and back): same encodings."""
    import models.hashgrid_triton as ht
    monkeypatch.setattr(ht, "DEFAULT_CONFIG", ONE_PROGRAM)
    x = points(100)
    k = make_grid(SMALL, seed=1, backend="triton")
    assert k.backend == "triton"
    opt = torch.optim.SGD(k.parameters(), lr=0.1)
    k(x).square().sum().backward()
    opt.step()
    t = make_grid(SMALL, seed=2, backend="torch")
    t.load_state_dict(k.state_dict())
    assert max_err(t(x), k(x)) <= value_atol(k.layout, True)
    k2 = make_grid(SMALL, seed=3, backend="triton")
    k2.load_state_dict(t.state_dict())
    assert torch.equal(k2(x), k(x))


@interp
def test_interp_empty_batch_and_double_backward_error():
    grid = make_grid(SMALL)
    empty = encode_triton(torch.zeros(0, 3), grid.params, grid.layout)
    assert empty.shape == (0, grid.n_output_dims)
    x = points(4).requires_grad_(True)
    out = encode_triton(x, grid.params, grid.layout, config=ONE_PROGRAM)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(encode_triton(x, grid.params, grid.layout, config=ONE_PROGRAM).sum(), x)
    assert gx.shape == x.shape and gx.abs().max() > 0


# ----------------------------------------------------------------------------- CUDA suite
CUDA_POINTS = 2**16
CUDA_CONFIGS = [TritonConfig(), TritonConfig(levels_per_program=1), TritonConfig(block=128, num_warps=4),
                TritonConfig(vec_atomics=False), TritonConfig(pair_loads=False), TritonConfig(merge_x=False),
                TritonConfig(merge_x=False, block=128, num_warps=4)]


@cuda
@pytest.mark.parametrize("cfg", CUDA_CONFIGS, ids=["default", "level-axis", "b128w4", "scalar-atomics",
                                                  "generic-tiles", "corner-by-corner", "corner-by-corner-b128w4"])
def test_cuda_matches_torch_full_config(cfg):
    if cfg.vec_atomics and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("red.global.v2.f32 needs sm_90")
    grid = make_grid(FULL).cuda()
    x = points(CUDA_POINTS, device="cuda")
    (o_t, gp_t, gx_t), (o_k, gp_k, gx_k) = run_both(grid, x, cfg=cfg)
    assert max_err(o_k, o_t) <= value_atol(grid.layout, False)
    assert max_err(gp_k, gp_t) <= GRAD_ATOL * max(1.0, gp_t.abs().max().item())
    assert max_err(gx_k, gx_t) <= 1e-5 * gx_t.abs().max().item()


@cuda
@pytest.mark.parametrize("merge_x", [False, True], ids=["by-corner", "x-chunks"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_table_reads(dtype, merge_x):
    grid = make_grid(FULL).cuda()
    x = points(CUDA_POINTS, device="cuda")
    (o_t, gp_t, gx_t), (o_k, gp_k, gx_k) = run_both(grid, x, param_dtype=dtype, cfg=TritonConfig(merge_x=merge_x))
    assert max_err(o_k, o_t) <= value_atol(grid.layout, False)
    assert gp_k.dtype == torch.float32
    assert max_err(gp_k, gp_t) <= GRAD_ATOL * max(1.0, gp_t.abs().max().item())
    assert max_err(gx_k, gx_t) <= 1e-5 * gx_t.abs().max().item()
    assert max_err(o_k, encode_torch(x, grid.params.detach(), grid.layout)) <= HALF_ATOL[dtype]


@cuda
def test_cuda_module_auto_backend_and_round_trip():
    k = make_grid(FULL, seed=1).cuda()
    assert k.backend in ("triton", "tcnn")
    t = make_grid(FULL, seed=2, backend="torch").cuda()
    t.load_state_dict(k.state_dict())
    x = points(4096, device="cuda")
    assert max_err(k(x), t(x)) <= value_atol(k.layout, False)
    cpu = make_grid(FULL, seed=3)
    cpu.load_state_dict(k.state_dict())
    assert max_err(cpu(x.cpu()), k(x).cpu()) <= value_atol(k.layout, False)
