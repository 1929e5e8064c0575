"""Per-CPU fast paths (models/fastpaths.py): each hand-written path equals ATen's, the probe's choice
and its cache, the off switch, and the training log line / run.json record."""

from __future__ import annotations

import json
import logging
import platform

import pytest
import torch

from conftest import TINY
from lmforge import hardware
from lmforge.cli import main
from lmforge.config import TrainConfig
from lmforge.models import fastpaths, layers
from lmforge.models.gpt import GPT, GPTConfig

ALL_ON = layers.FastPaths(gelu=True, rms_norm=True, relu2=True, attention="math")
ALL_OFF = layers.FastPaths()
BF16 = TrainConfig(batch_size=4, dtype="bfloat16")
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2}}


@pytest.fixture(autouse=True)
def _restore_fast_paths(monkeypatch):
    saved = layers.FastPaths(**vars(layers.FAST))
    monkeypatch.setattr(fastpaths, "machine_load", lambda: 0.0)  # a quiet machine unless a test says not
    yield
    layers.use_fast_paths(saved)


def _run(fn, inputs, grad):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    y.backward(grad)
    return y.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["gelu", "relu2", "rms_norm", "attention"])
def test_each_hand_written_path_equals_aten(op, dtype):
    # The probe's own cases (same inputs, same output gradient for both paths), at a small shape.
    shape = fastpaths.ProbeShape(2, 16, 32, 96, 4, 2 if op == "attention" else 4, str(dtype)[6:], 1)
    ours_fn, inputs, grad = fastpaths._case(op, shape, fastpaths.OURS[op])
    plain_fn, _, _ = fastpaths._case(op, shape, fastpaths.PLAIN[op])
    assert inputs[0].dtype == (torch.float32 if op == "rms_norm" else dtype)
    y, grads = _run(ours_fn, inputs, grad)
    y_ref, grads_ref = _run(plain_fn, inputs, grad)
    tol = TOL[inputs[0].dtype]
    torch.testing.assert_close(y, y_ref, **tol)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.dtype == g_ref.dtype
        torch.testing.assert_close(g, g_ref, **tol)


def _train_losses(paths: layers.FastPaths, style: str, mlp: str, dtype: str, steps: int = 25) -> list[float]:
    layers.use_fast_paths(paths)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, seq_len=16, n_layer=2, n_head=4, n_embd=32, style=style, mlp=mlp)
    model = GPT(cfg)
    model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, 8, (64,), generator=gen).repeat(8)  # a learnable repeating sequence
    amp = hardware.autocast(torch.device("cpu"), dtype)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - 17, (4,), generator=gen)
        x = torch.stack([data[s : s + 16] for s in starts])
        y = torch.stack([data[s + 1 : s + 17] for s in starts])
        with amp:
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("style", "mlp", "dtype", "tol"),
    [
        ("modern", "relu2", "float32", 1e-4),
        ("gpt2", "gelu", "float32", 1e-4),
        ("modern", "relu2", "bfloat16", 0.05),
    ],
)
def test_a_tiny_gpt_trains_the_same_with_fast_paths_on_and_off(style, mlp, dtype, tol):
    on = _train_losses(ALL_ON, style, mlp, dtype)
    off = _train_losses(ALL_OFF, style, mlp, dtype)
    assert off[-1] < off[0] - 0.5  # it learns
    torch.testing.assert_close(torch.tensor(on), torch.tensor(off), rtol=tol, atol=tol)


def test_the_layers_follow_the_setting(monkeypatch):
    # Off: plain ATen, the hand-written functions are never called; on: they are.
    def boom(*args, **kwargs):
        raise AssertionError("a hand-written path ran")

    for fn in (layers._GELUTanhFn, layers._ReLU2Fn, layers._RMSNormFn):
        monkeypatch.setattr(fn, "apply", boom)
    x = torch.randn(3, 8, requires_grad=True)
    q = torch.randn(1, 2, 4, 8)
    blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)
    layers.use_fast_paths(ALL_OFF)
    for module in (layers.GELUTanh(), layers.ReLU2(), layers.RMSNorm(8, 1e-6)):
        module(x).sum().backward()
    monkeypatch.setattr(torch.Tensor, "softmax", boom)  # only plain attention calls it
    layers.attend(q, q, q, "auto", blocked, 0, 0.0)
    layers.use_fast_paths(ALL_ON)
    for module in (layers.GELUTanh(), layers.ReLU2(), layers.RMSNorm(8, 1e-6)):
        with pytest.raises(AssertionError, match="hand-written"):
            module(x)
    with pytest.raises(AssertionError, match="hand-written"):
        layers.attend(q, q, q, "auto", blocked, 0, 0.0)
    layers.attend(q, q, q, "sdpa", blocked, 0, 0.0)  # an explicit impl wins over the setting


