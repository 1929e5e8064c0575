"""Hugging Face backbones made locally (no network): a tiny GPT-2 and a tiny BERT, each fine-tuned."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.finetune.predict import load_task_run
from lmforge.finetune.recipes import recipe

transformers = pytest.importorskip("transformers")

TEXTS = ["to be or not to be", "sleep perchance to dream", "the rest is silence", "o that this flesh"]


def rows(n=40):
    return [{"text": f"{TEXTS[i % 4]} {'sleep' if i % 2 else 'die'}", "label": str(i % 2)} for i in range(n)]


def write(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def make_gpt2(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS * 4, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def make_bert(folder, vocab_rows=None):
    words = sorted({w for t in TEXTS for w in t.split()} | {"sleep", "die"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tok = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    config = transformers.BertConfig(
        vocab_size=vocab_rows or len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


FAST = ["--no-progress", "--max-steps", "4", "train.eval_every=2", "train.batch_size=8", "train.threads=1"]


def val_of(path):
    """--val FILE: the tiny sets repeat their rows, so a hash split could leave no validation rows."""
    return ["--val", str(path)]


def test_tiny_gpt2_classify_with_lora_and_translate(tmp_path, capsys):
    gpt2 = make_gpt2(tmp_path / "gpt2")
    train = write(tmp_path / "cls.jsonl", rows())
    out = tmp_path / "cls"
    args = ["finetune", str(gpt2), "--task", "classify", "--train", str(train), "--out", str(out)]
    assert main([*args, *FAST, *val_of(train), "--lora-rank", "2"]) == 0
    run = load_task_run(out)  # adapters merged on load (GPT-2's Conv1D layers)
    causal = recipe("classify", "lora").pooling  # a causal model pools as the recipe says; an encoder, first
    assert run.info["backbone"]["kind"] == "hf" and run.model.config.pooling == causal
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(train), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    pairs = write(tmp_path / "tr.jsonl", [{"source": t, "target": t.upper()} for t in TEXTS * 5])
    few = write(tmp_path / "few.jsonl", [{"source": TEXTS[0], "target": TEXTS[1]}])
    out = tmp_path / "tr"
    args = ["finetune", str(gpt2), "--task", "translate", "--train", str(pairs), "--out", str(out)]
    assert main([*args, *FAST, *val_of(few), "--seq-len", "24"]) == 0
    assert main(["eval", str(out), "--data", str(few), "--beam", "1", "--json"]) == 0
    assert {"bleu", "chrf"} <= set(json.loads(capsys.readouterr().out.splitlines()[-1]))


def test_lora_merge_on_conv1d_matches_the_adapter_model(tmp_path):
    from lmforge.models.lora import LoRALinear, add_lora, merge_lora

    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2Model(config).eval()
    add_lora(model, 2, 4.0, exclude=("wte",))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0, 0.1)
    idx = torch.randint(0, 50, (2, 16))
    before = model(input_ids=idx).last_hidden_state
    assert merge_lora(model) > 0
    torch.testing.assert_close(model(input_ids=idx).last_hidden_state, before, rtol=1e-5, atol=1e-5)


def test_tiny_bert_pools_cls_and_tags_entities(tmp_path, capsys):
    bert = make_bert(tmp_path / "bert")
    train = write(tmp_path / "cls.jsonl", rows())
    out = tmp_path / "cls"
    args = ["finetune", str(bert), "--task", "classify", "--train", str(train), "--out", str(out)]
    assert main([*args, *FAST, *val_of(train)]) == 0
    assert load_task_run(out).model.config.pooling == "first"
    ner = [{"tokens": t.split(), "tags": ["B-PER"] + ["O"] * (len(t.split()) - 1)} for t in TEXTS * 5]
    data = write(tmp_path / "ner.jsonl", ner)
    out = tmp_path / "ner"
    assert (
        main(
            [
                "finetune",
                str(bert),
                "--task",
                "ner",
                "--train",
                str(data),
                "--out",
                str(out),
                *FAST,
                *val_of(data),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(data), "--json"]) == 0
    assert {"precision", "recall", "f1"} <= set(json.loads(capsys.readouterr().out))
    pairs = write(tmp_path / "tr.jsonl", [{"source": t, "target": t} for t in TEXTS])
    with pytest.raises(UserError, match="encoder"):
        from lmforge.finetune.tasks import finetune_task

        finetune_task(bert, "translate", str(pairs), tmp_path / "t", val_spec=str(pairs))


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, capsys):
    bert = make_bert(tmp_path / "bert", vocab_rows=6)  # the tokenizer has more ids than 6 rows
    train = write(tmp_path / "cls.jsonl", rows())
    capsys.readouterr()
    assert (
        main(
            [
                "finetune",
                str(bert),
                "--task",
                "classify",
                "--train",
                str(train),
                "--out",
                str(tmp_path / "o"),
                *val_of(train),
            ]
        )
        == 2
    )
    assert "tokenizer/backbone mismatch" in capsys.readouterr().err
