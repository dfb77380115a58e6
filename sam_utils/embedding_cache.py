"""On-disk cache of SAM image embeddings, so prompts can change without re-running the encoder.

Layout: root/<model_type>/<view:03d>_<key>.pt, key = short hash of (image bytes + shape, model_id).
Each file holds {"embedding": (1,256,64,64) float16, "original_size": (H,W), "input_size": (h',w'),
"model_id": str}. The pipeline's root is <data_dir>/sam_feat/. A changed image or model gives a new
key (the old file is left; it is never read again). model_id identifies the weights: for a
checkpoint, a hash of its name, size and mtime (sam_model.checkpoint_model_id); for a random
model, its type and seed (sam_model.random_model_id). Writes are atomic (temp file + os.replace).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .sam_lib import resize_longest_side

KEY_CHARS = 16            # hex characters of the cache key
MEMORY_ITEMS = 64         # embeddings also kept in memory (about 2 MB each in float16)
STORE_DTYPE = torch.float16


class EmbeddingCache:
    """Per-view SAM embeddings on disk (root=None: memory only), with counters for tests."""

    def __init__(self, root: Path | str | None, model_type: str, model_id: str,
                 memory_items: int = MEMORY_ITEMS):
        self.dir = None if root is None else Path(root) / model_type
        self.model_type, self.model_id = model_type, model_id
        self.memory: OrderedDict[str, dict] = OrderedDict()
        self.memory_items = memory_items
        self.n_encoder_calls = 0      # encoder forward passes
        self.n_encoded_images = 0     # images those passes encoded

    def key(self, image: np.ndarray) -> str:
        image = np.ascontiguousarray(image)
        h = hashlib.sha1(f"{image.shape}{image.dtype}{self.model_id}".encode())
        h.update(image.data)
        return h.hexdigest()[:KEY_CHARS]

    def path(self, view: int, image: np.ndarray) -> Path | None:
        return None if self.dir is None else self.dir / f"{self._name(view, image)}.pt"

    def _name(self, view: int, image: np.ndarray) -> str:
        return f"{int(view):03d}_{self.key(image)}"

    def _remember(self, name: str, entry: dict) -> None:
        self.memory[name] = entry
        self.memory.move_to_end(name)
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)

    def get(self, view: int, image: np.ndarray) -> dict | None:
        """The cached entry for this view's image (embedding float16 on CPU), or None."""
        name = self._name(view, image)
        if name in self.memory:
            self.memory.move_to_end(name)
            return self.memory[name]
        path = None if self.dir is None else self.dir / f"{name}.pt"
        if path is None or not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            entry["original_size"] = tuple(int(v) for v in entry["original_size"])
            entry["input_size"] = tuple(int(v) for v in entry["input_size"])
        except Exception as e:  # a truncated or foreign file: recompute rather than fail
            warnings.warn(f"SAM embedding cache file {path} is unreadable ({e}); recomputing it")
            return None
        self._remember(name, entry)
        return entry

    def put(self, view: int, image: np.ndarray, embedding: torch.Tensor,
            original_size: tuple[int, int], input_size: tuple[int, int]) -> dict:
        """Store one view's embedding (1,256,64,64); returns the stored entry."""
        emb = embedding.detach().to("cpu", STORE_DTYPE).reshape(1, *embedding.shape[-3:])
        entry = {"embedding": emb,
                 "original_size": tuple(int(v) for v in original_size),
                 "input_size": tuple(int(v) for v in input_size),
                 "model_id": self.model_id}
        name = self._name(view, image)
        path = None if self.dir is None else self.dir / f"{name}.pt"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            os.close(fd)
            try:
                torch.save(entry, tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        self._remember(name, entry)
        return entry

    @torch.no_grad()
    def encode_views(self, model, images: list[np.ndarray], views: list[int], device="cpu",
                     batch_size: int = 1, progress: bool = False) -> list[dict]:
        """Entries for all views (RGB uint8 (H,W,3) images), encoding only those not cached."""
        entries = [self.get(v, im) for v, im in zip(views, images)]
        todo = [i for i, e in enumerate(entries) if e is None]
        if not todo:
            return entries
        transform = resize_longest_side(model.image_encoder.img_size)
        device = torch.device(device)
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        if progress:
            batches = tqdm(batches, desc=f"SAM {self.model_type} encoder", unit="batch")
        for batch in batches:
            inputs, sizes = [], []
            for i in batch:
                resized = transform.apply_image(np.asarray(images[i], np.uint8))    # (h', w', 3)
                x = torch.as_tensor(resized, device=device).permute(2, 0, 1)[None].float()
                inputs.append(model.preprocess(x))                                  # (1,3,1024,1024)
                sizes.append((tuple(images[i].shape[:2]), tuple(resized.shape[:2])))
            x = torch.cat(inputs)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                feats = model.image_encoder(x)                                      # (b,256,64,64)
            self.n_encoder_calls += 1
            self.n_encoded_images += len(batch)
            for j, i in enumerate(batch):
                entries[i] = self.put(views[i], images[i], feats[j:j + 1].float(), *sizes[j])
        return entries
