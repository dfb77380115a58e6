"""Per-view 2-D feature maps, sampled at the pixels of training rays (the targets of feature distillation).

A FeatureSource answers: for rays of views (B,) through pixels (B,2) = (u, v), what is the C-channel
feature of that pixel? -> (B, C) float32 on the rays' device.

Pixel convention: the dataset's (datasets/dtu.py): (u, v) are column/row in the LOADED (possibly
downscaled) image, integer values are pixel centres; float positions (validation rays of a coarser
level) are allowed. Internally the sam_grid convention (pixel u covers [u, u+1), centre u + 0.5) is
used, hence the PIXEL_CENTRE offset below.

Grid layouts (`mapping`):
- "sam": the grid covers SAM's 1024x1024 encoder input: the image resized so its longest side is
  1024 (ResizeLongestSide), padded bottom/right; the 64x64 embedding cell c covers input pixels
  [16c, 16c+16) (sam_utils/sam_grid.py). Padding cells are never sampled inside the image.
- "stretch": the grid covers exactly the image (h x w cells over H x W pixels).

Sampling is bilinear with align_corners=False and border clamping, i.e. exactly
F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False), but it gathers only the
4 neighbours of each ray from a channels-last copy, so a step costs O(B*C) whatever the view count.

SamEmbeddingSource keeps every view's SAM embedding on the device in float16:
N x 256 x 64 x 64 x 2 bytes = 2 MiB per view (DTU, 49 views: 98 MiB).
"""
from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch

from .embedding_cache import EmbeddingCache
from .errors import SamCheckpointError, SegmenterError
from .sam_grid import pixels_to_embedding_grid
from .sam_model import RANDOM_MODEL_TYPES, build_random_sam, checkpoint_model_id, load_sam, random_model_id

MAPPINGS = ("sam", "stretch")
PIXEL_CENTRE = 0.5              # dataset pixel index u -> continuous sam_grid coordinate u + 0.5
EMBEDDING_DTYPE = torch.float16  # device copy of SAM embeddings (as the cache stores them)
RANDOM_CHECKPOINT = "random"    # sam.checkpoint value for untrained weights (benchmarks only)
RANDOM_SEED = 0                 # same seed as the segmenter's random SAM, so caches are shared


