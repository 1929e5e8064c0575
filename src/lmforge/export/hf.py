"""`lmforge export --format hf` and `lmforge import`: a run <-> a Hugging Face model folder.

Export writes what ``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained
(DIR)`` load with no custom code: config.json, model.safetensors (the exact vocabulary, see
``hf_maps``), generation_config.json (eos = bos = pad = our end-of-text token, greedy by default),
tokenizer.json (our file, byte for byte) and tokenizer_config.json (a plain PreTrainedTokenizerFast).
A char tokenizer is already a `tokenizers` WordLevel model over single characters with a
split-every-character pre-tokenizer, so ids agree with lmforge's without conversion.

Import reads such a folder -- or a GPT-2 / Llama / Qwen3 model saved by transformers'
``save_pretrained`` with a byte-level BPE tokenizer -- into a new run folder (config.json, run.json,
tokenizer/, ckpt/step_000000 with a fresh optimizer state), from which ``lmforge train --resume`` or
fine-tuning continues. Weights are read from safetensors only: nothing is unpickled.

Both directions build the result in a temporary sibling folder, verify it (``verify.py``) and only
then rename it into place, so a failed or interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.errors import UserError
from lmforge.export.hf_maps import (
    CONFIG_CLASSES,
    architecture_for,
    from_gpt2,
    from_llama,
    gpt2_biases_are_zero,
    gpt_config_from_hf,
    hf_config_fields,
    to_gpt2,
    to_llama,
)
from lmforge.io import write_error

DEFAULT_MAX_STEPS = 1000  # train.max_steps written into an imported run (what --resume continues to)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(
            "Hugging Face export/import needs transformers; install the extra: pip install 'lmforge[hf]'"
        ) from None
    return transformers


def _fresh_folder(out_dir: Path, flag: str) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{flag} '{out_dir}' already exists and is not empty; choose a new folder")


# --- export ----------------------------------------------------------------------------------


def export_hf(
    run_dir: str | Path, out_dir: str | Path, verify: bool = True, step: int | str | None = None
) -> dict:
    """Write RUN_DIR's newest good checkpoint (or ``step``: a number or "best") as a Hugging Face folder
    ``out_dir``.

    Returns a report (architecture, paths, and the verification figures when ``verify``).
    """
    from lmforge.data.files import atomic_dir
    from lmforge.runs import load_run, read_run_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    architecture = architecture_for(read_run_config(run_dir).model)  # refuse before loading anything
    if not (run_dir / "tokenizer" / "tokenizer.json").is_file():
        raise UserError(
            f"run '{run_dir}' has no tokenizer/ folder; copy the data folder's tokenizer/ into it "
            "(the one it was trained with) and export again"
        )
    _fresh_folder(out_dir, "--out")
    tf = _transformers()
    run = load_run(run_dir, step=step)
    cfg, tok = run.config.model, run.tokenizer
    state = {k: v.float() for k, v in run.model.state_dict().items()}
    tensors = to_gpt2(state, cfg) if architecture == "GPT2LMHeadModel" else to_llama(state, cfg)
    report = {"architecture": architecture, "out": str(out_dir), "checkpoint": run.checkpoint.name}
    with atomic_dir(out_dir) as tmp:
        hf_config = getattr(tf, CONFIG_CLASSES[architecture])(
            **hf_config_fields(cfg, architecture, tok.eot_id)
        )
        hf_config.architectures = [architecture]
        hf_config.save_pretrained(tmp)
        tf.GenerationConfig(
            bos_token_id=tok.eot_id, eos_token_id=tok.eot_id, pad_token_id=tok.eot_id, do_sample=False
        ).save_pretrained(tmp)
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        try:
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        except SafetensorError as exc:  # safetensors reports a full disk as its own error
            raise write_error(out_dir / "model.safetensors", exc) from None
        _write_tokenizer_files(run_dir / "tokenizer", tok, cfg.seq_len, tmp)
        if verify:
            report["verify"] = _verify(run.model, tok, tmp)
    return report


def _write_tokenizer_files(tok_dir: Path, tok, seq_len: int, out: Path) -> None:
    """tokenizer.json as trained (byte for byte) and the tokenizer_config.json AutoTokenizer reads."""
    from lmforge.data.tokenizer import UNK

    (out / "tokenizer.json").write_text(
        (tok_dir / "tokenizer.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    eot = next(name for name, i in tok.special_tokens.items() if i == tok.eot_id)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot,
        "eos_token": eot,
        "pad_token": eot,
        "model_max_length": seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if tok.kind == "char" and UNK in tok.special_tokens:  # byte-fallback char tokenizers have none
        config["unk_token"] = UNK
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _verify(model, tokenizer, hf_dir: Path) -> dict:
    """Load ``hf_dir`` with transformers as any user would, and compare it with ``model``."""
    from lmforge.export.verify import check_models, check_tokenizer

    tf = _transformers()
    report = check_models(model, _load_causal_lm(hf_dir), tokenizer)
    report["tokenizer_texts_compared"] = check_tokenizer(
        tokenizer, tf.AutoTokenizer.from_pretrained(str(hf_dir))
    )
    return report


def _load_causal_lm(hf_dir: Path):
    """AutoModelForCausalLM in fp32, no custom code; every tensor must load (none missing or extra)."""
    tf = _transformers()
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    try:
        hf_model, info = tf.AutoModelForCausalLM.from_pretrained(
            str(hf_dir), dtype=torch.float32, output_loading_info=True
        )
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    keys = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {k: sorted(info[k])[:3] for k in keys if info.get(k)}
    if problems:
        raise UserError(f"transformers did not load every tensor of '{hf_dir}' exactly: {problems}")
    return hf_model.eval()


# --- import ----------------------------------------------------------------------------------


def import_hf(
    hf_dir: str | Path,
    out_run_dir: str | Path,
    verify: bool = True,
    seq_len: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> dict:
    """Read a Hugging Face folder into a new lmforge run folder ``out_run_dir``; returns a report.

    ``seq_len`` caps the context (default: the model's own); ``max_steps`` is the step budget written
    into the run, which ``lmforge train --resume`` continues to.
    """
    from lmforge.config import OptimConfig, RunConfig, TrainConfig
    from lmforge.data.files import atomic_dir
    from lmforge.models.registry import build_model
    from lmforge.runs import save_checkpoint, tokenizer_files_hash, write_json_atomic
    from lmforge.train.optim import build_optimizers

    hf_dir, out_dir = Path(hf_dir), Path(out_run_dir)
    if not (hf_dir / "config.json").is_file():
        raise UserError(f"'{hf_dir}' is not a Hugging Face model folder (no config.json)")
    architecture = _architecture_of(hf_dir)
    _fresh_folder(out_dir, "--out")
    tf = _transformers()
    hf_config = tf.AutoConfig.from_pretrained(str(hf_dir))
    cfg = gpt_config_from_hf(hf_config, architecture, seq_len)
    hf_tensors = _read_weights(hf_dir)
    if architecture == "GPT2LMHeadModel":
        cfg.bias = not gpt2_biases_are_zero(hf_tensors)
        state = from_gpt2(hf_tensors, cfg)
    else:
        state = from_llama(hf_tensors, cfg)
    model = build_model(cfg, init=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # a bug in the maps, not a user's mistake
        raise RuntimeError(f"import map incomplete: missing {missing}, unexpected {unexpected}")
    model.eval()
    config = RunConfig(model=cfg, train=TrainConfig(max_steps=max_steps))
    report = {"architecture": architecture, "out": str(out_dir), "vocab_size": cfg.vocab_size}
    with atomic_dir(out_dir) as tmp:
        tokenizer = _import_tokenizer(hf_dir, hf_config, tmp / "tokenizer")
        if tokenizer.vocab_size != cfg.vocab_size:
            raise UserError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model {cfg.vocab_size}; "
                "lmforge needs them equal (an exact vocabulary)"
            )
        write_json_atomic(tmp / "config.json", config.to_dict())
        info = {
            "imported_from": str(hf_dir.resolve()),
            "architecture": architecture,
            "data_dir": None,
            "tokenizer_hash": tokenizer.hash,
            "tokenizer_files_hash": tokenizer_files_hash(tmp / "tokenizer"),
            "manifest_hash": None,
            "torch_version": torch.__version__,
        }
        write_json_atomic(tmp / "run.json", info)
        meta = {"tokens": 0, "wall_seconds": 0.0, "max_steps": max_steps, "skipped_steps": 0}
        meta |= {
            "tokenizer_hash": tokenizer.hash,
            "manifest_hash": None,
            "val": {},
            "imported_from": info["imported_from"],
        }
        optimizers = build_optimizers(OptimConfig(), model)
        save_checkpoint(tmp, 0, model, optimizers, meta)
        if verify:
            from lmforge.export.verify import check_models, check_tokenizer

            report["verify"] = check_models(model, _load_causal_lm(hf_dir), tokenizer)
            if (hf_dir / "tokenizer_config.json").is_file():
                hf_tok = tf.AutoTokenizer.from_pretrained(str(hf_dir))
                report["verify"]["tokenizer_texts_compared"] = check_tokenizer(tokenizer, hf_tok)
    return report


def _architecture_of(hf_dir: Path) -> str:
    try:
        raw = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"'{hf_dir / 'config.json'}' is not valid JSON: {exc}") from None
    names = raw.get("architectures") or [raw.get("model_type", "?")]
    supported = [n for n in names if n in CONFIG_CLASSES]
    if not supported:
        raise UserError(
            f"'{hf_dir}' holds a {', '.join(map(str, names))}, which lmforge cannot import; "
            f"supported: {', '.join(CONFIG_CLASSES)}"
        )
    return supported[0]


def _read_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or its shards, by the index file), as float32."""
    from safetensors.torch import load_file

    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (hf_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise UserError(
            f"'{hf_dir}' has no model.safetensors; lmforge reads safetensors only (never pickles): "
            "re-save the model with save_pretrained(..., safe_serialization=True)"
        )
    tensors = {}
    for name in files:
        tensors |= {k: v.float() for k, v in load_file(str(hf_dir / name)).items()}
    return tensors


def _import_tokenizer(hf_dir: Path, hf_config, out: Path):
    """The folder's tokenizer.json saved as an lmforge tokenizer (kind bpe or char) in ``out``.

    Byte-level BPE (GPT-2 style, or ours) and lmforge's char tokenizer (WordLevel over single
    characters) are what lmforge's Tokenizer can decode to bytes; anything else is refused.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers

    from lmforge.data.tokenizer import UNK, bpe_pre_tokenizer, char_pre_tokenizer, save_tokenizer

    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(
            f"'{hf_dir}' has no tokenizer.json; save the (fast) tokenizer into it with "
            "tokenizer.save_pretrained(folder) and import again"
        )
    content = path.read_text(encoding="utf-8")
    data = json.loads(content)
    hf = HFTokenizer.from_str(content)
    vocab = hf.get_vocab()
    kind = data.get("model", {}).get("type")
    pre_tokenizer = data.get("pre_tokenizer")
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    eot_id = _eos_id(hf_dir, hf_config, hf)
    eot = hf.id_to_token(eot_id)
    if kind == "WordLevel" and pre_tokenizer == _pre_tokenizer_json(char_pre_tokenizer()):
        specials |= {t: i for t, i in vocab.items() if len(t) != 1}  # the rest are single characters
        if UNK not in specials:
            raise UserError(f"the char tokenizer in '{hf_dir}' has no {UNK} token; lmforge needs one")
        return save_tokenizer(hf, "char", specials | {eot: eot_id}, out, eot=eot, content=content)
    byte_level = '"ByteLevel"' in json.dumps(pre_tokenizer)
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    if kind != "BPE" or not byte_level or any(set(t) - alphabet for t in vocab if t not in specials):
        raise UserError(
            f"the tokenizer in '{hf_dir}' ({kind or 'unknown'} model) is neither byte-level BPE nor "
            "lmforge's char tokenizer; lmforge cannot represent it"
        )
    # tiktoken is only tried on our own pre-tokenisation (ids = merge ranks, as our trainer makes them).
    ours = pre_tokenizer == _pre_tokenizer_json(bpe_pre_tokenizer())
    specials |= {eot: eot_id}
    return save_tokenizer(hf, "bpe", specials, out, eot=eot, content=content, try_tiktoken=ours)


def _pre_tokenizer_json(pre_tokenizer) -> dict:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    hf = HFTokenizer(models.WordLevel({"x": 0}, unk_token="x"))
    hf.pre_tokenizer = pre_tokenizer
    return json.loads(hf.to_str())["pre_tokenizer"]


def _eos_id(hf_dir: Path, hf_config, hf) -> int:
    """The end-of-text id: generation_config.json, else config.json, else tokenizer_config.json."""
    candidates = []
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        candidates.append(json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id"))
    candidates.append(getattr(hf_config, "eos_token_id", None))
    tok_config = hf_dir / "tokenizer_config.json"
    if tok_config.is_file():
        eos = json.loads(tok_config.read_text(encoding="utf-8")).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        candidates.append(hf.token_to_id(eos) if eos else None)
    for value in candidates:
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and 0 <= value < hf.get_vocab_size():
            return value
    raise UserError(f"'{hf_dir}' names no end-of-text token (eos_token_id); lmforge needs one")
