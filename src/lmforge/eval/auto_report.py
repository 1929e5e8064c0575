"""The report's section on how `train --auto` chose the model: the candidates' measured speeds, the
tokens each could see in the budget, the loss the scaling fit predicted, and the real result."""

from __future__ import annotations

from lmforge.eval.tables import fmt as _fmt
from lmforge.eval.tables import markdown_table


def auto_section(auto: dict | None, val_loss: float | None) -> list[str]:
    """How `lmforge train --auto` chose the model (run.json's "auto"): each candidate's measured speed,
    the tokens it would have seen and its predicted loss, beside the loss the run reached."""
    if not auto:
        return []
    fit = auto.get("fit", {})
    chosen = auto.get("chosen", {})
    lines = [
        "",
        "## How --auto chose the model",
        "",
        f"Budget {auto.get('budget_seconds', 0):g} s: {auto.get('startup_seconds', 0):.1f} s start-up, "
        f"{auto.get('probe_seconds', 0):.1f} s measuring, {auto.get('train_seconds', 0):.1f} s left for "
        f"training and evaluation. Scaling fit `{fit.get('name', '?')}`: L = {fit.get('E', 0):.3f} + "
        f"{fit.get('A', 0):.4g}/N^{fit.get('alpha', 0):.3f} + "
        f"{fit.get('B', 0):.4g}/D^{fit.get('beta', 0):.3f}. "
        f"Chosen: **{chosen.get('name', '?')}**, lr {chosen.get('optim.lr', '-')}, "
        f"{chosen.get('train.dtype', '')} {chosen.get('model.attn_impl', '')}; predicted validation loss "
        f"{_fmt(auto.get('predicted_loss'))}, reached {_fmt(val_loss)}.",
        "",
        f"Left to --auto: {', '.join(auto.get('left_to_auto', [])) or 'nothing'}; given: "
        + (", ".join(f"{k}={v}" for k, v in auto.get("given", {}).items()) or "nothing"),
        "",
    ]
    if auto.get("stops_early"):
        early = auto["stops_early"]
        lines += [
            f"Stops early: the budget would give the chosen shape {early['budget_tokens']:,} tokens; it "
            f"trains {early['tokens']:,} (`train.max_tokens`), as many passes over the text as its "
            "longest ladder run made, and warms down by then: more passes over a text this small "
            "would overfit it.",
            "",
        ]
    if auto.get("beyond_ladder"):
        beyond = auto["beyond_ladder"]
        lines += [
            f"Beyond the ladder: the chosen run sees its corpus {beyond['passes']:g} times, its shape's "
            f"ladder runs at most {beyond['ladder_passes']:g}; the prediction is an extrapolation, and "
            "with this many passes it may overfit.",
            "",
        ]
    rows = [
        [c["name"] + (" **(chosen)**" if c.get("chosen") else "") + timed_twice(c),
         c["n_params"],
         round(c["tokens_per_second"]), _precisions(c), _tokens(c),
         c.get("fit_loss", c["predicted_loss"]), c["predicted_loss"]]
        for c in auto.get("candidates", [])
    ]  # fmt: skip
    lines.append(
        markdown_table(
            [
                "candidate",
                "N (non-embedding)",
                "tokens/s",
                "precision (tokens/s in each timed)",
                "tokens in budget",
                "the fit's loss",
                "predicted loss (with the shape's ladder runs)",
            ],
            rows,
        )
    )
    if any("credited_tokens" in c for c in auto.get("candidates", [])):
        lines += [
            "",
            "Credited: a candidate that would pass over its corpus more often than its shape's longest "
            "ladder run did is predicted at that many passes; past them the ladder saw no gain (on a "
            "small text, a loss).",
        ]
    if auto.get("not_timed"):
        skipped = "; ".join(
            f"{c['name']} (N {c['n_params']:,}: at most {round(c['tokens_per_second_bound']):,} tokens/s, "
            f"predicted {_fmt(c['best_case_loss'])} at best, above {c['leader']})"
            for c in auto["not_timed"]
        )
        lines += ["", f"Not timed, since even at their fastest they could not win: {skipped}."]
    if auto.get("cached_speeds"):
        names = ", ".join(c["name"] for c in auto["candidates"] if "cached_speed_scale" in c)
        scaled = auto["cached_speeds"]
        lines += [
            "",
            f"Speeds from this machine's earlier --auto runs, not timed now: {names} (scaled by "
            f"{scaled['factor']:.3f}, what {scaled['by']} measured now over its cached speed).",
        ]
    if auto.get("fast_paths"):
        paths = [[p.get("train.threads", "-"), p.get("train.dtype", "-"), p.get("model.attn_impl", "-"),
                  round(p["tokens_per_second"])] for p in auto["fast_paths"]]  # fmt: skip
        lines += ["", markdown_table(["threads", "dtype", "attention", "tokens/s (mid-sized shape)"], paths)]
    if auto.get("threads_idle"):
        idle = auto["threads_idle"]
        lines += ["", f"Threads: {idle['train.threads']} (all cores), not timed: the machine was idle "
                      f"(other work kept {idle['busy_cpus']:.2f} CPUs busy)."]  # fmt: skip
    return lines


def _tokens(candidate: dict) -> str | int:
    """`26,353,664 (credited 4,015,000)` where the prediction credits fewer tokens than it would train."""
    if "credited_tokens" not in candidate:
        return candidate["tokens"]
    return f"{candidate['tokens']:,} (credited {candidate['credited_tokens']:,})"


def _precisions(candidate: dict) -> str:
    """`bfloat16 (float32 12,000, bfloat16 18,000)`: the dtype it would train in and what decided it."""
    dtype = candidate.get("dtype") or "-"
    timed = candidate.get("tokens_per_second_by_dtype") or {}
    if candidate.get("dtype_from"):
        return f"{dtype} (as at {candidate['dtype_from']}, whose matmuls are no larger)"
    if len(timed) < 2:
        return str(dtype)
    return f"{dtype} ({', '.join(f'{d} {round(v):,}' for d, v in timed.items())})"


def timed_twice(candidate: dict) -> str:
    """A mark for a candidate timed a second time (a slowed slice could have cost it the choice)."""
    return " (timed twice)" if candidate.get("timed_again") else ""
