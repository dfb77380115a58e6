"""EmbeddingCache: encode once, reuse across runs and prompt changes, recompute on image/model change."""
import numpy as np
import pytest
import torch

from sam_utils.embedding_cache import EmbeddingCache
from sam_utils.prompts import Prompt
from sam_utils.sam_model import SamSegmenter, build_random_sam, random_model_id

H, W = 40, 56


@pytest.fixture(scope="module")
def tiny():
    return build_random_sam("tiny", seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny, images):
    """A sam_feat/ folder filled once for the module (3 views, batch of 2 -> 2 encoder calls)."""
    root = tmp_path_factory.mktemp("scene") / "sam_feat"
    cache = EmbeddingCache(root, "tiny", random_model_id("tiny", 0))
    entries = cache.encode_views(tiny, images, [0, 1, 2], batch_size=2)
    return root, cache, entries


def test_first_run_encodes_and_writes_files(warm):
    root, cache, entries = warm
    assert cache.n_encoded_images == 3 and cache.n_encoder_calls == 2
    files = sorted(p.name for p in (root / "tiny").iterdir())
    assert len(files) == 3 and [f[:4] for f in files] == ["000_", "001_", "002_"]
    assert all(f.endswith(".pt") for f in files), "no temp files may be left behind"
    e = entries[0]
    assert e["embedding"].shape == (1, 256, 64, 64) and e["embedding"].dtype == torch.float16
    assert e["original_size"] == (H, W) and e["input_size"] == (731, 1024)


def test_second_run_reads_disk_without_encoding(warm, tiny, images):
    root, _, entries = warm
    fresh = EmbeddingCache(root, "tiny", random_model_id("tiny", 0))   # a new process, same folder
    again = fresh.encode_views(tiny, images, [0, 1, 2])
    assert fresh.n_encoder_calls == 0 and fresh.n_encoded_images == 0
    for a, b in zip(entries, again):
        assert torch.equal(a["embedding"], b["embedding"]) and a["input_size"] == b["input_size"]


def test_changed_image_or_model_is_recomputed(warm, tiny, images):
    root, _, _ = warm
    cache = EmbeddingCache(root, "tiny", random_model_id("tiny", 0))
    changed = images[1].copy()
    changed[0, 0] ^= 1
    cache.encode_views(tiny, [images[0], changed], [0, 1])
    assert cache.n_encoded_images == 1, "only the changed view is re-encoded"
    assert len(list((root / "tiny").glob("001_*.pt"))) == 2
    other = EmbeddingCache(root, "tiny", random_model_id("tiny", 1))  # other weights, same images
    assert other.get(0, images[0]) is None


def test_batched_encoding_matches_single(warm, tiny, images):
    _, _, entries = warm
    single = EmbeddingCache(None, "tiny", "x").encode_views(tiny, images[2:], [2])[0]
    assert torch.allclose(single["embedding"].float(), entries[2]["embedding"].float(), atol=2e-3)


def test_prompt_changes_never_encode(warm, tiny, images):
    root, _, _ = warm
    seg = SamSegmenter(tiny, "tiny", EmbeddingCache(root, "tiny", random_model_id("tiny", 0)))
    for pts in ([[10, 10]], [[30, 20], [5, 5]]):
        r = seg.predict(0, images[0], Prompt(0, pts, [1] * len(pts)))
        assert r.mask.shape == (H, W)
    assert seg.cache.n_encoder_calls == 0


def test_memory_only_cache_and_corrupt_file(tmp_path, tiny, images):
    mem = EmbeddingCache(None, "tiny", "m")
    e = mem.put(0, images[0], torch.ones(1, 256, 64, 64), (H, W), (731, 1024))
    assert mem.get(0, images[0]) is e and not list(tmp_path.iterdir())
    disk = EmbeddingCache(tmp_path, "tiny", "m")
    disk.put(0, images[0], torch.ones(1, 256, 64, 64), (H, W), (731, 1024))
    disk.path(0, images[0]).write_bytes(b"truncated")
    reader = EmbeddingCache(tmp_path, "tiny", "m")
    with pytest.warns(UserWarning, match="unreadable"):
        assert reader.get(0, images[0]) is None
