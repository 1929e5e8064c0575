"""--auto: the choice on made-up speeds (pure), the knobs a user fixes, bad input, and one tiny real run."""

from __future__ import annotations

import json
import math
import time

import pytest

from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.tune import auto, auto_rule, auto_speeds
from lmforge.tune.auto_rule import LossModel, Measured, choose, effective_tokens
from lmforge.tune.scaling import ScalingFit

FIT = ScalingFit(E=1.0, A=400.0, alpha=0.34, B=400.0, beta=0.28, rmse_log=0.0)
MODEL = LossModel(FIT)  # the fit alone: no shape has ladder runs
SIZES = (50_000, 200_000, 800_000, 3_000_000)


@pytest.fixture(autouse=True)
def a_shared_machine(monkeypatch):
    """Other work keeps a CPU busy, so --auto times the threads (as these tests expect), whatever else
    runs beside the suite; `test_on_an_idle_machine_the_threads_are_not_timed` makes it idle."""
    from lmforge import hardware

    monkeypatch.setattr(hardware, "busy_cpus", lambda seconds=0.25, since=None: 1.0)
    # and no speeds cached from an earlier test's made-up machine (tune/auto_speeds.py)
    monkeypatch.setenv("LMFORGE_AUTO_SPEEDS", "off")


def machine(flops_per_second: float) -> list[Measured]:
    """Candidates on a machine that does `flops_per_second` of training: tokens/s = F / 6N."""
    return [Measured(f"n{n}", {}, n, flops_per_second / (6 * n)) for n in SIZES]


def chosen_size(flops_per_second: float, seconds: float, unique: float = 1e12) -> int:
    best, _ = choose(machine(flops_per_second), MODEL, seconds, unique, eval_tokens=1000)
    return best.measured.n_params


