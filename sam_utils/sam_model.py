"""SAM weights (official checkpoints, or random for tests) and the SAM segmenter.

SamSegmenter never re-encodes an image whose embedding is cached (embedding_cache.py); prompts are
decoded in batches over views by calling SAM's prompt encoder / mask decoder directly.
"""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .embedding_cache import EmbeddingCache
from .errors import SamCheckpointError, SegmenterError
from .masks import mask_box
from .prompts import Prompt
from .sam_grid import LOW_RES_SIZE, prob_to_low_res_logits
from .sam_lib import mobile_sam_registry, resize_longest_side, segment_anything
from .segmenter import SegResult, Segmenter, check_image

_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_URLS = {
    "vit_h": _BASE + "sam_vit_h_4b8939.pth",
    "vit_l": _BASE + "sam_vit_l_0b3195.pth",
    "vit_b": _BASE + "sam_vit_b_01ec64.pth",
    "vit_t": "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
}
SAM_FILE_SIZES = {"vit_h": 2564550879, "vit_l": 1249524607, "vit_b": 375042383, "vit_t": 40728226}
SAM_SHA256 = {
    "vit_h": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    "vit_l": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    "vit_b": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    "vit_t": "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
}
SAM_MODEL_TYPES = tuple(SAM_URLS)
RANDOM_MODEL_TYPES = ("tiny", "vit_h", "vit_l", "vit_b")
PATCH_EMBED_KEY = "image_encoder.patch_embed.proj.weight"
EMBED_DIM_TO_TYPE = {1280: "vit_h", 1024: "vit_l", 768: "vit_b", 64: "tiny"}
# The "tiny" random encoder: small ViT with SAM's 16-px patches, 1024 input and 256-d neck, so
# every shape downstream (64x64 embedding, prompt encoder, mask decoder) is SAM's.
TINY_ENCODER = dict(embed_dim=64, depth=2, num_heads=2, window_size=4, global_attn_indexes=(1,))
IMG_SIZE, PATCH, PROMPT_DIM = 1024, 16, 256
DECODE_BATCH = 16       # views per mask-decoder call (bounds memory on long view lists)


# ----------------------------------------------------------------------------- weights

def checkpoint_model_id(path) -> str:
    """Identity of a checkpoint file for the embedding cache: hash of its name, size and mtime."""
    st = Path(path).stat()
    return hashlib.sha1(f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def random_model_id(model_type: str, seed: int) -> str:
    return f"random-{model_type}-seed{seed}"


def _how_to_get(model_type: str) -> str:
    return (f"download the official {model_type} weights from {SAM_URLS[model_type]} "
            f"(bash scripts/download_sam.sh {model_type}) and pass their path as sam_checkpoint")


def infer_model_type(state: dict) -> str | None:
    """The SAM variant a state dict belongs to (from the image encoder's embed dim), or None."""
    w = state.get(PATCH_EMBED_KEY)
    if isinstance(w, torch.Tensor):
        return EMBED_DIM_TO_TYPE.get(int(w.shape[0]), f"unknown (embed dim {int(w.shape[0])})")
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "vit_t"
    return None


def _build_empty(model_type: str):
    """Randomly initialised architecture of an official model type (no weights loaded)."""
    registry = mobile_sam_registry() if model_type == "vit_t" else segment_anything().sam_model_registry
    return registry[model_type](checkpoint=None)


def load_sam(model_type: str, checkpoint, device="cpu"):
    """SAM of `model_type` (vit_h / vit_l / vit_b / vit_t) with the weights in `checkpoint`."""
    if model_type not in SAM_MODEL_TYPES:
        raise SegmenterError(f"unknown SAM model type {model_type!r}; "
                             f"choose one of {list(SAM_MODEL_TYPES)}")
    path = None if checkpoint is None else Path(checkpoint).expanduser()
    if path is None or not path.is_file():
        raise SamCheckpointError(f"SAM checkpoint {path} not found (model type {model_type}); "
                                 + _how_to_get(model_type))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SamCheckpointError(f"SAM checkpoint {path} could not be read ({type(e).__name__}: "
                                 f"{e}); it may be truncated or not a SAM file; "
                                 + _how_to_get(model_type)) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise SamCheckpointError(f"SAM checkpoint {path} holds a {type(state).__name__}, "
                                 "not a state dict; " + _how_to_get(model_type))
    found = infer_model_type(state)
    if found != model_type:
        looks = f"looks like a SAM {found} checkpoint" if found else "is not a SAM checkpoint"
        raise SamCheckpointError(f"SAM checkpoint {path} {looks}, but sam_model_type is {model_type}; "
                                 f"set sam_model_type to match the file, or {_how_to_get(model_type)}")
    model = _build_empty(model_type)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SamCheckpointError(f"SAM checkpoint {path} does not fit the {model_type} architecture "
                                 f"({str(e)[:300]}); " + _how_to_get(model_type)) from e
    return model.to(device).eval()


def build_random_sam(model_type: str = "tiny", seed: int = 0):
    """Randomly initialised SAM (tests / benchmarks): "tiny" (small encoder) or a full-size type."""
    if model_type not in RANDOM_MODEL_TYPES:
        raise SegmenterError(f"unknown random SAM type {model_type!r}; "
                             f"choose one of {list(RANDOM_MODEL_TYPES)}")
    sa = segment_anything()
    arch = sa.modeling
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_type != "tiny":
            return sa.sam_model_registry[model_type](checkpoint=None).eval()
        t = TINY_ENCODER
        encoder = arch.ImageEncoderViT(
            img_size=IMG_SIZE, patch_size=PATCH, embed_dim=t["embed_dim"], depth=t["depth"],
            num_heads=t["num_heads"], mlp_ratio=4.0, out_chans=PROMPT_DIM, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=t["window_size"], global_attn_indexes=t["global_attn_indexes"])
        grid = IMG_SIZE // PATCH
        prompt_encoder = arch.PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                                            input_image_size=(IMG_SIZE, IMG_SIZE), mask_in_chans=16)
        decoder = arch.MaskDecoder(num_multimask_outputs=3, transformer_dim=PROMPT_DIM,
                                   transformer=arch.TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM,
                                                                      mlp_dim=2048, num_heads=8),
                                   iou_head_depth=3, iou_head_hidden_dim=256)
        return arch.Sam(encoder, prompt_encoder, decoder).eval()