# --- the choice and its cache, with a fake timer (no real timing: deterministic) ------------------

CFG = GPTConfig(vocab_size=40, seq_len=16, n_layer=1, n_head=2, n_embd=32, mlp="gelu")  # modern + gelu
SHAPE = fastpaths.shape_of(CFG, 4, "float32", 1)


class FakeTimer:
    """Ours takes `ratio` x ATen's 10 ms (fwd and bwd alike); counts the runs."""

    def __init__(self, ratio: dict[str, float]):
        self.ratio, self.calls = ratio, 0

    def __call__(self, op, shape, path):
        ms = 10.0 * (self.ratio.get(op, 1.0) if path == fastpaths.OURS[op] else 1.0)

        def run():
            self.calls += 1
            return ms, ms

        return run


def _paths(choice: fastpaths.Choice) -> dict[str, str]:
    return {v.op: v.path for v in choice.verdicts}


def test_the_faster_path_wins_and_a_tie_goes_to_aten():
    timer = FakeTimer({"gelu": 0.5, "rms_norm": 0.97, "attention": 1.5})
    choice = fastpaths.choose(CFG, SHAPE, "auto", None, runner=timer)
    assert _paths(choice) == {"gelu": "ours", "rms_norm": "aten", "attention": "sdpa"}
    assert choice.fast_paths() == layers.FastPaths(gelu=True, rms_norm=False, relu2=False, attention="sdpa")
    timer = FakeTimer({"gelu": 2.0, "rms_norm": 0.5, "attention": 0.5})
    choice = fastpaths.choose(CFG, SHAPE, "auto", None, runner=timer)
    assert _paths(choice) == {"gelu": "aten", "rms_norm": "ours", "attention": "math"}
    assert choice.fast_paths() == layers.FastPaths(gelu=False, rms_norm=True, relu2=False, attention="math")


def test_the_probe_times_the_runs_own_micro_step_up_to_a_cap_past_the_cache():
    # Timed on a slice that fits a cache, a path can win the probe and lose in the run (our fp32 GELU
    # on a Zen 4: faster on 1M elements, slower on the large shape's 6.3M; bench/probe_cap.py).
    large = fastpaths.ProbeShape(16, 256, 384, 1536, 6, 6, "float32", 2)
    for op, path in (("gelu", "ours"), ("rms_norm", "aten"), ("attention", "math")):
        _, probed, _ = fastpaths._case(op, large, path, cap=True)
        _, whole, _ = fastpaths._case(op, large, path, cap=False)
        assert probed[0].shape == whole[0].shape, op
    huge = fastpaths.ProbeShape(64, 1024, 1024, 4096, 16, 16, "float32", 2)
    _, probed, _ = fastpaths._case("gelu", huge, "aten", cap=True)
    assert probed[0].numel() <= fastpaths.MAX_ELEMENTS < 64 * 1024 * 4096


def test_an_explicit_attention_impl_is_not_probed():
    cfg = GPTConfig(vocab_size=40, seq_len=16, n_layer=1, n_head=2, n_embd=32, mlp="relu2", attn_impl="math")
    timer = FakeTimer({})
    choice = fastpaths.choose(cfg, SHAPE, "auto", None, runner=timer)
    assert [(v.op, v.path, v.source) for v in choice.verdicts][-1] == ("attention", "math", "config")
    assert {v.op for v in choice.verdicts} == {"relu2", "rms_norm", "attention"}


