"""Atomic checkpoints that hold everything needed to resume, RNG state included."""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

CKPT_PATTERN = re.compile(r"ckpt_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (older layout, corrupt, foreign); the message names the file."""


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of rng_state. Generator states must be CPU byte tensors: a checkpoint loaded with
    map_location="cuda" has moved them to the GPU, so they are brought back first."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first (by iteration number)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: Path, iteration: int, state: dict, keep: int) -> Path:
    path = Path(folder) / f"ckpt_{iteration:06d}.pth"
    atomic_torch_save(state, path)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def load_latest(folder: Path, map_location) -> dict | None:
    ckpts = list_checkpoints(folder)
    if not ckpts:
        return None
    # our own files: they carry numpy RNG state, so full unpickling is needed
    return torch.load(ckpts[-1], map_location=map_location, weights_only=False)
