"""HashGrid: layout, torch backend vs a slow loop reference written from tiny-cuda-nn's grid.h, API."""
import math

import numpy as np
import pytest
import torch

from models.hashgrid import TCNN_INSTALL, HashGrid, _import_error, encode_torch

MASK = 0xFFFFFFFF
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
FULL = dict(n_input_dims=3, n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
            base_resolution=16, per_level_scale=1.447)
# 2 dense levels then 4 hashed ones (resolutions 4, 8, 13, 24, 42, 76; 512-entry tables)
SMALL = dict(n_input_dims=3, n_levels=6, n_features_per_level=2, log2_hashmap_size=9,
             base_resolution=4, per_level_scale=1.8)
VALUE_ATOL = 1e-5   # float32 interpolation of O(1) table values
GRAD_ATOL = 1e-4    # float32 sums of O(1) upstream gradients over many points


# ----------------------------------------------------------------------------- reference
def level_constants(cfg):
    """[(scale, resolution, size, offset)] per level, following GridEncodingTemplated's constructor."""
    d, hashmap = cfg["n_input_dims"], 2 ** cfg["log2_hashmap_size"]
    log2_scale = np.log2(np.float32(cfg["per_level_scale"]))
    out, offset = [], 0
    for level in range(cfg["n_levels"]):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale)) * np.float32(cfg["base_resolution"]) - np.float32(1)
        res = int(math.ceil(scale)) + 1
        size = min(((res**d + 7) // 8) * 8, hashmap)
        out.append((float(scale), res, size, offset))
        offset += size
    return out


def grid_index(pos_grid, res, size):
    """tcnn's grid_index for a hash grid (slot inside the level), uint32 arithmetic."""
    stride, index = 1, 0
    for p in pos_grid:
        if stride > size:
            break
        index = (index + p * stride) & MASK
        stride = (stride * res) & MASK
    if size < stride:
        index = 0
        for p, prime in zip(pos_grid, PRIMES):
            index ^= (p * prime) & MASK
    return index % size


def corner_terms(x, cfg):
    """terms[n] = [(level, table entry, weight)] for every level and corner of point n."""
    d = cfg["n_input_dims"]
    terms = []
    for point in np.asarray(x, dtype=np.float32):
        row = []
        for level, (scale, res, size, offset) in enumerate(level_constants(cfg)):
            # pos = fmaf(scale, x, 0.5): exact in float64, rounded once to float32
            pos = [float(np.float32(float(p) * scale + 0.5)) for p in point]
            pos_grid = [math.floor(p) & MASK for p in pos]
            frac = [p - math.floor(p) for p in pos]
            for corner in range(2**d):
                upper = [(corner >> k) & 1 for k in range(d)]
                weight = 1.0
                for k in range(d):
                    weight *= frac[k] if upper[k] else 1.0 - frac[k]
                local = [(g + u) & MASK for g, u in zip(pos_grid, upper)]
                row.append((level, offset + grid_index(local, res, size), weight))
        terms.append(row)
    return terms


def reference_forward(x, params, cfg):
    """(N, L * F) float64 encoding accumulated corner by corner."""
    f = cfg["n_features_per_level"]
    table = params.detach().double().view(-1, f)
    out = torch.zeros(len(x), cfg["n_levels"] * f, dtype=torch.float64)
    for n, row in enumerate(corner_terms(x, cfg)):
        for level, entry, weight in row:
            out[n, level * f:(level + 1) * f] += weight * table[entry]
    return out


def reference_param_grad(x, grad_out, n_params, cfg):
    """d(sum(grad_out * out)) / d params, accumulated corner by corner."""
    f = cfg["n_features_per_level"]
    grad = torch.zeros(n_params // f, f, dtype=torch.float64)
    for n, row in enumerate(corner_terms(x, cfg)):
        for level, entry, weight in row:
            grad[entry] += weight * grad_out[n, level * f:(level + 1) * f].double()
    return grad.view(-1)


# ----------------------------------------------------------------------------- helpers
def assert_close(actual, expected, atol):
    """Max-abs comparison (torch.testing.assert_close is slow on 12.6M-element gradients)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


def make_grid(cfg, seed=0, **kw):
    """Grid with O(1) random params so that value errors are meaningful in absolute terms."""
    torch.manual_seed(seed)
    grid = HashGrid(**cfg, **kw)
    with torch.no_grad():
        grid.params.uniform_(-1, 1)
    return grid


def edge_points(d):
    """Corners of the unit cube, the centre, and points just inside the faces."""
    pts = [[0.0] * d, [1.0] * d, [0.5] * d, [0.0] * (d - 1) + [1.0], [1.0] + [0.0] * (d - 1),
           [1e-7] * d, [1 - 1e-7] * d]
    return torch.tensor(pts, dtype=torch.float32)


def sample_points(n, d, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([edge_points(d), torch.rand(n, d, generator=g)])


# ----------------------------------------------------------------------------- layout
def test_full_config_layout_matches_tcnn():
    grid = HashGrid(**FULL)
    assert grid.n_params == 12_599_920 == grid.params.numel()
    assert sum(grid.layout.dense) == 5 and grid.layout.dense[:5] == (True,) * 5
    assert grid.n_output_dims == 32
    assert grid.layout.resolutions[:3] == (16, 24, 34) and grid.layout.resolutions[-1] == 4085
    assert all(s == 2**19 for s in grid.layout.sizes[5:])
    expected = [(r, s, o) for _, r, s, o in level_constants(FULL)]
    assert list(zip(grid.layout.resolutions, grid.layout.sizes, grid.layout.offsets)) == expected
    p = grid.params.detach()
    assert p.dtype == torch.float32 and p.abs().max() <= 1e-4 and p.std() > 1e-5


def test_sizes_are_aligned():
    grid = HashGrid(**SMALL)
    assert grid.layout.sizes == (64, 512, 512, 512, 512, 512)
    assert grid.layout.dense == (True, True, False, False, False, False)
    assert all(s % 8 == 0 for s in grid.layout.sizes)
    assert grid.n_params == sum(grid.layout.sizes) * 2


# ----------------------------------------------------------------------------- torch vs reference
@pytest.mark.parametrize("cfg", [
    SMALL,
    dict(SMALL, n_input_dims=2, n_features_per_level=4, log2_hashmap_size=6),
    dict(SMALL, n_input_dims=4, n_features_per_level=1, n_levels=3),
], ids=["3d-f2", "2d-f4", "4d-f1"])
def test_torch_matches_reference(cfg):
    grid = make_grid(cfg)
    assert any(grid.layout.dense) and not all(grid.layout.dense), "need dense and hashed levels"
    x = sample_points(120, cfg["n_input_dims"])
    out = grid(x)
    assert out.shape == (len(x), grid.n_output_dims) and out.dtype == torch.float32
    assert_close(out, reference_forward(x, grid.params, cfg), VALUE_ATOL)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    ref = reference_param_grad(x, grad_out, grid.n_params, cfg)
    assert_close(grid.params.grad, ref, GRAD_ATOL)


def test_full_config_matches_reference_at_a_few_points():
    grid = make_grid(FULL)
    x = sample_points(5, 3)
    out = grid(x)
    assert_close(out, reference_forward(x, grid.params, FULL), VALUE_ATOL)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    ref = reference_param_grad(x, grad_out, grid.n_params, FULL)
    assert_close(grid.params.grad, ref, GRAD_ATOL)
    assert (grid.params.grad != 0).sum() > len(x) * 16  # gradients really land in many entries


def test_vertex_reads_one_entry_row_major():
    """On a vertex of a dense level the encoding is that vertex's entry, at x + y*res + z*res^2."""
    cfg = dict(SMALL, base_resolution=5)  # level-0 scale 4: x = (m - 0.5) / 4 is exact in binary
    grid = make_grid(cfg)
    res, f = grid.layout.resolutions[0], 2
    m = torch.tensor([[1, 2, 3], [4, 1, 2], [2, 4, 4]])
    out = grid((m.float() - 0.5) / 4)
    slots = m[:, 0] + m[:, 1] * res + m[:, 2] * res**2
    expected = grid.params.detach().view(-1, f)[slots]
    assert torch.equal(out[:, :f], expected)


def test_x_gradients_gradcheck_and_double_backward():
    """Analytic d(out)/dx and d/dparams of it (eikonal), checked by finite differences in float64."""
    cfg = dict(n_input_dims=3, n_levels=2, n_features_per_level=2, log2_hashmap_size=4,
               base_resolution=3, per_level_scale=2.0)
    grid = make_grid(cfg)
    params = grid.params.detach().double().requires_grad_(True)
    x = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    fn = lambda x, p: encode_torch(x, p, grid.layout)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, params))
    assert torch.autograd.gradgradcheck(fn, (x, params))


def test_half_reads_round_table_values():
    for dtype in (torch.float16, torch.bfloat16):
        grid = make_grid(SMALL, param_dtype=dtype)
        x = sample_points(50, 3)
        out = grid(x)
        rounded = grid.params.detach().to(dtype).double()
        assert_close(out, reference_forward(x, rounded, SMALL), VALUE_ATOL)
        assert (out.double() - reference_forward(x, grid.params, SMALL)).abs().max() > 1e-5  # really rounded
        assert grid.params.dtype == torch.float32 and grid.state_dict()["params"].dtype == torch.float32


# ----------------------------------------------------------------------------- API
def test_backend_resolution(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    grid = HashGrid(**SMALL)
    assert grid.backend == "torch" and grid.resolve_backend("cpu") == "torch"
    cuda_choice = grid.resolve_backend("cuda")
    if _import_error("tinycudann") is None:
        assert cuda_choice == "tcnn"
    elif _import_error("triton") is None:
        assert cuda_choice == "triton"
        assert HashGrid(**SMALL, param_dtype=torch.bfloat16).resolve_backend("cuda") == "triton"
        forced = HashGrid(**SMALL, backend="triton")
        with pytest.raises(RuntimeError, match="CUDA"):
            forced(torch.rand(4, 3))
    assert HashGrid(**dict(SMALL, n_input_dims=4)).resolve_backend("cuda") in ("torch", "tcnn")
    with pytest.raises(ValueError, match="backend"):
        HashGrid(**SMALL, backend="cuda")


@pytest.mark.skipif(_import_error("tinycudann") is None, reason="tiny-cuda-nn is installed")
def test_missing_tcnn_names_package_and_install_line():
    with pytest.raises(RuntimeError) as err:
        HashGrid(**SMALL, backend="tcnn")
    assert "tinycudann" in str(err.value) and TCNN_INSTALL in str(err.value)


def test_bad_inputs_raise():
    grid = HashGrid(**SMALL)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        grid(torch.rand(4, 2))
    with pytest.raises(ValueError, match="n_features_per_level"):
        HashGrid(**dict(SMALL, n_features_per_level=3))
    with pytest.raises(ValueError, match="param_dtype"):
        HashGrid(**SMALL, param_dtype=torch.float64)


def test_state_dict_is_params_only_and_round_trips():
    a = make_grid(SMALL, seed=1, backend="torch")
    b = make_grid(SMALL, seed=2, backend="auto")
    x = sample_points(30, 3)
    assert list(a.state_dict()) == ["params"]
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_compiles_without_graph_breaks():
    grid = make_grid(SMALL)
    x = sample_points(20, 3)
    compiled = torch.compile(grid, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), grid(x))
