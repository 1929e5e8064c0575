"""Hugging Face interop: export -> transformers gives our logits, greedy tokens and token
ids; import (of our exports and of models transformers made itself) -> our model gives theirs; and
every bad input ends in one clear line. Hermetic: tiny runs trained here, no network."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import TINY
from lmforge import runs
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.export.hf_maps import from_gpt2, from_llama, to_gpt2, to_llama
from lmforge.generate.engine import encode_prompt, generate_tokens
from lmforge.models import GPTConfig, build_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests must never reach the network
tf = pytest.importorskip("transformers")

TEXTS = ["To be, or not to be", "the heart-ache and the thousand", "naïve café 🎉 42\n\n  x"]

GPT2 = ["model.style=gpt2", "model.mlp=gelu"]
# (name, tokenizer kind, overrides on top of TINY, the architecture it must export to)
CASES = [
    ("qwen3-char", "char", ["model.qk_norm=true"], "Qwen3ForCausalLM"),
    ("llama-bpe-tied-gqa", "bpe", ["model.tie_embeddings=true", "model.n_kv_head=1"], "LlamaForCausalLM"),
    ("gpt2-char", "char", [*GPT2, "model.tie_embeddings=true"], "GPT2LMHeadModel"),
    ("gpt2-bpe-nobias-untied", "bpe", [*GPT2, "model.bias=false"], "GPT2LMHeadModel"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bpe_data(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "bpe"
    args = ["data", "prepare", "--source", str(tiny_corpus), "--out", str(out), "--tokenizer", "bpe",
            "--vocab-size", "320", "--split", "tail", "--json"]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def trained(char_data, bpe_data, tmp_path_factory):
    """name -> RUN_DIR trained 12 steps (enough to break the symmetry of the init)."""
    root, out = tmp_path_factory.mktemp("runs"), {}
    for name, kind, overrides, _ in CASES:
        data = char_data if kind == "char" else bpe_data
        args = ["train", "--data", str(data), "--out", str(root / name), "--no-progress", "--json",
                *TINY, *overrides, "--max-steps", "12"]  # fmt: skip
        assert main(args) == 0
        out[name] = root / name
    return out


def hf_greedy(hf_model, ids: list[int], n: int, eot: int) -> list[int]:
    config = tf.GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=eot, pad_token_id=eot)
    idx = torch.tensor([ids])
    new = hf_model.generate(idx, attention_mask=torch.ones_like(idx), generation_config=config)[0, len(ids) :]
    new = new.tolist()
    return new[: new.index(eot)] if eot in new else new


def assert_same_model(model, hf_model, tokenizer):
    """Our model and a transformers model: equal logits (1e-4, fp32) and 20 identical greedy tokens."""
    with torch.no_grad():
        for text in TEXTS:
            ids = encode_prompt(tokenizer, text)[:10]
            torch.testing.assert_close(hf_model(torch.tensor([ids])).logits, model(torch.tensor([ids])),
                                       atol=1e-4, rtol=0)  # fmt: skip
            ours = list(generate_tokens(model, ids, 20, temperature=0.0, eot_id=tokenizer.eot_id))
            assert ours == hf_greedy(hf_model, ids, 20, tokenizer.eot_id)
        idx = torch.randint(
            0, tokenizer.vocab_size, (2, model.config.seq_len), generator=torch.Generator().manual_seed(1)
        )
        torch.testing.assert_close(hf_model(idx).logits, model(idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_export_loads_in_transformers_with_equal_logits_tokens_and_ids(case, trained, tmp_path, capsys):
    name, kind, _, architecture = case
    out = tmp_path / "hf"
    assert main(["export", str(trained[name]), "--format", "hf", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == architecture and report["verify"]["max_logit_diff"] <= 1e-4
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= set(os.listdir(out))  # fmt: skip

    run = runs.load_run(trained[name])
    hf_model = tf.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(hf_model).__name__ == architecture
    assert hf_model.config.vocab_size == run.tokenizer.vocab_size  # the exact vocabulary, no padding
    assert hf_model.generation_config.eos_token_id == run.tokenizer.eot_id
    assert_same_model(run.model, hf_model, run.tokenizer)
    hf_tok = tf.AutoTokenizer.from_pretrained(str(out))
    assert len(hf_tok) == run.tokenizer.vocab_size and hf_tok.eos_token_id == run.tokenizer.eot_id
    for text in TEXTS:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == run.tokenizer.encode(text)
        assert hf_tok(text)["input_ids"] == run.tokenizer.encode(text)  # no specials added either
    ids = run.tokenizer.encode(TEXTS[1])
    assert hf_tok.decode(ids) == run.tokenizer.decode(ids) == TEXTS[1]

    # ... and back: the imported run is the same model with the same tokenizer (hash included).
    back = tmp_path / "back"
    assert main(["import", str(out), "--out", str(back), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"] == architecture
    again = runs.load_run(back)
    assert again.tokenizer.hash == run.tokenizer.hash and again.tokenizer.engine == run.tokenizer.engine
    idx = torch.randint(0, run.tokenizer.vocab_size, (2, 24))
    torch.testing.assert_close(again.model(idx), run.model(idx), atol=1e-5, rtol=0)


def test_imported_run_resumes_training_and_generates(trained, char_data, tmp_path, capsys):
    hf, back = tmp_path / "hf", tmp_path / "back"
    assert main(["export", str(trained["qwen3-char"]), "--out", str(hf), "--no-verify"]) == 0
    assert main(["import", str(hf), "--out", str(back), "--max-steps", "3", "--no-verify"]) == 0
    assert [s for s, _ in runs.list_checkpoints(back)] == [0]
    resume = ["train", "--data", str(char_data), "--out", str(back), "--resume", "--allow-data-change",
              "--no-progress", "--json"]  # fmt: skip
    assert main(resume) == 0
    assert runs.list_checkpoints(back)[0][0] == 3
    capsys.readouterr()
    assert main(["generate", str(back), "--prompt", "To be", "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("To be")


# --- models made by transformers itself ------------------------------------------------------


def save_hf_model(folder, model):
    """A tiny transformers model with a GPT-2-style byte-level BPE tokenizer, as save_pretrained writes it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=model.config.vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 20, trainer)
    assert tok.get_vocab_size() <= model.config.vocab_size
    with torch.no_grad():
        for p in model.parameters():  # move norms and biases off 1 / 0 so a wrong map would show
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    if tok.get_vocab_size() < model.config.vocab_size:  # pad the tokenizer up to the model's vocabulary
        fast.add_tokens([f"<|extra_{i}|>" for i in range(model.config.vocab_size - tok.get_vocab_size())],
                        special_tokens=True)  # fmt: skip
    fast.save_pretrained(folder)
    return model.eval()