def test_the_cache_is_written_once_reused_and_kept_per_key(tmp_path, monkeypatch):
    cache = tmp_path / "c" / fastpaths.CACHE_NAME
    first = FakeTimer({"gelu": 0.5})
    choice = fastpaths.choose(CFG, SHAPE, "auto", cache, runner=first)
    assert first.calls > 0 and {v.source for v in choice.verdicts} == {"probe"}
    written = json.loads(cache.read_text())
    assert written["format"] == fastpaths.FORMAT and len(written["entries"]) == 3
    mtime = cache.stat().st_mtime_ns

    again = FakeTimer({"gelu": 2.0})  # would choose otherwise: the cache must be what decides
    choice = fastpaths.choose(CFG, SHAPE, "auto", cache, runner=again)
    assert again.calls == 0 and {v.source for v in choice.verdicts} == {"cache"}
    assert _paths(choice)["gelu"] == "ours" and cache.stat().st_mtime_ns == mtime  # not rewritten

    for other in (  # another dtype, thread count, CPU or torch: another key, probed afresh
        lambda: fastpaths.choose(CFG, fastpaths.shape_of(CFG, 4, "bfloat16", 1), "auto", cache, runner=again),
        lambda: fastpaths.choose(CFG, fastpaths.shape_of(CFG, 4, "float32", 2), "auto", cache, runner=again),
    ):
        calls = again.calls
        assert {v.source for v in other().verdicts} == {"probe"} and again.calls > calls
    monkeypatch.setattr(hardware, "cpu_model", lambda: "Some Other CPU")
    calls = again.calls
    assert _paths(fastpaths.choose(CFG, SHAPE, "auto", cache, runner=again))["gelu"] == "aten"
    assert again.calls > calls
    monkeypatch.undo()
    assert len(json.loads(cache.read_text())["entries"]) == 12  # all four machines' entries kept
    assert _paths(fastpaths.choose(CFG, SHAPE, "auto", cache, runner=FakeTimer({})))["gelu"] == "ours"


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"format": 999, "entries": {}}', b'{"format": 1, "entries": 3}'],
)
def test_a_damaged_or_foreign_cache_is_ignored_and_rewritten(tmp_path, content):
    cache = tmp_path / fastpaths.CACHE_NAME
    cache.write_bytes(content)
    timer = FakeTimer({"gelu": 0.5})
    choice = fastpaths.choose(CFG, SHAPE, "auto", cache, runner=timer)
    assert timer.calls > 0 and _paths(choice)["gelu"] == "ours"
    assert json.loads(cache.read_text())["format"] == fastpaths.FORMAT
    assert [p.name for p in tmp_path.iterdir()] == [fastpaths.CACHE_NAME]  # no temporary left behind


def test_a_verdict_from_a_busy_machine_is_measured_again_when_it_is_quiet(tmp_path):
    cache = tmp_path / fastpaths.CACHE_NAME
    fastpaths.choose(CFG, SHAPE, "auto", cache, runner=FakeTimer({"gelu": 0.5}), load=3.0)
    busy = FakeTimer({"gelu": 2.0})
    choice = fastpaths.choose(CFG, SHAPE, "auto", cache, runner=busy, load=2.5)  # still busy: reused
    assert busy.calls == 0 and _paths(choice)["gelu"] == "ours"
    quiet = FakeTimer({"gelu": 2.0})
    choice = fastpaths.choose(CFG, SHAPE, "auto", cache, runner=quiet, load=0.3)
    assert quiet.calls > 0 and _paths(choice)["gelu"] == "aten"
    later = FakeTimer({"gelu": 0.5})  # a quiet verdict stays, whatever the load later
    assert _paths(fastpaths.choose(CFG, SHAPE, "auto", cache, runner=later, load=4.0))["gelu"] == "aten"
    assert later.calls == 0


def test_a_damaged_entry_is_probed_again(tmp_path):
    cache = tmp_path / fastpaths.CACHE_NAME
    fastpaths.choose(CFG, SHAPE, "auto", cache, runner=FakeTimer({"gelu": 0.5}))
    data = json.loads(cache.read_text())
    key = fastpaths.cache_key("gelu", SHAPE)
    data["entries"][key]["path"] = "fastest"
    cache.write_text(json.dumps(data))
    timer = FakeTimer({"gelu": 2.0})
    assert _paths(fastpaths.choose(CFG, SHAPE, "auto", cache, runner=timer))["gelu"] == "aten"
    assert timer.calls > 0


def test_an_unwritable_cache_costs_a_probe_not_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    choice = fastpaths.choose(CFG, SHAPE, "auto", blocker / "sub" / "c.json", runner=FakeTimer({"gelu": 0.5}))
    assert _paths(choice)["gelu"] == "ours"


