"""Bad input and faults: named errors, nothing half-written, nothing executed from files (issue 17)."""
import errno
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sam_utils.errors import PromptError
from sam_utils.prompts import Prompt, parse_cli_prompt
from systems import checkpoint as ckpt
from systems.atomic import DiskFullError
from systems.config import Conf, ConfigError
from systems.trainer import TrainingDiverged
from tests.conftest import ROOT
from tests.runs import make_run


def short_run(scene, exp, *overrides, is_continue=False):
    r = make_run(scene, exp, "train.max_iters = 4", "train.log_every = 2", "train.save_every = 2", *overrides,
                 is_continue=is_continue)
    return r


class Payload:
    """A pickle whose loading would create a marker file (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_does_not_execute_and_is_refused_by_name(tiny_scene, tmp_path):
    folder = tmp_path / "exp" / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    evil = folder / "ckpt_999999.pth"
    with open(evil, "wb") as f:
        pickle.dump({"model": Payload(marker)}, f)
    with pytest.raises(ckpt.CheckpointError, match="ckpt_999999.pth"):
        short_run(tiny_scene, tmp_path / "exp", is_continue=True)
    assert not marker.exists()


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tiny_scene, tmp_path):
    short_run(tiny_scene, tmp_path).trainer.fit()
    ckpts = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert len(ckpts) == 2
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])                # a copy cut short
    again = short_run(tiny_scene, tmp_path, is_continue=True)
    assert again.trainer.iteration == int(ckpts[-2].stem.split("_")[1])


def test_a_foreign_torch_file_is_named(tiny_scene, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / "ckpt_000001.pth")
    with pytest.raises(ckpt.CheckpointError, match="not an NTO3D training checkpoint"):
        short_run(tiny_scene, tmp_path, is_continue=True)


def test_resume_refuses_a_model_changing_conf_and_names_the_key(tiny_scene, tmp_path):
    short_run(tiny_scene, tmp_path).trainer.fit()
    first = (tmp_path / "config.conf").read_text()
    with pytest.raises(ckpt.CheckpointError, match=r"model\.sdf\.hidden_dim"):
        short_run(tiny_scene, tmp_path, "model.sdf.hidden_dim = 32", is_continue=True)
    r = short_run(tiny_scene, tmp_path, "train.max_iters = 6", is_continue=True)   # a longer schedule is fine
    r.trainer.fit()
    assert (tmp_path / "config.conf").read_text() == first                  # the run's first conf is kept
    assert list(tmp_path.glob("config_resumed_*.conf"))


def test_a_nan_run_stops_with_the_last_good_checkpoint_intact(tiny_scene, tmp_path):
    r = short_run(tiny_scene, tmp_path, "train.max_iters = 8")
    losses = r.pipeline.losses

    def poisoned(iteration):
        terms, extras = losses(iteration)
        if iteration >= 4:
            terms["color"] = (terms["color"][0], terms["color"][1] * float("nan"))
        return terms, extras

    r.pipeline.losses = poisoned
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        r.trainer.fit()
    ckpts = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert ckpts and int(ckpts[-1].stem.split("_")[1]) <= 4
    state = ckpt.load_checkpoint(ckpts[-1], "cpu")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_disk_full_leaves_no_partial_mesh_or_checkpoint(tiny_scene, tmp_path, monkeypatch):
    r = short_run(tiny_scene, tmp_path)
    r.trainer.fit()
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="disk full writing ckpt_.*checkpoints"):
        r.trainer.save()
    import trimesh
    monkeypatch.setattr(trimesh.Trimesh, "export", lambda self, *a, **k: full())
    with pytest.raises(DiskFullError, match="meshes"):
        r.pipeline.write_mesh(r.trainer.iteration, resolution=24)
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and not p.startswith("events")] in ([], ["meshes"])
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("args, message", [
    (["--prompt_view", "9", "--prompt_points", "10,10"], "view 9 does not exist"),
    (["--prompt_view", "-1", "--prompt_points", "10,10"], "view -1 does not exist"),
    (["--prompt_points", "-5,20"], r"point \(-5, 20\) is outside the image"),
    (["--prompt_points="], "give at least one point"),
    (["--prompt_points", "10,10", "--prompt_box", "-3,-3,40,40"], "outside the image"),
])
def test_prompts_are_checked_in_full_resolution_pixels_with_named_messages(tiny_scene, tmp_path, args, message):
    cmd = [sys.executable, "train.py", "--conf", "confs/tiny.conf", "--case", "t", *args,
           "--override", f'dataset.data_dir = "{tiny_scene}"', "--override", f'general.base_exp_dir = "{tmp_path}"',
           "--override", "train.max_iters = 1", "--override", "nto3d.warmup_iters = 1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-1500:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr
    assert __import__("re").search(message, lines[0]), lines[0]


def test_a_missing_prompt_file_names_the_conf_key(tiny_scene, tmp_path):
    from sam_utils.errors import PromptError as PE

    r = make_run(tiny_scene, tmp_path, "nto3d.prompt_file = nope.json", scene_only=False)
    with pytest.raises(PE, match=r"nto3d\.prompt_file"):
        r.pipeline.prompt()


NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:g}"),
                   st.integers(-10**6, 10**6).map(str), st.text(max_size=4))


@settings(max_examples=150, deadline=None)
@given(points=st.lists(st.tuples(NUMBER, NUMBER), max_size=4).map(lambda ps: ";".join(f"{a},{b}" for a, b in ps)),
       box=st.one_of(st.none(), st.lists(NUMBER, min_size=0, max_size=5).map(",".join)),
       view=st.integers(-3, 12))
def test_fuzz_the_prompt_parser_never_raises_a_raw_exception(points, box, view):
    try:
        p = parse_cli_prompt(view, points, box)
        p.validate(72, 96, "--prompt_points", n_views=8)
    except PromptError:
        return
    assert isinstance(p, Prompt) and 0 <= p.view < 8
    assert np.isfinite(p.points).all() and ((p.points >= 0) & (p.points < [96, 72])).all()


@settings(max_examples=100, deadline=None)
@given(line=st.text(alphabet="abcxyz_.=0123456789 {}[]\"-", max_size=30))
def test_fuzz_conf_overrides_give_a_named_error_or_a_conf(line):
    """--override lines are appended to the conf's text before parsing (Conf.from_file): a small base keeps
    each example fast (pyhocon's parse time grows with the text)."""
    try:
        conf = Conf.from_string(FUZZ_BASE + "\n" + line, "fuzz.conf (with its --override lines)")
    except ConfigError:
        return
    assert isinstance(conf, Conf) and conf.has("general")            # the base conf is still there


FUZZ_BASE = 'general {\n  seed = 0\n  base_exp_dir = "exp/t"\n}\ntrain { lr = 0.01 }'


def test_a_checkpoint_of_the_older_layout_says_so(tiny_scene, tmp_path):
    """Checkpoints written before the trainer/pipeline split held raw numpy objects: refused, named, explained."""
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": {}, "rng": {"numpy": np.random.get_state()}}, tmp_path / "checkpoints" / "ckpt_000010.pth")
    with pytest.raises(ckpt.CheckpointError, match="older version"):
        short_run(tiny_scene, tmp_path, is_continue=True)
