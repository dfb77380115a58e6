"""Exceptions of the segmentation layer, so callers can tell a user mistake from a bug.

- PromptError: the user's (or a generated) prompt is unusable; the message names its source
  (a file or a command-line option) and says how to fix it.
- SamCheckpointError: SAM weights are missing, unreadable or of another model type.
- SegmenterError: a segmenter was asked for something it does not support (unknown kind,
  unsupported input).
"""


class PromptError(ValueError):
    """A prompt (points / box / mask) is invalid or gave no usable mask."""


class SamCheckpointError(FileNotFoundError):
    """SAM weights are missing, unreadable, or do not match the requested model type."""


class SegmenterError(RuntimeError):
    """A segmenter cannot be built or cannot handle the given input."""