HF_MODELS = {
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=300, n_positions=48, n_embd=32, n_layer=2, n_head=4, eos_token_id=0, bos_token_id=0,
        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)),
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=48, eos_token_id=0, bos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
    "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=48, tie_word_embeddings=True,
        eos_token_id=0, bos_token_id=0)),
}  # fmt: skip


@pytest.mark.parametrize("arch", list(HF_MODELS))
def test_import_of_a_model_saved_by_transformers(arch, tmp_path):
    torch.manual_seed(0)
    hf_model = save_hf_model(tmp_path / "hf", HF_MODELS[arch]())
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    run = runs.load_run(tmp_path / "run")
    assert run.tokenizer.kind == "bpe" and run.tokenizer.eot_id == 0
    hf_tok = tf.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in TEXTS:
        assert run.tokenizer.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert_same_model(run.model, hf_model, run.tokenizer)


def test_key_maps_are_inverses():
    for cfg in (
        GPTConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, qk_norm=True),
        GPTConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=2, n_embd=32, style="gpt2", mlp="gelu"),
    ):
        sd = build_model(cfg).state_dict()
        there, back = (to_gpt2, from_gpt2) if cfg.style == "gpt2" else (to_llama, from_llama)
        again = back(there(sd, cfg), cfg)
        assert sd.keys() == again.keys() and all(torch.equal(sd[k], again[k]) for k in sd)


# --- bad input -------------------------------------------------------------------------------


def run_with_model(trained, tmp_path, **model) -> str:
    """A copy of a trained run whose config.json says something else about the model."""
    run = tmp_path / "run"
    shutil.copytree(trained["qwen3-char"], run)
    config = json.loads((run / "config.json").read_text())
    config["model"] = model if model.get("family") == "gru" else config["model"] | model
    (run / "config.json").write_text(json.dumps(config))
    return str(run)


@pytest.mark.parametrize(
    "model, named",
    [
        ({"mlp": "relu2"}, "model.mlp 'relu2'"),
        ({"logit_softcap": 15.0}, "model.logit_softcap"),
        ({"family": "gru", "vocab_size": 36, "seq_len": 32}, "family 'gru'"),
    ],
)
def test_export_refuses_what_no_standard_architecture_represents(model, named, trained, tmp_path, capsys):
    code = main(["export", run_with_model(trained, tmp_path, **model), "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_export_without_tokenizer_or_into_a_full_folder(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained["gpt2-char"], run)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert main(["export", str(run), "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and (full / "x").read_text() == "keep me"
    shutil.rmtree(run / "tokenizer")
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 2
    assert "no tokenizer" in capsys.readouterr().err and not (tmp_path / "hf").exists()


def test_import_refuses_unsupported_folders(trained, tmp_path, capsys):
    def refused(folder, *words):
        assert main(["import", str(folder), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
        assert err.count("\n") == 1 and not (tmp_path / "run").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "not a Hugging Face model folder")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    )
    refused(bert, "BertForMaskedLM", "cannot import")

    hf = tmp_path / "hf"
    assert main(["export", str(trained["gpt2-char"]), "--out", str(hf), "--no-verify"]) == 0
    erf = tmp_path / "erf"
    shutil.copytree(hf, erf)
    config = json.loads((erf / "config.json").read_text())
    (erf / "config.json").write_text(json.dumps(config | {"activation_function": "gelu"}))
    refused(erf, "activation_function='gelu'")
    (hf / "tokenizer.json").unlink()
    refused(hf, "no tokenizer.json")
    (hf / "model.safetensors").unlink()
    refused(hf, "no model.safetensors")


def test_verification_catches_a_wrong_model(trained, tmp_path):
    """The check export and import end with fails loudly on a model that is not the same."""
    from lmforge.export.verify import check_models

    hf = tmp_path / "hf"
    assert main(["export", str(trained["llama-bpe-tied-gqa"]), "--out", str(hf), "--no-verify"]) == 0
    run = runs.load_run(trained["llama-bpe-tied-gqa"])
    hf_model = tf.AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    with torch.no_grad():
        hf_model.model.norm.weight.mul_(1.01)
    with pytest.raises(UserError, match="logits differ"):
        check_models(run.model, hf_model, run.tokenizer)
