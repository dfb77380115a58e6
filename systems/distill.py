"""SAM feature distillation (method.md, stage 2): the views' SAM embeddings lifted into a 3-D feature field.

Design
- The SDF network gets one extra head, HEAD = "sam_feature", of `rank` channels (activation none).
  The renderer composites it with the NeuS weights exactly like colour -> (B, rank) per ray. A
  trainable bias-free linear decoder (rank -> C; C = 256 for SAM) maps it to the source's channels.
  Being linear and bias-free, decoding the rendered feature equals rendering the decoded per-point
  feature: the model IS a C-channel feature field whose values are confined to a rank-dim subspace.
  (The head is not called "feature": SDFNetwork already returns its geometry feature under that
  key, and a head of the same name would replace the colour network's input.)
- Why low rank: the per-sample tensors. A DTU batch of 8192 rays x 128 samples = 1.05 M samples;
  a 256-channel head would hold 1.05 M x 256 x 4 B = 1.07 GB per activation (output, its gradient,
  the weighted product and its gradient: ~4 GB a step) where rank 16 needs 67 MB each. The decoder
  runs on the B rendered rays only (8192 x 256, 8 MB). Capacity is not lost below the head's hidden
  width (64): the head's last layer 64 -> rank followed by the decoder is a factorised 64 -> C map.
- Ray weights: each ray's loss is weighted by its DETACHED rendered opacity (mean over the batch
  normalised by the weights' sum). Rays the field sees as empty (background in the target stage,
  sky/void in DTU) have no surface to carry the feature, so they must not push features into the
  field; detaching keeps the loss from lowering opacity to escape the term. The feature gradient
  still reaches the geometry through the NeuS weights inside the composited feature, and the
  shared hash grid. Views listed in `holdout_views` get weight 0 (measuring 3-D consistency).
- Loss: 1 - cosine similarity (default; SAM's neck ends in a LayerNorm, so the direction carries
  the information) or per-channel mean squared error ("l2").
- The loss (and the head's rendering) is active only in the stages of `stages` and from iteration
  `start_iter` on: render_heads() returns () otherwise, so an inactive head costs nothing.
- The source is built lazily on the first active step from the dataset's images (SAM encoder of
  the `sam` subsection, embedding cache in the scene folder); tests inject one:
  `distiller.source = TensorFeatureSource(...)`.
- It is a pipeline Hook (systems/pipeline.py): it adds its head to the rendered heads and its loss
  to the stage's terms; the runner adds it to the model as a sub-module (optimised, checkpointed).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.dtu import DTUDataset
from sam_utils.embedding_cache import EmbeddingCache
from sam_utils.features import FeatureSource, SamEmbeddingSource, encoder_model_id, load_encoder
from systems.pipeline import Hook
from systems.settings import FeatureSettings

HEAD = "sam_feature"
STAGE_NAMES = ("scene", "lift", "target")
LOSSES = ("cosine", "l2")
COS_EPS = 1e-8            # F.cosine_similarity's norm floor
WEIGHT_EPS = 1e-6         # floor of the summed ray weights (a batch of empty / held-out rays -> loss 0)
PCA_MIN_OPACITY = 0.5     # pixels fitting the validation PCA
PCA_MIN_PIXELS = 3        # fewer opaque pixels: fit on all pixels
PCA_PERCENTILES = (1.0, 99.0)  # robust colour range of each component
PCA_COMPONENTS = 3


def build_feature_distiller(s: FeatureSettings, dataset: DTUDataset, sam_checkpoint: str | None = None,
                            where: str = "features") -> "FeatureDistiller | None":
    """FeatureDistiller from the `features` settings, or None when enabled = false.
    sam_checkpoint (the command line's --sam_checkpoint) overrides features.sam.checkpoint."""
    if not s.enabled:
        return None
    sam = dict(model_type=s.sam.model_type, checkpoint=sam_checkpoint or s.sam.checkpoint,
               cache_dir=s.sam.cache_dir, encode_batch_size=s.sam.encode_batch_size)
    return FeatureDistiller(rank=s.rank, channels=s.channels, weight=s.weight, loss=s.loss, stages=s.stages,
                            start_iter=s.start_iter, holdout_views=s.holdout_views,
                            opacity_weighted=s.opacity_weighted, dataset=dataset, sam=sam, where=where)


class FeatureDistiller(nn.Module, Hook):
    """Low-rank feature head + linear decoder + loss against a FeatureSource. Parameters: the decoder
    (the head's MLP lives in the SDF network, created from `.heads`)."""

    def __init__(self, rank: int, channels: int, weight: float, loss: str, stages: list, start_iter: int,
                 holdout_views: list, opacity_weighted: bool, dataset: DTUDataset, sam: dict,
                 where: str = "features"):
        super().__init__()
        n_views = dataset.n_images
        if rank < 1 or channels < 1:
            raise ValueError(f"{where}: rank ({rank}) and channels ({channels}) must be >= 1")
        if loss not in LOSSES:
            raise ValueError(f"{where}: loss = {loss!r}; choose one of {LOSSES}")
        bad = [s for s in stages if s not in STAGE_NAMES]
        if bad or not stages:
            raise ValueError(f"{where}: stages = {stages}; give a non-empty list of {STAGE_NAMES}")
        out = [v for v in holdout_views if not (isinstance(v, int) and 0 <= v < n_views)]
        if out:
            raise ValueError(f"{where}: holdout_views {out} are not view indices of this {n_views}-view scene")
        self.rank, self.channels, self.weight, self.loss_kind = rank, channels, weight, loss
        self.stages, self.start_iter = tuple(stages), start_iter
        self.opacity_weighted = opacity_weighted
        self.sam = sam
        self.dataset = dataset
        self.heads = {HEAD: (rank, "none")}
        self.decoder = nn.Linear(rank, channels, bias=False)
        supervised = torch.ones(n_views, dtype=torch.bool)
        supervised[list(holdout_views)] = False
        self.register_buffer("supervised", supervised, persistent=False)     # (N,) bool
        self._source: FeatureSource | None = None
        self.cache = None             # the EmbeddingCache used by the lazy SAM source (counters)
        self.encode_seconds = 0.0

    # ------------------------------------------------------------------ source
    @property
    def source(self) -> FeatureSource | None:
        return self._source

    @source.setter
    def source(self, src: FeatureSource) -> None:
        if src.channels != self.channels:
            raise ValueError(f"feature source has {src.channels} channels but features.channels = "
                             f"{self.channels}: set features.channels to the source's channel count")
        self._source = src

    def ensure_source(self) -> FeatureSource:
        """The source; on first use, SAM embeddings of all views of the dataset from the embedding
        cache (shared with the segmenter), the encoder loaded only for views it lacks (each once)."""
        if self._source is None:
            t0 = time.time()
            ds, s = self.dataset, self.sam
            root = ds.data_dir / s["cache_dir"] if s["cache_dir"] else None
            self.cache = EmbeddingCache(root, s["model_type"], encoder_model_id(s["model_type"], s["checkpoint"]))
            images = list(ds.images.cpu().numpy())                                   # N x (H,W,3) uint8
            missing = sum(self.cache.get(v, im) is None for v, im in enumerate(images))
            model = load_encoder(s["model_type"], s["checkpoint"], ds.device) if missing else None
            self.source = SamEmbeddingSource.encode(images, model, self.cache, ds.device,
                                                    s["encode_batch_size"], progress=True)
            self.cache.memory.clear()      # the embeddings now live in the source (on the device)
            del model
            if ds.device.type == "cuda":
                torch.cuda.empty_cache()
            self.encode_seconds = time.time() - t0
            print(f"[features] {ds.n_images} views of SAM {s['model_type']} embeddings: "
                  f"{self.cache.n_encoded_images} encoded, the rest cached; {self.encode_seconds:.1f} s")
        return self._source

    # ------------------------------------------------------------------ training
    def active(self, iteration: int, stage) -> bool:
        return stage.name in self.stages and iteration >= self.start_iter

    def render_heads(self, iteration: int, stage) -> tuple[str, ...]:
        """(HEAD,) when the loss is on for this stage and iteration, else () (no rendering cost)."""
        return (HEAD,) if self.active(iteration, stage) else ()

    def decode(self, rendered: torch.Tensor) -> torch.Tensor:
        """Rendered low-rank features (..., rank) -> source channels (..., C)."""
        return self.decoder(rendered)

    def losses(self, iteration: int, stage, out: dict, batch: dict) -> dict[str, tuple[float, torch.Tensor]]:
        """{"feature": (weight, loss)} over the batch's rays when active (out has HEAD), else {}."""
        if HEAD not in out:
            return {}
        source = self.ensure_source()
        ds = self.dataset
        target = source.sample(batch["view"], batch["pixel"], (ds.H, ds.W))             # (B, C)
        pred = self.decode(out[HEAD])                                                     # (B, C)
        if self.loss_kind == "cosine":
            per_ray = 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=COS_EPS)        # (B,)
        else:
            per_ray = ((pred - target) ** 2).mean(-1)                                     # (B,)
        w = self.supervised[batch["view"]].to(per_ray.dtype)                              # (B,)
        if self.opacity_weighted:
            w = w * out["opacity"].detach()[:, 0].clamp(0.0, 1.0)
        loss = (w * per_ray).sum() / w.sum().clamp(min=WEIGHT_EPS)
        return {"feature": (self.weight, loss)}

    # ------------------------------------------------------------------ validation
    def validation_heads(self) -> tuple[str, ...]:
        return (HEAD,)

    def validation_panels(self, rendered: dict) -> list:
        pca = self.pca_image(rendered)
        return [] if pca is None else [pca]

    @torch.no_grad()
    def decoded_image(self, rendered: dict) -> np.ndarray:
        """render_view output (HEAD (h,w,rank)) -> decoded features (h,w,C) float32."""
        feat = torch.as_tensor(rendered[HEAD], dtype=torch.float32, device=self.decoder.weight.device)
        return self.decode(feat).cpu().numpy()

    def pca_image(self, rendered: dict) -> np.ndarray | None:
        """(h,w,3) in [0,1]: the first 3 principal components of the decoded features, fitted on
        opaque pixels, scaled to their 1st-99th percentiles and darkened by the opacity; None when
        the view was rendered without the head."""
        if rendered.get(HEAD) is None:
            return None
        dec = self.decoded_image(rendered)
        h, w, c = dec.shape
        x = dec.reshape(-1, c).astype(np.float64)                                          # (h*w, C)
        opacity = np.clip(rendered["opacity"].reshape(-1), 0.0, 1.0)
        fit = x[opacity > PCA_MIN_OPACITY]
        fit = fit if len(fit) >= PCA_MIN_PIXELS else x
        mean = fit.mean(0)
        _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
        comps = vt[:PCA_COMPONENTS]                                                        # (k, C)
        proj, ref = (x - mean) @ comps.T, (fit - mean) @ comps.T                           # (h*w, k)
        lo, hi = np.percentile(ref, PCA_PERCENTILES, axis=0)
        img = np.zeros((h * w, PCA_COMPONENTS))
        img[:, :comps.shape[0]] = np.clip((proj - lo) / np.maximum(hi - lo, COS_EPS), 0.0, 1.0)
        return (img * opacity[:, None]).reshape(h, w, PCA_COMPONENTS).astype(np.float32)
