"""Multiresolution hash-grid encoding (Instant-NGP) with tiny-cuda-nn's exact maths and parameter layout.

One module, three interchangeable backends sharing one flat fp32 ``params`` tensor:
  * ``torch``  - vectorised PyTorch (CPU/CUDA, full autograd incl. double backward wrt x);
  * ``triton`` - fused CUDA kernels (``models/hashgrid_triton.py`` launches ``models/hashgrid_kernels.py``);
  * ``tcnn``   - tiny-cuda-nn's native encoding run on *our* params.
A checkpoint (state_dict key ``params``) trained with one backend therefore renders with any other.

The layout (tiny-cuda-nn's) and its level tables are in models/grid_layout.py; the optional backends
(models/hashgrid_triton.py, tinycudann) are imported on first use by `_load_backend` only.
"""
from __future__ import annotations

import functools
import importlib

import torch
from torch import nn

from models.grid_layout import HASH_PRIMES, GridLayout, grid_layout, level_tables, triton_interpreting

BACKENDS = ("auto", "tcnn", "triton", "torch")
TCNN_INSTALL = "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"
UINT32_MASK = 0xFFFFFFFF
INIT_RANGE = 1e-4            # params ~ U(-1e-4, 1e-4), as tiny-cuda-nn initialises grids
POS_OFFSET = 0.5             # pos = x * scale + 0.5 staggers the levels (Instant-NGP, appendix A)
TCNN_DIMS = (2, 3)           # input dimensions tiny-cuda-nn's grid encoding is compiled for
TRITON_DIMS = (3,)           # the Triton kernels are written for 3-D inputs
HALF_DTYPES = (torch.float16, torch.bfloat16)
# optional packages -> the module that runs the backend (imported on first use, by _load_backend)
BACKEND_MODULES = {"tinycudann": "tinycudann", "triton": "models.hashgrid_triton"}


