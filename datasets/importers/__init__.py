"""Bring-your-own-capture importers: COLMAP, transforms.json, Blender, LLFF and photo folders
(SfM with pycolmap) -> the NeuS/IDR DTU layout that datasets.dtu.DTUDataset reads.

Entry point: ``import_scene(src, out, fmt="auto", ...)``; CLI: scripts/import_scene.py.
"""
from .errors import (DuplicateViewError, ImageSizeError, IntrinsicsError, MissingImageError,
                     NormalisationError, RotationError, SceneImportError, UnregisteredViewError)
from .pipeline import FORMATS, IMAGE_FORMATS, ImportResult, detect_format, import_scene

__all__ = ["import_scene", "detect_format", "FORMATS", "IMAGE_FORMATS", "ImportResult",
           "SceneImportError", "MissingImageError", "DuplicateViewError", "UnregisteredViewError",
           "IntrinsicsError", "RotationError", "ImageSizeError", "NormalisationError"]
