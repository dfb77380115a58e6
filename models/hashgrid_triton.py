"""Fused Triton kernels for the hash-grid encoding (same maths and layout as models/hashgrid.py).

Design (why it is fast):
  * one program = BLOCK points x a run of ``levels_per_program`` levels: the level loop runs inside the
    kernel (x read once, per-level constants are scalars) and the groups of levels form a grid axis.
    Programs run point-block-fastest, so concurrent programs share one group's tables in L2; 4 levels
    x 2 fp32 features also make each point's output write one full 32-byte sector.
  * per level, corner terms are built once per dimension (lower/upper vertex) and combined per corner:
    ``+`` for dense levels (row-major index) and ``^`` for hashed ones (tcnn's coherent prime hash),
    all in uint32 arithmetic that wraps exactly like tcnn's. Hashed levels always have 2^k entries, so
    their wrap is a mask; only dense levels pay for an integer ``%`` (a uniform, per-level branch).
  * the F features of an entry are contiguous. For F == 2 ("pair" path) all tiles are 1-D and each
    corner is one 8-byte (fp32) / 4-byte (fp16/bf16) load through a reinterpreted pointer, each
    point's level output one 8-byte store (Triton did not vectorise the (B, 2) tile's gathers).
  * backward wrt params: fp32 atomics of grad_out * weight into an fp32 gradient buffer (relaxed
    ordering); on sm_90 one 2-wide ``red.global.v2.f32.add`` per corner (half the L2 atomic
    transactions, the backward's bottleneck).
  * backward wrt x (only when x.requires_grad): gathers the corners again and accumulates
    dL/dx = sum_c (g . v_c) dw_c/dfrac * scale; differentiating it again (create_graph=True) raises
    (use the torch backend for analytic double backward).

Precision: ``params`` stays the fp32 master (what the optimizer and checkpoints see). With
param_dtype fp16/bf16 the forward casts it once to a read-only table of that dtype (halving gather
traffic and L2 footprint); interpolation and gradient atomics stay fp32, so the gradient lands on
the fp32 master without loss scaling.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from models.hashgrid import GridLayout, triton_interpreting

N_DIMS = 3                    # kernels are written for 3-D inputs
ROW = tl.constexpr(3)         # x and dL/dx are (N, 3) row-major
N_CORNERS = tl.constexpr(8)   # 2^3 trilinear corners
META_COLS = tl.constexpr(4)   # per-level int32 table: resolution, size, first entry, dense
PRIME_Y = tl.constexpr(2654435761)   # tcnn coherent prime hash, dims 1 and 2 (dim 0 uses 1)
PRIME_Z = tl.constexpr(805459861)
VECTOR_RED_CAPABILITY = (9, 0)  # red.global.v2.f32 needs sm_90


@dataclass(frozen=True)
class TritonConfig:
    """Launch knobs. Defaults = best of bench/hashgrid.py --sweep on an H100 (Triton 3.6): 3.48 ms fp32 /
    3.39 ms fp16 for fwd+bwd at 2^20 points; levels_per_program 1 was ~4% and 16 ~45% slower."""

    block: int = 128                 # points per program (power of two)
    num_warps: int = 4
    levels_per_program: int = 4      # >= n_levels: all levels in one program; 1: level as a grid axis
    pair_loads: bool = True          # F == 2: 1-D tiles, both features in one vector load/store
    vec_atomics: bool = True         # with pair_loads: one v2 fp32 reduction per corner (sm_90+ only)


DEFAULT_CONFIG = TritonConfig()


@triton.jit
def _cell(x, scale):
    """tcnn's pos_fract: pos = fma(x, scale, 0.5); returns (uint32 lower vertex, fractional part)."""
    pos = tl.fma(x, scale, 0.5)
    lower = tl.floor(pos)
    return lower.to(tl.int32).to(tl.uint32), pos - lower


@triton.jit
def _slot(tx, ty, tz, size, dense):
    """Table slot of a corner: row-major index (dense) or prime hash (hashed), wrapped into the level."""
    if dense:
        s = (tx + ty + tz) % size
    else:
        s = (tx ^ ty ^ tz) & (size - 1)  # hashed levels hold exactly 2^log2_hashmap_size entries
    return s.to(tl.int32)