def encode_torch(x: torch.Tensor, params: torch.Tensor, layout: GridLayout,
                 read_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Pure-PyTorch encoding: x (N, D) -> (N, L * F), level-major then feature.

    All levels and all 2^D corners are processed at once (no data-dependent control flow), so it
    runs on CPU and CUDA, differentiates twice (analytic SDF normals + eikonal) and compiles.
    `read_dtype` rounds gathered table values (fp16/bf16 reads, as the other backends do).
    Output dtype: float32, or float64 when x is float64 (for gradcheck).
    """
    n, d = x.shape
    big = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale, stride, primes, size, offset, dense = level_tables(layout, x.device, "torch")
    # pos = x * scale + 0.5 rounded once, like tcnn's fmaf: exact in float64, then rounded to float32
    pos = (x.to(torch.float64)[:, None, :] * scale[:, None] + POS_OFFSET).to(big)   # (N, L, D)
    cell = torch.floor(pos.detach())
    frac = pos - cell                                                                # (N, L, D)
    lower = cell.to(torch.int64) & UINT32_MASK                                       # uint32 pos_grid
    corner = torch.stack([lower, (lower + 1) & UINT32_MASK], dim=-1)                 # (N, L, D, 2)
    weights = torch.stack([1 - frac, frac], dim=-1)                                  # (N, L, D, 2)
    # combine dimensions; corner k uses the upper vertex along dim j iff bit j of k is set (tcnn order)
    w = weights[:, :, 0]                                                             # (N, L, 2)
    for j in range(1, d):
        w = (weights[:, :, j, :, None] * w[:, :, None, :]).flatten(2)               # (N, L, 2^j+1)
    n_dense = sum(layout.dense)
    if layout.dense[:n_dense] == (True,) * n_dense:
        # the dense levels come first (resolutions grow): index each group only its own way
        parts = []
        if n_dense:
            lv = slice(0, n_dense)
            idx = _combine(corner[:, lv] * stride[lv, :, None], torch.add) & UINT32_MASK
            parts.append(idx % size[lv, None] + offset[lv, None])
        if n_dense < layout.n_levels:
            lv = slice(n_dense, layout.n_levels)
            idx = _combine((corner[:, lv] * primes[:, None]) & UINT32_MASK, torch.bitwise_xor)
            sizes = set(layout.sizes[lv])
            if len(sizes) == 1 and (m := sizes.pop()) & (m - 1) == 0:
                idx = idx & (m - 1)                       # the same as % m for a power of two, cheaper
            else:
                idx = idx % size[lv, None]
            parts.append(idx + offset[lv, None])
        entry = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]             # (N, L, 2^D)
    else:
        dense_idx = _combine(corner * stride[:, :, None], torch.add)
        hash_idx = _combine((corner * primes[:, None]) & UINT32_MASK, torch.bitwise_xor)
        slot = torch.where(dense[:, None], dense_idx & UINT32_MASK, hash_idx) % size[:, None]
        entry = slot + offset[:, None]                                               # (N, L, 2^D)
    table = params.view(-1, layout.n_features)                                       # (entries, F)
    feats = table.index_select(0, entry.flatten()).view(*entry.shape, layout.n_features)
    feats = feats.to(big)
    if read_dtype is not None and read_dtype != params.dtype:
        # round the values read, keep full-precision gradients (like the fp32 atomics of the kernels)
        feats = feats + (feats.detach().to(read_dtype).to(big) - feats.detach())
    out = (w[..., None] * feats).sum(dim=2)                                          # (N, L, F)
    return out.reshape(n, layout.n_levels * layout.n_features)


def _combine(terms: torch.Tensor, op) -> torch.Tensor:
    """Per-dimension corner terms (N, L, D, 2) -> per-corner values (N, L, 2^D) combined with `op`
    (add: row-major index; xor: hash); corner k takes the upper vertex along dim j iff bit j of k is set."""
    out = terms[:, :, 0]
    for j in range(1, terms.shape[2]):
        out = op(terms[:, :, j, :, None], out[:, :, None, :]).flatten(2)
    return out


@functools.lru_cache(maxsize=None)
def _load_backend(package: str) -> tuple:
    """(module, None) when the optional backend of `package` ("tinycudann" | "triton") imports, else
    (None, reason). The one place the optional backends are imported (cached: attempts are slow)."""
    try:
        return importlib.import_module(BACKEND_MODULES[package]), None
    except Exception as exc:  # tcnn can raise OSError/RuntimeError, not just ImportError
        return None, f"{type(exc).__name__}: {exc}"


def _import_error(package: str) -> str | None:
    """None if `package` ("tinycudann" | "triton") imports, else the reason."""
    return _load_backend(package)[1]


def _require(package: str):
    """The backend module of `package`, or a RuntimeError saying how to install it."""
    module, err = _load_backend(package)
    if err is None:
        return module
    hint = TCNN_INSTALL if package == "tinycudann" else "pip install triton"
    raise RuntimeError(f"HashGrid backend needs the '{package}' package, which failed to import "
                       f"({err}). Install it with: {hint}")


class HashGrid(nn.Module):
    """Trainable multiresolution hash grid: x (N, D) in [0, 1] -> (N, n_levels * F) float32.

    `params` is always a flat fp32 master copy in tiny-cuda-nn's order (state_dict key ``params``);
    `param_dtype` (fp16/bf16) only sets the precision in which table values are *read*, with fp32
    interpolation and fp32 gradients, so checkpoints stay portable between backends and dtypes.
    """

    def __init__(self, n_input_dims: int = 3, n_levels: int = 16, n_features_per_level: int = 2,
                 log2_hashmap_size: int = 19, base_resolution: int = 16, per_level_scale: float = 1.447,
                 backend: str = "auto", param_dtype: torch.dtype = torch.float32):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not 1 <= n_input_dims <= len(HASH_PRIMES):
            raise ValueError(f"n_input_dims must be in [1, {len(HASH_PRIMES)}], got {n_input_dims}")
        if n_features_per_level not in (1, 2, 4, 8):
            raise ValueError(f"n_features_per_level must be 1, 2, 4 or 8, got {n_features_per_level}")
        if n_levels < 1 or base_resolution < 2 or per_level_scale < 1 or not 1 <= log2_hashmap_size <= 30:
            raise ValueError("need n_levels >= 1, base_resolution >= 2, per_level_scale >= 1, "
                             "1 <= log2_hashmap_size <= 30")
        if param_dtype not in (torch.float32, *HALF_DTYPES):
            raise ValueError(f"param_dtype must be float32, float16 or bfloat16, got {param_dtype}")
        self.requested_backend = backend
        self.param_dtype = param_dtype
        self.config = dict(n_input_dims=n_input_dims, n_levels=n_levels, n_features_per_level=n_features_per_level,
                           log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                           per_level_scale=per_level_scale)
        self.layout = grid_layout(n_input_dims, n_levels, n_features_per_level, log2_hashmap_size,
                                  base_resolution, per_level_scale)
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_levels * n_features_per_level
        self.n_params = self.layout.n_params
        self.params = nn.Parameter(torch.empty(self.n_params).uniform_(-INIT_RANGE, INIT_RANGE))
        self._tcnn_modules = {}  # device -> tinycudann.Encoding (not a submodule: its params are ours)
        if backend in ("tcnn", "triton"):
            _require("tinycudann" if backend == "tcnn" else "triton")
            self._check_supported(backend)

    def _check_supported(self, backend: str) -> None:
        """Clear errors for configurations a forced backend cannot run."""
        dims = self.n_input_dims
        if backend == "tcnn" and self.param_dtype == torch.bfloat16:
            raise ValueError("tiny-cuda-nn supports param_dtype float32/float16, not bfloat16")
        if backend == "tcnn" and dims not in TCNN_DIMS:
            raise ValueError(f"tiny-cuda-nn's grid encodes {TCNN_DIMS}-D inputs, not {dims}-D")
        if backend == "triton" and dims not in TRITON_DIMS:
            raise ValueError(f"the Triton kernels encode {TRITON_DIMS}-D inputs, not {dims}-D")

    def resolve_backend(self, device: torch.device) -> str:
        """Backend used for inputs on `device` (auto: tcnn > triton on CUDA, else torch)."""
        device = torch.device(device)
        req = self.requested_backend
        if req == "auto":
            if device.type != "cuda":
                return "torch"
            d = self.n_input_dims
            if d in TCNN_DIMS and self.param_dtype != torch.bfloat16 and _import_error("tinycudann") is None:
                return "tcnn"
            if d in TRITON_DIMS and _import_error("triton") is None:
                return "triton"
            return "torch"
        if device.type != "cuda" and req == "tcnn":
            raise RuntimeError(f"backend 'tcnn' runs on CUDA tensors only, got {device}")
        if device.type != "cuda" and req == "triton" and not triton_interpreting():
            raise RuntimeError(f"backend 'triton' runs on CUDA tensors only (or set TRITON_INTERPRET=1 "
                               f"before importing triton for the CPU interpreter), got {device}")
        self._check_supported(req)
        return req

    @property
    def backend(self) -> str:
        """Resolved backend for the device the params currently live on."""
        return self.resolve_backend(self.params.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_input_dims:
            raise ValueError(f"HashGrid expects x of shape (N, {self.n_input_dims}), got {tuple(x.shape)}")
        if x.device != self.params.device:
            raise RuntimeError(f"x is on {x.device} but HashGrid params are on {self.params.device}")
        backend = self.resolve_backend(x.device)
        if backend == "torch":
            read = None if self.param_dtype == torch.float32 else self.param_dtype
            return encode_torch(x, self.params, self.layout, read)
        if backend == "triton":
            return _require("triton").encode_triton(x, self.params, self.layout, self.param_dtype)
        return self._forward_tcnn(x)

    def _forward_tcnn(self, x: torch.Tensor) -> torch.Tensor:
        """Run tinycudann.Encoding with our flat params.

        tcnn's torch Module passes ``self.params.to(precision)`` into its autograd function at every
        call, so re-pointing its ``params`` attribute at our Parameter makes it read and accumulate
        gradients into our (fp32 master) tensor; its own freshly initialised copy is dropped.
        """
        enc = self._tcnn_modules.get(x.device)
        if enc is None:
            tcnn = _require("tinycudann")
            cfg = self.config
            encoding_config = {"otype": "HashGrid", "n_levels": cfg["n_levels"],
                               "n_features_per_level": cfg["n_features_per_level"],
                               "log2_hashmap_size": cfg["log2_hashmap_size"],
                               "base_resolution": cfg["base_resolution"],
                               "per_level_scale": cfg["per_level_scale"], "interpolation": "Linear"}
            with torch.cuda.device(x.device):
                enc = tcnn.Encoding(cfg["n_input_dims"], encoding_config, dtype=self.param_dtype)
            if enc.n_params != self.n_params:
                raise RuntimeError(f"tcnn reports {enc.n_params} params, our layout {self.n_params}")
            self._tcnn_modules[x.device] = enc
        enc.params = self.params
        return enc(x.float()).float()

    def extra_repr(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{cfg}, backend={self.requested_backend!r}, param_dtype={self.param_dtype}, n_params={self.n_params}"
