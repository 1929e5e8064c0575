"""Config loading: presets, dotted overrides, and clear errors for unknown keys and wrong types."""

import pytest

from lmforge.config import load_config, parse_override
from lmforge.errors import UserError


def test_parse_override_types():
    assert parse_override("optim.lr=3e-4") == ("optim.lr", 3e-4)
    assert parse_override("model.n_layer=2") == ("model.n_layer", 2)
    assert parse_override("train.compile=true") == ("train.compile", True)
    assert parse_override("optim.name=sgd") == ("optim.name", "sgd")
    with pytest.raises(UserError, match="key=value"):
        parse_override("optim.lr")


def test_overrides_apply_and_ints_become_floats(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[model]\nfamily = 'gpt'\nn_layer = 3\n[optim]\nlr = 1\n")
    cfg = load_config(preset, ["model.n_layer=2", "train.max_steps=7"], vocab_size=100)
    assert cfg.model.n_layer == 2 and cfg.train.max_steps == 7
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.vocab_size == 100


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(UserError, match="did you mean 'optim.lr'"):
        load_config(None, ["optim.lrr=1e-3"], vocab_size=100)
    with pytest.raises(UserError, match="unknown config key 'nonsense.x'"):
        load_config(None, ["nonsense.x=1"], vocab_size=100)


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match="train.max_steps must be int"):
        load_config(None, ["train.max_steps=fast"], vocab_size=100)
    with pytest.raises(UserError, match="optim.lr"):
        load_config(None, ["optim.lr=-1"], vocab_size=100)


def test_vocab_size_mismatch_is_refused():
    with pytest.raises(UserError, match="does not match the tokenizer"):
        load_config(None, ["model.vocab_size=50"], vocab_size=100)


def test_gru_family_has_its_own_keys():
    cfg = load_config(None, ["model.family=gru", "model.n_layer=1"], vocab_size=100)
    assert cfg.model.family == "gru"
    with pytest.raises(UserError, match="unknown config key"):
        load_config(None, ["model.family=gru", "model.n_head=2"], vocab_size=100)