def test_a_faster_machine_gets_a_bigger_model():
    sizes = [chosen_size(f, 300) for f in (3e9, 3e10, 3e11)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


def test_a_longer_budget_gets_a_bigger_model():
    sizes = [chosen_size(3e10, s) for s in (60, 300, 1200)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


def test_the_choice_is_the_lowest_predicted_loss_and_evaluations_cost_tokens():
    best, predictions = choose(machine(3e10), MODEL, 300, 1e12, eval_tokens=1000)
    assert best.predicted_loss == min(p.predicted_loss for p in predictions)
    for p in predictions:  # D = speed x (seconds - evaluation time), and the fit's loss at (N, D)
        speed = p.measured.tokens_per_second
        assert p.tokens == pytest.approx(
            speed * (300 - auto_rule.EVALS * 1000 / (auto_rule.EVAL_SPEEDUP * speed))
        )
        assert p.predicted_loss == pytest.approx(float(FIT.loss(p.measured.n_params, p.tokens)))


def test_evaluations_shrink_to_a_share_of_a_slow_or_short_run():
    assert auto_rule.eval_tokens_for(1e6, 600, 65536) == 65536  # fast and long: all of it
    slow = auto_rule.eval_tokens_for(2e4, 60, 65536)  # 8 passes of 65,536: 10 s of a 60 s run
    assert auto_rule.MIN_EVAL_TOKENS < slow < 65536
    assert 8 * slow / (auto_rule.EVAL_SPEEDUP * 2e4) <= auto_rule.EVAL_SHARE * 60 + 1e-9
    assert auto_rule.eval_tokens_for(10, 10, 65536) == auto_rule.MIN_EVAL_TOKENS
    best, _ = choose(machine(3e8), MODEL, 60, 1e12, eval_tokens=65536)  # without the cap nothing fits
    assert best.tokens > 0


def test_repeated_data_is_worth_less_and_a_small_corpus_moves_the_choice_up():
    assert effective_tokens(5e5, 1e6) == 5e5  # one pass or less: every token counts
    assert effective_tokens(2e6, 1e6) < 2e6
    many = effective_tokens(1e9, 1e6)  # saturates at U (1 + R*)
    assert many == pytest.approx(1e6 * (1 + auto_rule.REPEAT_HALF_LIFE), rel=1e-3)
    assert chosen_size(3e10, 1200, unique=1e5) > chosen_size(3e10, 1200, unique=1e12)


def test_the_ladder_refit_finds_how_much_repeats_are_worth():
    from lmforge.tune.scaling import ScalingFit

    law, unique = ScalingFit(2.0, 10.0, 0.3, 50.0, 0.35, 0.0), 1e6
    n, d = zip(*[(size, tokens) for size in (1e5, 3e5, 1e6) for tokens in (5e5, 2e6, 8e6, 2e7)], strict=True)
    loss = [float(law.loss(a, effective_tokens(b, unique, 4.0))) for a, b in zip(n, d, strict=True)]
    fit, half_life, tried = auto_rule.fit_with_repeats(n, d, loss, unique, half_lives=(1.5, 4.0, 15.4, 45.0))
    assert half_life == 4.0 and fit.rmse_log < 1e-3 and list(tried) == [1.5, 4.0, 15.4, 45.0]
    assert tried[4.0] == fit.rmse_log < min(tried[1.5], tried[15.4])
    assert fit.loss(3e5, effective_tokens(2e7, unique, 4.0)) == pytest.approx(loss[7], rel=1e-3)
    # runs that never see their corpus twice cannot tell: the published R* stays
    n, d = zip(*[(size, tokens) for size in (1e5, 1e6) for tokens in (1e5, 2e5, 5e5, 1e6)], strict=True)
    loss = [float(law.loss(a, b)) for a, b in zip(n, d, strict=True)]
    _, half_life, tried = auto_rule.fit_with_repeats(n, d, loss, unique, half_lives=(1.5, 4.0))
    assert half_life == auto_rule.REPEAT_HALF_LIFE and tried == {}


def test_nothing_to_choose_or_no_time_is_a_user_error():
    with pytest.raises(UserError, match="no candidate"):
        choose([], MODEL, 300, 1e6, 1000)
    with pytest.raises(UserError, match="raise --time-budget"):
        choose(machine(1e6), MODEL, 0.001, 1e6, 1000)


def test_lr_rule_and_heads_follow_the_presets():
    assert (
        auto_rule.lr_for(64) == 5e-3
        and 2.5e-3 < auto_rule.lr_for(128) < 3.2e-3
        and auto_rule.lr_for(192) == 2.1e-3
    )
    assert [auto_rule.heads_for(w) for w in (64, 96, 128, 192, 100)] == [2, 3, 4, 6, 2]


def test_fixed_knobs_hold_for_every_candidate():
    shapes = auto._candidate_updates({"model.n_layer": 2, "train.batch_size": 8})
    assert shapes and all(u["model.n_layer"] == 2 and u["train.batch_size"] == 8 for _, u in shapes)
    assert len({tuple(sorted(u.items())) for _, u in shapes}) == len(shapes)  # duplicates dropped
    assert len(shapes) < len(auto_rule.CANDIDATES)
    widths = auto._candidate_updates({"model.n_embd": 96})
    assert all(u["model.n_head"] == 3 and u["optim.lr"] == auto_rule.lr_for(96) for _, u in widths)
    knobs = [k for k, _ in auto._fast_path_options({"train.dtype": "float32"}, "cpu", 2)]
    assert knobs == ["train.threads"]  # attention is models/fastpaths.py's (attn_impl="auto")


def test_the_precisions_timed_follow_train_dtype_auto_s_rules(monkeypatch):
    import torch

    from lmforge import hardware
    from lmforge.config import build_run_config

    cpu = torch.device("cpu")

    def config(width: int):
        tree = {"model": {"family": "gpt", "n_embd": width, "n_head": 2, "n_layer": 1}}
        return build_run_config(tree, 65)

    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx512f", "amx_bf16"])
    assert auto.dtypes_to_time(config(128), cpu, {}) == ("float32", "bfloat16")
    assert auto.dtypes_to_time(config(32), cpu, {}) == ("float32",)  # narrower than the probe width
    assert auto.dtypes_to_time(config(128), cpu, {"train.dtype": "bfloat16"}) == ("bfloat16",)  # given
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx2", "fma"])
    assert auto.dtypes_to_time(config(128), cpu, {}) == ("float32",)  # no bf16 units


def test_each_candidate_trains_in_bf16_only_where_it_pays_for_that_shape(char_data, monkeypatch):
    """On this made-up machine bf16 pays at width 128 and beyond but not at 64 (as on the Xeon of
    BENCHMARKS.md, where one mid-sized shape's verdict had put a 2 x 128 run in float32 at 0.65x)."""
    from lmforge.config import apply_updates
    from lmforge.train import precision

    timed = []

    def fake_speed(config, data, device, seconds, dtypes=None):
        dtypes = dtypes or (config.train.dtype,)
        width = config.model.n_embd
        float32 = 4e8 / (config.model.n_layer * width * width)
        gain = 1.05 if width < 128 else 1.5
        timed.append((width, tuple(dtypes)))
        return {d: float32 * (gain if d == "bfloat16" else 1.0) for d in dtypes}, 12 * width * width

    monkeypatch.setattr(auto, "measure_speed", fake_speed)
    monkeypatch.setattr(precision, "without_timing", lambda config, device: None)  # time both, any CPU
    clock = iter(range(0, 10_000))
    tree: dict = {}
    apply_updates(tree, auto_rule.RECIPE)
    planned = auto.plan(tree, {}, char_data, 65, "char", 600, 10**7, elapsed=lambda: float(next(clock)) / 100)
    rows = {c["name"]: c for c in planned.record["candidates"]}
    assert len(rows) >= 4, planned.record
    first_wide = None
    for name, row in rows.items():
        width = int(name.split("x")[1].split()[0])
        assert row["dtype"] == ("float32" if width < 128 else "bfloat16"), row
        assert row["tokens_per_second"] == row["tokens_per_second_by_dtype"][row["dtype"]]
        if width < 128 or first_wide is None:  # narrow ones, and the first wide one, in both
            assert set(row["tokens_per_second_by_dtype"]) == {"float32", "bfloat16"}, row
            first_wide = name if width >= 128 else None
        else:  # a shape whose matmuls all cover the first wide one's: bf16 wins there too, untimed
            assert set(row["tokens_per_second_by_dtype"]) == {"bfloat16"} and row["dtype_from"] == first_wide
    assert first_wide is not None and any("dtype_from" in row for row in rows.values())
    assert planned.updates["train.dtype"] == rows[planned.record["chosen"]["name"]]["dtype"]
    assert all(len(d) == 1 for w, d in timed[:2])  # the threads in one precision
    from lmforge.eval.auto_report import auto_section

    report = "\n".join(auto_section(planned.record, None))
    assert "| bfloat16 (float32 " in report and "| float32 (float32 " in report  # the report says why
    assert f"| bfloat16 (as at {first_wide}," in report


def _plan_on_a_made_up_machine(
    char_data,
    monkeypatch,
    budget: float,
    slowed: str = "",
    speed: float = 1.0,
    unique: int = 10**7,
    fixed: dict | None = None,
) -> tuple[auto.Plan, list[str]]:
    """--auto's plan where every candidate trains at `speed` x 1e11 FLOP/s (as fast as its FLOPs allow,
    in both precisions), but the first timing of the `slowed` shape ("2x64") runs at 0.8 of that:
    which candidates were timed, and the plan."""
    from lmforge.config import apply_updates
    from lmforge.train import precision

    timed = []

    def fake_speed(config, data, device, seconds, dtypes=None):
        dtypes = dtypes or (config.train.dtype,)
        cost, n_params = auto._cost(config)
        name = f"{config.model.n_layer}x{config.model.n_embd}"
        share = 0.8 if name == slowed and name not in timed else 1.0
        timed.append(name)
        return dict.fromkeys(dtypes, speed * share * 1e11 / cost.flops_per_token), n_params

    monkeypatch.setattr(auto, "measure_speed", fake_speed)
    monkeypatch.setattr(precision, "without_timing", lambda config, device: None)
    clock = iter(range(0, 10_000))
    tree: dict = {}
    apply_updates(tree, auto_rule.RECIPE)
    planned = auto.plan(
        tree, fixed or {}, char_data, 65, "char", budget, unique, elapsed=lambda: float(next(clock)) / 100
    )
    return planned, timed[len(planned.record["fast_paths"]) :]  # the candidates, after the threads


def test_a_candidate_that_cannot_win_even_at_its_fastest_is_not_timed(char_data, monkeypatch):
    for budget in (60, 1200):
        planned, timed = _plan_on_a_made_up_machine(char_data, monkeypatch, budget)
        skipped = planned.record["not_timed"]
        chosen = planned.record["chosen"]["name"]
        assert skipped and len(set(timed)) + len(skipped) == len(auto_rule.CANDIDATES), (budget, timed)
        # timing every candidate makes the same choice: none of those left out would have won
        with monkeypatch.context() as patch:
            patch.setattr(auto, "_speed_bound", lambda *args: None)
            everything, timed_all = _plan_on_a_made_up_machine(char_data, patch, budget)
        assert (
            len(set(timed_all)) == len(auto_rule.CANDIDATES) and everything.record["chosen"]["name"] == chosen
        )
        best = planned.record["predicted_loss"]
        for row in skipped:
            assert row["best_case_loss"] >= best and row["name"] != chosen
            real = next(c for c in everything.record["candidates"] if c["name"] == row["name"])
            assert real["tokens_per_second"] <= row["tokens_per_second_bound"]  # the bound held
            assert real["predicted_loss"] >= row["best_case_loss"] - 1e-9
        from lmforge.eval.auto_report import auto_section

        assert "Not timed, since even at their fastest" in "\n".join(auto_section(planned.record, None))


def test_a_choice_that_would_see_a_small_text_too_often_stops_early(char_data, monkeypatch):
    """Past its shape's longest ladder run the choice trains no more (train.max_tokens: the run warms
    down and ends before the budget); where the user fixed train.max_tokens, the log and report say
    the prediction is an extrapolation instead."""
    ladder = auto_rule.load_model("char").max_passes
    assert 8 < ladder < 40  # the shipped character ladder: up to ~16 passes over its 1.0M characters
    plenty, _ = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    assert "beyond_ladder" not in plenty.record and "stops_early" not in plenty.record
    assert "train.max_tokens" not in plenty.record["chosen"]
    small, _ = _plan_on_a_made_up_machine(char_data, monkeypatch, 60, unique=50_000)
    chosen = next(c for c in small.record["candidates"] if c["chosen"])
    assert chosen["credited_tokens"] < chosen["tokens"] and "beyond_ladder" not in small.record
    assert small.record["stops_early"] == {
        "tokens": chosen["credited_tokens"],
        "budget_tokens": chosen["tokens"],
    }
    assert small.record["chosen"]["train.max_tokens"] == chosen["credited_tokens"]
    given, _ = _plan_on_a_made_up_machine(
        char_data, monkeypatch, 60, unique=50_000, fixed={"train.max_tokens": 10**9}
    )
    beyond = given.record["beyond_ladder"]
    chosen_given = next(c for c in given.record["candidates"] if c["chosen"])
    own = auto_rule.load_model("char").shape_passes.get(chosen_given["name"], ladder)  # its shape's most
    assert beyond == {"passes": round(chosen_given["tokens"] / 50_000, 1), "ladder_passes": round(own, 1)}
    assert beyond["passes"] > beyond["ladder_passes"] and "stops_early" not in given.record
    # each candidate is predicted at no more passes than its shape's longest ladder run made
    model = auto_rule.load_model("char")
    for row in small.record["candidates"]:
        limit = model.shape_passes.get(row["name"], ladder) * 50_000
        assert row.get("credited_tokens", row["tokens"]) == pytest.approx(min(row["tokens"], limit), abs=1)
    assert any("credited_tokens" in row for row in small.record["candidates"])
    assert not any("credited_tokens" in row for row in plenty.record["candidates"])
    from lmforge.eval.auto_report import auto_section

    report = "\n".join(auto_section(small.record, None))
    assert "Stops early: the budget would give the chosen shape" in report and "\nCredited: " in report
    assert "(credited " in report
    assert "Beyond the ladder: the chosen run sees its corpus" in "\n".join(auto_section(given.record, None))


def test_a_later_run_times_one_shape_afresh_and_scales_the_cached_speeds(char_data, monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_AUTO_SPEEDS", "on")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    first, timed_first = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    assert (tmp_path / "auto_speeds.json").is_file() and "cached_speeds" not in first.record
    # the next run, on the same machine 10% busier: the smallest shape is timed, the rest scaled
    later, timed_later = _plan_on_a_made_up_machine(char_data, monkeypatch, 60, speed=0.9)
    assert timed_later[0] == "1x64" and len(timed_later) < len(timed_first), (timed_first, timed_later)
    assert later.record["cached_speeds"] == {"by": "1x64 ctx64 b32", "factor": pytest.approx(0.9)}
    before = {c["name"]: c for c in first.record["candidates"]}
    scaled = [c for c in later.record["candidates"] if "cached_speed_scale" in c]
    assert scaled
    for row in scaled:
        assert row["tokens_per_second"] == pytest.approx(
            0.9 * before[row["name"]]["tokens_per_second"], rel=1e-3
        )
    # the cache changes what measuring costs, not the choice: timing everything gives the same one
    monkeypatch.setenv("LMFORGE_AUTO_SPEEDS", "off")
    everything, timed_all = _plan_on_a_made_up_machine(char_data, monkeypatch, 60, speed=0.9)
    assert everything.record["chosen"]["name"] == later.record["chosen"]["name"]
    assert len(timed_all) > len(timed_later)
    from lmforge.eval.auto_report import auto_section

    assert "Speeds from this machine's earlier --auto runs" in "\n".join(auto_section(later.record, None))
    # a damaged cache costs a full measurement and is rewritten, never the run
    monkeypatch.setenv("LMFORGE_AUTO_SPEEDS", "on")
    (tmp_path / "auto_speeds.json").write_text("{not json", encoding="utf-8")
    again, timed_again = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    assert "cached_speeds" not in again.record and timed_again == timed_first
    assert auto_speeds.read(tmp_path / "auto_speeds.json")
    # a cache that cannot be written is a warning, never the run
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go", encoding="utf-8")
    auto_speeds.write(blocked / "auto_speeds.json", {"k": {"float32": 1.0}})
    assert auto_speeds.read(blocked / "auto_speeds.json") == {}


def test_on_an_idle_machine_the_threads_are_not_timed(char_data, monkeypatch):
    from lmforge import hardware

    monkeypatch.setattr(hardware, "busy_cpus", lambda seconds=0.25, since=None: 0.04)
    monkeypatch.setattr(hardware, "physical_cores", lambda: 2)
    idle, timed = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    assert idle.record["fast_paths"] == [] and idle.record["threads_idle"] == {
        "busy_cpus": 0.04,
        "train.threads": 2,
    }
    assert idle.updates["train.threads"] == 2
    assert timed[0] == "1x64"  # the first timing is the smallest candidate's: no threads timed before it
    # a shared machine: both thread counts are timed
    monkeypatch.setattr(hardware, "busy_cpus", lambda seconds=0.25, since=None: 0.6)
    shared, _ = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    assert [row["train.threads"] for row in shared.record["fast_paths"]] == [
        2,
        1,
    ] and "threads_idle" not in shared.record
    from lmforge.eval.auto_report import auto_section

    assert "not timed: the machine was idle (other work kept 0.04 CPUs busy)" in "\n".join(
        auto_section(idle.record, None)
    )


def test_a_knob_leaves_its_default_only_for_a_clear_gain():
    threads = [2, 1]
    assert auto._faster(threads, {2: 20_000.0, 1: 21_000.0}) == 2  # within the noise: the default
    assert auto._faster(threads, {2: 20_000.0, 1: 23_000.0}) == 1
    assert auto._faster(["float32", "bfloat16"], {"float32": 9_000.0, "bfloat16": 8_000.0}) == "float32"


def test_a_shape_s_own_ladder_runs_correct_the_fit():
    # the fit says 1.00 everywhere; the small shape's runs saturate (10% under it early, 10% over late)
    flat = ScalingFit(E=1.0, A=0.0, alpha=0.5, B=0.0, beta=0.5, rmse_log=0.0)
    small = ((math.log(1e5), math.log(0.9)), (math.log(1e6), math.log(1.1)))
    model = LossModel(flat, corrections={"small": small})
    assert model.loss("small", 1e4, 1e5) == pytest.approx(0.9)
    assert model.loss("small", 1e4, math.sqrt(1e5 * 1e6)) == pytest.approx(math.sqrt(0.9 * 1.1))  # log-linear
    assert model.loss("small", 1e4, 1e3) == pytest.approx(0.9)  # held at the nearest run beyond them
    assert model.loss("small", 1e4, 1e8) == pytest.approx(1.1)
    assert model.loss("never run", 1e4, 1e8) == pytest.approx(1.0)
    # so a larger shape the fit alone would rank equal wins a long budget, the small one a short one
    speeds = [Measured("small", {}, 10_000, 2e4), Measured("large", {}, 40_000, 1e4)]
    long_run, _ = choose(speeds, model, 600, 1e12, eval_tokens=1000)
    short_run, _ = choose(speeds, model, 5, 1e12, eval_tokens=1000)
    assert long_run.measured.name == "large" and short_run.measured.name == "small"
    assert long_run.fit_loss == pytest.approx(1.0)


def test_passes_past_a_shape_s_longest_ladder_run_earn_nothing():
    """On a small text the fit's repetition rule lets every pass help a little, where a small shape
    seeing the text 20+ times overfits (BENCHMARKS.md, "20 minutes on characters"): a shape is
    credited with at most the passes its longest ladder run made, so the larger shape that sees the
    text fewer times wins a long budget; on a corpus large enough the limit never binds."""
    falling = ScalingFit(E=1.0, A=0.0, alpha=0.5, B=20.0, beta=0.3, rmse_log=0.0)  # more tokens: lower
    model = LossModel(falling, max_passes=8.0, shape_passes={"small": 4.0})
    assert model.credited("small", 10e6, 1e6) == 4e6  # 10 passes over 1M tokens: credited 4
    assert model.credited("small", 3e6, 1e6) == 3e6  # within its runs: all of them
    assert model.credited("small", 10e6, 1e9) == 10e6  # a hundredth of a pass over a large corpus
    assert model.credited("never run", 10e6, 1e6) == 8e6  # a shape the ladder never ran: any run's most
    assert LossModel(falling).credited("small", 10e6, 1e6) == 10e6  # a ladder that knows no passes
    # a 20-minute budget: the small shape would make 30 passes, the large one 6
    small, large = Measured("small", {}, 10_000, 25_000.0), Measured("large", {}, 12_000, 5_000.0)
    best, predictions = choose([small, large], model, 1200, 1e6, eval_tokens=1000)
    assert best.measured.name == "large", [(p.measured.name, p.predicted_loss) for p in predictions]
    by_name = {p.measured.name: p for p in predictions}
    assert by_name["small"].tokens > 25e6 and by_name["small"].credited == 4e6
    assert by_name["large"].credited == by_name["large"].tokens
    # with the repetition rule alone the small shape would have won
    uncapped, _ = choose([small, large], LossModel(falling), 1200, 1e6, eval_tokens=1000)
    assert uncapped.measured.name == "small"


def test_the_shipped_ladders_load_and_reproduce_their_own_runs():
    for kind in ("char", "bpe", "unknown"):
        model = auto_rule.load_model(kind)
        assert model.name in ("char", "bpe") and model.fit.alpha > 0 and model.fit.beta > 0
    data = json.loads(auto_rule.ladder_path().read_text(encoding="utf-8"))
    for kind, entry in data["fits"].items():
        model = auto_rule.load_model(kind)
        for point in entry["points"]:  # at its own tokens, each shape's prediction is what it measured
            d = model.effective(point["D"], entry["unique_tokens"])  # with the R* its refit chose
            assert model.loss(point["shape"], point["N"], d) == pytest.approx(point["loss"], rel=1e-9)
    assert set(model.corrections) <= {shape.name for shape in auto_rule.CANDIDATES}


def _train(data, out, *extra):
    return main(["train", "--data", str(data), "--out", str(out), "--no-progress", "--auto", *extra])


def test_bad_input_says_what_to_do(char_data, tiny_corpus, tmp_path, capsys):
    assert _train(char_data, tmp_path / "a") == 2
    assert "pass --time-budget" in capsys.readouterr().err
    assert _train(char_data, tmp_path / "b", "--time-budget", "5") == 2
    err = capsys.readouterr().err
    assert "too short for --auto" in err and "pass --time-budget" in err
    assert _train(char_data, tmp_path / "c", "--time-budget", "60", "--model", "gru") == 2
    assert "GPT shapes" in capsys.readouterr().err
    # a corpus smaller than one batch of the smallest candidate
    small = tmp_path / "small.txt"
    small.write_text(
        "".join(f"line {i}: to be or not to be, that is it\n" for i in range(30)), encoding="utf-8"
    )
    data = tmp_path / "small_data"
    args = ["data", "prepare", "--source", str(small), "--out", str(data), "--tokenizer", "char"]
    assert main([*args, "--json"]) == 0
    capsys.readouterr()
    assert _train(data, tmp_path / "e", "--time-budget", "60") == 2
    err = capsys.readouterr().err
    assert "corpus is too small for --auto" in err and "at least 2,048" in err


BUDGET = 60  # seconds: measuring and training, with room for a machine shared with other jobs


@pytest.mark.slow
def test_a_tiny_real_run_chooses_records_and_keeps_the_budget(char_data, tmp_path, capsys):
    out = tmp_path / "run"
    fixed = ["model.n_embd=32", "model.seq_len=32", "train.batch_size=4", "train.eval_tokens=512"]
    start = time.perf_counter()
    assert _train(char_data, out, "--time-budget", str(BUDGET), *fixed) == 0
    wall = time.perf_counter() - start
    text = capsys.readouterr().out
    assert "auto: chose" in text and "left to --auto: model.n_layer" in text
    record = json.loads((out / "run.json").read_text())["auto"]
    assert record["given"]["model.n_embd"] == 32 and "model.n_embd" not in record["left_to_auto"]
    assert len(record["candidates"]) >= 2 and sum(c["chosen"] for c in record["candidates"]) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["n_embd"] == 32 and config["model"]["seq_len"] == 32
    chosen = record["chosen"]
    assert (
        config["model"]["n_layer"] == chosen["model.n_layer"] and config["optim"]["lr"] == chosen["optim.lr"]
    )
    assert 0 < config["train"]["time_budget"] < BUDGET - record["probe_seconds"]
    step_tokens = config["train"]["batch_size"] * config["model"]["seq_len"]  # its step time, measured
    speed = next(c["tokens_per_second"] for c in record["candidates"] if c["chosen"])
    assert config["train"]["step_seconds"] == pytest.approx(step_tokens / speed, rel=1e-3)
    assert wall < BUDGET + 8, wall  # the whole command, probe included, ends about on time
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "How --auto chose the model" in report and "(chosen)" in report


def test_speeds_are_measured_with_the_allocator_the_run_will_use(char_data, monkeypatch):
    import torch

    from lmforge import hardware
    from lmforge.config import apply_updates, build_run_config
    from lmforge.train.data import open_data

    calls = []
    monkeypatch.setattr(hardware, "reuse_freed_memory", lambda: calls.append(1) or True)
    data = open_data(char_data, None)
    for allocator, expected in (("reuse", 1), ("system", 0)):
        tree: dict = {}
        small = {"model.n_layer": 1, "model.n_embd": 32, "model.n_head": 1, "model.seq_len": 16}
        apply_updates(tree, {**auto_rule.RECIPE, **small, "train.batch_size": 2, "train.dtype": "float32"})
        apply_updates(tree, {"train.allocator": allocator})
        calls.clear()
        speed, n_params = auto.measure_speed(
            build_run_config(tree, data.tokenizer.vocab_size), data, torch.device("cpu"), 0.05
        )
        assert set(speed) == {"float32"} and speed["float32"] > 0 and n_params > 0, allocator
        assert len(calls) == expected, allocator


def test_a_candidate_is_timed_in_both_precisions_on_one_model(char_data):
    import torch

    from lmforge.config import apply_updates, build_run_config
    from lmforge.train.data import open_data

    data = open_data(char_data, None)
    tree: dict = {}
    small = {"model.n_layer": 1, "model.n_embd": 64, "model.n_head": 2, "model.seq_len": 16}
    apply_updates(tree, {**auto_rule.RECIPE, **small, "train.batch_size": 2})
    config = build_run_config(tree, data.tokenizer.vocab_size)
    speeds, n_params = auto.measure_speed(config, data, torch.device("cpu"), 0.1, ("float32", "bfloat16"))
    assert set(speeds) == {"float32", "bfloat16"} and min(speeds.values()) > 0 and n_params > 0
    assert not torch.is_autocast_enabled("cpu")


def test_a_candidate_a_slowed_slice_could_have_cost_the_choice_is_timed_again(char_data, monkeypatch):
    """Other processes only ever slow a timed slice: where SPEED_SLACK more speed would have made a
    candidate the winner, it is timed once more and the faster figure stands."""
    fair, _ = _plan_on_a_made_up_machine(char_data, monkeypatch, 60)
    winner = fair.record["chosen"]["name"]
    short = winner.split()[0]
    planned, timed = _plan_on_a_made_up_machine(char_data, monkeypatch, 60, slowed=short)
    rows = {c["name"]: c for c in planned.record["candidates"]}
    assert timed.count(short) == 2 and rows[winner].get("timed_again"), timed
    assert planned.record["chosen"]["name"] == winner  # the second timing restored its speed
    assert rows[winner]["tokens_per_second"] == next(
        c["tokens_per_second"] for c in fair.record["candidates"] if c["name"] == winner
    )
    # without the second timing the slowed slice hands the choice to another shape
    monkeypatch.setattr(auto, "_time_again_where_it_could_matter", lambda *args: [])
    fooled, _ = _plan_on_a_made_up_machine(char_data, monkeypatch, 60, slowed=short)
    assert fooled.record["chosen"]["name"] != winner
