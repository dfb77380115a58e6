"""Triton kernels of the hash-grid encoding (same maths as models/hashgrid.py, layout of
models/grid_layout.py); models/hashgrid_triton.py launches them.

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
  * x-neighbour chunks (``merge_x``): the two corners that differ only in x are adjacent entries of one
    aligned 2-entry chunk whenever their slots differ in the last bit only (hashed levels: tcnn's hash
    is linear in x through ``^``, so an even lower x vertex always pairs; dense levels: an even slot).
    Such pairs are read with one 16-byte (fp32) / 8-byte (fp16/bf16) load and updated with one
    ``red.global.v4.f32.add``; the other lanes fall back to one access per corner (predicated).
  * backward wrt x (only when x.requires_grad): gathers the corners again and accumulates
    dL/dx = sum_c (g . v_c) dw_c/dfrac * scale; differentiating it again (create_graph=True) raises
    (use the torch backend for analytic double backward).
"""
import triton
import triton.language as tl

ROW = tl.constexpr(3)         # x and dL/dx are (N, 3) row-major
N_CORNERS = tl.constexpr(8)   # 2^3 trilinear corners
META_COLS = tl.constexpr(4)   # per-level int32 table: resolution, size, first entry, dense
PRIME_Y = tl.constexpr(2654435761)   # tcnn coherent prime hash, dims 1 and 2 (dim 0 uses 1)
PRIME_Z = tl.constexpr(805459861)


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
def _load_chunk(base_ptr, chunk, ASM: tl.constexpr):
    """Entries 2*chunk and 2*chunk+1 (features 0, 1 each) with one 16-byte (fp32, `ASM`: CUDA only) or
    8-byte (fp16/bf16) load -> four fp32: (a0, a1) of the even entry, (b0, b1) of the odd one."""
    elem = base_ptr.dtype.element_ty
    if elem.primitive_bitwidth == 32:
        if ASM:
            a0, a1, b0, b1 = tl.inline_asm_elementwise(
                "ld.global.v4.f32 {$0, $1, $2, $3}, [$4];", "=f,=f,=f,=f,l",
                [(base_ptr + chunk * 4).to(tl.int64)], dtype=(tl.float32,) * 4, is_pure=True, pack=1)
        else:
            every = chunk >= 0                          # (all lanes: chunks of valid entries only)
            a0, a1 = _load_pair(base_ptr, chunk * 2, every)
            b0, b1 = _load_pair(base_ptr, chunk * 2 + 1, every)
    else:
        bits = tl.load(base_ptr.to(tl.pointer_type(tl.uint64)) + chunk)
        a0 = (bits & 0xFFFF).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
        a1 = ((bits >> 16) & 0xFFFF).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
        b0 = ((bits >> 32) & 0xFFFF).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
        b1 = (bits >> 48).to(tl.uint16).to(elem, bitcast=True).to(tl.float32)
    return a0, a1, b0, b1


@triton.jit
def _x_pair(tx0, tx1, ty, tz, size, dense, first):
    """Entries of the two x-neighbour corners (tx0 / tx1 at ty, tz) and whether they share a chunk."""
    e0 = first + _slot(tx0, ty, tz, size, dense)
    e1 = first + _slot(tx1, ty, tz, size, dense)
    return e0, e1, (e0 ^ e1) == 1


@triton.jit
def _red_add_v2_if(pred, address, a, b):
    """_red_add_v2 only where pred (int32) != 0: the other lanes issue no memory operation."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p red.global.v2.f32.add [$2], {$3, $4}; mov.u32 $0, 0; }",
        "=r,r,l,f,f", [pred, address, a, b], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _red_add_v4_if(pred, address, a, b, c, d):
    """One 16-byte vectorised fp32 reduction (sm_90) of (a, b, c, d) where pred (int32) != 0."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p red.global.v4.f32.add [$2], {$3, $4, $5, $6}; mov.u32 $0, 0; }",
        "=r,r,l,f,f,f,f", [pred, address, a, b, c, d], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _red_add_v2(address, a, b):
    """One vectorised fp32 reduction of (a, b) into the 8-byte aligned int64 `address` (sm_90)."""
    return tl.inline_asm_elementwise("red.global.v2.f32.add [$1], {$2, $3};\n\tmov.u32 $0, 0;",
                                     "=r,l,f,f", [address, a, b], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def hashgrid_fwd(x_ptr, table_ptr, meta_ptr, scale_ptr, out_ptr, N, L,
                 LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr,
                 MERGE: tl.constexpr, ASM: tl.constexpr):
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
                       F, BLOCK, PAIR, MERGE, ASM)


