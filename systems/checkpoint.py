"""Atomic checkpoints that hold everything needed to resume, RNG state included.

Checkpoints are loaded with `torch.load(weights_only=True)`: a file passed around between people
can never run code. What we save is therefore made of tensors and plain Python values only;
numpy arrays (RNG state, packed masks) travel as tensors tagged by `encode` and come back as numpy
arrays through `decode`.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from systems.atomic import atomic_write

CKPT_PATTERN = re.compile(r"ckpt_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (older layout, corrupt, foreign); the message names the file."""


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
        state["generator_device"] = generator.device.type
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of rng_state. Generator states must be CPU byte tensors: a checkpoint loaded with
    map_location="cuda" has moved them to the GPU, so they are brought back first."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        if state.get("generator_device", generator.device.type) == generator.device.type:
            generator.set_state(state["generator"].cpu())
        else:  # trained on one kind of device, resumed on another: the two generators' states differ
            print(f"[resume] note: checkpoint written on {state['generator_device']}, resumed on "
                  f"{generator.device.type}; ray sampling continues with a fresh random stream")


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first (by iteration number)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


NDARRAY = "__ndarray__"


def encode(obj):
    """Nested dicts/lists/tuples with numpy arrays and scalars -> the same with tensors and Python scalars."""
    if isinstance(obj, np.ndarray):
        return {NDARRAY: torch.from_numpy(np.ascontiguousarray(obj)), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode(v) for v in obj)
    return obj


def decode(obj):
    """Inverse of encode (tagged tensors -> numpy arrays, on the CPU)."""
    if isinstance(obj, dict):
        if NDARRAY in obj:
            return obj[NDARRAY].cpu().numpy().astype(obj["dtype"], copy=False)
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode(v) for v in obj)
    return obj


def save_checkpoint(folder: Path, iteration: int, state: dict, keep: int) -> Path:
    path = Path(folder) / f"ckpt_{iteration:06d}.pth"
    atomic_torch_save(encode(state), path)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def load_checkpoint(path: Path, map_location) -> dict:
    """One checkpoint, loaded without executing anything in it; CheckpointError names the file."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (" -- it was written by an older version (checkpoint layout 1, raw numpy objects): retrain, "
                "or resume it with the commit that wrote it" if "numpy" in str(exc) else "")
        raise CheckpointError(f"{path}: not a checkpoint this code can load safely ({first[:300]}){hint}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an NTO3D training checkpoint (no 'model' entry)")
    return decode(state)


def load_latest(folder: Path, map_location) -> dict | None:
    """The newest loadable checkpoint; an unreadable newest one (a crash, a truncated copy) is reported and the
    previous one is used. None when the folder holds no checkpoint."""
    ckpts = list_checkpoints(folder)
    for i, path in enumerate(reversed(ckpts)):
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as exc:
            if i == len(ckpts) - 1:
                raise
            print(f"[resume] WARNING: {exc}; falling back to the previous checkpoint")
    return None
