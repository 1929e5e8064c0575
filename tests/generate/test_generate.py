"""Generation: sampling maths with numbers, cached = uncached decoding, text streaming, the CLI."""

import argparse
import json
import sys
import types

import pytest
import torch

from lmforge.errors import UserError
from lmforge.generate import TextStreamer, generate_text, generate_tokens, sample_next
from lmforge.generate.sampling import apply_repetition_penalty, top_k_filter, top_p_filter
from lmforge.models import GPTConfig, GRUConfig, build_model

torch.set_num_threads(1)
INF = float("inf")


class ByteTokenizer:
    """ids 0..255 are bytes, 256 is eot: enough of the spec's Tokenizer for streaming tests."""

    kind, vocab_size, eot_id = "byte", 257, 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids):
        return bytes(i for i in ids if i < 256)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


# ---- sampling maths ------------------------------------------------------------------------------


def test_top_k_keeps_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[-INF, 5.0, -INF, 4.0, -INF]]
    assert torch.equal(top_k_filter(logits, None), logits) and torch.equal(top_k_filter(logits, 9), logits)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.45)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.85)).tolist() == [
        [True, True, True, False]
    ] or torch.isfinite(top_p_filter(logits, 0.85)).tolist() == [
        [False, True, True, True]
    ]  # 0.1 vs 0.1: either tie may go first
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1  # the top token always stays
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_repetition_penalty_always_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]  # positive divided, negative multiplied
    assert logits.tolist() == [[2.0, -2.0, 1.0, 0.5]]  # pure: input untouched


def test_temperature_zero_is_argmax_after_penalty():
    logits = torch.tensor([[1.0, 3.0, 2.9], [0.0, -1.0, 5.0]])
    assert sample_next(logits, 0.0, None, None, None).tolist() == [1, 2]
    prev = torch.tensor([[1], [0]])
    assert sample_next(logits, 0.0, None, None, None, 1.5, prev).tolist() == [2, 2]


def test_sampling_is_seeded_and_follows_probabilities():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1, 1e-9]]))
    draw = lambda seed: [
        int(sample_next(logits, 1.0, None, None, g))
        for g in [torch.Generator().manual_seed(seed)]
        for _ in range(2000)
    ]
    a, b = draw(1), draw(1)
    assert a == b
    counts = torch.bincount(torch.tensor(a), minlength=4) / len(a)
    assert abs(counts[0] - 0.7) < 0.04 and abs(counts[2] - 0.1) < 0.03 and counts[3] == 0
    g = torch.Generator().manual_seed(0)
    assert {int(sample_next(logits, 1.0, 1, None, g)) for _ in range(50)} == {0}  # top-k 1 = greedy
    hot = sample_next(logits.expand(4000, 4), 100.0, None, None, torch.Generator().manual_seed(0))
    assert (hot == 3).float().mean() > 0.15  # high temperature flattens toward uniform


# ---- decoding -------------------------------------------------------------------------------------

V = 40
MODELS = {
    "modern": GPTConfig(vocab_size=V, seq_len=16, n_layer=2, n_head=2, n_embd=32, qk_norm=True),
    "gpt2": GPTConfig(
        vocab_size=V,
        seq_len=16,
        n_layer=2,
        n_head=2,
        n_embd=32,
        style="gpt2",
        mlp="gelu",
        tie_embeddings=True,
    ),
    "gqa-math": GPTConfig(
        vocab_size=V, seq_len=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, attn_impl="math"
    ),
    "gru": GRUConfig(vocab_size=V, seq_len=16, n_layer=2, n_embd=16, hidden=32),
}


def peaky(name):
    """A random model with large weights, so greedy decoding does not collapse to one token."""
    torch.manual_seed(0)
    model = build_model(MODELS[name])
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(5.0)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_cached_equals_uncached(name):
    """Same tokens with and without the cache, past the 16-token window too (slides)."""
    model = peaky(name)
    prompt = [1, 2, 3, 4, 5, 6, 7]  # a multi-token prefill
    greedy = list(generate_tokens(model, prompt, 30, temperature=0))
    assert greedy == list(generate_tokens(model, prompt, 30, temperature=0, use_cache=False))
    assert len(set(greedy)) >= 3
    opts = dict(temperature=1.0, top_k=10, top_p=0.9, repetition_penalty=1.3, seed=7)
    sampled = list(generate_tokens(model, prompt, 30, **opts))
    assert sampled == list(generate_tokens(model, prompt, 30, use_cache=False, **opts))
    assert sampled == list(generate_tokens(model, prompt, 30, **opts))  # seeded: repeatable


def test_cached_logits_match_recompute_step_by_step():
    model = peaky("modern").eval()
    ids = torch.randint(0, V, (1, 12))
    with torch.no_grad():
        cache = model.new_cache(1, 16)
        steps = [model(ids[:, :5], cache=cache)[:, -1]] + [
            model(ids[:, i : i + 1], cache=cache)[:, -1] for i in range(5, 12)
        ]
        full = model(ids)[0, 4:]
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)


def test_eot_stops_and_is_not_yielded():
    model = peaky("modern")
    greedy = list(generate_tokens(model, [1, 2, 3], 10, temperature=0))
    out = list(generate_tokens(model, [1, 2, 3], 10, temperature=0, eot_id=greedy[3]))
    assert out == greedy[: greedy.index(greedy[3])]


