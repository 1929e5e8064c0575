"""Log-probabilities over the API and the rest of the OpenAI surface, checked against a direct forward
pass of the same model (a real uvicorn server on 127.0.0.1, the tiny chat fine-tuned run)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from serving import ThreadServer, call

from lmforge import runs
from lmforge.generate.engine import encode_prompt
from lmforge.serve.app import ServeConfig, create_app

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say to"}]


@pytest.fixture(scope="module")
def served(chat_run):
    config = ServeConfig(max_tokens_cap=32, default_max_tokens=8)
    srv = ThreadServer(create_app(runs.load_run(chat_run), config), config)
    reference = runs.load_run(chat_run)  # a second copy: the server's model is never touched here
    reference.model.eval()
    yield srv.port, reference
    srv.stop()


def forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1, V): row i is log p(. | ids[: i + 1]), straight from model(ids)."""
    with torch.no_grad():
        return F.log_softmax(model(torch.tensor([ids]))[0, :-1].float(), dim=-1)


def test_echo_with_zero_tokens_scores_the_prompt(served):
    port, ref = served
    prompt = "to be or not"
    status, _, body = call(port, "POST", COMPLETIONS,
                           {"prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": 3})  # fmt: skip
    assert status == 200, body
    choice = body["choices"][0]
    lp = choice["logprobs"]
    ids = encode_prompt(ref.tokenizer, prompt)
    table = forward_logprobs(ref.model, ids)
    expected = table.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    assert choice["text"] == prompt and "".join(lp["tokens"]) == prompt
    assert len(lp["token_logprobs"]) == len(ids) - 1  # the eot in front is context, not echoed
    torch.testing.assert_close(torch.tensor(lp["token_logprobs"]), expected, atol=1e-5, rtol=0)
    best = table.topk(3, dim=-1)
    for position, top in enumerate(lp["top_logprobs"]):
        assert len(top) == 3
        got = sorted(top.values(), reverse=True)
        torch.testing.assert_close(torch.tensor(got), best.values[position], atol=1e-5, rtol=0)
    assert lp["text_offset"] == [
        prompt.index(t, o) for t, o in zip(lp["tokens"], lp["text_offset"], strict=True)
    ]
    assert lp["text_offset"][0] == 0 and body["usage"]["completion_tokens"] == 0


