"""Atomic file writes: a temp file in the same folder, then a rename, so a crash or a full disk never
leaves half a file where a complete one is expected; a full disk gives one line naming the folder."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import cv2
import numpy as np


class DiskFullError(OSError):
    """No space left while writing an output; the message names the folder and the space needed."""


def disk_full(path: Path, exc: OSError, size_hint: int = 0) -> DiskFullError:
    """The one-line error for ENOSPC while writing `path`."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    need = f"; it needs about {size_hint / 2**20:.0f} MB" if size_hint else ""
    return DiskFullError(errno.ENOSPC, f"disk full writing {path.name} in {path.parent} ({free / 2**20:.0f} MB "
                         f"free{need}): free space there and run again (add --is_continue to resume)")


@contextmanager
def named_disk_full(path: Path, size_hint: int = 0):
    """Turn ENOSPC raised inside the block (while writing `path`) into DiskFullError."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise disk_full(Path(path), exc, size_hint) from exc
        raise


def atomic_write(path: Path, write: Callable[[Path], None], size_hint: int = 0) -> Path:
    """write(tmp_path) fills a temp file beside `path`, which then replaces `path` in one rename.
    The temp file is removed on any failure; ENOSPC becomes DiskFullError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        with named_disk_full(path, size_hint):
            write(Path(tmp))
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text), len(text))


def atomic_write_image(path, rgb: np.ndarray, params=()) -> Path:
    """Encode rgb (H, W, 3) uint8 RGB, or (H, W) grey, by path's suffix (.png, .jpg) and write it atomically."""
    path = Path(path)
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(path.suffix, img, list(params))
    if not ok:
        raise ValueError(f"could not encode {path}: give it a .png or .jpg name")
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()), buf.nbytes)
