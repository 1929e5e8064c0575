"""bench/targets.py: each target of issue 15 judged from the results files of this CPU only.

The script is a benchmark, not part of the package, so it is loaded from its file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_bench_script

ZEN4 = "AMD EPYC (ISA: avx2 fma avx512f avx512_bf16; 2 physical cores)"
XEON = "Intel(R) Xeon(R) Processor (ISA: avx2 fma avx512f avx512_bf16 amx_tile amx_bf16; 2 physical cores)"


@pytest.fixture(scope="module")
def targets():
    return load_bench_script("targets")


def write(work: Path, name: str, data: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(json.dumps(data), encoding="utf-8")


def train_json(cpu: str, bf16_mfu: float) -> dict:
    data = {"cpu": cpu}
    for shape in ("small", "large"):
        for name in ("lmforge", "lmforge-math"):
            data[f"{shape}/{name}/fp32"] = {"median": 1.0, "mfu": 0.86}
            data[f"{shape}/{name}/bf16"] = {
                "median": 1.0,
                "mfu": bf16_mfu - (0.1 if name == "lmforge" else 0),
            }
        data[f"{shape}/ratio_vs_reference"] = 1.4
        data[f"{shape}/ratio_vs_hf"] = 1.2 if shape == "large" else 1.5
    return data


def by_name(targets, work: Path, cpu: str) -> dict:
    return {t.name: t for t in targets.collect(work, cpu)}


def test_nothing_measured_names_the_script_to_run(targets, tmp_path):
    found = by_name(targets, tmp_path, ZEN4)
    assert {t.status for t in found.values()} == {"not measured here"}
    assert found["whole processes, large shape"].script == "bench/bench_e2e.py"
    assert "no e2e.json yet" in found["whole processes, large shape"].figure


def test_results_of_another_cpu_are_not_judged_here(targets, tmp_path):
    write(tmp_path, "train.json", train_json(XEON, 0.75))
    found = by_name(targets, tmp_path, ZEN4)
    util = found["bf16 utilisation, large shape"]
    assert util.status == "not measured here"
    assert "measured on Intel" in util.figure


def test_utilisation_goal_follows_the_cpu_family_and_takes_the_better_attention(targets, tmp_path):
    write(tmp_path, "train.json", train_json(ZEN4, 0.65))  # 65% with plain attention, 55% with SDPA
    zen = by_name(targets, tmp_path, ZEN4)["bf16 utilisation, large shape"]
    assert (zen.status, zen.figure) == ("NOT met", "65%")  # the goal without AMX is 70%
    write(tmp_path, "train.json", train_json(XEON, 0.65))
    xeon = by_name(targets, tmp_path, XEON)
    assert xeon["bf16 utilisation, large shape"].status == "met"  # with AMX, 60%
    assert xeon["fp32 utilisation, large shape"].status == "met"
    assert xeon["step vs reference models, small shape"].status == "met"
    assert xeon["step vs reference models, large shape"].status == "NOT met"  # 1.2x GPT2LMHeadModel


def test_whole_processes_judge_the_defaults_not_the_best_setting(targets, tmp_path):
    write(tmp_path, "e2e.json", {"cpu": ZEN4, "small/ratio_defaults": 1.31, "small/ratio_best": 1.4,
                                 "large/ratio_defaults": 0.97, "large/ratio_best": 1.35})  # fmt: skip
    found = by_name(targets, tmp_path, ZEN4)
    assert found["whole processes, small shape"].status == "met"
    large = found["whole processes, large shape"]
    assert large.status == "NOT met" and "best lmforge setting 1.35x" in large.figure


def test_a_fast_path_slower_than_aten_fails_and_a_tie_does_not(targets, tmp_path):
    def row(op, plain, ours, picked):
        mine = "math" if op == "attention" else "ours"
        times = {plain: [[1.0, 1.0]] * 3, mine: ours}
        return {"op": op, "dtype": "bfloat16", "shape": "large", "probe": picked, "times_ms": times}

    tie = [[1.02, 1.02]] * 3
    write(tmp_path, "fastpaths.json", {"cpu": ZEN4, "rows": [row("gelu", "aten", tie, "ours")]})
    assert by_name(targets, tmp_path, ZEN4)["fast paths"].status == "met"
    slow = [[1.0, 1.3], [1.0, 1.2], [1.0, 1.25]]  # median 2.25 ms against ATen's 2.0
    rows = [row("gelu", "aten", tie, "ours"), row("attention", "sdpa", slow, "math")]
    write(tmp_path, "fastpaths.json", {"cpu": ZEN4, "rows": rows})
    found = by_name(targets, tmp_path, ZEN4)["fast paths"]
    assert found.status == "NOT met" and "1.12x" in found.figure and "attention" in found.figure


def test_generation_and_server_overhead(targets, tmp_path):
    shapes = {"demo": {"direct_tps": 700.0, "server_tps": 600.0, "hf_tps": 170.0},
              "large": {"direct_tps": 150.0, "server_tps": 155.0, "hf_tps": 80.0}}  # fmt: skip
    write(tmp_path, "generate.json", {"cpu": ZEN4, "shapes": shapes})
    found = by_name(targets, tmp_path, ZEN4)
    assert found["generation, demo shape"].status == "met"  # 4.1x
    assert found["generation, large shape"].status == "NOT met"  # 1.9x
    overhead = found["server overhead, demo shape"]
    assert overhead.status == "NOT met" and overhead.figure == "14.3%"


def test_speedrun_verdicts_are_taken_as_judged(targets, tmp_path):
    judged = [{"name": "speedrun", "goal": "g", "figure": "f", "met": True},
              {"name": "quality", "goal": "g", "figure": "f", "met": False}]  # fmt: skip
    write(tmp_path, "speedrun.json", {"cpu": ZEN4, "targets": judged})
    found = by_name(targets, tmp_path, ZEN4)
    assert (found["speedrun"].status, found["quality"].status) == ("met", "NOT met")


def test_an_unreadable_file_is_reported_not_raised(targets, tmp_path):
    tmp_path.joinpath("e2e.json").write_text("{not json", encoding="utf-8")
    found = by_name(targets, tmp_path, ZEN4)["whole processes, small shape"]
    assert found.status == "not measured here" and "unreadable" in found.figure
