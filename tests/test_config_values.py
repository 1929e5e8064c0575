"""Every numeric setting is range-checked where it enters a config: NaN, infinities, negatives and
absurd sizes end in one `UserError` naming the key -- never a traceback, a hang, or a silently
accepted value. The table is built from the dataclasses themselves, so a new key cannot escape."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from lmforge import memory
from lmforge.config import RANGES, SECTIONS, RunConfig, load_config
from lmforge.errors import UserError
from lmforge.models.registry import MODELS

HOSTILE = [math.nan, math.inf, -math.inf, -1, 1e30]


def numeric_keys() -> list[tuple[str, str, type]]:
    """(family, dotted key, type) of every int/float field of every section and model family."""
    keys = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            kind = typing.get_type_hints(cls)[f.name]
            if kind in (int, float):
                keys.append(("gpt", f"{name}.{f.name}", kind))
    for family, (cls, _) in MODELS.items():
        for f in dataclasses.fields(cls):
            kind = typing.get_type_hints(cls)[f.name]
            if kind in (int, float):
                keys.append((family, f"model.{f.name}", kind))
    keys.append(("gpt", "data.weights.books", float))
    return keys


KEYS = numeric_keys()


def test_every_numeric_key_has_a_range():
    missing = [key for _, key, _ in KEYS if key not in RANGES and not key.startswith("data.weights.")]
    assert missing == []


def _cases():
    for family, key, _ in KEYS:
        low, high, low_open = RANGES["data.weights" if key.startswith("data.weights.") else key]
        for value in HOSTILE:
            if value == -1 and low <= -1:
                continue
            yield pytest.param(family, key, value, id=f"{key}={value}")
        yield pytest.param(family, key, high * 2 + 1, id=f"{key}=above")
        if low_open:
            yield pytest.param(family, key, low, id=f"{key}=low")


@pytest.mark.parametrize(("family", "key", "value"), list(_cases()))
def test_hostile_value_is_a_one_line_error_naming_the_key(family, key, value):
    with pytest.raises(UserError) as caught:  # repr: a TOML literal (nan, inf, -1, 1e+30)
        load_config(None, [f"model.family={family}", f"{key}={value!r}"], vocab_size=None)
    message = str(caught.value)
    assert key.split(".")[-1] in message and "\n" not in message


def test_in_range_values_still_work():
    cfg = load_config(None, ["train.seed=0", "optim.eps=1e-12", "data.weights.books=0.5"], vocab_size=65)
    assert cfg.train.seed == 0 and cfg.data.weights == {"books": 0.5}


def test_batch_tokens_needing_absurd_micro_steps_is_refused():
    with pytest.raises(UserError, match="micro-steps"):
        load_config(None, ["train.batch_tokens=1000000000000"], vocab_size=65)
    cfg = load_config(None, ["train.batch_tokens=65536"], vocab_size=65)  # 32 micro-steps: fine
    assert cfg.train.batch_tokens == 65536


def test_a_saved_config_with_a_hostile_value_names_the_file(tmp_path):
    from lmforge import runs

    cfg = load_config(None, [], vocab_size=65)
    saved = cfg.to_dict()
    saved["optim"]["weight_decay"] = math.nan
    runs.write_json_atomic(tmp_path / "config.json", saved)
    with pytest.raises(UserError, match=r"config.json is damaged: optim.weight_decay \(nan\)"):
        runs.read_run_config(tmp_path)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_allocating():
    huge = load_config(None, ["model.n_layer=1024", "model.n_embd=65536"], vocab_size=65)
    with pytest.raises(UserError, match="lower model.n_layer"):
        memory.check_fits(huge)  # ~52e12 parameters: counted on the meta device, nothing allocated
    small = load_config(None, ["model.n_layer=2", "model.n_embd=32"], vocab_size=65)
    assert memory.check_fits(small, available=1 << 30) < 1 << 30


def test_long_sequences_count_their_attention_matrix():
    cfg = load_config(None, ["model.seq_len=1048576", "model.attn_impl=math"], vocab_size=65)
    with pytest.raises(UserError, match="needs at least"):
        memory.check_fits(cfg, available=64 << 30)


def test_run_config_is_a_dataclass_tree():
    assert {f.name for f in dataclasses.fields(RunConfig)} == {"model", *SECTIONS}


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.style=gpt2", "model.mlp=gelu", "model.qk_norm=false"],
        ["model.style=gpt2", "model.mlp=relu2", "model.bias=false", "model.tie_embeddings=true"],
        ["model.n_kv_head=1", "model.n_head=4", "model.qk_norm=true", "model.mlp=relu2"],
        ["model.mlp=swiglu", "model.mlp_hidden=100", "model.n_embd=96", "model.n_head=3"],
        ["model.family=gru", "model.n_embd=48", "model.hidden=80", "model.n_layer=3"],
        ["model.family=gru", "model.n_embd=64", "model.hidden=64", "model.tie=true"],
    ],
)
def test_the_quick_parameter_bound_is_never_below_the_count(overrides, monkeypatch):
    cfg = load_config(None, overrides, vocab_size=1000)
    exact = memory.count_params(cfg.model)
    assert exact <= memory.params_upper_bound(cfg.model) <= 2 * exact
    # a run the bound clears does not build the model on the meta device (seconds of imports)
    monkeypatch.setattr(memory, "count_params", lambda model_config: pytest.fail("counted exactly"))
    assert memory.check_fits(cfg, available=1 << 34) < 1 << 34