@triton.jit
def _level(meta_ptr, scale_ptr, lvl, x0, x1, x2):
    """Per-level constants and the per-dimension lower/upper vertex terms and weights of BLOCK points."""
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(meta_ptr + lvl * META_COLS + 0).to(tl.uint32)
    size = tl.load(meta_ptr + lvl * META_COLS + 1).to(tl.uint32)
    first = tl.load(meta_ptr + lvl * META_COLS + 2)   # entry offset of the level
    dense = tl.load(meta_ptr + lvl * META_COLS + 3) != 0
    mul_y = tl.where(dense, res, tl.full((), PRIME_Y, tl.uint32))
    mul_z = tl.where(dense, res * res, tl.full((), PRIME_Z, tl.uint32))
    gx, fx = _cell(x0, scale)
    gy, fy = _cell(x1, scale)
    gz, fz = _cell(x2, scale)
    ty0 = gy * mul_y
    tz0 = gz * mul_z
    return scale, size, first, dense, gx, gx + 1, ty0, ty0 + mul_y, tz0, tz0 + mul_z, fx, fy, fz


@triton.jit
def _load_pair(base_ptr, pair, mask):
    """Features 0 and 1 of `pair` (B,) with one 8-byte (fp32) or 4-byte (fp16/bf16) load -> two fp32."""
    elem = base_ptr.dtype.element_ty
    if elem.primitive_bitwidth == 32:
        bits = tl.load(base_ptr.to(tl.pointer_type(tl.uint64)) + pair, mask=mask, other=0)
        lo = (bits & 0xFFFFFFFF).to(tl.uint32).to(tl.float32, bitcast=True)
        hi = (bits >> 32).to(tl.uint32).to(tl.float32, bitcast=True)
    else:
        bits = tl.load(base_ptr.to(tl.pointer_type(tl.uint32)) + pair, mask=mask, other=0)
        lo = (bits & 0xFFFF).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
        hi = (bits >> 16).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
    return lo, hi


