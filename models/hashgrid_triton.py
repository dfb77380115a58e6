"""Fused Triton hash-grid encoding: launch configuration, autograd wrapper and entry point.

The kernels (and why they are fast) are in models/hashgrid_kernels.py.

Precision: ``params`` stays the fp32 master (what the optimizer and checkpoints see). With
param_dtype fp16/bf16 the forward casts it once to a read-only table of that dtype (halving gather
traffic and L2 footprint); interpolation and gradient atomics stay fp32, so the gradient lands on
the fp32 master without loss scaling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from models.grid_layout import GridLayout, level_tables, triton_interpreting
from models.hashgrid_kernels import hashgrid_bwd, hashgrid_fwd

N_DIMS = 3                    # kernels are written for 3-D inputs
VECTOR_RED_CAPABILITY = (9, 0)  # red.global.v2.f32 needs sm_90


@dataclass(frozen=True)
class TritonConfig:
    """Launch knobs. Defaults = the fastest setting of bench/hashgrid.py --sweep (figures: bench/RESULTS.md)."""

    block: int = 256                 # points per program (power of two)
    num_warps: int = 8
    levels_per_program: int = 4      # >= n_levels: all levels in one program; 1: level as a grid axis
    pair_loads: bool = True          # F == 2: 1-D tiles, both features in one vector load/store
    vec_atomics: bool = True         # with pair_loads: one v2 fp32 reduction per corner (sm_90+ only)
    merge_x: bool = True             # with pair_loads: x-neighbour corners in one aligned 2-entry chunk are
                                     # read with one load and (sm_90) updated with one v4 reduction


DEFAULT_CONFIG = TritonConfig()


def _use_pairs(cfg: TritonConfig, f: int, *tensors) -> bool:
    """The F == 2 pair path reinterprets rows as 8-byte words: needs aligned base pointers."""
    return cfg.pair_loads and f == 2 and all(t.data_ptr() % 8 == 0 for t in tensors)


def _merge_x(cfg: TritonConfig, pair: bool, *tensors) -> bool:
    """x-neighbour chunks: 16-byte (fp32) / 8-byte (fp16/bf16) loads of 2 entries need that alignment."""
    return pair and cfg.merge_x and all(t.data_ptr() % (2 * 2 * t.element_size()) == 0 for t in tensors)


def _has_vector_red(device: torch.device) -> bool:
    """red.global.v2.f32 exists from sm_90 (Hopper) on; never in the CPU interpreter."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= VECTOR_RED_CAPABILITY


def _grid(n: int, layout: GridLayout, cfg: TritonConfig):
    lpp = max(1, min(cfg.levels_per_program, layout.n_levels))
    return (triton.cdiv(n, cfg.block), triton.cdiv(layout.n_levels, lpp)), lpp


class _HashGridTriton(torch.autograd.Function):
    """Autograd wrapper: forward kernel, backward kernel for params (and x when needed)."""

    @staticmethod
    def forward(ctx, x, params, layout, param_dtype, cfg):
        table = params if params.dtype == param_dtype else params.to(param_dtype)    # (n_params,)
        x32 = x.to(torch.float32).contiguous()                                       # (N, 3)
        n, f = x32.shape[0], layout.n_features
        out = torch.empty(n, layout.n_levels * f, dtype=torch.float32, device=x.device)
        if n > 0:
            meta, scale = level_tables(layout, x.device, "kernel")
            grid, lpp = _grid(n, layout, cfg)
            pair = _use_pairs(cfg, f, table, out)
            hashgrid_fwd[grid](x32, table, meta, scale, out, n, layout.n_levels, LEVELS=lpp,
                                F=f, BLOCK=cfg.block, PAIR=pair, MERGE=_merge_x(cfg, pair, table),
                                ASM=x.is_cuda and not triton_interpreting(), num_warps=cfg.num_warps)
        ctx.save_for_backward(x32, table)
        ctx.layout, ctx.cfg, ctx.x_dtype, ctx.p_dtype = layout, cfg, x.dtype, params.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x32, table = ctx.saved_tensors
        layout, cfg = ctx.layout, ctx.cfg
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_x and torch.is_grad_enabled():  # autograd enables grad mode only for create_graph=True
            raise RuntimeError("the Triton hash grid's x-gradient cannot be differentiated again "
                               "(create_graph=True, e.g. analytic normals + eikonal loss): use "
                               "HashGrid(backend='torch') or finite-difference normals")
        n, f = x32.shape[0], layout.n_features
        grid, lpp = _grid(max(n, 1), layout, cfg)
        gtable = torch.zeros(layout.n_params, dtype=torch.float32, device=x32.device) if need_params else None
        gx = torch.empty(grid[1], n, N_DIMS, dtype=torch.float32, device=x32.device) if need_x else None
        if n > 0 and (need_x or need_params):
            meta, scale = level_tables(layout, x32.device, "kernel")
            gout = grad_out.to(torch.float32).contiguous()                           # (N, L * F)
            gtable_arg = gtable if need_params else gout  # unused pointer when not needed
            pair = _use_pairs(cfg, f, table, gout, gtable_arg)
            vec = pair and cfg.vec_atomics and _has_vector_red(x32.device)
            merge = vec and need_params and _merge_x(cfg, pair, gtable_arg)   # v4 reductions: sm_90 too
            hashgrid_bwd[grid](x32, table, meta, scale, gout, gtable_arg, gx if need_x else gout,
                                n, layout.n_levels, LEVELS=lpp, F=f, BLOCK=cfg.block, PAIR=pair,
                                NEED_PARAMS=need_params, NEED_X=need_x, VEC_ATOMICS=vec, MERGE=merge,
                                num_warps=cfg.num_warps)
        grad_x = gx.sum(0).to(ctx.x_dtype) if need_x else None
        grad_params = gtable.to(ctx.p_dtype) if need_params else None
        return grad_x, grad_params, None, None, None


def encode_triton(x: torch.Tensor, params: torch.Tensor, layout: GridLayout,
                  param_dtype: torch.dtype = torch.float32, config: TritonConfig | None = None) -> torch.Tensor:
    """Triton encoding: x (N, 3) -> (N, L * F) float32; gradients for params and (first-order) x."""
    if layout.n_dims != N_DIMS or x.dim() != 2 or x.shape[1] != N_DIMS:
        raise ValueError(f"the Triton hash grid encodes (N, {N_DIMS}) inputs, got {tuple(x.shape)} "
                         f"for a {layout.n_dims}-D grid")
    if not (x.is_cuda or triton_interpreting()):
        raise RuntimeError("the Triton hash grid needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if params.device != x.device or params.numel() != layout.n_params:
        raise ValueError(f"params must be ({layout.n_params},) on {x.device}, "
                         f"got {tuple(params.shape)} on {params.device}")
    cfg = config or DEFAULT_CONFIG
    if cfg.block & (cfg.block - 1):
        raise ValueError(f"TritonConfig.block must be a power of two, got {cfg.block}")
    return _HashGridTriton.apply(x, params.contiguous(), layout, param_dtype, cfg)

