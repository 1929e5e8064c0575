"""`lmforge scaling`: train a ladder of model sizes at several FLOP budgets and fit L(N, D)."""

from __future__ import annotations


def register(subparsers) -> None:
    from lmforge.tune.scaling import DEFAULT_BUDGETS, DEFAULT_WIDTHS

    p = subparsers.add_parser(
        "scaling",
        help="fit a scaling law over a ladder of model sizes and compute budgets",
        description="Train every width at every budget (C = 6 N D FLOPs) into OUT/runs/, fit "
        "L(N, D) = E + A/N^alpha + B/D^beta, and report the compute-optimal size with a plot. "
        "Finished ladder runs are reused when the command is run again.",
    )
    p.add_argument("--data", required=True, help="DATA_DIR made by `lmforge data prepare`")
    p.add_argument("--out", required=True, help="folder for runs/, scaling.md, scaling.json, scaling.png")
    p.add_argument(
        "--budget", type=float, nargs="+", default=list(DEFAULT_BUDGETS), help="training FLOPs per run"
    )
    p.add_argument(
        "--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS), help="model.n_embd of each size"
    )
    p.add_argument(
        "--target", type=float, help="FLOPs to find the compute-optimal size for (default: largest)"
    )
    p.add_argument("--config", help="base preset (a TOML file or a preset name)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from lmforge.cli.train import resolve_preset
    from lmforge.config import parse_override
    from lmforge.tune.scaling import run_scaling

    summary = run_scaling(
        args.data,
        args.out,
        budgets=args.budget,
        widths=args.widths,
        target=args.target,
        preset_path=resolve_preset(args.config),
        overrides=dict(parse_override(o) for o in args.overrides),
    )
    if args.json:
        print(json.dumps(summary))
    else:
        f = summary["fit"]
        print(
            f"L(N, D) = {f['E']:.3f} + {f['A']:.4g}/N^{f['alpha']:.3f} + {f['B']:.4g}/D^{f['beta']:.3f}; "
            f"for C = {summary['target_flops']:.3g}: N ~ {summary['optimal_N']:,.0f}, "
            f"D ~ {summary['optimal_D']:,.0f} -> {args.out}/scaling.md (only as good as the ladder)"
        )
    return 0
