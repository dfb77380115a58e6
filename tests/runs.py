"""Build runs for tests from a shipped conf plus overrides (the same path as train.py)."""
import torch

from systems.config import Conf
from systems.runner import build_run
from tests.conftest import ROOT


def make_run(scene, exp_dir, *overrides, conf="tiny.conf", is_continue=False, device="cpu", scene_only=True):
    """A Run on `scene` writing to `exp_dir`; scene_only switches NTO3D off."""
    lines = [f'dataset.data_dir = "{scene}"', f'general.base_exp_dir = "{exp_dir}"']
    if scene_only:
        lines.append("nto3d.enabled = false")
    conf = Conf.from_file(ROOT / "confs" / conf, case="test", overrides="\n".join(lines + list(overrides)))
    return build_run(conf, torch.device(device), is_continue=is_continue)