def test_prompt_checks_and_mode_restored():
    model = peaky("modern")
    model.train()
    with pytest.raises(UserError, match="context is 16"):
        generate_tokens(model, list(range(17)), 5)  # raised at the call, before any iteration
    with pytest.raises(UserError, match="no tokens"):
        generate_tokens(model, [], 5)
    with pytest.raises(UserError, match="tokenizer"):
        generate_tokens(model, [1, V], 5)
    stream = generate_tokens(model, [1], 5, temperature=0)
    next(stream)
    assert not model.training
    stream.close()
    assert model.training
    assert list(generate_tokens(peaky("gru"), list(range(30)), 3, temperature=0))  # GRU: no window


# ---- text streaming -------------------------------------------------------------------------------


def stream(tokenizer, ids, stop=()):
    s = TextStreamer(tokenizer, stop)
    pieces = [s.put(i) for i in ids] + [s.finish()]
    return pieces, s


def test_streamer_waits_for_whole_characters():
    tok = ByteTokenizer()
    ids = tok.encode("é€!")  # 2 + 3 + 1 bytes
    pieces, s = stream(tok, ids)
    assert pieces == ["", "é", "", "", "€", "!", ""]
    assert s.text == "é€!"
    assert stream(tok, ids[:2] + ids[2:4])[0][-1] == "\ufffd"  # a cut character is flushed as U+FFFD


def test_stop_string_spanning_tokens():
    tok = ByteTokenizer()
    pieces, s = stream(tok, tok.encode("Hello\n\nBob: hi"), stop=["\n\nBob:"])
    assert "".join(pieces) == "Hello" and s.text == "Hello" and s.stopped
    assert s.put(ord("x")) == ""  # ignored after the stop
    # A false start is released once it can no longer be a stop string.
    pieces, s = stream(tok, tok.encode("a\n\nBox"), stop=["\n\nBob:"])
    assert "".join(pieces) == "a\n\nBox" and not s.stopped
    assert pieces[1:4] == ["", "", ""]  # "\n", "\n", "B" were held back while they could start a stop
    # The earliest of several stop strings wins; a stop inside one token works too.
    pieces, s = stream(tok, tok.encode("xyEND and STOP"), stop=["STOP", "END"])
    assert s.text == "xy"


def test_generate_text_applies_stop_strings():
    model = peaky("modern")
    ids = list(generate_tokens(model, [V - 1], 12, temperature=0))

    class SmallTokenizer(ByteTokenizer):
        eot_id = V - 1

        def encode(self, text):
            return []

        def decode_bytes(self, ids):
            return bytes(97 + i % 26 for i in ids)  # every id prints as one letter

    text = "".join(chr(97 + i % 26) for i in ids)
    stop = text[5:8]
    out = "".join(generate_text(model, SmallTokenizer(), "", 12, stop=[stop], temperature=0))
    assert out == text[: text.index(stop)]


# ---- command line ---------------------------------------------------------------------------------


@pytest.fixture
def fake_run(monkeypatch):
    """A stand-in for `lmforge.runs.load_run`, returning a LoadedRun-like object."""
    model = peaky("modern")

    class Tok(ByteTokenizer):
        eot_id = V - 1
        vocab_size = V

        def encode(self, text):
            return [1 + ord(c) % (V - 1) for c in text]

        def decode_bytes(self, ids):
            return bytes(65 + i % 26 for i in ids)

    module = types.ModuleType("lmforge.runs")
    loaded = types.SimpleNamespace(config=None, model=model, tokenizer=Tok(), meta={"step": 0})
    module.load_run = lambda run_dir, step=None: loaded
    monkeypatch.setitem(sys.modules, "lmforge.runs", module)
    return model


def cli(*argv):
    from lmforge.cli import generate

    parser = argparse.ArgumentParser()
    generate.register(parser.add_subparsers())
    args = parser.parse_args(["generate", *argv])
    return args.func(args)


def test_cli_streams_and_reports_json(fake_run, capsys):
    greedy = ["--temperature", "0", "--max-new-tokens", "8"]
    assert cli("RUN", "--prompt", "hi", *greedy) == 0
    streamed = capsys.readouterr().out
    assert cli("RUN", "--prompt", "hi", *greedy, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert streamed == "hi" + report["text"] + "\n"
    assert report["new_tokens"] == len(report["text"]) == 8 and report["stop_reason"] == "length"
    assert report["prompt_tokens"] == 3  # eot + 2
    text = report["text"]
    assert cli("RUN", "--prompt", "hi", *greedy, "--stop", "ZZ", text[4:6], "--json") == 0
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["text"] == text[: text.index(text[4:6])] and stopped["stop_reason"] == "stop"
    assert cli("RUN", "--prompt", "", "--max-new-tokens", "3", "--seed", "1", "--no-cache") == 0


def test_cli_rejects_bad_input(fake_run, capsys):
    with pytest.raises(UserError, match="context"):
        cli("RUN", "--prompt", "x" * 40)
    assert capsys.readouterr().out == ""  # nothing printed before the error
    with pytest.raises(UserError, match="--top-p"):
        cli("RUN", "--top-p", "1.5")
    with pytest.raises(UserError, match="--temperature"):
        cli("RUN", "--temperature", "-1")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(MODELS))
def test_cuda_decoding_matches_cpu(name):
    cpu = list(generate_tokens(peaky(name), [1, 2, 3], 24, temperature=0))
    gpu_model = peaky(name).cuda()
    assert list(generate_tokens(gpu_model, [1, 2, 3], 24, temperature=0)) == cpu
    assert list(generate_tokens(gpu_model, [1, 2, 3], 24, temperature=0, use_cache=False)) == cpu
