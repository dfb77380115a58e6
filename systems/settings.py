"""Settings as data: one typed dataclass per conf section, filled generically from a Conf.

The conf is the one place defaults live: no field here has a default, every key is read through
`Conf.get` (a missing key is an error that names it) and, after `load_settings`,
`Conf.check_all_read` turns every key that no field took (a typo, a stale option) into an error
naming it. Disabled sections are filled all the same, so their typos are caught too.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from sam_utils.lifting import LiftingSettings
from systems.config import Conf, ConfigError

_SCALARS = (bool, int, float, str)


def fill(cls, section: Conf):
    """An instance of dataclass `cls` from `section`: scalars and lists by type, nested dataclasses from
    sub-sections, dict[str, Dataclass] fields from a sub-section with one sub-section per key."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        origin = typing.get_origin(t)
        if dataclasses.is_dataclass(t):
            values[f.name] = fill(t, section.section(f.name))
        elif origin is dict:
            item = typing.get_args(t)[1]
            sub = section.section(f.name)
            values[f.name] = {k: fill(item, sub.section(k)) for k in sub.tree.keys()}
        elif origin is list or t is list:
            values[f.name] = section.get(f.name, list)
        elif t in _SCALARS:
            values[f.name] = section.get(f.name, t)
        else:
            raise TypeError(f"settings field {cls.__name__}.{f.name}: unsupported type {t}")
    return cls(**values)


@dataclass
class GeneralSettings:
    base_exp_dir: str
    seed: int


@dataclass
class DatasetSettings:
    data_dir: str
    cameras_name: str
    downscale: float
    load_masks: bool


@dataclass
class TrainSettings:
    max_iters: int
    batch_rays: int
    lr_grid: float
    lr_mlp: float
    lr_variance: float
    warmup_iters: int
    lr_min_ratio: float
    cos_anneal_iters: int
    color_weight: float
    eikonal_weight: float
    mask_weight: float
    background: list
    log_every: int
    save_every: int
    val_image_every: int
    val_mesh_every: int
    keep_checkpoints: int


@dataclass
class HashGridSettings:
    n_levels: int
    n_features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    backend: str


@dataclass
class SDFSettings:
    hidden_dim: int
    n_hidden_layers: int
    feature_dim: int
    init_radius: float
    grad_eps: float


@dataclass
class ColorSettings:
    hidden_dim: int
    n_hidden_layers: int
    dir_freqs: int


@dataclass
class VarianceSettings:
    init_val: float


@dataclass
class RendererSettings:
    n_samples: int
    n_importance: int
    up_sample_steps: int
    perturb: bool


@dataclass
class ModelSettings:
    bound: float
    hash_grid: HashGridSettings
    sdf: SDFSettings
    color: ColorSettings
    variance: VarianceSettings
    renderer: RendererSettings


@dataclass
class ValidateSettings:
    resolution_level: int
    render_chunk: int
    mesh_resolution: int
    mesh_threshold: float
    mesh_chunk: int
    eval_spacing: float


@dataclass
class SamSettings:
    model_type: str
    checkpoint: str


@dataclass
class GrabCutSettings:
    crop_margin: float
    workers: int


MESH_CUTS = ("hull", "occupancy")
UNSEEN = ("unknown", "head")   # nto3d.lifting.unseen


