"""The README's task table: every task figure with its trivial baseline, from the built-in corpus.

    .venv/bin/python bench/bench_tasks.py [--work bench/.work/tasks] [--rows genre,ner,...]

1. The demonstration task sets (`lmforge data tasks`): genre (600 speeches per genre, 40-120
   characters), speaker (Hamlet, five speakers), ner (600 lines with a name, 600 without), translate
   (First Folio -> modern spelling, 1000 aligned speeches).
2. Two small backbones, both GPTs of 2 layers, width 96, context 64, trained 300 steps (minutes on
   2 cores even when they are shared): on the modern edition with BPE 4096 for classification and
   NER, and character-level on both editions (`shakespeare:both`) for translation -- the
   word-by-word recipe (`--unit word`) needs a tokenizer that spells. Each is made once under --work
   and reused; pass --backbone / --char-backbone to use other runs.
3. Each row fine-tunes with `lmforge finetune` -- the classify and NER rows with finetune's default
   recipe for their method (recipes.py; bench/sweep_tasks.py runs the sweeps it was chosen by, on
   the same backbone and sets) -- and reads the final validation evaluation that finetune records
   (metrics.jsonl `task_eval`: the model's figures and the baseline's on the same examples --
   majority class, all-O, or the source copied). The settings column is read back from each run.

Prints the CPU and a Markdown table (the one in the README) and writes WORK/tasks.json. The figures
move by a few points between seeds; the seconds move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from lmforge.cli import main as lmforge
from lmforge.hardware import cpu_description as cpu_name

HERE = Path(__file__).resolve().parent
DATASETS = {
    "genre": ["--limit", "600", "--max-chars", "120"],
    "speaker": [],
    "ner": ["--limit", "600"],
    "translate": ["--limit", "1000"],
}
SMALL_BACKBONE = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=96",
    "model.seq_len=64",
    "train.batch_size=32",
    "train.max_steps=300",
    "train.eval_every=300",
    "train.ckpt_every=300",
    "train.eval_tokens=8192",
    "train.threads=1",
    "optim.lr=3e-3",
]
TRANSLATE = [
    "--unit",
    "word",
    "--seq-len",
    "48",
    "--max-steps",
    "600",
    "train.batch_size=64",
    "optim.lr=3e-3",
    "train.eval_every=200",
    "train.ckpt_every=200",
]
# name -> (data set, finetune task, backbone, metric keys, extra finetune arguments); translate first, the
# row the table exists to settle. The classify / ner rows name only the method: learning rate, length,
# pooling and sub-token are finetune's recipe defaults (recipes.py, chosen by bench/sweep_tasks.py).
ROWS = {
    "translate": ("translate", "translate", "char", ("bleu", "chrf"), TRANSLATE),
    "genre": ("genre", "classify", "bpe", ("accuracy", "macro_f1"), []),
    "ner": ("ner", "ner", "bpe", ("precision", "recall", "f1", "token_accuracy"), []),
    "speaker": ("speaker", "classify", "bpe", ("accuracy", "macro_f1"), []),
    "genre-lora": (
        "genre",
        "classify",
        "bpe",
        ("accuracy", "macro_f1"),
        ["--lora-rank", "8"],
    ),
    "genre-probe": (
        "genre",
        "classify",
        "bpe",
        ("accuracy", "macro_f1"),
        ["--freeze-backbone"],
    ),
}


def run(args: list[str]) -> None:
    print("$ lmforge " + " ".join(args), flush=True)
    code = lmforge(args)
    if code:
        raise SystemExit(f"lmforge {args[0]} failed with exit {code}")


# backbone -> `lmforge data prepare` arguments; both trained with SMALL_BACKBONE
CORPORA = {
    "bpe": ["--source", "shakespeare"],
    "char": ["--source", "shakespeare:both", "--tokenizer", "char"],
}


def backbone(work: Path, kind: str, given: str | None) -> Path:
    """The `kind` backbone: `given`, or made (once) under WORK/kind."""
    if given:
        return Path(given)
    out, data = work / kind / "run", work / kind / "data"
    if not (out / "config.json").is_file():
        if not (data / "shards" / "manifest.json").is_file():
            run(["data", "prepare", "--out", str(data), *CORPORA[kind]])
        run(["train", "--data", str(data), "--out", str(out), "--no-progress", *SMALL_BACKBONE])
    return out


def task_set(work: Path, dataset: str) -> Path:
    """The demonstration set `dataset`, made (once) under WORK/data."""
    data = work / "data" / dataset
    if not (data / "card.json").is_file():
        run(["data", "tasks", "--task", dataset, "--out", str(data), *DATASETS[dataset]])
    return data


def settings(run_dir: Path) -> str:
    """How a row was fine-tuned, read back from its run folder: method, learning rate, steps, epochs."""
    config = json.loads((run_dir / "config.json").read_text())
    info = json.loads((run_dir / "task.json").read_text())
    method = {"lora": f"LoRA r={info['lora']['rank']}", "probe": "probe"}.get(info.get("method"), "full")
    train = config["train"]
    epochs = train["max_steps"] * train["batch_size"] / info["examples"]["train"]
    # word by word the rows are aligned words, not the lines `examples` counts: no epochs to show
    length = ", word by word" if info.get("unit") == "word" else f" ({epochs:.1f} epochs)"
    where = {"classify": f", pooling {info['pooling']}", "ner": f", tag on {info['subtoken']} sub-token"}
    return (
        f"{method}, lr {config['optim']['lr']:g}, {train['max_steps']} steps of {train['batch_size']}"
        f"{length}{where.get(info['kind'], '')}"
    )


def final_eval(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return next(r for r in reversed(records) if r.get("event") == "task_eval")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(HERE / ".work" / "tasks"), help="folder for data, backbones, runs")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--backbone", help="BPE backbone run for classify / ner (default: made under --work)")
    p.add_argument("--char-backbone", help="character-level backbone run for translate (default: made here)")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="print the table again from WORK/tasks.json and the run folders, fine-tuning nothing",
    )
    args = p.parse_args()
    work = Path(args.work)
    if args.table_only:
        saved = json.loads((work / "tasks.json").read_text())
        for name, row in saved["rows"].items():
            row["settings"] = settings(work / "runs" / name)
        print_table(saved["rows"], saved["cpu"])
        return
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown --rows {unknown}; choose from {', '.join(ROWS)}")
    given = {"bpe": args.backbone, "char": args.char_backbone}
    nets = {kind: backbone(work, kind, given[kind]) for kind in sorted({ROWS[n][2] for n in names})}
    results = {}
    for name in names:
        dataset, task, kind, keys, extra = ROWS[name]
        data = task_set(work, dataset)
        out = work / "runs" / name
        shutil.rmtree(out, ignore_errors=True)  # a row is always fine-tuned afresh
        start = time.perf_counter()
        run(
            [
                "finetune",
                str(nets[kind]),
                "--task",
                task,
                "--train",
                str(data / "train.jsonl"),
                "--val",
                str(data / "val.jsonl"),
                "--out",
                str(out),
                "--no-progress",
                "train.threads=1",
                *extra,
            ]
        )
        final = final_eval(out)
        card = json.loads((data / "card.json").read_text())
        results[name] = {
            "task": task,
            "examples": card["examples"],
            "metrics": {k: final[f"val/{k}"] for k in keys},
            "baseline": {k: final.get(f"baseline/{k}") for k in keys},
            "baseline_name": final.get("baseline"),
            "seconds": time.perf_counter() - start,
            "args": extra,
            "settings": settings(out),
        }
    cpu = cpu_name()
    print_table(results, cpu)
    work.mkdir(parents=True, exist_ok=True)
    (work / "tasks.json").write_text(json.dumps({"cpu": cpu, "rows": results}, indent=1), encoding="utf-8")


def print_table(results: dict, cpu: str) -> None:
    print(f"CPU: {cpu}; fine-tuning threads: 1 per run")
    rows = [
        "| row (train / val examples) | settings | metric | fine-tuned | baseline | baseline is | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        keys = list(r["metrics"])
        fmt = (lambda v: f"{v:.1f}") if r["task"] == "translate" else (lambda v: f"{v:.2f}")
        rows.append(
            f"| {name} ({r['examples']['train']} / {r['examples']['val']}) | {r['settings']} | "
            f"{' / '.join(keys)} | "
            f"{' / '.join(fmt(r['metrics'][k]) for k in keys)} | "
            f"{' / '.join(fmt(r['baseline'][k]) for k in keys)} | {r['baseline_name']} | {r['seconds']:.0f} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
