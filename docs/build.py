"""Build the guide (`make docs`): run every experiment it shows, then render its pages.

    python docs/build.py [--cache build/docs] [--fresh] [--threads N] [--render-only] [--step NAME]

Why a script and not hand-written numbers: every count, loss, table and picture in docs/guide/ comes
from a real run of lmforge's own code on the built-in corpus, so the guide cannot drift from the code
-- change the code, run `make docs`, and the pages say what the code now does.

What it does, in order (each step through lmforge's Python API, the same functions the CLI calls):
  data        the built-in corpus through collect -> clean -> tokenizer -> encode (modern spelling,
              BPE 4096); the same text with a char tokenizer; both editions as two sources; and a
              small folder of deliberately damaged copies of corpus text, to show every cleaning rule
  model       the `demo` preset's parameter table, FLOPs per token and loss at initialisation; the
              `gru-small` model beside it; the block diagram and the activations (figures)
  training    softmax / cross-entropy worked examples; SGD, Adam, AdamW and Muon on the same short
              run; the learning-rate schedules; the main run (the demo preset, a few hundred steps)
  evaluation  loss -> perplexity -> bits per byte on the main run; char vs BPE; a grid sweep over
              width and learning rate (through `tune.sweep`); two data mixes and per-source bpb
  adjust      `lmforge train --auto` for AUTO_BUDGET seconds: measured speeds, predictions, choice
  using       one prompt under several generation settings

Runs and data folders are cached under --cache (default build/docs/, git-ignored), each with the
settings that made it: a rerun redoes only what changed, and `--fresh` (or a clean clone) redoes all.
Pages are rendered from docs/guide/templates/*.md: `{{name}}` is a value from docs/guide/results.json
(written here), `{{fn:module.function}}` a link to that function's source file, checked to exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide"
TEMPLATES = GUIDE / "templates"
IMG = GUIDE / "img"
RESULTS = GUIDE / "results.json"

# --- sizes: chosen so the whole build takes a few minutes on 2 CPU cores -------------------------
PRESET = "demo"  # the model `make demo` trains: the guide's parameter table and main run
MAIN_STEPS = 240  # optimizer steps of the main run (demo preset, 16 x 128 tokens a step)
SMALL_STEPS = 200  # steps of each comparison run (optimisers, char vs BPE, data mix)
SWEEP_STEPS = 150  # steps of each sweep trial
AUTO_BUDGET = 120  # seconds of the `train --auto` run the adjustment page shows
SMALL = {  # the comparison model: 2 layers, width 64, context 64 -- seconds per run
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 64,
    "model.seq_len": 64,
    "model.qk_norm": True,
    "train.batch_size": 16,
    "train.eval_every": 25,
    "train.eval_tokens": 16384,
    "train.log_every": 5,
    "train.ckpt_every": 100000,
    "optim.lr": 3e-3,
    "schedule.name": "wsd",
    "schedule.warmup_steps": 20,
    "schedule.warmdown_frac": 0.3,
    "schedule.min_lr_frac": 0.0,
}
OPTIMIZERS = {  # name -> overrides; each at a learning rate that works for it on this model
    "sgd": {"optim.name": "sgd", "optim.lr": 0.5, "optim.momentum": 0.9},
    "adam": {"optim.name": "adam", "optim.lr": 3e-3},
    "adamw": {"optim.name": "adamw", "optim.lr": 3e-3},
    "muon": {"optim.name": "muon", "optim.lr": 3e-3, "optim.muon_lr": 0.02},
}
SWEEP_WIDTHS = [32, 64, 128]
SWEEP_LRS = [1e-3, 3e-3, 1e-2]
MIXES = {  # data mix name -> data.weights over the two editions
    "modern only": {"shakespeare": 1.0, "shakespeare_folio": 0.0},
    "half and half": {"shakespeare": 1.0, "shakespeare_folio": 1.0},
}
PROMPT = "Ham.\n"
CE_PROMPT = "To be, or not to"
GEN_SETTINGS = [  # (label, sampling options)
    ("greedy (temperature 0)", {"temperature": 0.0}),
    ("temperature 0.7", {"temperature": 0.7}),
    ("temperature 1.0", {"temperature": 1.0}),
    ("temperature 1.5", {"temperature": 1.5}),
    ("temperature 1.0, top-k 10", {"temperature": 1.0, "top_k": 10}),
    ("temperature 1.0, top-p 0.9", {"temperature": 1.0, "top_p": 0.9}),
]
GEN_TOKENS = 40


def say(message: str) -> None:
    print(f"[docs {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _say_lmforge() -> None:
    """lmforge's own messages (a sweep's one line per trial) printed like `say`'s."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[docs %(asctime)s] %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("lmforge")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


# --- cache helpers -------------------------------------------------------------------------------
def _key_matches(folder: Path, key: dict) -> bool:
    marker = folder / "guide-key.json"
    return marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == key


def _mark(folder: Path, key: dict) -> None:
    (folder / "guide-key.json").write_text(json.dumps(key, indent=1, sort_keys=True), encoding="utf-8")


