"""The README's lm-evaluation-harness example, end to end and offline.

1. `lmforge demo` prepares the built-in Shakespeare corpus and trains the demo GPT (skipped when OUT/run
   exists); with `--max-steps N`, the run is then retrained for exactly N steps of the demo preset
   with the given `--set` overrides (a fixed amount of work, whatever the machine's load);
2. two local lm-eval tasks are written from the *validation* split (held-out text, decoded from the
   shards): `next_line`, a 4-way multiple choice (which line follows this one? the true next line
   against three lines from elsewhere), and `val_text`, whole passages scored with
   loglikelihood_rolling (word perplexity, byte perplexity, bits per byte);
3. `lmforge eval OUT/run --harness ...` runs them and prints the table the README shows.

    python docs/harness_example.py --out /tmp/harness-example --max-steps 300 \
        --set model.n_layer=2 --set model.n_embd=96 --set model.n_head=3
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from lmforge.cli import main

MC = """task: next_line
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{line}}}}\\n"
target_delimiter: ""
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
ROLLING = """task: val_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def validation_text(run_dir: Path) -> str:
    from lmforge import runs
    from lmforge.data.shards import open_split

    loaded = runs.load_run(run_dir)
    data_dir = Path(loaded.info.get("data_dir") or run_dir.parent / "data")
    tokens = [int(t) for shard in open_split(data_dir / "shards", "val") for t in shard]
    return loaded.tokenizer.decode(t for t in tokens if t != loaded.tokenizer.eot_id)


def write_tasks(text: str, folder: Path, n_mc: int, n_passages: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 20]
    pairs = [(a, b) for a, b in zip(lines, lines[1:], strict=False)]
    rows = []
    for a, b in rng.sample(pairs, min(n_mc, len(pairs))):
        choices = [b, *rng.sample([x for x in lines if x != b], 3)]
        rng.shuffle(choices)
        rows.append({"line": a, "choices": choices, "answer": choices.index(b)})
    passages = [text[i : i + 1000] for i in range(0, len(text) - 1000, max(1000, len(text) // n_passages))]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, spec, data in (("next_line", MC, rows), ("val_text", ROLLING, [{"text": p} for p in passages])):
        data_file = folder / f"{name}.jsonl"
        data_file.write_text(
            "".join(json.dumps(r) + "\n" for r in data[: max(n_mc, n_passages)]), encoding="utf-8"
        )
        path = folder / f"{name}.yaml"
        path.write_text(spec.format(data=data_file), encoding="utf-8")
        out.append(path)
    return out


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="harness-example", help="folder for the demo and the tasks")
    parser.add_argument("--time-budget", type=float, default=60.0, help="training seconds for the demo")
    parser.add_argument("--max-steps", type=int, help="retrain the run for exactly this many steps")
    parser.add_argument("--set", action="append", default=[], help="config override for --max-steps")
    parser.add_argument("--examples", type=int, default=200, help="multiple-choice questions")
    parser.add_argument("--passages", type=int, default=50, help="1,000-character passages to score")
    args = parser.parse_args()
    out = Path(args.out)
    run_dir = out / "run"
    if not (run_dir / "run.json").is_file():
        assert main(["demo", "--out", str(out), "--time-budget", str(args.time_budget)]) == 0
    if args.max_steps:
        shutil.rmtree(run_dir)
        train = ["train", "--data", str(out / "data"), "--out", str(run_dir), "--config", "demo"]
        assert main([*train, "--max-steps", str(args.max_steps), "--no-progress", *args.set]) == 0
    tasks = write_tasks(validation_text(run_dir), out / "tasks", args.examples, args.passages)
    start = time.perf_counter()
    code = main(["eval", str(run_dir), "--harness", ",".join(map(str, tasks)), "--no-progress"])
    print(f"harness wall time {time.perf_counter() - start:.1f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(run())
