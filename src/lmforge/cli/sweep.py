"""`lmforge sweep`: grid / random / TPE search over config keys, one run folder per trial."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="search hyperparameters (grid, random or Optuna TPE with pruning)",
        description="Run the trials of a sweep file (base config, search space over dotted keys, method, "
        "per-trial budget) into SWEEP_DIR; results.md / results.csv sorted by validation bpb, best.toml. "
        'With verb = "finetune" each trial is an `lmforge finetune` run, judged by the task\'s validation '
        "metric beside its baseline.",
    )
    p.add_argument("--config", required=True, help="the sweep TOML file (see lmforge/tune/space.py)")
    p.add_argument("--out", required=True, help="SWEEP_DIR: trials/NNN run folders, results, plots")
    p.add_argument(
        "--data", help="DATA_DIR, or a finetune sweep's task data (overrides `data` in the sweep file)"
    )
    p.add_argument("--backbone", help="a finetune sweep's backbone run (overrides [finetune] backbone)")
    p.add_argument("--n-trials", type=int, help="number of trials (overrides n_trials)")
    p.add_argument("--resume", action="store_true", help="continue SWEEP_DIR; finished trials are kept")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from lmforge import locks
    from lmforge.cli.train import resolve_preset
    from lmforge.config import read_toml
    from lmforge.tune.space import parse_sweep
    from lmforge.tune.sweep import run_sweep

    command = " ".join(["lmforge", *(sys.argv[1:] if args.argv is None else args.argv)])
    locks.claim_folder(args.out, "sweep", "--out", command, "a sweep would write its trials into it")
    tree = read_toml(args.config)
    if args.data:
        tree["data"] = args.data
    if args.backbone:
        tree.setdefault("finetune", {})["backbone"] = args.backbone
    if args.n_trials is not None:
        tree["n_trials"] = args.n_trials
    spec = parse_sweep(tree)
    summary = run_sweep(spec, args.out, resume=args.resume, preset_path=resolve_preset(spec.preset))
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        best = summary.get("best")
        counts = ", ".join(f"{summary.get(s, 0)} {s}" for s in ("complete", "pruned", "failed"))
        print(f"{summary['trials']} trials ({counts}); results in {args.out}/results.md")
        if best:
            kept = "best.txt" if spec.verb == "finetune" else "best.toml"
            against = f" (baseline {best['baseline']:.4f})" if best.get("baseline") is not None else ""
            print(
                f"best: trial {best['trial']:03d}, {spec.metric} {best[spec.metric.replace('/', '_')]:.4f}"
                f"{against} -> {args.out}/{kept}"
            )
    return 0