def prepare_data(folder: Path, specs: list[str], tokenizer: str, cache_dir: Path, weights=None) -> dict:
    """collect -> clean -> tokenizer -> encode into `folder`, each step alone (cached)."""
    from lmforge.data import prepare as P
    from lmforge.data.sources import CollectConfig, SourceSpec

    key = {"specs": specs, "tokenizer": tokenizer, "weights": weights}
    if not _key_matches(folder, key):
        say(f"data: {' + '.join(specs)} ({tokenizer}) -> {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        sources = [SourceSpec(s, (weights or {}).get(s, 1.0)) for s in specs]
        split = P.SplitConfig("hash")  # whole plays in validation, as the guide's pages describe
        reports = {
            "collect": P.collect(sources, CollectConfig(cache_dir=cache_dir), folder),
            "clean": P.clean(folder, P.CleanConfig()),
            "tokenizer": P.build_tokenizer(folder, P.TokenizerConfig(tokenizer), split),
            "encode": P.encode(folder, split),
        }
        (folder / "guide-reports.json").write_text(json.dumps(reports), encoding="utf-8")
        _mark(folder, key)
    return json.loads((folder / "guide-reports.json").read_text(encoding="utf-8"))


def train_run(folder: Path, data_dir: Path, preset: str | None, overrides: dict, threads: int) -> dict:
    """Train (cached by settings + data) and return the result with the run's metrics."""
    from lmforge import logs, presets, runs
    from lmforge.config import load_config
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.train.loop import train

    manifest = runs.sha256_file(data_dir / "shards" / "manifest.json")
    key = {"preset": preset, "overrides": overrides, "manifest": manifest}
    if not _key_matches(folder, key):
        say(f"train: {folder.name} ({preset or 'defaults'}, {len(overrides)} overrides)")
        shutil.rmtree(folder, ignore_errors=True)
        vocab = load_tokenizer(data_dir / "tokenizer").vocab_size
        preset_path = presets.path(preset) if preset else None
        config = load_config(preset_path, {**overrides, "train.threads": threads}, vocab)
        start = time.perf_counter()
        with logs.silenced("lmforge.train"):
            result = train(config, data_dir, folder, progress=False)
        summary = {
            "steps": result.steps,
            "tokens": result.tokens,
            "seconds": round(time.perf_counter() - start, 1),
            "num_params": result.num_params,
            "final_val": result.final_val,
        }
        (folder / "guide-result.json").write_text(json.dumps(summary), encoding="utf-8")
        _mark(folder, key)
    summary = json.loads((folder / "guide-result.json").read_text(encoding="utf-8"))
    summary["metrics"] = runs.read_metrics(folder)
    return summary


# --- formatting ----------------------------------------------------------------------------------
def n(value: float) -> str:
    """An integer with thousands separators."""
    return f"{int(value):,}"


def f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def visible(text: str) -> str:
    """Whitespace made visible for a table cell: space -> ␣, newline -> ↵."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\r", "␍").replace("\t", "⇥")


def code_block(text: str) -> str:
    return "```text\n" + text.rstrip("\n").replace("```", "'''") + "\n```"


# --- 1. data -------------------------------------------------------------------------------------
def damaged_corpus(folder: Path, cache_dir: Path) -> None:
    """Passages of real corpus text, each damaged the way a scraped corpus is, one per cleaning rule."""
    from lmforge.data.builtin import iter_works

    plays = [path.read_text(encoding="utf-8") for path, _ in iter_works("modern", cache_dir)]
    hamlet = next(t for t in plays if t.startswith("HAMLET"))
    act = hamlet[hamlet.index("ACT III.") :][:6000]  # "To be, or not to be" is in here
    starts = [t.index("\n", 20_000) + 1 for t in plays[:12]]  # a line start in each play
    p = [t[i : i + 1200] for t, i in zip(plays, starts, strict=False)]  # a different play per damage
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "01_hamlet_act3.txt": act.encode(),
        "02_nfd_accents.txt": unicodedata.normalize("NFD", "Bénédict at the café.\n" + p[0]).encode(),
        "03_latin1_bytes.txt": p[1].encode() + b"\nLe r\xe9sum\xe9 du texte\n",
        "04_control_chars.txt": ("\x0c" + p[2].replace("\n", "\n\x00", 3)).encode(),
        "05_windows_copy.txt": "\r\n".join(line + "   " for line in p[3].split("\n")).encode(),
        "06_gutenberg_copy.txt": (
            "The Project Gutenberg EBook of Shakespeare\n\n*** START OF THE PROJECT GUTENBERG EBOOK ***\n"
            f"{p[4]}\n*** END OF THE PROJECT GUTENBERG EBOOK ***\nUpdated editions will replace the old.\n"
        ).encode(),
        "07_fragment.txt": b"Exeunt.\n",
        "08_whole_play.txt": hamlet.encode(),
        "09_base64_dump.txt": (p[5] + "\n" + "QUNUIEkuIFNjZW5lIEku" * 400 + "\n").encode(),
        "10_table.txt": "\n".join(
            f"| {i:>3} | {line[:16]:<16} | ---- | ++++ | ==== |" for i, line in enumerate(p[6].split("\n"))
        ).encode(),
        "11_repeated_header.txt": "\n".join(
            f"THE WORKS OF SHAKESPEARE\n{line}" for line in p[7].split("\n") if line.strip()
        ).encode(),
        "12_exact_copy.txt": ("  " + act.upper().replace("\n", " \n") + "  ").encode(),
        "13_near_copy.txt": act.replace("ACT III.", "Act 3.").replace("Scene I.", "Scene 1.")
        .replace("Enter", "Enters", 2).encode(),
    }  # fmt: skip
    for name, data in files.items():
        (folder / name).write_bytes(data)


# Thresholds of the damaged-corpus demo: the defaults, except documents (and lines) long enough to
# drop are shorter here, so a whole play and an 8,000-character line show what those rules do.
DEMO_MAX_CHARS = 100_000
DEMO_MAX_LINE = 5_000


def step_data(cache: Path, cache_dir: Path) -> dict:
    from lmforge.data import prepare as P
    from lmforge.data.clean import CleanConfig
    from lmforge.data.dedup import shingle_hashes
    from lmforge.data.files import read_docs
    from lmforge.data.sources import CollectConfig, SourceSpec
    from lmforge.data.tokenizer import _UNICODE_TO_BYTE, load_tokenizer

    out: dict = {}
    data = cache / "data" / "modern"
    rep = prepare_data(data, ["shakespeare"], "bpe", cache_dir)
    prepare_data(cache / "data" / "char", ["shakespeare"], "char", cache_dir)
    prepare_data(cache / "data" / "both", ["shakespeare", "shakespeare:folio"], "bpe", cache_dir)

    src = rep["collect"]["sources"]["shakespeare"]
    clean = rep["clean"]
    out["corpus_docs"] = n(src["n_docs"])
    out["corpus_mb"] = f(rep["collect"]["mb"], 2)
    out["corpus_chars"] = n(src["n_chars"])
    out["clean_docs_in"], out["clean_docs_out"] = n(clean["docs_in"]), n(clean["docs_out"])
    out["clean_chars_in"], out["clean_chars_out"] = n(clean["chars_in"]), n(clean["chars_out"])
    rows = []
    for s in clean["steps"]:
        did = f"dropped {s['dropped']}" if s["kind"] == "filter" else f"changed {s['changed']}"
        if s["chars_removed"]:
            did += f" ({n(s['chars_removed'])} chars removed)"
        rows.append([f"`{s['name']}`", s["kind"], s["rule"], did])
    out["clean_table"] = table(["rule", "kind", "what it checks", "on the built-in corpus"], rows)
    ws = next(s for s in clean["steps"] if s["name"] == "whitespace")
    out["ws_changed"], out["ws_removed"] = n(ws["changed"]), n(ws["chars_removed"])

    # A real whitespace edit: the first run of 3+ newlines in the raw corpus, before and after.
    raw = dict((source + str(i), text) for i, (text, source) in enumerate(read_docs(data / "raw", "raw")))
    first_text = next(iter(raw.values()))
    at = re.search(r"\n{3,}", first_text)
    line_start = first_text.rfind("\n", 0, at.start()) + 1
    before = first_text[line_start : at.end() + 12]
    after = re.sub(r"\n{3,}", "\n\n", before)
    out["ws_before"], out["ws_after"] = visible(before), visible(after)
    out["ws_blank_runs"] = n(sum(len(re.findall(r"\n{3,}", t)) for t in raw.values()))
    out["ws_trailing"] = n(sum(len(re.findall(r"[ \t]+\n", t)) for t in raw.values()))

    # Every rule at work: damaged copies of corpus text through the same collect and clean.
    dirty = cache / "data" / "damaged"
    shutil.rmtree(dirty, ignore_errors=True)
    damaged_corpus(dirty / "src", cache_dir)
    # one file = one document, and no guard on the share removed: each file shows one damage
    P.collect([SourceSpec(str(dirty / "src"))], CollectConfig(doc_split="file"), dirty)
    demo_cfg = CleanConfig(max_chars=DEMO_MAX_CHARS, max_line_chars=DEMO_MAX_LINE, max_filter_frac=1.0)
    demo = P.clean(dirty, demo_cfg)
    # Two edits keep no examples in the report; show one from the raw documents they changed.
    raw_docs = [text for text, _ in read_docs(dirty / "raw", "raw")]
    own = {}
    nfd = next((t for t in raw_docs if not unicodedata.is_normalized("NFC", t)), "")
    if nfd:
        word = re.search(r"\S*[\u0300-\u036f]\S*", nfd).group()
        nfc = unicodedata.normalize("NFC", word)
        own["nfc"] = f"{ascii(word)} ({len(word)} code points) -> '{nfc}' ({len(nfc)})"
    crlf = next((t for t in raw_docs if "\r\n" in t), "")
    if crlf:
        line = crlf[: crlf.index("\n") + 1][-28:]
        own["whitespace"] = f"`{visible(line)}` -> `{visible(line.rstrip() + chr(10))}`"
    rows = []
    for s in demo["steps"]:
        count = s["dropped"] if s["kind"] == "filter" else s["changed"]
        example = s["examples"][0] if s["examples"] else own.get(s["name"], "")
        count = f"{count}" + "".join(f", {k.replace('_', ' ')} {v}" for k, v in s["counts"].items())
        rows.append(
            [f"`{s['name']}`", ("dropped " if s["kind"] == "filter" else "changed ") + str(count), example]
        )
    out["damaged_table"] = table(["rule", "result", "example"], rows)
    out["damaged_docs_in"], out["damaged_docs_out"] = demo["docs_in"], demo["docs_out"]
    out["demo_max_chars"], out["demo_max_line"] = n(DEMO_MAX_CHARS), n(DEMO_MAX_LINE)

    # The two editions of Hamlet: how similar are they by the near-duplicate measure?
    from lmforge.data.builtin import iter_works

    texts = {e: next(p for p, t in iter_works(e, cache_dir) if "hamlet" in p.stem).read_text() for e in
             ("modern", "folio")}  # fmt: skip
    a, b = (set(shingle_hashes(texts[e], 5).tolist()) for e in ("modern", "folio"))
    out["hamlet_jaccard"] = f(len(a & b) / len(a | b), 2)

    # Tokenizer: the first merges BPE learned, and what a line becomes.
    tok = load_tokenizer(data / "tokenizer")
    merges = json.loads((data / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))["model"][
        "merges"
    ]

    def shown(piece: str) -> str:
        return "`" + visible(bytes(_UNICODE_TO_BYTE[c] for c in piece).decode("utf-8", "replace")) + "`"

    rows = [
        [i + 1, shown(left), shown(right), shown(left + right)] for i, (left, right) in enumerate(merges[:16])
    ]
    out["merges_table"] = table(["merge", "left", "right", "new token"], rows)
    out["n_merges"] = n(len(merges))
    line = "To be, or not to be, that is the question:"
    ids = tok.encode(line)
    out["example_line"] = line
    out["example_tokens"] = " · ".join(visible(tok.decode([i])) for i in ids)
    out["example_ids"] = ", ".join(map(str, ids))
    out["example_n_tokens"], out["example_n_bytes"] = len(ids), len(line.encode())
    wordy = [i for i in range(1, tok.vocab_size) if any(c.isalpha() for c in tok.decode([i]))]
    longest = sorted(wordy, key=lambda i: -int(tok.token_bytes[i]))[:8]
    out["longest_tokens"] = ", ".join(shown_token(tok, i) for i in longest)
    out["vocab_size"] = n(tok.vocab_size)
    out["bytes_per_token"] = f(rep["tokenizer"]["val_bytes_per_token"], 2)
    out["tokenizer_seconds"] = f(rep["tokenizer"]["seconds"], 1)

    enc = rep["encode"]
    out["tokens_train"], out["tokens_val"] = n(enc["tokens"]["train"]), n(enc["tokens"]["val"])
    out["shards_train"], out["shards_val"] = enc["shards"]["train"], enc["shards"]["val"]
    manifest = json.loads((data / "shards" / "manifest.json").read_text(encoding="utf-8"))
    entry = dict(manifest["splits"]["train"]["shards"][0])
    entry["sha256"] = entry["sha256"][:16] + "..."
    excerpt = {
        "format_version": manifest["format_version"],
        "tokenizer_hash": manifest["tokenizer_hash"][:16] + "...",
        "vocab_size": manifest["vocab_size"],
        "dtype": manifest["dtype"],
        "splits": {"train": {"tokens": manifest["splits"]["train"]["tokens"], "shards": [entry, "..."]}},
    }
    out["manifest_excerpt"] = "```json\n" + json.dumps(excerpt, indent=2) + "\n```"
    out["dtype"] = manifest["dtype"]
    char_rep = json.loads((cache / "data" / "char" / "guide-reports.json").read_text(encoding="utf-8"))
    out["char_vocab"] = char_rep["tokenizer"]["vocab_size"]
    return out


def shown_token(tok, i: int) -> str:
    return "`" + visible(tok.decode([i])) + "`"


# --- 2. model ------------------------------------------------------------------------------------
EXPLAIN = {
    "wte.weight": "token embedding: one row of numbers per token id",
    "attn_norm.weight": "RMSNorm gain before attention",
    "attn.qkv.weight": "query, key and value projections (fused)",
    "attn.q_norm.weight": "QK-norm gain on queries",
    "attn.k_norm.weight": "QK-norm gain on keys",
    "attn.o_proj.weight": "attention output projection",
    "mlp_norm.weight": "RMSNorm gain before the MLP",
    "mlp.gate_up.weight": "SwiGLU gate and up projections (fused)",
    "mlp.down_proj.weight": "MLP down projection",
    "norm_f.weight": "final RMSNorm gain",
    "lm_head.weight": "output head: one row of scores per token id",
    "gru.weight_ih": "input-to-hidden matrices (3 gates)",
    "gru.weight_hh": "hidden-to-hidden matrices (3 gates)",
    "gru.bias_ih": "input biases (3 gates)",
    "gru.bias_hh": "hidden biases (3 gates)",
}


def _explain(name: str) -> str:
    short = name.removeprefix("blocks.*.")
    return next((text for key, text in EXPLAIN.items() if short.startswith(key)), "")


def param_table_md(model) -> str:
    total = model.num_params()
    rows = [
        [f"`{name}`", " x ".join(map(str, shape)), n(count), f"{100 * count / total:.1f}%", _explain(name)]
        for name, shape, count in model.param_table()
    ]
    rows.append(["**total**", "", f"**{n(total)}**", "100%", "= `model.num_params()`"])
    return table(["tensor", "shape (one layer)", "parameters", "share", "what it is"], rows)


def step_model(cache: Path, figures) -> dict:
    import torch

    from lmforge import presets
    from lmforge.config import load_config
    from lmforge.data.shards import open_split
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.eval.loss import evaluate_tokens
    from lmforge.models.registry import build_model

    out: dict = {}
    data = cache / "data" / "modern"
    tok = load_tokenizer(data / "tokenizer")
    val = open_split(data / "shards", "val")
    cfg = load_config(presets.path(PRESET), {}, tok.vocab_size).model
    torch.manual_seed(1337)
    model = build_model(cfg)
    assert sum(c for _, _, c in model.param_table()) == model.num_params()
    out["preset"] = PRESET
    for key in (
        "n_layer",
        "n_head",
        "n_embd",
        "seq_len",
        "mlp",
        "hidden_dim",
        "head_dim",
        "padded_vocab_size",
    ):
        out[f"gpt_{key}"] = getattr(cfg, key)
    out["gpt_params"] = n(model.num_params())
    out["gpt_params_m"] = f(model.num_params() / 1e6, 2)
    out["gpt_params_nonemb"] = n(model.num_params(exclude_embeddings=True))
    vocab_tables = sum(c for name, _, c in model.param_table() if name in ("wte.weight", "lm_head.weight"))
    out["gpt_vocab_share"] = f"{100 * vocab_tables / model.num_params():.0f}%"
    out["gpt_flops"] = n(model.flops_per_token())
    out["gpt_flops_m"] = f(model.flops_per_token() / 1e6, 1)
    out["gpt_param_table"] = param_table_md(model)
    out["gpt_attn_flops"] = n(12 * cfg.n_layer * cfg.n_embd * cfg.seq_len)
    init = evaluate_tokens(model, val, tok.token_bytes, cfg.seq_len, 16384)
    out["init_loss"] = f(init["loss"])
    out["ln_vocab"] = f(math.log(tok.vocab_size))
    out["init_ppl"] = n(init["perplexity"])
    figures.transformer_block(cfg, IMG / "transformer_block.png")
    figures.activations(IMG / "activations.png")

    gcfg = load_config(presets.path("gru-small"), {}, tok.vocab_size).model
    torch.manual_seed(1337)
    gru = build_model(gcfg)
    assert sum(c for _, _, c in gru.param_table()) == gru.num_params()
    out["gru_n_layer"], out["gru_hidden"], out["gru_n_embd"] = gcfg.n_layer, gcfg.hidden, gcfg.n_embd
    out["gru_params"] = n(gru.num_params())
    out["gru_flops"] = n(gru.flops_per_token())
    out["gru_param_table"] = param_table_md(gru)
    out["gru_init_loss"] = f(evaluate_tokens(gru, val, tok.token_bytes, gcfg.seq_len, 16384)["loss"])
    return out


# --- 3. training ---------------------------------------------------------------------------------
def step_training(cache: Path, threads: int, figures) -> dict:
    from lmforge.config import ScheduleConfig
    from lmforge.eval.metrics import cross_entropy, softmax

    out: dict = {}
    logits = [2.0, 1.0, 0.1]
    probs = softmax(logits)
    out["toy_logits"] = ", ".join(f"{v:g}" for v in logits)
    out["toy_exps"] = ", ".join(f(math.exp(v), 3) for v in logits)
    out["toy_sum"] = f(sum(math.exp(v) for v in logits), 3)
    out["toy_probs"] = ", ".join(f(p, 3) for p in probs)
    out["toy_z_cells"] = " | ".join(f"{v:g}" for v in logits)
    out["toy_exp_cells"] = " | ".join(f(math.exp(v), 3) for v in logits)
    out["toy_prob_cells"] = " | ".join(f(p, 3) for p in probs)
    out["toy_ce_right"] = f(cross_entropy(probs, 0))
    out["toy_ce_wrong"] = f(cross_entropy(probs, 2))
    uniform = [1 / 4096] * 4096
    out["uniform_ce"] = f(cross_entropy(uniform, 0))

    data = cache / "data" / "modern"
    runs_dir = cache / "runs"
    curves = {}
    rows = []
    for name, over in OPTIMIZERS.items():
        r = train_run(
            runs_dir / f"opt-{name}", data, None, {**SMALL, **over, "train.max_steps": SMALL_STEPS}, threads
        )
        curves[name] = r["metrics"]
        lr = over.get("optim.muon_lr") if name == "muon" else over["optim.lr"]
        lr_text = f"{over['optim.lr']:g} (Muon matrices: {lr:g})" if name == "muon" else f"{lr:g}"
        rows.append([name, lr_text, f(r["final_val"]["loss"]), f(r["final_val"]["bpb"]), f(r["seconds"], 1)])
        out[f"opt_{name}_loss"] = f(r["final_val"]["loss"])
        out[f"opt_{name}_bpb"] = f(r["final_val"]["bpb"])
    ranked = sorted(OPTIMIZERS, key=lambda k: float(out[f"opt_{k}_loss"]))
    out["opt_ranking"] = ", then ".join(f"{k} ({out[f'opt_{k}_loss']})" for k in ranked)
    out["opt_table"] = table(["optimizer", "peak learning rate", "val loss", "val bpb", "seconds"], rows)
    figures.optimizer_curves(curves, IMG / "optimizers.png")
    out["small_steps"], out["small_tokens"] = SMALL_STEPS, n(SMALL_STEPS * SMALL["train.batch_size"] * 64)
    schedules = {
        "constant": ScheduleConfig("constant", warmup_steps=100),
        "cosine": ScheduleConfig("cosine", warmup_steps=100, min_lr_frac=0.1),
        "wsd": ScheduleConfig("wsd", warmup_steps=100, warmdown_frac=0.2, min_lr_frac=0.0),
    }
    figures.schedules(schedules, 1000, IMG / "lr_schedules.png")

    main = train_run(runs_dir / "main", data, PRESET, {"train.max_steps": MAIN_STEPS, "train.eval_every": 40,
                     "train.eval_tokens": 32768, "train.ckpt_every": 100000}, threads)  # fmt: skip
    train_lines = [m for m in main["metrics"] if "train/loss" in m]
    out["main_steps"], out["main_tokens"] = main["steps"], n(main["tokens"])
    out["main_seconds"] = f(main["seconds"], 0)
    out["main_first_loss"] = f(train_lines[0]["train/loss"])
    out["main_first_step"] = train_lines[0]["step"]
    out["main_final_loss"] = f(train_lines[-1]["train/loss"])
    out["main_val_loss"] = f(main["final_val"]["loss"])
    enc = json.loads((data / "guide-reports.json").read_text(encoding="utf-8"))["encode"]
    out["main_epochs"] = f"{100 * main['tokens'] / enc['tokens']['train']:.0f}%"
    figures.main_curve(main["metrics"], IMG / "main_run.png")
    return out


# --- 4. evaluation -------------------------------------------------------------------------------
def step_evaluation(cache: Path, threads: int, figures) -> dict:
    from lmforge import runs
    from lmforge.eval.evaluate import evaluate_run
    from lmforge.eval.metrics import bits_per_byte, perplexity
    from lmforge.eval.report import per_source_bpb
    from lmforge.tune.space import parse_sweep
    from lmforge.tune.sweep import run_sweep

    out: dict = {}
    runs_dir = cache / "runs"
    main = evaluate_run(runs_dir / "main", max_tokens=65536)
    out["eval_tokens"], out["eval_bytes"] = n(main["tokens"]), n(main["bytes"])
    out["eval_loss"], out["eval_ppl"] = f(main["val_loss"]), f(main["perplexity"], 1)
    out["eval_bpb"], out["eval_acc"] = f(main["bpb"]), f(100 * main["accuracy"], 1)
    out["eval_ppl_check"] = f(perplexity(main["val_loss"]), 1)
    out["eval_bytes_per_token"] = f(main["bytes"] / main["tokens"], 3)

    # char vs BPE: the same text, the same model shape and steps; only the tokenizer differs.
    bpe = train_run(runs_dir / "opt-adamw", cache / "data" / "modern", None,
                    {**SMALL, **OPTIMIZERS["adamw"], "train.max_steps": SMALL_STEPS}, threads)  # fmt: skip
    char = train_run(runs_dir / "char", cache / "data" / "char", None,
                     {**SMALL, **OPTIMIZERS["adamw"], "train.max_steps": SMALL_STEPS}, threads)  # fmt: skip
    rows = []
    for name, r, data in (("BPE 4096", bpe, "modern"), ("characters", char, "char")):
        v = r["final_val"]
        rows.append([name, f(v["loss"]), f(v["perplexity"], 1), f(v["bpb"]), f(v["bytes"] / v["tokens"], 2)])
        out[f"cmp_{data}_loss"], out[f"cmp_{data}_bpb"] = f(v["loss"]), f(v["bpb"])
        out[f"cmp_{data}_ppl"] = f(v["perplexity"], 1)
    b, c = bpe["final_val"], char["final_val"]
    out["cmp_loss_ratio"] = f(b["loss"] / c["loss"], 1)
    if abs(b["bpb"] - c["bpb"]) < 0.02:
        out["cmp_verdict"] = f"the two are about even: {f(b['bpb'])} (BPE) vs {f(c['bpb'])} (characters)"
    else:
        better, worse = ("BPE", "character") if b["bpb"] < c["bpb"] else ("character", "BPE")
        low, high = sorted((b["bpb"], c["bpb"]))
        out["cmp_verdict"] = (
            f"the {better} model is the better one: {f(low)} against the {worse} model's {f(high)} bits "
            "per byte, the comparison that counts"
        )
    out["cmp_table"] = table(
        ["tokenizer", "val loss (nats/token)", "perplexity", "val bpb", "bytes/token"], rows
    )
    out["cmp_bpb_check"] = f(bits_per_byte(bpe["final_val"]["loss"] * bpe["final_val"]["tokens"],
                                           bpe["final_val"]["bytes"]))  # fmt: skip
    figures.char_vs_bpe({"BPE 4096": bpe["metrics"], "characters": char["metrics"]}, IMG / "char_vs_bpe.png")

    # A grid sweep over width and learning rate, through the sweep module (Optuna's grid sampler).
    sweep_dir = runs_dir / "sweep"
    spec = parse_sweep(
        {
            "data": str(cache / "data" / "modern"),
            "method": "grid",
            "n_trials": len(SWEEP_WIDTHS) * len(SWEEP_LRS),
            "prune": False,
            "budget": {"steps": SWEEP_STEPS},
            "base": {**SMALL, "train.eval_every": SWEEP_STEPS, "train.threads": threads},
            "space": {"model.n_embd": {"choices": SWEEP_WIDTHS}, "optim.lr": {"choices": SWEEP_LRS}},
        }
    )
    if (sweep_dir / "sweep.json").is_file() and json.loads(
        (sweep_dir / "sweep.json").read_text()
    ) != json.loads(spec.to_json()):
        shutil.rmtree(sweep_dir)
    say(f"sweep: {spec.n_trials} trials of {SWEEP_STEPS} steps -> {sweep_dir}")
    run_sweep(spec, sweep_dir, resume=True)  # its per-trial lines arrive through _say_lmforge()
    import csv

    with open(sweep_dir / "results.csv", encoding="utf-8") as handle:
        results = [r for r in csv.DictReader(handle) if r["state"] == "complete"]
    points = {(int(r["model.n_embd"]), float(r["optim.lr"])): float(r["val_bpb"]) for r in results}
    params = {}
    for width in SWEEP_WIDTHS:
        run_dir = next(Path(r["run_dir"]) for r in results if int(r["model.n_embd"]) == width)
        params[width] = runs.load_run(run_dir).model.num_params()
    rows = [[w, n(params[w])] + [f(points[(w, lr)]) for lr in SWEEP_LRS] for w in SWEEP_WIDTHS]
    out["sweep_table"] = table(["width", "parameters"] + [f"lr {lr:g}" for lr in SWEEP_LRS], rows)
    best = min(points, key=points.get)
    out["sweep_best_width"], out["sweep_best_lr"], out["sweep_best_bpb"] = (
        best[0],
        f"{best[1]:g}",
        f(points[best]),
    )
    out["sweep_trials"], out["sweep_steps"] = len(points), SWEEP_STEPS
    best_lr = {w: min(SWEEP_LRS, key=lambda lr, w=w: points[(w, lr)]) for w in SWEEP_WIDTHS}
    lr_spread = max(max(points[(w, lr)] for lr in SWEEP_LRS) - points[(w, best_lr[w])] for w in SWEEP_WIDTHS)
    at_best = [points[(w, best_lr[w])] for w in SWEEP_WIDTHS]
    out["sweep_verdict"] = (
        "The best learning rate was "
        + ", ".join(f"{best_lr[w]:g} at width {w}" for w in SWEEP_WIDTHS)
        + f". Changing only the learning rate moved validation bpb by up to {f(lr_spread, 2)}; changing "
        f"only the width (each at its best rate) by {f(max(at_best) - min(at_best), 2)}."
    )
    figures.sweep(points, SWEEP_WIDTHS, SWEEP_LRS, params, IMG / "sweep.png")

    # Two data mixes over the two editions; validation bpb of each source separately.
    both = cache / "data" / "both"
    mix_rows, mixes = [], {}
    for i, (label, weights) in enumerate(MIXES.items()):
        over = {**SMALL, **OPTIMIZERS["adamw"], "train.max_steps": SMALL_STEPS}
        over.update({f"data.weights.{k}": v for k, v in weights.items()})
        train_run(runs_dir / f"mix-{i}", both, None, over, threads)
        per = per_source_bpb(runs.load_run(runs_dir / f"mix-{i}"), both, 32768)
        mixes[label] = {name: m["bpb"] for name, m in per.items()}
        w = " : ".join(f"{weights[k]:g}" for k in ("shakespeare", "shakespeare_folio"))
        mix_rows.append([label, w, f(per["shakespeare"]["bpb"]), f(per["shakespeare_folio"]["bpb"])])
        out[f"mix{i}_modern"], out[f"mix{i}_folio"] = (
            f(per["shakespeare"]["bpb"]),
            f(per["shakespeare_folio"]["bpb"]),
        )
    (m0, f0), (m1, f1) = ((mixes[k]["shakespeare"], mixes[k]["shakespeare_folio"]) for k in MIXES)
    out["mix_verdict"] = (
        f"Giving the Folio half of the batches moved its validation bpb from {f(f0)} to {f(f1)} "
        f"({'better' if f1 < f0 else 'worse'}), and modern text's from {f(m0)} to {f(m1)} "
        f"({'better' if m1 < m0 else 'worse'}): "
        + ("the Folio gained much more than modern text lost."
           if (f0 - f1) > (m1 - m0) else "modern text paid for what the Folio gained.")
    )  # fmt: skip
    out["mix_table"] = table(["mix", "weights modern : folio", "val bpb, modern", "val bpb, folio"], mix_rows)
    figures.data_mix(mixes, IMG / "data_mix.png")
    both_rep = json.loads((both / "guide-reports.json").read_text(encoding="utf-8"))
    per_src = both_rep["encode"]["per_source"]["train"]
    out["both_modern_tokens"], out["both_folio_tokens"] = (
        n(per_src["shakespeare"]),
        n(per_src["shakespeare_folio"]),
    )
    return out


def _auto_threads(record: dict) -> str:
    """How --auto settled the threads: timed on a mid-sized shape, or not timed on an idle machine."""
    if record.get("threads_idle"):
        idle = record["threads_idle"]
        return (f"{idle['train.threads']}, all cores, not timed: the machine was idle (other work kept "
                f"{idle['busy_cpus']:.2f} CPUs busy)")  # fmt: skip
    timed = "; ".join(
        f"{_threads(p).rstrip(', ') or 'default threads'}: {n(p['tokens_per_second'])} tok/s"
        for p in record["fast_paths"]
    )
    return f"timed on a mid-sized shape, {timed}" if timed else "one core"


def _threads(settings: dict) -> str:
    count = settings.get("train.threads")
    return "" if count is None else f"{count} thread{'s' if count != 1 else ''}, "


def step_adjust(cache: Path, figures) -> dict:
    """`lmforge train --auto` on the main data: the measured speeds, the predictions and the choice."""
    from lmforge import runs
    from lmforge.cli import main as cli
    from lmforge.data.builtin import default_cache_dir
    from lmforge.eval.auto_report import timed_twice
    from lmforge.tune import auto_rule

    data, run = cache / "data" / "modern", cache / "runs" / "auto"
    prepare_data(data, ["shakespeare"], "bpe", default_cache_dir(os.environ))  # cached: the data step's
    key = {  # the ladder too: a refit changes the predictions and so perhaps the choice
        "budget": AUTO_BUDGET,
        "manifest": runs.sha256_file(data / "shards" / "manifest.json"),
        "ladder": runs.sha256_file(auto_rule.ladder_path()),
    }
    if not _key_matches(run, key):
        say(f"train --auto --time-budget {AUTO_BUDGET} -> {run}")
        shutil.rmtree(run, ignore_errors=True)
        argv = ["train", "--data", str(data), "--out", str(run), "--auto", "--no-progress", "--json"]
        if cli([*argv, "--time-budget", str(AUTO_BUDGET)]) != 0:
            raise SystemExit("error: the --auto run failed")
        _mark(run, key)
    record = runs.read_run_info(run)["auto"]
    metrics = runs.read_metrics(run)
    reached = [m["val/loss"] for m in metrics if "val/loss" in m][-1]
    rows = [
        [c["name"] + (" **(chosen)**" if c["chosen"] else "") + timed_twice(c),
         n(c["n_params"]), n(c["tokens_per_second"]),
         _precision(c), n(c["tokens"]), f(c["predicted_loss"])]
        for c in record["candidates"]
    ]  # fmt: skip
    chosen = record["chosen"]
    figures.auto_choice(record, metrics, record["unique_tokens"], IMG / "auto_choice.png")
    return {
        "auto_budget": AUTO_BUDGET,
        "auto_probe_seconds": f(record["probe_seconds"], 1),
        "auto_table": table(
            [
                "candidate",
                "N",
                "tokens/s",
                "precision (tokens/s of each)",
                "tokens in the budget",
                "predicted loss",
            ],
            rows,
        ),
        "auto_paths": _auto_threads(record),
        "auto_not_timed": "; ".join(
            f"{c['name']} (at most {n(c['tokens_per_second_bound'])} tok/s, "
            f"predicted {f(c['best_case_loss'])} at best)"
            for c in record.get("not_timed", [])
        )
        or "none (each could have won)",
        "auto_choice": chosen["name"],
        "auto_lr": f"{chosen['optim.lr']:g}",
        "auto_path": f"{_threads(chosen)}{chosen.get('train.dtype', '')}, "
        f"{chosen.get('model.attn_impl', 'auto')} attention",
        "auto_repeat_half_life": f"{record['fit']['repeat_half_life']:g}",
        "auto_unique_tokens": n(record["unique_tokens"]),
        "auto_predicted": f(record["predicted_loss"]),
        "auto_reached": f(reached),
    }


def _precision(candidate: dict) -> str:
    """The dtype a candidate would train in, and its tokens/s in each precision timed."""
    timed = candidate.get("tokens_per_second_by_dtype") or {}
    dtype = candidate.get("dtype") or "-"
    if candidate.get("dtype_from"):
        return f"{dtype} (as at {candidate['dtype_from']})"
    if len(timed) < 2:
        return dtype
    return f"{dtype} ({', '.join(f'{d} {n(v)}' for d, v in timed.items())})"


# --- 5. using the model --------------------------------------------------------------------------
def step_using(cache: Path) -> dict:
    from lmforge import runs
    from lmforge.eval.metrics import cross_entropy, softmax
    from lmforge.generate.engine import encode_prompt, generate_text

    out: dict = {}
    run = runs.load_run(cache / "runs" / "main")
    tok, model = run.tokenizer, run.model
    blocks = []
    for label, sampling in GEN_SETTINGS:
        text = "".join(generate_text(model, tok, PROMPT, GEN_TOKENS, seed=1, **sampling))
        blocks.append(f"**{label}**\n\n" + code_block(PROMPT + text))
    out["gen_samples"] = "\n\n".join(blocks)
    out["gen_prompt"], out["gen_tokens"] = visible(PROMPT), GEN_TOKENS
    from lmforge.cli.finetune import TASKS

    out["finetune_tasks"] = ", ".join(f"`{task}`" for task in TASKS)

    # The real cross-entropy example: the trained model's next-token distribution after CE_PROMPT.
    import torch

    ids = encode_prompt(tok, CE_PROMPT)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].tolist()
    probs = softmax(logits)
    target = tok.encode(" be")[0]
    top = sorted(range(len(probs)), key=lambda i: -probs[i])[:5]
    rows = [[shown_token(tok, i), f(logits[i], 2), f(probs[i], 4), f(-math.log(probs[i]))] for i in top]
    out["ce_table"] = table(["next token", "logit", "probability", "loss if it were the answer"], rows)
    out["ce_prompt"] = CE_PROMPT
    out["ce_target_p"] = f(probs[target], 4)
    out["ce_target_loss"] = f(cross_entropy(probs, target))
    out["ce_target_rank"] = sorted(range(len(probs)), key=lambda i: -probs[i]).index(target) + 1
    return out


# --- rendering -----------------------------------------------------------------------------------
PLACEHOLDER = re.compile(r"\{\{\s*([\w.:]+)\s*\}\}")


def function_link(dotted: str) -> str:
    """`lmforge.eval.metrics.perplexity` -> a Markdown link to its file, named by the function."""
    import importlib
    import inspect

    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable prefix is the module
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError:
            continue
    attr = ".".join(parts[cut:])
    for part in parts[cut:]:
        obj = getattr(obj, part)  # AttributeError: the function named in a template is gone
    path = Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve()  # unwrap: past decorators
    if not path.is_relative_to(ROOT / "src"):
        raise ValueError(f"{dotted} is not defined in lmforge's source tree (found in {path})")
    path = path.relative_to(ROOT)
    return f"[`{attr}`](../../{path.as_posix()})"


def render(template: str, values: dict) -> str:
    """Fill `{{name}}` from `values` and `{{fn:module.function}}` with a source link; fail on a gap."""

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key.startswith("fn:"):
            return function_link(key[3:])
        if key not in values:
            raise KeyError(f"template placeholder '{key}' has no value in the results")
        return str(values[key])

    return PLACEHOLDER.sub(fill, template)


def render_all(values: dict) -> list[Path]:
    written = []
    for template in sorted(TEMPLATES.glob("*.md")):
        page = GUIDE / template.name
        header = f"<!-- generated by docs/build.py from docs/guide/templates/{template.name}; edit that -->\n"
        page.write_text(header + render(template.read_text(encoding="utf-8"), values), encoding="utf-8")
        written.append(page)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(ROOT / "build" / "docs"), help="runs and data (build/docs)")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache: redo every run")
    # One thread per run by default: these models are small enough that a second thread gains little,
    # and on a busy machine (another training beside it) a 2-thread run of a small model slows down
    # many times over, as both processes spin waiting for each other's cores.
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads per run (default 1; 0: all cores)"
    )
    parser.add_argument("--render-only", action="store_true", help="re-render pages from results.json")
    parser.add_argument(
        "--step", help="run only this step, keep the other values of results.json, and re-render"
    )
    args = parser.parse_args(argv)
    _say_lmforge()
    if args.render_only:
        pages = render_all(json.loads(RESULTS.read_text(encoding="utf-8")))
        say(f"rendered {len(pages)} pages")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import figures  # docs/figures.py, beside this script

    from lmforge import hardware
    from lmforge.data.builtin import default_cache_dir

    cache = Path(args.cache)
    if args.fresh:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    threads = args.threads or hardware.physical_cores()
    hardware.setup_threads(threads)
    start = time.perf_counter()
    values: dict = json.loads(RESULTS.read_text(encoding="utf-8")) if args.step else {}
    for name, step in (
        ("data", lambda: step_data(cache, default_cache_dir(os.environ))),
        ("model", lambda: step_model(cache, figures)),
        ("training", lambda: step_training(cache, threads, figures)),
        ("evaluation", lambda: step_evaluation(cache, threads, figures)),
        ("adjust", lambda: step_adjust(cache, figures)),
        ("using", lambda: step_using(cache)),
    ):
        if args.step and name != args.step:
            continue
        t0 = time.perf_counter()
        values.update(step())
        say(f"{name}: done in {time.perf_counter() - t0:.0f}s")
    values["threads"] = threads
    RESULTS.write_text(
        json.dumps(values, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    pages = render_all(values)
    for png in sorted(IMG.glob("*.png")):
        if png.stat().st_size > 150_000:
            raise SystemExit(f"error: {png} is {png.stat().st_size:,} bytes; keep figures under 150 KB")
    seconds = time.perf_counter() - start  # not in results.json: a cached rerun would change it
    say(f"wrote {len(pages)} pages, {len(list(IMG.glob('*.png')))} figures in {seconds:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
