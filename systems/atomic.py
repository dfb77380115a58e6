"""Atomic file writes: a temp file in the same folder, then a rename, so a crash or a full disk never
leaves half a file where a complete one is expected; a full disk gives one line naming the folder."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


class DiskFullError(OSError):
    """No space left while writing an output; the message names the folder and the space needed."""


def atomic_write(path: Path, write: Callable[[Path], None], size_hint: int = 0) -> Path:
    """write(tmp_path) fills a temp file beside `path`, which then replaces `path` in one rename.
    The temp file is removed on any failure; ENOSPC becomes DiskFullError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            free = shutil.disk_usage(path.parent).free
            need = f"; it needs about {size_hint / 2**20:.0f} MB" if size_hint else ""
            raise DiskFullError(errno.ENOSPC, f"disk full writing {path.name} in {path.parent} "
                                f"({free / 2**20:.0f} MB free{need}): free space there and run again "
                                "(add --is_continue to resume)") from exc
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text), len(text))
