"""Conf loading: CASE_NAME substitution, includes, and named errors for missing/unknown keys."""
import pytest
import torch

from systems.config import Conf, ConfigError
from systems.trainer import Trainer


def test_case_name_and_include(tmp_path):
    (tmp_path / "base.conf").write_text('general { dir = ./exp/CASE_NAME }\ntrain { a = 1 }\n')
    (tmp_path / "child.conf").write_text('include "base.conf"\ntrain { a = 2 }\n')
    conf = Conf.from_file(tmp_path / "child.conf", case="scan1")
    assert conf.get("general.dir", str) == "./exp/scan1"
    assert conf.get("train.a", int) == 2  # later keys override included ones
    conf.check_all_read()


def test_missing_key_names_key_and_file(tmp_path):
    (tmp_path / "a.conf").write_text("train { a = 1 }\n")
    conf = Conf.from_file(tmp_path / "a.conf")
    with pytest.raises(ConfigError, match=r"train\.b.*a\.conf"):
        conf.section("train").get("b")


def test_unknown_key_is_an_error(tmp_path):
    (tmp_path / "a.conf").write_text("train { a = 1, typo_key = 3 }\n")
    conf = Conf.from_file(tmp_path / "a.conf")
    conf.get("train.a")
    with pytest.raises(ConfigError, match="train.typo_key"):
        conf.check_all_read()


def test_wrong_type_is_an_error(tmp_path):
    (tmp_path / "a.conf").write_text('train { a = "many" }\n')
    with pytest.raises(ConfigError, match="train.a.*int"):
        Conf.from_file(tmp_path / "a.conf").get("train.a", int)


def test_missing_conf_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Conf.from_file(tmp_path / "nope.conf")


@pytest.mark.parametrize("conf_name", ["synthetic.conf", "synthetic_cpu.conf", "tiny.conf", "dtu.conf"])
def test_shipped_confs_have_exactly_the_keys_the_code_reads(conf_name, tiny_scene):
    """Every shipped conf builds a Trainer with no unknown and no missing key."""
    from tests.conftest import ROOT

    conf = Conf.from_file(ROOT / "confs" / conf_name, case="x",
                          overrides=f'dataset.data_dir = "{tiny_scene}"\ndataset.load_masks = true')
    Trainer(conf, torch.device("cpu"))  # raises ConfigError on any unread or missing key


def test_trainer_rejects_a_typo_in_the_conf(tiny_scene):
    from tests.conftest import ROOT

    conf = Conf.from_file(ROOT / "confs" / "tiny.conf", case="x",
                          overrides=f'dataset.data_dir = "{tiny_scene}"\ntrain.batch_ray = 10')
    with pytest.raises(ConfigError, match="train.batch_ray"):
        Trainer(conf, torch.device("cpu"))
