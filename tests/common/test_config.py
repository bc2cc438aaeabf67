from pathlib import Path

import pytest

from deepretrieval.common.config import (
    BM25Config,
    EmulatorConfig,
    PathsConfig,
    apply_overrides,
    default_data_root,
    load_config,
)
from deepretrieval.common.errors import ConfigError


def test_overrides_set_nested_values_read_as_yaml():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=true", "d.e=[1, 2]", "s=text"])
    assert out == {"a": {"b": 2, "c": True}, "d": {"e": [1, 2]}, "s": "text"}


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'b' is a value"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=3"])


def test_malformed_override_names_itself():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["nonsense"])


def test_bad_value_names_field_and_allowed_range(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("k1: -1\nb: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(BM25Config, cfg)
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "k1: Input should be greater than 0 (got -1)" in msg
    assert "b: Input should be less than or equal to 1 (got 2)" in msg


def test_unknown_key_is_rejected(tmp_path: Path):
    with pytest.raises(ConfigError, match="k2: Extra inputs are not permitted"):
        load_config(BM25Config, None, ["k2=1"])


def test_literal_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match="api: Input should be 'pubmed' or 'ctgov'"):
        load_config(EmulatorConfig, None, ["api=bing", "dataset=scifact"])


def test_yaml_that_is_not_a_mapping(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(BM25Config, cfg)


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(BM25Config, tmp_path / "nope.yaml")


def test_data_root_from_env(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DEEPRETRIEVAL_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    assert PathsConfig().data_root == tmp_path


def test_default_data_root_is_shared_data(monkeypatch):
    monkeypatch.delenv("DEEPRETRIEVAL_DATA", raising=False)
    assert default_data_root().parts[-2:] == ("shared", "data")


def test_override_indexes_into_lists():
    out = apply_overrides({"tasks": [{"k": 1}, {"k": 2}]}, ["tasks.1.k=5", "tasks.0.new=x"])
    assert out == {"tasks": [{"k": 1, "new": "x"}, {"k": 5}]}
    with pytest.raises(ConfigError, match="'7' is not an index of a list of 2"):
        apply_overrides({"tasks": [{}, {}]}, ["tasks.7.k=1"])


@pytest.mark.parametrize("chosen", ["[8, 4, 10]", "[4, 4, 10]", "[0, 10]", "[4, 8]"])
def test_warmup_select_epochs_must_rise_to_the_last_epoch(chosen: str):
    from deepretrieval.common.warmup_config import WarmupConfig

    with pytest.raises(ConfigError, match=r"select_epochs .* must be increasing epochs from 1 whose last is warmup.epochs \(10\)"):
        load_config(WarmupConfig, None, ["epochs=10", f"select_epochs={chosen}"])
    assert load_config(WarmupConfig, None, ["epochs=10", "select_epochs=[6, 8, 10]"]).select_epochs == [6, 8, 10]
