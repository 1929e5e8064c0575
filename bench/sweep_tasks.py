"""The sweeps behind finetune's default recipes (src/lmforge/finetune/recipes.py), and their table.

    .venv/bin/python bench/sweep_tasks.py [--work bench/.work/tasks] [--sweeps genre_full,ner_lora,...]

Each file in bench/sweeps/ is an `lmforge sweep` over fine-tuning (verb = "finetune", a small grid of
learning rate, epochs, pooling / sub-token / LoRA rank); its name says the task set and the method
(genre_full: the genre set, full fine-tuning). This script makes the backbone and the task sets the way
bench_tasks.py does (same --work folder, so both share them), runs every sweep afresh with

    lmforge sweep --config bench/sweeps/NAME.toml --data WORK/data/SET --backbone WORK/bpe/run
                  --out WORK/sweeps/NAME

and prints one Markdown table of every point of every sweep under WORK/sweeps (those run now and any
run before, so one sweep can be redone alone), best first per sweep, with the baseline on the same
validation examples (the README quotes it). One seed per point: on validation sets of 50-190
examples a difference of a few points is noise; the recipes take what wins across sets and methods.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from bench_tasks import HERE, backbone, final_eval, run, task_set

SWEEPS = sorted(p.stem for p in (HERE / "sweeps").glob("*.toml"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(HERE / ".work" / "tasks"), help="folder for data, backbone, sweeps")
    p.add_argument(
        "--sweeps", default=",".join(SWEEPS), help=f"comma-separated subset of {', '.join(SWEEPS)}"
    )
    p.add_argument("--backbone", help="BPE backbone run (default: made under --work, as bench_tasks.py does)")
    args = p.parse_args()
    work = Path(args.work)
    names = [n for n in args.sweeps.split(",") if n]
    unknown = [n for n in names if n not in SWEEPS]
    if unknown:
        raise SystemExit(f"error: unknown --sweeps {unknown}; choose from {', '.join(SWEEPS)}")
    net = backbone(work, "bpe", args.backbone)
    results = {}
    for name in names:
        data = task_set(work, name.split("_")[0])
        out = work / "sweeps" / name
        shutil.rmtree(out, ignore_errors=True)  # every sweep runs afresh
        config = str(HERE / "sweeps" / f"{name}.toml")
        run(["sweep", "--config", config, "--data", str(data), "--backbone", str(net), "--out", str(out)])
    for name in SWEEPS:
        done = work / "sweeps" / name / "results.csv"
        if done.is_file():
            with open(done, encoding="utf-8") as handle:
                results[name] = {"rows": list(csv.DictReader(handle))}
    lines = [
        "| sweep | lr | epochs | pooling / sub-token | LoRA rank | metric | fine-tuned | baseline | "
        "also (baseline) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for i, row in enumerate(result["rows"]):
            metric = next(k for k in row if k.startswith("val_"))
            info = json.loads((Path(row["run_dir"]) / "task.json").read_text(encoding="utf-8"))
            where = info["pooling"] if info["kind"] == "classify" else info["subtoken"]
            value = f"{float(row[metric]):.2f}" if row[metric] else row["state"]
            base = f"{float(row['baseline']):.2f}" if row["baseline"] else "-"
            final = final_eval(Path(row["run_dir"]))
            also = "accuracy" if info["kind"] == "classify" else "precision / recall"
            keys = also.split(" / ")
            also += " " + " / ".join(f"{final[f'val/{k}']:.2f}" for k in keys)
            also += " (" + " / ".join(f"{final[f'baseline/{k}']:.2f}" for k in keys) + ")"
            rank = info["lora"]["rank"] or "-"
            lines.append(
                f"| {name} | {float(row['lr']):g} | {row['epochs']} | {where} | {rank} | "
                f"{metric.removeprefix('val_')} | {f'**{value}**' if i == 0 else value} | {base} | {also} | "
                f"{float(row['seconds'] or 0):.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sweeps.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