@triton.jit
def _red_add_v2(address, a, b):
    """One vectorised fp32 reduction of (a, b) into the 8-byte aligned int64 `address` (sm_90)."""
    return tl.inline_asm_elementwise("red.global.v2.f32.add [$1], {$2, $3};\n\tmov.u32 $0, 0;",
                                     "=r,l,f,f", [address, a, b], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _hashgrid_fwd(x_ptr, table_ptr, meta_ptr, scale_ptr, out_ptr, N, L,
                  LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr):
    """out[n, l*F + f] = sum_c w_c(n, l) * table[(first_l + slot_c(n, l)) * F + f]."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)          # (B,)
    rmask = rows < N
    x0 = tl.load(x_ptr + rows * ROW + 0, mask=rmask, other=0.0)
    x1 = tl.load(x_ptr + rows * ROW + 1, mask=rmask, other=0.0)
    x2 = tl.load(x_ptr + rows * ROW + 2, mask=rmask, other=0.0)
    row_start = rows.to(tl.int64) * (L * F)                         # (B,) first output column
    for i in range(LEVELS):  # compile-time trip count (levels per program)
        lvl = tl.program_id(1) * LEVELS + i
        if lvl < L:  # last group may be partial
            _fwd_level(x0, x1, x2, table_ptr, meta_ptr, scale_ptr, out_ptr, row_start, lvl, rmask,
                       F, BLOCK, PAIR)


@triton.jit
def _fwd_level(x0, x1, x2, table_ptr, meta_ptr, scale_ptr, out_ptr, row_start, lvl, rmask,
               F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr):
    """Interpolate one level for BLOCK points and store its F output columns."""
    scale, size, first, dense, tx0, tx1, ty0, ty1, tz0, tz1, fx, fy, fz = _level(
        meta_ptr, scale_ptr, lvl, x0, x1, x2)
    if PAIR:  # F == 2: 1-D tiles, one vector load per corner, one 8-byte store per point
        acc0 = tl.zeros((BLOCK,), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK,), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for c in tl.static_range(N_CORNERS):
        # corner c takes the upper vertex along dim j iff bit j of c is set (compile-time selects)
        slot = _slot(tx1 if c & 1 else tx0, ty1 if c & 2 else ty0, tz1 if c & 4 else tz0, size, dense)
        w = (fx if c & 1 else 1 - fx) * (fy if c & 2 else 1 - fy) * (fz if c & 4 else 1 - fz)   # (B,)
        if PAIR:
            v0, v1 = _load_pair(table_ptr, first + slot, rmask)
            acc0 += w * v0
            acc1 += w * v1
        else:
            feat = tl.arange(0, F)
            v = tl.load(table_ptr + ((first + slot) * F)[:, None] + feat[None, :], mask=rmask[:, None], other=0.0)
            acc += w[:, None] * v.to(tl.float32)
    if PAIR:
        packed = acc0.to(tl.uint32, bitcast=True).to(tl.uint64) | (acc1.to(tl.uint32, bitcast=True).to(tl.uint64) << 32)
        tl.store(out_ptr.to(tl.pointer_type(tl.uint64)) + (row_start + lvl * F) // 2, packed, mask=rmask)
    else:
        feat = tl.arange(0, F)
        tl.store(out_ptr + (row_start + lvl * F)[:, None] + feat[None, :], acc, mask=rmask[:, None])


@triton.jit
def _hashgrid_bwd(x_ptr, table_ptr, meta_ptr, scale_ptr, gout_ptr, gtable_ptr, gx_ptr,
                  N, L, LEVELS: tl.constexpr,
                  F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr, NEED_PARAMS: tl.constexpr,
                  NEED_X: tl.constexpr, VEC_ATOMICS: tl.constexpr):
    """gtable[slot] += g * w for every corner (fp32 atomics); gx[group, n, :] = this group's dL/dx."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < N
    x0 = tl.load(x_ptr + rows * ROW + 0, mask=rmask, other=0.0)
    x1 = tl.load(x_ptr + rows * ROW + 1, mask=rmask, other=0.0)
    x2 = tl.load(x_ptr + rows * ROW + 2, mask=rmask, other=0.0)
    row_start = rows.to(tl.int64) * (L * F)
    dx0 = tl.zeros((BLOCK,), dtype=tl.float32)
    dx1 = tl.zeros((BLOCK,), dtype=tl.float32)
    dx2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(LEVELS):  # compile-time trip count (levels per program)
        lvl = tl.program_id(1) * LEVELS + i
        if lvl < L:  # last group may be partial
            l0, l1, l2 = _bwd_level(x0, x1, x2, table_ptr, meta_ptr, scale_ptr, gout_ptr, gtable_ptr, row_start,
                                    lvl, rmask, F, BLOCK, PAIR, NEED_PARAMS, NEED_X, VEC_ATOMICS)
            dx0 += l0
            dx1 += l1
            dx2 += l2
    if NEED_X:
        gx_rows = gx_ptr + (tl.program_id(1) * N + rows.to(tl.int64)) * ROW
        tl.store(gx_rows + 0, dx0, mask=rmask)
        tl.store(gx_rows + 1, dx1, mask=rmask)
        tl.store(gx_rows + 2, dx2, mask=rmask)


@triton.jit
def _bwd_level(x0, x1, x2, table_ptr, meta_ptr, scale_ptr, gout_ptr, gtable_ptr, row_start, lvl, rmask,
               F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr, NEED_PARAMS: tl.constexpr,
               NEED_X: tl.constexpr, VEC_ATOMICS: tl.constexpr):
    """Scatter one level's gradient into the table; return its (B,) x, y, z input-gradient terms."""
    scale, size, first, dense, tx0, tx1, ty0, ty1, tz0, tz1, fx, fy, fz = _level(
        meta_ptr, scale_ptr, lvl, x0, x1, x2)
    feat = tl.arange(0, F)
    if PAIR:
        g0, g1 = _load_pair(gout_ptr, (row_start + lvl * F) // 2, rmask)           # (B,) each
    else:
        g = tl.load(gout_ptr + (row_start + lvl * F)[:, None] + feat[None, :], mask=rmask[:, None], other=0.0)
    lx0 = tl.zeros((BLOCK,), dtype=tl.float32)
    lx1 = tl.zeros((BLOCK,), dtype=tl.float32)
    lx2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in tl.static_range(N_CORNERS):
        slot = _slot(tx1 if c & 1 else tx0, ty1 if c & 2 else ty0, tz1 if c & 4 else tz0, size, dense)
        wx = fx if c & 1 else 1 - fx
        wy = fy if c & 2 else 1 - fy
        wz = fz if c & 4 else 1 - fz
        w = wx * wy * wz
        entry = first + slot                                                        # (B,)
        if NEED_PARAMS:
            if PAIR and VEC_ATOMICS:  # masked rows add g = 0 at a valid entry
                _red_add_v2((gtable_ptr + entry * 2).to(tl.int64), g0 * w, g1 * w)
            elif PAIR:
                tl.atomic_add(gtable_ptr + entry * 2, g0 * w, mask=rmask, sem="relaxed")
                tl.atomic_add(gtable_ptr + entry * 2 + 1, g1 * w, mask=rmask, sem="relaxed")
            else:
                tl.atomic_add(gtable_ptr + (entry * F)[:, None] + feat[None, :], g * w[:, None],
                              mask=rmask[:, None], sem="relaxed")
        if NEED_X:
            if PAIR:
                v0, v1 = _load_pair(table_ptr, entry, rmask)
                gv = g0 * v0 + g1 * v1                                              # (B,) dL/dw_c
            else:
                v = tl.load(table_ptr + (entry * F)[:, None] + feat[None, :], mask=rmask[:, None], other=0.0)
                gv = tl.sum(g * v.to(tl.float32), axis=1)
            lx0 += gv * (wy * wz if c & 1 else -(wy * wz))   # dw_c / dfrac_x
            lx1 += gv * (wx * wz if c & 2 else -(wx * wz))
            lx2 += gv * (wx * wy if c & 4 else -(wx * wy))
    return lx0 * scale, lx1 * scale, lx2 * scale


_TABLE_CACHE = {}


def _level_tables(layout: GridLayout, device: torch.device):
    """(meta (L, 4) int32, scale (L,) float32) on `device`, cached per (layout, device)."""
    key = (layout, device)
    if key not in _TABLE_CACHE:
        meta = [[r, s, o, int(d)] for r, s, o, d in
                zip(layout.resolutions, layout.sizes, layout.offsets, layout.dense)]
        for s, d in zip(layout.sizes, layout.dense):
            if not d and s & (s - 1):
                raise AssertionError(f"hashed level of {s} entries is not a power of two")
        if layout.n_params >= 2**31:
            raise ValueError(f"{layout.n_params} params exceed the kernels' int32 addressing")
        _TABLE_CACHE[key] = (torch.tensor(meta, dtype=torch.int32, device=device),
                             torch.tensor(layout.scales, dtype=torch.float32, device=device))
    return _TABLE_CACHE[key]


def _use_pairs(cfg: TritonConfig, f: int, *tensors) -> bool:
    """The F == 2 pair path reinterprets rows as 8-byte words: needs aligned base pointers."""
    return cfg.pair_loads and f == 2 and all(t.data_ptr() % 8 == 0 for t in tensors)


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
            meta, scale = _level_tables(layout, x.device)
            grid, lpp = _grid(n, layout, cfg)
            _hashgrid_fwd[grid](x32, table, meta, scale, out, n, layout.n_levels, LEVELS=lpp,
                                F=f, BLOCK=cfg.block, PAIR=_use_pairs(cfg, f, table, out),
                                num_warps=cfg.num_warps)
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
            meta, scale = _level_tables(layout, x32.device)
            gout = grad_out.to(torch.float32).contiguous()                           # (N, L * F)
            gtable_arg = gtable if need_params else gout  # unused pointer when not needed
            pair = _use_pairs(cfg, f, table, gout, gtable_arg)
            vec = pair and cfg.vec_atomics and _has_vector_red(x32.device)
            _hashgrid_bwd[grid](x32, table, meta, scale, gout, gtable_arg, gx if need_x else gout,
                                n, layout.n_levels, LEVELS=lpp, F=f, BLOCK=cfg.block, PAIR=pair,
                                NEED_PARAMS=need_params, NEED_X=need_x, VEC_ATOMICS=vec,
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


def set_default_config(**knobs) -> TritonConfig:
    """Change the launch knobs used by HashGrid's triton backend (e.g. after a --sweep)."""
    global DEFAULT_CONFIG
    DEFAULT_CONFIG = replace(DEFAULT_CONFIG, **knobs)
    return DEFAULT_CONFIG
