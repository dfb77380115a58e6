"""Build data, networks and optimiser from a Conf (the only place conf keys meet constructors)."""
from __future__ import annotations

import torch

from datasets.dtu import DTUDataset
from models.fields import ColorNetwork, SDFNetwork, SingleVarianceNetwork
from models.hashgrid import HashGrid
from models.occupancy import OccupancyGrid
from models.renderer import NeuSRenderer, RenderSettings
from systems.config import Conf

ADAM_BETAS = (0.9, 0.99)  # instant-ngp: a shorter second-moment memory suits sparse hash-grid updates
ADAM_EPS = 1e-15          # hash-grid entries see tiny gradients; a large eps would freeze them


class NeuSModel(torch.nn.Module):
    """The networks of one scene: SDF (+ heads), colour, variance; plus their renderer."""

    def __init__(self, sdf: SDFNetwork, color: ColorNetwork, variance: SingleVarianceNetwork, settings: RenderSettings,
                 occupancy: OccupancyGrid | None = None):
        super().__init__()
        self.sdf, self.color, self.variance = sdf, color, variance
        self.occupancy = occupancy                     # empty-space skipping (None: off)
        self.renderer = NeuSRenderer(sdf, color, variance, settings)


def build_dataset(conf: Conf, device) -> DTUDataset:
    c = conf.section("dataset")
    return DTUDataset(c.get("data_dir", str), cameras_name=c.get("cameras_name", str),
                      downscale=c.get("downscale", float), load_masks=c.get("load_masks", bool), device=device)


def build_model(conf: Conf, heads: dict[str, int] | None = None) -> NeuSModel:
    m = conf.section("model")
    g = m.section("hash_grid")
    grid = HashGrid(3, n_levels=g.get("n_levels", int), n_features_per_level=g.get("n_features_per_level", int),
                    log2_hashmap_size=g.get("log2_hashmap_size", int), base_resolution=g.get("base_resolution", int),
                    per_level_scale=g.get("per_level_scale", float), backend=g.get("backend", str))
    s = m.section("sdf")
    feature_dim = s.get("feature_dim", int)
    sdf = SDFNetwork(grid, hidden_dim=s.get("hidden_dim", int), n_hidden_layers=s.get("n_hidden_layers", int),
                     feature_dim=feature_dim, init_radius=s.get("init_radius", float), bound=m.get("bound", float),
                     grad_eps=s.get("grad_eps", float), heads=heads)
    c = m.section("color")
    color = ColorNetwork(feature_dim, hidden_dim=c.get("hidden_dim", int), n_hidden_layers=c.get("n_hidden_layers", int),
                         dir_freqs=c.get("dir_freqs", int))
    variance = SingleVarianceNetwork(m.get("variance.init_val", float))
    r = m.section("renderer")
    settings = RenderSettings(n_samples=r.get("n_samples", int), n_importance=r.get("n_importance", int),
                              up_sample_steps=r.get("up_sample_steps", int), perturb=r.get("perturb", bool))
    o = m.section("occupancy_grid")
    occupancy = None
    if o.get("enabled", bool):
        occupancy = OccupancyGrid(o.get("resolution", int), m.get("bound", float), o.get("margin_cells", float),
                                  o.get("update_every", int), o.get("start_iter", int))
    else:
        o.mark_read()
    return NeuSModel(sdf, color, variance, settings, occupancy)


def build_optimizer(conf: Conf, model: NeuSModel) -> torch.optim.Optimizer:
    """Adam with three groups: hash grid (high lr), MLPs/heads, variance."""
    t = conf.section("train")
    grid_params = list(model.sdf.encoding.parameters())
    grid_ids = {id(p) for p in grid_params}
    var_ids = {id(p) for p in model.variance.parameters()}
    mlp_params = [p for p in model.parameters() if id(p) not in grid_ids and id(p) not in var_ids]
    groups = [
        {"params": grid_params, "lr": t.get("lr_grid", float), "name": "grid"},
        {"params": mlp_params, "lr": t.get("lr_mlp", float), "name": "mlp"},
        {"params": list(model.variance.parameters()), "lr": t.get("lr_variance", float), "name": "variance"},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)
