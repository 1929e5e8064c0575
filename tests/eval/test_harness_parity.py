"""One local task through three roads gives the same per-example log-likelihoods (1e-4): lmforge's own
`--harness` LM in process, `lm_eval --model local-completions` against the served run (log-probs over
the API), and `lm_eval --model hf` on the folder `lmforge export` writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lmforge import runs
from lmforge.cli import main
from lmforge.eval import harness
from lmforge.serve.app import ServeConfig, create_app

pytest.importorskip("lm_eval")
sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))  # the serve tests' ThreadServer helper
from serving import ThreadServer  # noqa: E402

ROWS = [
    {"question": "to be or", "choices": ["not", "yes to", "then"], "answer": 0},
    {"question": "the king and", "choices": ["of the", "is"], "answer": 1},
    {"question": "", "choices": ["what", "and the"], "answer": 0},  # empty context: eot stands in
    {"question": "  so ", "choices": ["be", "no"], "answer": 0},  # trailing spaces move to the answer
]
SPEC = """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""


def loglikelihoods(output: dict, task: str) -> list[list[float]]:
    """Per example (by doc_id), the log-likelihood of each choice."""
    samples = sorted(output["samples"][task], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


@pytest.mark.slow
def test_in_process_served_and_exported_agree(tiny_run, tmp_path):
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "parity.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    task = tmp_path / "parity.yaml"
    task.write_text(f"task: parity\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                    f"test_split: test\n{SPEC}", encoding="utf-8")  # fmt: skip
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    hf_dir = tmp_path / "hf"
    assert main(["export", str(tiny_run), "--out", str(hf_dir), "--no-verify"]) == 0

    loaded = runs.load_run(tiny_run)
    ours = simple_evaluate(model=harness.make_lm(loaded.model, loaded.tokenizer, progress=False),
                           tasks=["parity"], task_manager=manager, bootstrap_iters=0)  # fmt: skip
    config = ServeConfig()
    srv = ThreadServer(create_app(runs.load_run(tiny_run), config), config)
    try:
        served = simple_evaluate(
            model="local-completions",
            model_args={"base_url": f"http://127.0.0.1:{srv.port}/v1/completions", "model": "base",
                        "tokenizer_backend": "huggingface", "tokenizer": str(hf_dir), "max_retries": 1},
            tasks=["parity"], task_manager=manager, bootstrap_iters=0,
        )  # fmt: skip
    finally:
        srv.stop()
    hf_args = {"pretrained": str(hf_dir), "dtype": "float32"}
    exported = simple_evaluate(model="hf", model_args=hf_args, tasks=["parity"], task_manager=manager,
                               bootstrap_iters=0, device="cpu")  # fmt: skip

    reference = torch.tensor([x for row in loglikelihoods(ours, "parity") for x in row])
    for other in (served, exported):
        got = torch.tensor([x for row in loglikelihoods(other, "parity") for x in row])
        torch.testing.assert_close(got, reference, atol=1e-4, rtol=0)
    assert ours["results"]["parity"]["acc,none"] == exported["results"]["parity"]["acc,none"]