class FeatureSource(abc.ABC):
    """Per-view features sampled at ray pixels. `channels`: C of the returned features."""

    channels: int

    @abc.abstractmethod
    def sample(self, views: torch.Tensor, pixels: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """views (B,) long, pixels (B,2) (u, v) loaded-image pixels, image_hw (H, W) -> (B, C) float32."""


class GridFeatureSource(FeatureSource):
    """Features stored as per-view grids (N, C, h, w), sampled bilinearly through `mapping`."""

    def __init__(self, grids: torch.Tensor, mapping: str = "stretch", dtype: torch.dtype | None = None,
                 image_hw: tuple[int, int] | None = None):
        """grids (N,C,h,w); dtype: storage dtype (default: keep); image_hw: the only image size the
        grids are valid for (checked at sampling), or None for any size."""
        if grids.dim() != 4:
            raise ValueError(f"feature grids must be (N, C, h, w), got shape {tuple(grids.shape)}")
        if mapping not in MAPPINGS:
            raise ValueError(f"unknown feature-grid mapping {mapping!r}; choose one of {MAPPINGS}")
        self.mapping = mapping
        self.n_views, self.channels, self.h, self.w = (int(s) for s in grids.shape)
        self.image_hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        # channels-last: the C features of one cell are contiguous, so a gather reads whole rows
        self.grid = grids.detach().permute(0, 2, 3, 1).contiguous()            # (N, h, w, C)
        if dtype is not None:
            self.grid = self.grid.to(dtype)

    def to(self, device) -> "GridFeatureSource":
        self.grid = self.grid.to(device)
        return self

    def grid_coords(self, pixels: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Continuous cell coordinates (B,2) = (x, y) of pixels (B,2); cell centres are integers."""
        H, W = image_hw
        pixels = pixels.to(torch.float32)  # sam_grid scales with pixels.new_tensor: integer input would truncate
        if self.mapping == "sam":
            g = pixels_to_embedding_grid(pixels, H, W, pixel_center_offset=PIXEL_CENTRE)   # [-1, 1]
        else:
            g = (pixels + PIXEL_CENTRE) / pixels.new_tensor([W, H]) * 2 - 1
        size = g.new_tensor([self.w, self.h])
        xy = ((g + 1.0) * size - 1.0) * 0.5                                    # align_corners=False
        return torch.minimum(xy.clamp(min=0.0), size - 1)                      # padding_mode="border"

    def sample(self, views: torch.Tensor, pixels: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Bilinear features (B, C) float32 of views (B,) at pixels (B,2), on the views' device."""
        if self.image_hw is not None and tuple(image_hw) != self.image_hw:
            raise ValueError(f"features were computed for {self.image_hw[1]}x{self.image_hw[0]} images but "
                             f"are sampled for {image_hw[1]}x{image_hw[0]}: re-encode the views at the "
                             "dataset's (downscaled) size")
        if self.grid.device != views.device:
            self.grid = self.grid.to(views.device)  # once: later calls find it there
        xy = self.grid_coords(pixels.to(views.device), image_hw)              # (B, 2)
        x0f, y0f = xy[:, 0].floor(), xy[:, 1].floor()
        fx, fy = (xy[:, 0] - x0f)[:, None], (xy[:, 1] - y0f)[:, None]        # (B, 1)
        x0, y0 = x0f.long(), y0f.long()
        x1, y1 = (x0 + 1).clamp(max=self.w - 1), (y0 + 1).clamp(max=self.h - 1)
        g, v = self.grid, views.long()
        top = g[v, y0, x0].float() * (1 - fx) + g[v, y0, x1].float() * fx    # (B, C)
        bottom = g[v, y1, x0].float() * (1 - fx) + g[v, y1, x1].float() * fx
        return top * (1 - fy) + bottom * fy


class TensorFeatureSource(GridFeatureSource):
    """Any per-view feature maps (N, C, h, w) given as a tensor (tests, other 2-D feature extractors)."""

    def __init__(self, features: torch.Tensor, mapping: str = "stretch"):
        super().__init__(features, mapping)


class SamEmbeddingSource(GridFeatureSource):
    """SAM image embeddings (N, 256, 64, 64) of every view, float16 on the device, "sam" layout."""

    def __init__(self, embeddings: torch.Tensor, image_hw: tuple[int, int], device=None):
        super().__init__(embeddings.to(device) if device is not None else embeddings, "sam",
                         EMBEDDING_DTYPE, image_hw)

    @classmethod
    def encode(cls, images: list[np.ndarray], model, cache: EmbeddingCache, device="cpu",
               batch_size: int = 1, progress: bool = False) -> "SamEmbeddingSource":
        """Embeddings of RGB uint8 images (N x (H,W,3), one size) through `cache`, encoding only the
        views it lacks (each once), kept on `device`. model: a segment_anything Sam (or None when
        every view is cached)."""
        if not images:
            raise ValueError("SamEmbeddingSource.encode: no images")
        hw = tuple(int(s) for s in images[0].shape[:2])
        for i, im in enumerate(images):
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3 or tuple(im.shape[:2]) != hw:
                raise ValueError(f"view {i}: expected a uint8 (H,W,3) image of size {hw}, "
                                 f"got {im.dtype} {im.shape}")
        views = list(range(len(images)))
        if model is None and any(cache.get(v, im) is None for v, im in zip(views, images)):
            raise SegmenterError("SamEmbeddingSource.encode: views are missing from the embedding cache "
                                 "and no SAM model was given to encode them")
        entries = cache.encode_views(model, images, views, device, batch_size, progress)
        for v, e in zip(views, entries):
            if tuple(e["original_size"]) != hw:
                raise ValueError(f"cached embedding of view {v} is for a {e['original_size']} image, "
                                 f"the view is {hw}: clear the cache folder {cache.dir}")
        emb = torch.cat([e["embedding"] for e in entries])                      # (N,256,64,64) fp16
        return cls(emb, hw, device)


def is_random(model_type: str, checkpoint: str) -> bool:
    return model_type == "tiny" or checkpoint == RANDOM_CHECKPOINT


def encoder_model_id(model_type: str, checkpoint: str) -> str:
    """The embedding-cache identity of the configured weights, without loading them."""
    if is_random(model_type, checkpoint):
        return random_model_id(model_type, RANDOM_SEED)
    if not Path(checkpoint).expanduser().is_file():
        load_sam(model_type, checkpoint)  # raises SamCheckpointError saying how to get the weights
    return checkpoint_model_id(Path(checkpoint).expanduser())


def load_encoder(model_type: str, checkpoint: str, device="cpu"):
    """SAM model for the features: official weights, or random ones when model_type is "tiny" or
    checkpoint is RANDOM_CHECKPOINT (benchmarks: timings are real, features are not SAM's)."""
    if not is_random(model_type, checkpoint):
        return load_sam(model_type, checkpoint, device)
    if model_type not in RANDOM_MODEL_TYPES:
        raise SamCheckpointError(f"no random SAM of type {model_type!r}; random weights exist for "
                                 f"{list(RANDOM_MODEL_TYPES)}")
    if model_type != "tiny":
        print(f"[features] WARNING: RANDOM {model_type} weights (benchmark only; not SAM's features)")
    return build_random_sam(model_type, RANDOM_SEED).to(device)