@triton.jit
def _fwd_level(x0, x1, x2, table_ptr, meta_ptr, scale_ptr, out_ptr, row_start, lvl, rmask,
               F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr, MERGE: tl.constexpr,
               ASM: tl.constexpr):
    """Interpolate one level for BLOCK points and store its F output columns."""
    scale, size, first, dense, tx0, tx1, ty0, ty1, tz0, tz1, fx, fy, fz = _level(
        meta_ptr, scale_ptr, lvl, x0, x1, x2)
    if PAIR:  # F == 2: 1-D tiles, one vector load per corner, one 8-byte store per point
        acc0 = tl.zeros((BLOCK,), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK,), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for c in tl.static_range(4 if MERGE else 0):  # MERGE (PAIR only): the 4 (y, z) corner pairs along x
        e0, e1, merged = _x_pair(tx0, tx1, ty1 if c & 1 else ty0, tz1 if c & 2 else tz0, size, dense, first)
        a0, a1, b0, b1 = _load_chunk(table_ptr, e0 >> 1, ASM)                       # e0's chunk, always
        odd = (e0 & 1) != 0
        s0, s1 = _load_pair(table_ptr, e1, rmask & (merged == 0))                   # e1 elsewhere
        v00, v01 = tl.where(odd, b0, a0), tl.where(odd, b1, a1)                     # entry e0
        v10 = tl.where(merged, tl.where(odd, a0, b0), s0)                          # entry e1
        v11 = tl.where(merged, tl.where(odd, a1, b1), s1)
        wyz = (fy if c & 1 else 1 - fy) * (fz if c & 2 else 1 - fz)
        acc0 += wyz * ((1 - fx) * v00 + fx * v10)
        acc1 += wyz * ((1 - fx) * v01 + fx * v11)
    for c in tl.static_range(0 if MERGE else N_CORNERS):
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
def hashgrid_bwd(x_ptr, table_ptr, meta_ptr, scale_ptr, gout_ptr, gtable_ptr, gx_ptr,
                 N, L, LEVELS: tl.constexpr,
                 F: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr, NEED_PARAMS: tl.constexpr,
                 NEED_X: tl.constexpr, VEC_ATOMICS: tl.constexpr, MERGE: tl.constexpr):
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
                                    lvl, rmask, F, BLOCK, PAIR, NEED_PARAMS, NEED_X, VEC_ATOMICS, MERGE)
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
               NEED_X: tl.constexpr, VEC_ATOMICS: tl.constexpr, MERGE: tl.constexpr):
    """Scatter one level's gradient into the table; return its (B,) x, y, z input-gradient terms.
    MERGE (PAIR, VEC_ATOMICS, NEED_PARAMS): x-neighbour corners sharing a chunk get one v4 reduction."""
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
    for c in tl.static_range(4 if MERGE else 0):  # the 4 (y, z) corner pairs along x
        e0, e1, merged = _x_pair(tx0, tx1, ty1 if c & 1 else ty0, tz1 if c & 2 else tz0, size, dense, first)
        wyz = (fy if c & 1 else 1 - fy) * (fz if c & 2 else 1 - fz)
        w0, w1 = wyz * (1 - fx), wyz * fx
        odd = (e0 & 1) != 0
        we, wo = tl.where(odd, w1, w0), tl.where(odd, w0, w1)                     # even / odd entry
        m = merged.to(tl.int32)
        _red_add_v4_if(m, (gtable_ptr + (e0 >> 1) * 4).to(tl.int64), g0 * we, g1 * we, g0 * wo, g1 * wo)
        _red_add_v2_if(1 - m, (gtable_ptr + e0 * 2).to(tl.int64), g0 * w0, g1 * w0)
        _red_add_v2_if(1 - m, (gtable_ptr + e1 * 2).to(tl.int64), g0 * w1, g1 * w1)
    for c in tl.static_range(N_CORNERS if (NEED_X or not MERGE) else 0):
        slot = _slot(tx1 if c & 1 else tx0, ty1 if c & 2 else ty0, tz1 if c & 4 else tz0, size, dense)
        wx = fx if c & 1 else 1 - fx
        wy = fy if c & 2 else 1 - fy
        wz = fz if c & 4 else 1 - fz
        w = wx * wy * wz
        entry = first + slot                                                        # (B,)
        if NEED_PARAMS and not MERGE:
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
