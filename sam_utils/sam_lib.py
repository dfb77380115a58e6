"""The SAM code packages (heavy dependencies), imported here only and on first use.

segment_anything (Meta's SAM: models, registry, transforms, predictor) is a requirement; mobile_sam
(MobileSAM's vit_t) is optional. Everything else in sam_utils reaches them through these functions,
so importing sam_utils stays cheap and a missing package fails in one known place.
"""
from __future__ import annotations

from .errors import SamCheckpointError

MOBILE_SAM_INSTALL = ".venv/bin/pip install mobilesam-mirror"


def segment_anything():
    """The segment_anything package, with its .modeling and .utils.transforms submodules loaded."""
    import segment_anything
    import segment_anything.modeling
    import segment_anything.utils.transforms
    return segment_anything


def resize_longest_side(target_length: int):
    """segment_anything's ResizeLongestSide(target_length): SAM's image / coordinate resizing."""
    return segment_anything().utils.transforms.ResizeLongestSide(target_length)


def mobile_sam_registry() -> dict:
    """MobileSAM's sam_model_registry (for vit_t), or SamCheckpointError saying how to install it."""
    try:
        from mobile_sam import sam_model_registry
    except ImportError as e:
        raise SamCheckpointError(
            f"sam_model_type vit_t (MobileSAM) needs the mobile_sam package: {MOBILE_SAM_INSTALL} "
            "(or use vit_b / vit_l / vit_h)") from e
    return sam_model_registry