@dataclass
class TargetSettings:
    """conf section nto3d.target: the object-only field (systems/stages.TargetStage) and its mesh cut."""

    iters: int
    mask_weight: float            # opacity BCE against the lifted masks (outside: empty space)
    random_background: bool       # outside the mask a pixel takes a random colour per ray
    focus_fraction: float         # share of each batch drawn from the masks' grown boxes
    occlusion_level: int          # the scene's surface for the occlusion test rendered at 1/level
    occlusion_dilate: int         # occluded-target (unknown) pixels grown by this many grid pixels
    occlusion_reach: float        # and extended over their occluder up to this share of the view's width
    depth_tol: float              # a view sees a surface point when its rendered depth agrees this well (relative)
    mesh_cut: str                 # hull (the masks' visual hull) | occupancy (the occupancy head)
    hull_dilate: int              # the masks grown by this many pixels before the hull cut
    support_ring: float           # hull cut: the support plane from the scene's surface this share of the width
                                  # around the masks (0: off)
    support_tol: float            # the support plane's inlier distance (unit-sphere radii)
    mesh_occupancy_threshold: float

    def __post_init__(self):
        if self.mesh_cut not in MESH_CUTS:
            raise ConfigError(f"conf key 'nto3d.target.mesh_cut' must be one of {MESH_CUTS}, got {self.mesh_cut!r}")
        if not 0.0 <= self.focus_fraction <= 1.0:
            raise ConfigError(f"conf key 'nto3d.target.focus_fraction' must be in [0, 1], got {self.focus_fraction}")
        if self.occlusion_level < 1:
            raise ConfigError(f"conf key 'nto3d.target.occlusion_level' must be >= 1, got {self.occlusion_level}")
        if not 0.0 <= self.occlusion_reach <= 1.0:
            raise ConfigError(f"conf key 'nto3d.target.occlusion_reach' must be in [0, 1], got {self.occlusion_reach}")
        for key in ("support_ring", "support_tol"):
            if getattr(self, key) < 0:
                raise ConfigError(f"conf key 'nto3d.target.{key}' must be >= 0, got {getattr(self, key)}")


@dataclass
class NTO3DSettings:
    enabled: bool
    prompt_file: str
    gt_mask_dir: str
    segmenter: str
    sam: SamSettings
    grabcut: GrabCutSettings
    instance_weight: float
    focus_margin: float
    warmup_iters: int
    round_iters: int
    lifting: LiftingSettings
    target: TargetSettings


@dataclass
class FeatureSamSettings:
    model_type: str
    checkpoint: str
    cache_dir: str
    encode_batch_size: int


@dataclass
class FeatureSettings:
    enabled: bool
    rank: int
    channels: int
    weight: float
    loss: str
    stages: list
    start_iter: int
    holdout_views: list
    opacity_weighted: bool
    sam: FeatureSamSettings


@dataclass
class Settings:
    """The whole conf, one field per top-level section."""

    general: GeneralSettings
    dataset: DatasetSettings
    train: TrainSettings
    model: ModelSettings
    validate: ValidateSettings
    nto3d: NTO3DSettings
    features: FeatureSettings


def load_settings(conf: Conf) -> Settings:
    """Every section of `conf` as typed settings; raises ConfigError for missing or unknown keys."""
    settings = fill(Settings, conf)
    conf.check_all_read()
    check_values(settings, conf.source)
    return settings


def check_values(s: Settings, source: str) -> None:
    """Refuse nonsense numbers at start, naming the key."""
    positive = {"train.max_iters": s.train.max_iters, "train.batch_rays": s.train.batch_rays,
                "train.log_every": s.train.log_every, "validate.mesh_resolution": s.validate.mesh_resolution,
                "validate.render_chunk": s.validate.render_chunk, "validate.mesh_chunk": s.validate.mesh_chunk,
                "model.renderer.n_samples": s.model.renderer.n_samples}
    not_negative = {"train.warmup_iters": s.train.warmup_iters, "train.cos_anneal_iters": s.train.cos_anneal_iters,
                    "train.save_every": s.train.save_every, "nto3d.warmup_iters": s.nto3d.warmup_iters,
                    "nto3d.round_iters": s.nto3d.round_iters, "nto3d.target.iters": s.nto3d.target.iters,
                    "nto3d.lifting.max_rounds": s.nto3d.lifting.max_rounds}
    if s.nto3d.lifting.unseen not in UNSEEN:
        raise ConfigError(f"conf key 'nto3d.lifting.unseen' in {source} must be one of {UNSEEN}, "
                          f"got {s.nto3d.lifting.unseen!r}")
    for key, v in positive.items():
        if v <= 0:
            raise ConfigError(f"conf key '{key}' in {source} must be > 0, got {v}")
    for key, v in not_negative.items():
        if v < 0:
            raise ConfigError(f"conf key '{key}' in {source} must be >= 0, got {v}")
    for key in ("lr_grid", "lr_mlp", "lr_variance"):
        v = getattr(s.train, key)
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"conf key 'train.{key}' in {source} must be in (0, 1], got {v}")
    if len(s.train.background) != 3:
        raise ConfigError(f"conf key 'train.background' in {source} must be 3 numbers, got {s.train.background}")
