"""Neural fields: the hash-grid SDF network (with optional extra heads), colour and variance networks.

Points live in the unit sphere ("unit coordinates"); the hash grid sees them mapped from the
[-bound, bound]^3 cube to [0, 1]^3.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.hashgrid import HashGrid

SOFTPLUS_BETA = 100.0  # IDR/NeuS: a smooth ReLU sharp enough to keep the SDF near-linear
VARIANCE_SCALE = 10.0  # NeuS: inv_s = exp(VARIANCE_SCALE * variance)
HEAD_ACTIVATIONS = {"sigmoid": torch.sigmoid, "none": lambda t: t}
SIGMOID_HEAD_PRIOR_LOGIT = -2.0  # probability heads start at ~0.12: space no view has labelled is "not it"


def frequency_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF positional encoding [x, sin(2^k x), cos(2^k x)]_k; (N, D) -> (N, D * (1 + 2 n_freqs))."""
    if n_freqs == 0:
        return x
    freqs = 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)  # (K,)
    xf = x[..., None, :] * freqs[:, None]  # (N, K, D)
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], dim=-1)


def mlp(in_dim: int, hidden_dim: int, n_hidden_layers: int, out_dim: int, act: nn.Module) -> nn.Sequential:
    """Plain MLP: n_hidden_layers hidden layers of hidden_dim with `act`, linear output."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(dim, hidden_dim), act]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class SDFNetwork(nn.Module):
    """x (N,3) -> SDF (N,1) and geometry feature (N,feature_dim); extra heads read the same input.

    Geometric initialisation (IDR) makes the initial SDF a sphere of `init_radius`: the xyz part of
    the first layer is Gaussian, the hash-grid part starts at zero, the last layer is constant.
    """

    def __init__(self, encoding: HashGrid, hidden_dim: int, n_hidden_layers: int, feature_dim: int,
                 init_radius: float, bound: float, grad_eps: float, heads: dict[str, tuple[int, str]] | None = None,
                 head_hidden_dim: int = 64):
        super().__init__()
        self.encoding = encoding
        self.bound = bound
        self.grad_eps = grad_eps
        self.feature_dim = feature_dim
        in_dim = 3 + encoding.n_output_dims
        self.net = mlp(in_dim, hidden_dim, n_hidden_layers, 1 + feature_dim, nn.Softplus(beta=SOFTPLUS_BETA))
        self._geometric_init(init_radius, hidden_dim)
        heads = heads or {}
        self.heads = nn.ModuleDict({
            name: mlp(in_dim, head_hidden_dim, 1, dim, nn.ReLU(inplace=True)) for name, (dim, _) in heads.items()
        })
        self.head_activation = {name: HEAD_ACTIVATIONS[act] for name, (_, act) in heads.items()}
        with torch.no_grad():
            for name, (_, act) in heads.items():
                if act == "sigmoid":
                    self.heads[name][-1].bias.fill_(SIGMOID_HEAD_PRIOR_LOGIT)

    @torch.no_grad()
    def _geometric_init(self, radius: float, hidden_dim: int) -> None:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            if lin is linears[-1]:
                nn.init.normal_(lin.weight, mean=math.sqrt(math.pi) / math.sqrt(lin.in_features), std=1e-4)
                nn.init.constant_(lin.bias, -radius)
            else:
                nn.init.normal_(lin.weight, 0.0, math.sqrt(2.0) / math.sqrt(lin.out_features))
                nn.init.zeros_(lin.bias)
                if i == 0:
                    lin.weight[:, 3:] = 0.0  # the hash-grid features start silent

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3) unit coords -> (N, 3 + L*F) network input."""
        u = ((x / self.bound + 1.0) * 0.5).clamp(0.0, 1.0)
        return torch.cat([x, self.encoding(u).to(x.dtype)], dim=-1)

    def forward(self, x: torch.Tensor, heads: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        h = self.encode(x)
        out = self.net(h)
        result = {"sdf": out[:, :1], "feature": out[:, 1:]}
        for name in heads:
            result[name] = self.head_activation[name](self.heads[name](h))
        return result

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(x))[:, :1]

    def sdf_and_gradient(self, x: torch.Tensor, heads: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """SDF, feature, heads and the SDF gradient by central finite differences (step grad_eps).

        Finite differences need only first-order backward through the hash grid (any backend) and
        smooth the normals at the scale of the step, as in Neuralangelo / instant-nsr-pl.
        """
        n = x.shape[0]
        eps = self.grad_eps
        offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps  # (3,3)
        pts = torch.cat([x, (x[:, None] + offsets).reshape(-1, 3), (x[:, None] - offsets).reshape(-1, 3)])
        h = self.encode(pts)
        out = self.net(h)
        sdf_all = out[:, 0]
        plus = sdf_all[n:4 * n].view(n, 3)
        minus = sdf_all[4 * n:].view(n, 3)
        result = {"sdf": out[:n, :1], "feature": out[:n, 1:], "gradient": (plus - minus) / (2.0 * eps)}
        for name in heads:
            result[name] = self.head_activation[name](self.heads[name](h[:n]))
        return result


class ColorNetwork(nn.Module):
    """(x, view direction, normal, geometry feature) -> RGB in [0,1], as NeuS's 'idr' mode."""

    def __init__(self, feature_dim: int, hidden_dim: int, n_hidden_layers: int, dir_freqs: int):
        super().__init__()
        self.dir_freqs = dir_freqs
        dir_dim = 3 * (1 + 2 * dir_freqs)
        self.net = mlp(3 + dir_dim + 3 + feature_dim, hidden_dim, n_hidden_layers, 3, nn.ReLU(inplace=True))

    def forward(self, x, dirs, normals, feature) -> torch.Tensor:
        h = torch.cat([x, frequency_encoding(dirs, self.dir_freqs), normals, feature], dim=-1)
        return torch.sigmoid(self.net(h))


class SingleVarianceNetwork(nn.Module):
    """NeuS's learned sharpness: inv_s = exp(10 * variance)."""

    def __init__(self, init_val: float):
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(float(init_val)))

    def inv_s(self) -> torch.Tensor:
        return torch.exp(self.variance * VARIANCE_SCALE).clamp(1e-6, 1e6)
