"""`lmforge eval RUN --harness TASK.yaml`: lm-evaluation-harness on a run, offline, on two tiny local tasks
(multiple choice and generation), each score checked against figures computed here by hand with a
direct forward pass of the model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from lmforge import runs
from lmforge.cli import main

pytest.importorskip("lm_eval")

QUESTIONS = [
    {"question": "to be or", "choices": ["not", "yes", "then"], "answer": 0},
    {"question": "the king", "choices": ["of", "and", "is"], "answer": 2},
    {"question": "what", "choices": ["a", "be"], "answer": 1},
]
PROMPTS = ["to be", "the king", "and"]


def write_task(folder, name: str, rows: list[dict], spec: str):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    head = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
    head += "test_split: test\n"
    path = folder / f"{name}.yaml"
    path.write_text(head + spec, encoding="utf-8")
    return path


MC = """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""
GEN = """output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
"""


def loglik(model, tok, context: str, continuation: str) -> float:
    """By hand: lm-eval's split of the text into context and continuation, one forward, a sum."""
    ctx = tok.encode(context)
    cont = tok.encode(context + continuation)[len(ctx) :]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(ids[:, :-1])[0].float(), dim=-1)  # (T-1, V)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def greedy(model, tok, prompt: str, n: int) -> str:
    """By hand: argmax decoding without a cache, cut at a newline or the end-of-text token."""
    ids = tok.encode(prompt)
    out = []
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
        if nxt == tok.eot_id:
            break
        ids.append(nxt)
        out.append(nxt)
    return tok.decode(out).split("\n")[0]


@pytest.mark.slow
def test_local_tasks_match_hand_computed_scores(tiny_run, tmp_path, capsys):
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # harness.json is written into the run
    loaded = runs.load_run(tiny_run)
    model, tok = loaded.model.eval(), loaded.tokenizer
    mc = write_task(tmp_path, "tiny_mc", QUESTIONS, MC)
    # Generation targets: the model's own greedy answer for the first prompt only -> exact_match 1/3.
    answers = [greedy(model, tok, p, 6) for p in PROMPTS]
    rows = [
        {"prompt": p, "target": a if i == 0 else a + "#"}
        for i, (p, a) in enumerate(zip(PROMPTS, answers, strict=True))
    ]
    gen = write_task(tmp_path, "tiny_gen", rows, GEN)

    assert main(["eval", str(tiny_run), "--harness", f"{mc},{gen}", "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tiny_run / "harness.json").read_text())
    assert saved["tasks"] == printed["tasks"]

    task = saved["tasks"]["tiny_mc"]
    right = 0
    for example in task["examples"]:
        q = QUESTIONS[example["doc_id"]]
        expected = [loglik(model, tok, q["question"], " " + c) for c in q["choices"]]
        got = [r[0] for r in example["responses"]]
        torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-4, rtol=0)
        right += int(max(range(len(expected)), key=expected.__getitem__) == q["answer"])
    assert task["metrics"]["acc,none"] == pytest.approx(right / len(QUESTIONS))

    from lmforge.eval.report import _harness_section

    assert "| tiny_mc | acc,none |" in "\n".join(_harness_section(tiny_run))  # what `lmforge report` shows

    task = saved["tasks"]["tiny_gen"]
    assert task["metrics"]["exact_match,none"] == pytest.approx(1 / 3)
    for example in task["examples"]:
        assert example["responses"][0] == answers[example["doc_id"]]


def test_harness_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert main(["eval", str(tiny_run), "--harness", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--harness", "x.yaml", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err


@pytest.mark.slow
def test_limit_and_num_fewshot_reach_lm_eval(tiny_run, tmp_path, capsys):
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")
    mc = write_task(tmp_path, "tiny_mc", QUESTIONS, MC)
    args = ["eval", str(tiny_run), "--harness", str(mc), "--limit", "2", "--num-fewshot", "1", "--json"]
    assert main([*args, "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    task = result["tasks"]["tiny_mc"]
    assert len(task["examples"]) == 2 and task["n_shot"] == 1 and result["limit"] == 2
