"""Build data, networks and optimiser from typed settings (the only place settings meet constructors)."""
from __future__ import annotations

import torch

from datasets.dtu import DTUDataset
from models.fields import ColorNetwork, SDFNetwork, SingleVarianceNetwork
from models.hashgrid import HashGrid
from models.renderer import NeuSRenderer, RenderSettings
from systems.settings import DatasetSettings, ModelSettings, TrainSettings

ADAM_BETAS = (0.9, 0.99)  # instant-ngp: a shorter second-moment memory suits sparse hash-grid updates
ADAM_EPS = 1e-15          # hash-grid entries see tiny gradients; a large eps would freeze them


class NeuSModel(torch.nn.Module):
    """The networks of one scene: SDF (+ heads), colour, variance; plus their renderer."""

    def __init__(self, sdf: SDFNetwork, color: ColorNetwork, variance: SingleVarianceNetwork, settings: RenderSettings):
        super().__init__()
        self.sdf, self.color, self.variance = sdf, color, variance
        self.renderer = NeuSRenderer(sdf, color, variance, settings)


def build_dataset(s: DatasetSettings, device) -> DTUDataset:
    return DTUDataset(s.data_dir, cameras_name=s.cameras_name, downscale=s.downscale, load_masks=s.load_masks,
                      device=device)


def build_model(m: ModelSettings, heads: dict | None = None) -> NeuSModel:
    g = m.hash_grid
    grid = HashGrid(3, n_levels=g.n_levels, n_features_per_level=g.n_features_per_level,
                    log2_hashmap_size=g.log2_hashmap_size, base_resolution=g.base_resolution,
                    per_level_scale=g.per_level_scale, backend=g.backend)
    s = m.sdf
    sdf = SDFNetwork(grid, hidden_dim=s.hidden_dim, n_hidden_layers=s.n_hidden_layers, feature_dim=s.feature_dim,
                     init_radius=s.init_radius, bound=m.bound, grad_eps=s.grad_eps, heads=heads)
    c = m.color
    color = ColorNetwork(s.feature_dim, hidden_dim=c.hidden_dim, n_hidden_layers=c.n_hidden_layers,
                         dir_freqs=c.dir_freqs)
    variance = SingleVarianceNetwork(m.variance.init_val)
    r = m.renderer
    settings = RenderSettings(n_samples=r.n_samples, n_importance=r.n_importance,
                              up_sample_steps=r.up_sample_steps, perturb=r.perturb)
    return NeuSModel(sdf, color, variance, settings)


def build_optimizer(t: TrainSettings, model: NeuSModel) -> torch.optim.Optimizer:
    """Adam with three groups: hash grid (high lr), MLPs/heads, variance."""
    grid_params = list(model.sdf.encoding.parameters())
    grid_ids = {id(p) for p in grid_params}
    var_ids = {id(p) for p in model.variance.parameters()}
    mlp_params = [p for p in model.parameters() if id(p) not in grid_ids and id(p) not in var_ids]
    groups = [
        {"params": grid_params, "lr": t.lr_grid, "name": "grid"},
        {"params": mlp_params, "lr": t.lr_mlp, "name": "mlp"},
        {"params": list(model.variance.parameters()), "lr": t.lr_variance, "name": "variance"},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)
