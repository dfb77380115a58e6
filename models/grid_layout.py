"""Hash-grid layout shared by every backend: per-level constants (tiny-cuda-nn's maths) and their tensors.

Layout (tiny-cuda-nn ``GridEncodingTemplated``): level l has ``size_l = min(next_multiple(res_l^D, 8),
2^log2_hashmap_size)`` entries of F features; levels are stored one after another and the F features of
an entry are contiguous: ``params[(offset_l + slot) * F + f]``.

models/hashgrid.py (torch backend, the module) and models/hashgrid_triton.py (Triton backend) both
import this module; neither imports the other at module level.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

# tiny-cuda-nn's coherent prime hash: one prime per input dimension (the first is 1 for memory coherence).
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
PARAM_ALIGNMENT = 8          # tcnn pads each level's entry count to a multiple of 8 (aligned accesses)
MAX_DENSE_ENTRIES = 2**31 - 1  # tcnn caps the dense entry count of a level (uint32_max / 2)
KERNEL_MAX_PARAMS = 2**31    # the Triton kernels address params with int32
TABLE_KINDS = ("torch", "kernel")


@dataclass(frozen=True)
class GridLayout:
    """Per-level constants of a grid, computed exactly as tiny-cuda-nn does (float32 scale maths)."""

    n_dims: int
    n_features: int
    scales: tuple      # (L,) float32 values as Python floats: exp2(l * log2(per_level_scale)) * base - 1
    resolutions: tuple  # (L,) ceil(scale) + 1 vertices per axis
    sizes: tuple       # (L,) table entries of the level (hashmap_size in tcnn)
    offsets: tuple     # (L + 1,) first entry of each level; offsets[-1] = total entries
    dense: tuple       # (L,) True where res^D fits the level, i.e. row-major indexing, no hash

    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features


def grid_layout(n_input_dims: int, n_levels: int, n_features_per_level: int, log2_hashmap_size: int,
                base_resolution: int, per_level_scale: float) -> GridLayout:
    """Level scales/resolutions/sizes/offsets following tcnn's GridEncodingTemplated constructor."""
    f32 = np.float32
    log2_scale = np.log2(f32(per_level_scale))
    hashmap_size = 2**log2_hashmap_size
    scales, resolutions, sizes, offsets, dense = [], [], [], [0], []
    for level in range(n_levels):
        scale = f32(np.exp2(f32(level) * log2_scale)) * f32(base_resolution) - f32(1.0)
        res = int(math.ceil(scale)) + 1
        n_dense = min(res**n_input_dims, MAX_DENSE_ENTRIES)
        size = min(-(-n_dense // PARAM_ALIGNMENT) * PARAM_ALIGNMENT, hashmap_size)
        scales.append(float(scale))
        resolutions.append(res)
        sizes.append(size)
        offsets.append(offsets[-1] + size)
        dense.append(res**n_input_dims <= size)
    return GridLayout(n_input_dims, n_features_per_level, tuple(scales), tuple(resolutions),
                      tuple(sizes), tuple(offsets), tuple(dense))


def triton_interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _torch_tables(layout: GridLayout, device: torch.device) -> tuple:
    """encode_torch's constants: scale (L,) f64, stride (L, D), primes (D,), size (L,), offset (L,) int64,
    dense (L,) bool."""
    d = layout.n_dims
    scale = torch.tensor(layout.scales, dtype=torch.float64, device=device)                  # (L,)
    # row-major strides res^d; hashed levels never use them (0 avoids int64 overflow for big D)
    stride = torch.tensor([[r**k if dn else 0 for k in range(d)] for r, dn in zip(layout.resolutions, layout.dense)],
                          dtype=torch.int64, device=device)                                 # (L, D)
    primes = torch.tensor(HASH_PRIMES[:d], dtype=torch.int64, device=device)                # (D,)
    size = torch.tensor(layout.sizes, dtype=torch.int64, device=device)                     # (L,)
    offset = torch.tensor(layout.offsets[:-1], dtype=torch.int64, device=device)            # (L,)
    dense = torch.tensor(layout.dense, dtype=torch.bool, device=device)                     # (L,)
    return scale, stride, primes, size, offset, dense


def _kernel_tables(layout: GridLayout, device: torch.device) -> tuple:
    """The Triton kernels' constants: meta (L, 4) int32 (resolution, size, first entry, dense), scale (L,) f32."""
    meta = [[r, s, o, int(d)] for r, s, o, d in
            zip(layout.resolutions, layout.sizes, layout.offsets, layout.dense)]
    for s, d in zip(layout.sizes, layout.dense):
        if not d and s & (s - 1):
            raise AssertionError(f"hashed level of {s} entries is not a power of two")
    if layout.n_params >= KERNEL_MAX_PARAMS:
        raise ValueError(f"{layout.n_params} params exceed the kernels' int32 addressing")
    return (torch.tensor(meta, dtype=torch.int32, device=device),
            torch.tensor(layout.scales, dtype=torch.float32, device=device))


_BUILDERS = {"torch": _torch_tables, "kernel": _kernel_tables}
_TABLES = {}  # (kind, layout, device) -> tuple of tensors


def level_tables(layout: GridLayout, device: torch.device, kind: str) -> tuple:
    """Level constants of `layout` as tensors on `device`, built once per (kind, layout, device), so a
    forward pass copies nothing host->device. kind "torch": encode_torch's; "kernel": the Triton kernels'."""
    key = (kind, layout, device)
    if key not in _TABLES:
        if kind not in _BUILDERS:
            raise ValueError(f"level_tables: kind must be one of {TABLE_KINDS}, got {kind!r}")
        _TABLES[key] = _BUILDERS[kind](layout, device)
    return _TABLES[key]
