"""Named errors of the scene importers; each message names the file at fault and the fix.

All derive from datasets.dtu.DatasetError (a ValueError), so callers that already catch the
loader's errors catch these too.
"""
from __future__ import annotations

from ..dtu import DatasetError


class SceneImportError(DatasetError):
    """A source scene cannot be imported (unknown format, unreadable file, bad option)."""


class MissingImageError(SceneImportError):
    """Images listed by the cameras file are not on disk."""


class DuplicateViewError(SceneImportError):
    """The same image is listed more than once."""


class UnregisteredViewError(SceneImportError):
    """Images on disk have no camera (SfM dropped them, or the model lacks them)."""


class IntrinsicsError(SceneImportError):
    """Focal lengths / principal point / image size are degenerate, or the model is unsupported."""


class RotationError(SceneImportError):
    """A pose's rotation part is not a rotation (scaled, sheared, reflected, NaN)."""


class ImageSizeError(SceneImportError):
    """Views have different sizes, or a file's size does not match its camera."""


class NormalisationError(SceneImportError):
    """No bounding sphere can be found for the object; the user must give one."""


def list_some(items, limit: int = 6) -> str:
    """'a, b, c (+4 more)': a short list of names for error messages."""
    items = [str(i) for i in items]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
