"""`lmforge report`: a Markdown report with curves for one run, or a comparison of several."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a Markdown report with loss / bpb plots for one or more runs",
        description="One RUN_DIR: report.md and curves_*.png in the run folder (or --out). Several: one "
        "comparison table and overlaid curves in --out.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for report.md and the PNGs (required for several runs)")
    p.add_argument("--samples", type=int, default=2, help="samples to generate (one run; default 2)")
    p.add_argument("--sample-tokens", type=int, default=64, help="new tokens per sample")
    p.add_argument(
        "--eval-tokens", type=int, default=65536, help="validation tokens per source for per-source bpb"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from lmforge.errors import UserError
    from lmforge.eval.compare import compare_report
    from lmforge.eval.report import run_report

    if args.samples < 0 or args.sample_tokens <= 0 or args.eval_tokens <= 0:
        raise UserError("--samples must be >= 0, --sample-tokens and --eval-tokens > 0")
    if len(args.run_dirs) == 1:
        path = run_report(args.run_dirs[0], args.out, args.samples, args.sample_tokens, args.eval_tokens)
    else:
        if not args.out:
            raise UserError("several runs make one comparison; pass --out DIR for its report and plots")
        path = compare_report(args.run_dirs, args.out)
    print(f"wrote {path} (and its plots beside it)")
    return 0
