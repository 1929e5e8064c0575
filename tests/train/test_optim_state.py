"""Optimizer state has one layout for every topology: flat and keyed by parameter name, exactly as
torch.distributed.checkpoint.state_dict writes it, so a checkpoint resumes under any process count;
and checkpoints of the earlier, by-position layout still load."""

from __future__ import annotations

import pytest
import torch

from lmforge import optim_state, runs
from lmforge.config import OptimConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.train.optim import AdamW, build_optimizers

CASES = {
    "adamw": (OptimConfig(name="adamw"), dict(n_layer=2)),
    "muon": (OptimConfig(name="muon"), dict(n_layer=2)),
    "adamw-tied": (OptimConfig(name="adamw"), dict(n_layer=1, tie_embeddings=True)),
    "sgd": (OptimConfig(name="sgd", momentum=0.9), dict(n_layer=1)),
}


def _trained(name: str, steps: int = 3, seed: int = 0):
    config, shape = CASES[name]
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=27, n_head=2, n_embd=32, seq_len=16, **shape))
    model.init_weights()
    optimizers = build_optimizers(config, model)
    _steps(model, optimizers, steps)
    return model, optimizers


def _steps(model, optimizers, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 27, (4, 17), generator=gen)
        model(idx[:, :-1], idx[:, 1:]).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert isinstance(b[key], torch.Tensor) and torch.equal(a[key], b[key]), key
            assert a[key].dtype == b[key].dtype, key
        elif isinstance(a[key], tuple | list):  # JSON gives back betas=(b1, b2) as a list
            assert list(a[key]) == list(b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("name", list(CASES))
def test_the_hand_written_layout_is_torchs_flattened_full_state_dict(name):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model, optimizers = _trained(name)
    if name.startswith("adamw"):
        assert isinstance(optimizers[0], AdamW)  # lmforge's own fused AdamW, not torch's
    if name == "muon":
        assert [type(o).__name__ for o in optimizers] == ["AdamW", "Muon"]
    ours = optim_state.gather(model, optimizers)
    options = StateDictOptions(full_state_dict=True, flatten_optimizer_state_dict=True)
    theirs = get_optimizer_state_dict(model, optimizers, options=options)
    _assert_same(ours, theirs)
    assert any(key.startswith("state.blocks.0.") for key in ours)  # keyed by name, not position


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_restoring_the_flat_state_continues_bit_exactly(name):
    model, optimizers = _trained(name)
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}
    # a copy: the gathered tensors are the optimizers' own, which the next steps update in place
    flat = {
        k: v.clone() if isinstance(v, torch.Tensor) else v
        for k, v in optim_state.gather(model, optimizers).items()
    }
    _steps(model, optimizers, 2, seed=7)

    fresh, fresh_opts = _trained(name, steps=0, seed=5)  # other weights, no state yet
    fresh.load_state_dict(saved_weights)
    optim_state.restore(fresh, fresh_opts, flat)
    _assert_same(optim_state.gather(fresh, fresh_opts), flat)
    _steps(fresh, fresh_opts, 2, seed=7)
    for (key, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def _position_layout(optimizers) -> tuple[dict, dict]:
    """optim.safetensors + optim.json as checkpoints were written before the by-name layout."""
    tensors, rest = {}, {"optimizers": []}
    for i, opt in enumerate(optimizers):
        state, scalars = opt.state_dict(), {}
        for param_id, entries in state["state"].items():
            for entry, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{i}.{param_id}.{entry}"] = value.detach().clone()
                else:
                    scalars.setdefault(str(param_id), {})[entry] = value
        groups = [dict(g) for g in state["param_groups"]]
        rest["optimizers"].append({"type": type(opt).__name__, "param_groups": groups, "scalars": scalars})
    rest["tensor_keys"] = sorted(tensors)
    return tensors, rest


@pytest.mark.parametrize("name", ["adamw", "muon", "sgd"])
def test_a_checkpoint_of_the_earlier_layout_is_converted_on_read(name):
    model, optimizers = _trained(name)
    tensors, rest = _position_layout(optimizers)
    _assert_same(
        runs.optimizer_state_from_files(model, optimizers, tensors, rest),
        optim_state.gather(model, optimizers),
    )


def test_a_checkpoint_round_trips_through_the_files(tmp_path):
    model, optimizers = _trained("muon")
    path = runs.save_checkpoint(tmp_path, 3, model, optimizers, {"step": 3})
    assert {"optim.safetensors", "optim.json"} <= {f.name for f in path.iterdir()}
    fresh, fresh_opts = _trained("muon", steps=0, seed=5)
    runs.load_training_state(path, fresh, fresh_opts)
    _assert_same(optim_state.gather(fresh, fresh_opts), optim_state.gather(model, optimizers))