# ----------------------------------------------------------------------------- segmenter

class SamSegmenter(Segmenter):
    """SAM from cached embeddings. The cascade follows the original (method.md, PerSAM-style):
    1) points (+ the prompt's box), single mask; 2) + step 1's low-res logits as mask_input,
    multimask, keep the best score; 3) + the bbox of that mask (replacing the prompt's box) and its
    logits, multimask if final_multimask, keep the best. Views are decoded together when their
    prompts have the same structure (point count, box or not, mask or not); pad_points=True pads
    point sets with label -1 points instead (as SAM does), which batches more but changes the
    result slightly, because padding tokens take part in the decoder's attention.
    """

    def __init__(self, model, model_type: str, cache: EmbeddingCache, device="cpu",
                 encode_batch_size: int = 1, decode_batch_size: int = DECODE_BATCH,
                 pad_points: bool = False, final_multimask: bool = True, progress: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = f"sam:{model_type}"
        self.cache = cache
        self.encode_batch_size, self.decode_batch_size = encode_batch_size, decode_batch_size
        self.pad_points, self.progress = pad_points, progress
        self.final_multimask = final_multimask
        self.transform = resize_longest_side(model.image_encoder.img_size)

    # ---- embeddings
    def embeddings(self, views: list[int], images: list[np.ndarray]) -> list[dict]:
        """Cache entries for the views, encoding the missing ones (see EmbeddingCache)."""
        for v, im in zip(views, images):
            check_image(im, v)
        return self.cache.encode_views(self.model, images, views, self.device,
                                       self.encode_batch_size, self.progress)

    def predictor(self, view: int, image: np.ndarray):
        """segment_anything's SamPredictor with this view's cached embedding already set."""
        e = self.embeddings([view], [image])[0]
        p = segment_anything().SamPredictor(self.model)
        p.features = e["embedding"].to(self.device, torch.float32)
        p.original_size, p.input_size, p.is_image_set = e["original_size"], e["input_size"], True
        return p

    # ---- decoding
    def _low_res(self, mask_input, entry) -> np.ndarray:
        m = np.asarray(mask_input, np.float32)
        if m.shape[-2:] == (LOW_RES_SIZE, LOW_RES_SIZE) and m.size == LOW_RES_SIZE ** 2:
            return m.reshape(LOW_RES_SIZE, LOW_RES_SIZE)
        if m.shape != tuple(entry["original_size"]):
            raise SegmenterError(f"mask_input of shape {m.shape}: give SAM low-res logits (256, 256) "
                                 f"or a probability map of the image size {entry['original_size']}")
        return prob_to_low_res_logits(m)

    @torch.no_grad()
    def _decode(self, entries, prompts, mask_inputs, multimask: bool):
        """Per view: (masks (C,H,W) bool, scores (C,), low-res logits (C,256,256)) numpy."""
        groups: dict[tuple, list[int]] = {}
        for i, (p, m) in enumerate(zip(prompts, mask_inputs)):
            k = 0 if self.pad_points else len(p.points)
            groups.setdefault((k, p.box is not None, m is not None), []).append(i)
        out = [None] * len(entries)
        chunks = [(key, idx[i:i + self.decode_batch_size]) for key, idx in groups.items()
                  for i in range(0, len(idx), self.decode_batch_size)]
        for (_, has_box, has_mask), idx in chunks:
            res = self._decode_group([entries[i] for i in idx], [prompts[i] for i in idx],
                                     [mask_inputs[i] for i in idx] if has_mask else None,
                                     has_box, multimask)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    def _decode_group(self, entries, prompts, mask_inputs, has_box, multimask):
        dev, B = self.device, len(entries)
        K = max(len(p.points) for p in prompts)
        points = None
        if K:
            coords = np.zeros((B, K, 2))                                  # (B, K, 2) input px
            labels = -np.ones((B, K), np.int64)                           # -1 = padding point
            for b, (p, e) in enumerate(zip(prompts, entries)):
                coords[b, :len(p.points)] = self.transform.apply_coords(p.points, e["original_size"])
                labels[b, :len(p.points)] = p.labels
            points = (torch.as_tensor(coords, dtype=torch.float, device=dev),
                      torch.as_tensor(labels, dtype=torch.int, device=dev))
        boxes = None
        if has_box:
            boxes = np.concatenate([self.transform.apply_boxes(p.box[None], e["original_size"])
                                    for p, e in zip(prompts, entries)])   # (B, 4) input px
            boxes = torch.as_tensor(boxes, dtype=torch.float, device=dev)
        masks = None
        if mask_inputs is not None:
            masks = torch.as_tensor(np.stack(mask_inputs)[:, None], dtype=torch.float, device=dev)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        emb = torch.cat([e["embedding"] for e in entries]).to(dev, torch.float32)  # (B,256,64,64)
        # The decoder repeats ONE image embedding per prompt; per-view embeddings enter through
        # the dense term instead: src = 0 + (dense + emb) equals SAM's emb + dense exactly.
        zero = torch.zeros_like(emb[:1])
        low, iou = self.model.mask_decoder(image_embeddings=zero,
                                           image_pe=self.model.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse,
                                           dense_prompt_embeddings=dense + emb,
                                           multimask_output=multimask)   # (B,C,256,256), (B,C)
        res = []
        for b, e in enumerate(entries):
            full = self.model.postprocess_masks(low[b:b + 1], e["input_size"], e["original_size"])
            res.append(((full[0] > self.model.mask_threshold).cpu().numpy(),
                        iou[b].float().cpu().numpy(), low[b].float().cpu().numpy()))
        return res

    @staticmethod
    def _best(out) -> SegResult:
        masks, scores, low = out
        i = int(np.argmax(scores))
        return SegResult(masks[i], float(scores[i]), low[i].astype(np.float32))

    # ---- Segmenter API
    def predict(self, view, image, prompt, mask_input=None, multimask: bool = False) -> SegResult:
        e = self.embeddings([view], [image])[0]
        m = None if mask_input is None else self._low_res(mask_input, e)
        return self._best(self._decode([e], [prompt], [m], multimask)[0])

    def predict_cascade(self, view, image, prompt) -> SegResult:
        return self.predict_views([view], [image], [prompt], cascade=True)[0]

    def predict_views(self, views, images, prompts, cascade: bool = False) -> list[SegResult]:
        if not (len(views) == len(images) == len(prompts)):
            raise SegmenterError(f"predict_views: {len(views)} views, {len(images)} images and "
                                 f"{len(prompts)} prompts; give one image and one prompt per view")
        entries = self.embeddings(list(views), list(images))
        none = [None] * len(entries)
        if not cascade:
            return [self._best(o) for o in self._decode(entries, prompts, none, False)]
        step1 = [self._best(o) for o in self._decode(entries, prompts, none, False)]
        step2 = [self._best(o) for o in self._decode(entries, prompts,
                                                     [r.low_res_logits for r in step1], True)]
        boxed = [i for i, r in enumerate(step2) if r.mask.any()]
        if boxed:
            p3 = [Prompt(prompts[i].view, prompts[i].points, prompts[i].labels, mask_box(step2[i].mask))
                  for i in boxed]
            step3 = self._decode([entries[i] for i in boxed], p3,
                                 [step2[i].low_res_logits for i in boxed], self.final_multimask)
            for i, o in zip(boxed, step3):
                step2[i] = self._best(o)
        return step2


def build_sam_segmenter(model_type: str, checkpoint=None, *, device="cpu", cache_dir=None,
                        seed: int = 0, **kw) -> SamSegmenter:
    """SamSegmenter for an official checkpoint, or a RANDOM model when model_type is "tiny"."""
    if model_type == "tiny":
        model, model_id = build_random_sam("tiny", seed), random_model_id("tiny", seed)
    else:
        model = load_sam(model_type, checkpoint, device)
        model_id = checkpoint_model_id(checkpoint)
    cache = EmbeddingCache(cache_dir, model_type, model_id)
    return SamSegmenter(model, model_type, cache, device=device, **kw)