def test_off_gives_plain_aten_without_timing(tmp_path):
    timer = FakeTimer({"gelu": 0.1, "rms_norm": 0.1, "attention": 0.1})
    choice = fastpaths.choose(CFG, SHAPE, "off", tmp_path / "c.json", runner=timer)
    assert timer.calls == 0 and not (tmp_path / "c.json").exists()
    assert _paths(choice) == {"gelu": "aten", "rms_norm": "aten", "attention": "sdpa"}
    layers.use_fast_paths(ALL_ON)
    env = {"LMFORGE_CACHE": str(tmp_path), "LMFORGE_FAST_PATHS": "off"}
    choice = fastpaths.setup(CFG, TrainConfig(batch_size=4), torch.device("cpu"), environ=env)
    assert {v.source for v in choice.verdicts} == {"off"} and layers.FAST == ALL_OFF


def test_a_checkpoint_pin_holds_on_its_machine_only(tmp_path):
    env = {"LMFORGE_CACHE": str(tmp_path)}
    pin = {"machine": fastpaths.machine_key(fastpaths.shape_of(CFG, 4, "bfloat16", torch.get_num_threads())),
           "paths": {"gelu": "ours", "rms_norm": "aten", "attention": "math"}}  # fmt: skip
    choice = fastpaths.setup(CFG, BF16, torch.device("cpu"), pinned=pin, environ=env)
    assert _paths(choice) == pin["paths"] and {v.source for v in choice.verdicts} == {"checkpoint"}
    pinned_paths = layers.FastPaths(gelu=True, rms_norm=False, relu2=False, attention="math")
    assert pinned_paths == layers.FAST
    assert choice.pin() == pin and not (tmp_path / fastpaths.CACHE_NAME).exists()  # nothing timed
    for other in ({**pin, "machine": "another CPU"}, {**pin, "paths": {"gelu": "ours"}}, {"x": 1}, None):
        choice = fastpaths.setup(CFG, BF16, torch.device("cpu"), pinned=other, environ=env)
        assert {v.source for v in choice.verdicts} <= {"probe", "cache"}
    off = TrainConfig(batch_size=4, dtype="bfloat16", fast_paths="off")
    assert {v.source for v in fastpaths.setup(CFG, off, torch.device("cpu"), pinned=pin).verdicts} == {"off"}


def test_the_real_probe_is_quick_and_sets_the_layers(tmp_path):
    env = {"LMFORGE_CACHE": str(tmp_path)}
    choice = fastpaths.setup(CFG, BF16, torch.device("cpu"), environ=env)
    assert {v.source for v in choice.verdicts} == {"probe"} and choice.probe_seconds < 5
    assert choice.fast_paths() == layers.FAST
    assert all(len(v.ours_ms) == 2 and len(v.plain_ms) == 2 for v in choice.verdicts)
    again = fastpaths.setup(CFG, BF16, torch.device("cpu"), environ=env)
    assert {v.source for v in again.verdicts} == {"cache"} and _paths(again) == _paths(choice)


def test_train_logs_the_choice_and_run_json_records_it(char_data, tmp_path, caplog):
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", *TINY, "--max-steps", "2"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fast paths:")]
    assert len(lines) == 1 and "rms_norm " in lines[0] and "attention " in lines[0]
    record = json.loads((out / "run.json").read_text())["fast_paths"]
    assert set(record["choices"]) == {"rms_norm", "attention"}  # the default model: modern, SwiGLU
    assert record["cpu"] == hardware.cpu_model()
    glibc = platform.libc_ver()[0] == "glibc"
    assert record["allocator"] == ("reuse" if glibc else "system")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("allocator:")]
    assert len(said) == glibc
    caplog.clear()
    off = ["train.fast_paths=off", "train.allocator=system"]
    with caplog.at_level(logging.INFO):
        assert main([*args[:4], str(tmp_path / "off"), *args[5:], *off]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fast paths:")]
    assert lines == ["fast paths: rms_norm aten (off), attention sdpa (off)"]


def test_a_resume_runs_the_kernels_its_checkpoint_ran(char_data, tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", *TINY]
    assert main([*args, "--max-steps", "2"]) == 0
    first = json.loads((out / "run.json").read_text())["fast_paths"]["choices"]
    flipped = {"aten": "ours", "ours": "aten", "sdpa": "math", "math": "sdpa"}
    monkeypatch.setattr(fastpaths, "probe_op", lambda op, shape, runner: fastpaths.Verdict(
        op, flipped[first[op]["path"]], "probe"))  # fmt: skip  # a probe now would choose otherwise
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "empty-cache"))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*args, "--max-steps", "4", "--resume"]) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("fast paths:"))
    parts = set(line.removeprefix("fast paths: ").split(", "))
    assert parts == {f"{op} {c['path']} (checkpoint)" for op, c in first.items()}
