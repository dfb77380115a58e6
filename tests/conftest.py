"""Shared test fixtures: repository on sys.path, the ../shared folder, a tiny generated scene, exact spheres."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("NTO3D_SHARED", ROOT.parent / "shared"))

import torch  # noqa: E402

from tests.exact_spheres import spheres as cast_spheres  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs readable


@pytest.fixture(scope="session")
def shared_dir():
    """../shared (or $NTO3D_SHARED); tests that need it skip with a message when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set NTO3D_SHARED to its path)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A small 'easy' synthetic scene in the DTU layout (8 views, 96x72), generated once per session."""
    from datasets.synthetic import make_scene

    out = tmp_path_factory.mktemp("scenes") / "tiny_easy"
    make_scene("easy", out, n_views=8, width=96, height=72, seed=0)
    return out


@pytest.fixture(scope="session")
def spheres():
    """tests/exact_spheres.py's ring of cameras around spheres in a room, cast once (read-only)."""
    return cast_spheres()
