"""bench/bench_speedrun.py's verdicts: each target judged from the same invocation's figures.

The script is a benchmark, not part of the package, so it is loaded from its file.
"""

from __future__ import annotations

import pytest

from conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("bench_speedrun")


def result(bench, walls, losses):
    return {"wall": bench.spread(walls), "loss": bench.spread(losses), "peak_rss_mb": 300}


def verdicts(bench, speed_walls, speed_losses, quality_walls=(70.0,), quality_losses=(1.49,)):
    results = {
        "nanogpt-recipe": result(bench, [80.0, 82.0, 90.0], [1.887, 1.887, 1.887]),
        "speedrun": result(bench, list(speed_walls), list(speed_losses)),
        "quality": result(bench, list(quality_walls), list(quality_losses)),
        "demo-memory": {"peak_rss_mb": 700, "wall": 31.0},
    }
    return {t.name: t for t in bench.targets(results)}


def test_spread_is_median_min_max(bench):
    assert bench.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}


def test_speedrun_needs_both_the_loss_and_a_tenth_of_the_recipes_median_wall(bench):
    # The recipe's median is 82 s, so the speedrun may take 8.2 s.
    assert verdicts(bench, [8.0, 8.1, 9.0], [1.870] * 3)["speedrun"].met
    assert not verdicts(bench, [8.3, 8.4, 8.5], [1.870] * 3)["speedrun"].met  # too slow
    assert not verdicts(bench, [8.0, 8.0, 8.0], [1.881] * 3)["speedrun"].met  # 1.886 is no longer enough
    assert verdicts(bench, [8.0] * 3, [1.880] * 3)["speedrun"].met  # the bound itself counts


def test_quality_is_judged_against_the_recipes_whole_wall_and_reports_the_worst_round(bench):
    t = verdicts(bench, [8.0], [1.87], quality_walls=[81.0, 81.5, 83.0], quality_losses=[1.49, 1.50, 1.52])
    assert t["quality"].met  # median 81.5 s <= 82 s, median loss 1.50
    assert "worst round 1.5200" in t["quality"].figure
    assert not verdicts(bench, [8.0], [1.87], quality_walls=[83.0], quality_losses=[1.45])["quality"].met
    assert not verdicts(bench, [8.0], [1.87], quality_walls=[60.0], quality_losses=[1.51])["quality"].met


def test_memory_target_and_missing_reference(bench):
    assert verdicts(bench, [8.0], [1.87])["demo-memory"].met
    heavy = bench.targets({"demo-memory": {"peak_rss_mb": 2100, "wall": 31.0}})
    assert [(t.name, t.met) for t in heavy] == [("demo-memory", False)]
    assert "NOT met" in bench.Target("x", "g", "f", False).line()
    # Without the recipe in the same invocation there is nothing to compare the times with.
    alone = bench.targets({"speedrun": result(bench, [8.0], [1.87])})
    assert alone == []


def test_a_cut_short_run_is_summarised_from_the_rounds_it_printed(bench):
    tail = "tok/s, full val loss {}, peak RSS {} MB, load 4.0"
    log = "\n".join(
        [
            "CPU: x; train.threads=1; 1-minute load average 6.14 at the start",
            "nanogpt-recipe round 1: 643.7 s wall, 2000 steps, 2,467 " + tail.format(1.8877, 463),
            "speedrun round 1: 30.5 s wall, 450 steps, 31,000 " + tail.format(1.8471, 300),
            "speedrun round 2: 28.5 s wall, 450 steps, 33,000 " + tail.format(1.8471, 310),
        ]
    )
    runs = bench.parse_rounds(log)
    assert runs["speedrun"] == {
        "wall": [30.5, 28.5],
        "loss": [1.8471] * 2,
        "rss": [300, 310],
        "steps": [450] * 2,
    }
    assert runs["nanogpt-recipe"]["wall"] == [643.7]