def test_token_prompts_in_a_batch_as_lm_eval_sends_them(served):
    port, ref = served
    tok = ref.tokenizer
    prompts = [tok.encode("to be"), tok.encode("or not to")]
    request = {
        "prompt": prompts,
        "echo": True,
        "max_tokens": 1,
        "logprobs": 1,
        "temperature": 0,
        "seed": 1234,
    }
    status, _, body = call(port, "POST", COMPLETIONS, request)
    assert status == 200 and len(body["choices"]) == 2
    for choice, ids in zip(sorted(body["choices"], key=lambda c: c["index"]), prompts, strict=True):
        lp = choice["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # no context for it
        assert len(lp["tokens"]) == len(ids) + 1  # the prompt, then the one generated (or ending) token
        table = forward_logprobs(ref.model, ids + [0])
        expected = table.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(
            torch.tensor(lp["token_logprobs"][1 : len(ids)]), expected, atol=1e-5, rtol=0
        )
        # Greedy: the generated token is the most likely one, and its log-prob is the top one.
        assert lp["token_logprobs"][-1] == pytest.approx(float(table[-1].max()), abs=1e-5)


def test_logprobs_of_generated_tokens(served):
    port, ref = served
    request = {"prompt": "to", "max_tokens": 6, "logprobs": 2, "ignore_eos": True, "seed": 3}
    status, _, body = call(port, "POST", COMPLETIONS, request)
    assert status == 200
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 6 and "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert lp["text_offset"][0] == len("to")  # offsets count from the start of the prompt, as OpenAI's
    prompt = encode_prompt(ref.tokenizer, "to")
    generated = [ref.tokenizer.encode(t)[0] for t in lp["tokens"]]
    table = forward_logprobs(ref.model, prompt + generated)[len(prompt) - 1 :]
    expected = table.gather(1, torch.tensor(generated).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(torch.tensor(lp["token_logprobs"]), expected, atol=1e-5, rtol=0)


def test_chat_logprobs_with_bytes(served):
    port, ref = served
    request = {"messages": HELLO, "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    status, _, body = call(port, "POST", CHAT, request)
    assert status == 200
    content = body["choices"][0]["logprobs"]["content"]
    assert content and all(len(item["top_logprobs"]) == 2 for item in content)
    for item in content:
        assert bytes(item["bytes"]).decode("utf-8", "replace") in (item["token"], "") or item[
            "token"
        ].startswith("<")
        # Greedy decoding: every chosen token is the best alternative.
        assert item["logprob"] == pytest.approx(item["top_logprobs"][0]["logprob"], abs=1e-6)
        assert item["top_logprobs"][0]["logprob"] >= item["top_logprobs"][1]["logprob"]


def test_n_choices_and_seeds(served):
    port, _ = served
    request = {"prompt": "to be", "max_tokens": 8, "n": 3, "seed": 5, "ignore_eos": True}
    status, _, body = call(port, "POST", COMPLETIONS, request)
    assert status == 200 and [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 24
    again = call(port, "POST", COMPLETIONS, request)[2]
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]
    assert len({c["text"] for c in body["choices"]}) > 1  # different draws, not one copied


def test_developer_role_and_text_parts_read_as_system_and_text(served):
    port, _ = served
    plain = {"messages": HELLO, "max_tokens": 8, "temperature": 0}
    modern = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                           {"role": "user", "content": [{"type": "text", "text": "say "},
                                                        {"type": "text", "text": "to"}]}],
              "max_tokens": 8, "temperature": 0}  # fmt: skip
    first, second = call(port, "POST", CHAT, plain), call(port, "POST", CHAT, modern)
    assert first[0] == second[0] == 200
    assert first[2]["choices"][0]["message"] == second[2]["choices"][0]["message"]


def test_one_model_card(served):
    port, _ = served
    status, _, card = call(port, "GET", "/v1/models/tiny-chat")
    assert status == 200 and card["id"] == "tiny-chat" and card["object"] == "model"
    status, _, answer = call(port, "GET", "/v1/models/gpt-4")
    assert status == 404 and answer["error"]["param"] == "model"


def test_tiny_temperatures_are_greedy_not_a_crash(served):
    port, _ = served
    greedy = {"prompt": "to be", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    tiny = {**greedy, "temperature": 1e-40}
    expected = call(port, "POST", COMPLETIONS, greedy)[2]["choices"][0]["text"]
    status, _, body = call(port, "POST", COMPLETIONS, tiny)
    assert status == 200 and body["choices"][0]["text"] == expected


def test_logit_bias_and_penalties_steer_greedy_decoding(served):
    port, ref = served
    base = {"prompt": "to be", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    target = ref.tokenizer.encode("w")[0]
    forced = call(port, "POST", COMPLETIONS, {**base, "logit_bias": {str(target): 100}})[2]
    assert forced["choices"][0]["text"] == "w" * 12
    plain = call(port, "POST", COMPLETIONS, base)[2]["choices"][0]["text"]
    varied = call(port, "POST", COMPLETIONS, {**base, "frequency_penalty": 2.0})[2]["choices"][0]["text"]
    fresh = call(port, "POST", COMPLETIONS, {**base, "presence_penalty": 2.0})[2]["choices"][0]["text"]
    # A tiny greedy model loops on a few characters; penalties make it use more distinct ones.
    assert len(set(varied)) > len(set(plain)) and len(set(fresh)) > len(set(plain)), (plain, varied, fresh)
