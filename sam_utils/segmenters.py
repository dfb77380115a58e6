"""The segmenter registry: a Segmenter by name ("sam" | "grabcut").

"sam" is Segment Anything (sam_model.py; the method's segmenter), "grabcut" a weight-free fallback
for machines without a SAM checkpoint (grabcut.py). A new backend subclasses segmenter.Segmenter in
its own module (importing only segmenter.py) and is added here.
"""
from __future__ import annotations

from .errors import SegmenterError
from .grabcut import GrabCutSegmenter
from .sam_model import build_sam_segmenter
from .segmenter import Segmenter

SEGMENTER_KINDS = ("sam", "grabcut")


def build_segmenter(kind: str, *, sam_model_type: str | None = None, sam_checkpoint=None,
                    device: str = "cpu", cache_dir=None, **kw) -> Segmenter:
    """Segmenter by name. kind "sam": sam_model_type (the conf's nto3d.sam.model_type) + sam_checkpoint;
    the type "tiny" needs no checkpoint and is RANDOM (tests/benchmarks only). cache_dir: the embedding
    cache root (<data_dir>/sam_feat), None = in memory. kind "grabcut": kw go to GrabCutSegmenter
    (crop_margin and workers are required: the conf's nto3d.grabcut section).
    """
    if kind == "grabcut":
        return GrabCutSegmenter(**kw)
    if kind == "sam":
        if sam_model_type is None:
            raise SegmenterError("segmenter 'sam' needs sam_model_type (nto3d.sam.model_type in the conf: "
                                 "vit_h | vit_l | vit_b | vit_t | tiny)")
        return build_sam_segmenter(sam_model_type, sam_checkpoint, device=device, cache_dir=cache_dir, **kw)
    raise SegmenterError(f"unknown segmenter {kind!r}; choose one of {list(SEGMENTER_KINDS)}")
