"""Conf loading: CASE_NAME substitution, includes, and named errors for missing/unknown keys."""
import pytest
import torch

from tests.conftest import ROOT

from systems.config import Conf, ConfigError
from systems.runner import build_run


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


SHIPPED = sorted(p.name for p in (ROOT / "confs").glob("*.conf"))


@pytest.mark.parametrize("conf_name", SHIPPED)
def test_shipped_confs_have_exactly_the_keys_the_code_reads(conf_name, tiny_scene):
    """Every shipped conf builds a run with no unknown and no missing key."""
    conf = Conf.from_file(ROOT / "confs" / conf_name, case="x",
                          overrides=f'dataset.data_dir = "{tiny_scene}"\ndataset.load_masks = true')
    build_run(conf, torch.device("cpu"))  # raises ConfigError on any unread or missing key


TYPOS = [("train.batch_ray = 10", "train.batch_ray"),                 # unknown keys, in every section,
         ("nto3d.enabled = false\nnto3d.lifting.max_round = 3", "nto3d.lifting.max_round"),   # switched off too
         ("nto3d.lifting.per_segmenter.grabcut.accept_iuo = 0.5", "per_segmenter.grabcut.accept_iuo"),
         ("features.rnak = 3", "features.rnak")]
NONSENSE = [("train.batch_rays = 0", "train.batch_rays"), ("train.max_iters = -5", "train.max_iters"),
            ("train.lr_grid = 1e30", "train.lr_grid"), ("nto3d.round_iters = -1", "nto3d.round_iters"),
            ("nto3d.lifting.unseen = ignored", "nto3d.lifting.unseen")]


@pytest.mark.parametrize("line, key", TYPOS + NONSENSE)
def test_typos_and_nonsense_numbers_are_refused_at_start_naming_the_key(tiny_scene, line, key):
    conf = Conf.from_file(ROOT / "confs" / "tiny.conf", case="x",
                          overrides=f'dataset.data_dir = "{tiny_scene}"\n{line}')
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_run(conf, torch.device("cpu"))


def test_settings_have_no_defaults_of_their_own():
    """Defaults live in the conf only: every settings dataclass field is required."""
    import dataclasses

    from systems import settings

    classes = [c for c in vars(settings).values() if dataclasses.is_dataclass(c)]
    assert len(classes) > 10
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
