"""The server driven by the real `openai` client (not our own small HTTP helper): what a user's code
sends -- its headers, its field names, its retries -- must work, and the numbers that come back must
equal a direct forward pass of the same model (a real uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from serving import Knobs, ThreadServer, call, wait_idle

from lmforge import runs
from lmforge.data.chat_template import template_for
from lmforge.generate.engine import encode_prompt
from lmforge.serve import schemas
from lmforge.serve.app import ServeConfig, create_app

openai = pytest.importorskip("openai")

KEY = "s3cret"
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say to"}]


@pytest.fixture(scope="module")
def served(chat_run):
    config = ServeConfig(max_tokens_cap=32, default_max_tokens=8, api_key=KEY)
    srv = ThreadServer(create_app(runs.load_run(chat_run), config), config)
    reference = runs.load_run(chat_run)  # a second copy: the server's model is never touched here
    reference.model.eval()
    # No retries: a test must see the server's first answer, not a second try that happened to pass.
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    yield client, reference, chat_run.name
    client.close()
    srv.stop()


def forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1, V): row i is log p(. | ids[: i + 1]), straight from model(ids)."""
    with torch.no_grad():
        return F.log_softmax(model(torch.tensor([ids]))[0, :-1].float(), dim=-1)


def token_id(tokenizer, text: str) -> int:
    """The id of one token as the wire writes it (special tokens by name)."""
    if text in tokenizer.special_tokens:
        return tokenizer.special_tokens[text]
    ids = tokenizer.encode(text)
    assert len(ids) == 1, text
    return ids[0]


def test_echo_with_zero_tokens_scores_the_prompt(served):
    client, ref, name = served
    prompt = "to be or not"
    reply = client.completions.create(model=name, prompt=prompt, echo=True, max_tokens=0, logprobs=3)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.text == prompt and "".join(lp.tokens) == prompt
    ids = encode_prompt(ref.tokenizer, prompt)
    table = forward_logprobs(ref.model, ids)
    expected = table.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    assert len(lp.token_logprobs) == len(ids) - 1  # the eot in front is context, not echoed
    torch.testing.assert_close(torch.tensor(lp.token_logprobs), expected, atol=1e-5, rtol=0)
    best = table.topk(3, dim=-1)
    for position, top in enumerate(lp.top_logprobs):
        assert len(top) == 3
        got = sorted(top.values(), reverse=True)
        torch.testing.assert_close(torch.tensor(got), best.values[position], atol=1e-5, rtol=0)
        chosen = ref.tokenizer.decode([int(best.indices[position, 0])])
        assert top[chosen] == pytest.approx(float(best.values[position, 0]), abs=1e-5)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(ids)


def test_token_prompts_in_a_batch_with_echo(served):
    client, ref, name = served
    prompts = [ref.tokenizer.encode("to be"), ref.tokenizer.encode("or not to")]
    reply = client.completions.create(
        model=name, prompt=prompts, echo=True, max_tokens=1, logprobs=1, temperature=0, seed=1234
    )
    assert sorted(c.index for c in reply.choices) == [0, 1]
    for choice, ids in zip(sorted(reply.choices, key=lambda c: c.index), prompts, strict=True):
        lp = choice.logprobs
        assert lp.token_logprobs[0] is None  # the first token of a token prompt has no context
        table = forward_logprobs(ref.model, ids + [0])
        expected = table.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(torch.tensor(lp.token_logprobs[1 : len(ids)]), expected, atol=1e-5, rtol=0)
        # Greedy: the generated token is the most likely one.
        assert lp.token_logprobs[-1] == pytest.approx(float(table[-1].max()), abs=1e-5)


def test_logprobs_of_generated_tokens(served):
    client, ref, name = served
    reply = client.completions.create(
        model=name, prompt="to", max_tokens=6, logprobs=2, seed=3, extra_body={"ignore_eos": True}
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == 6 and "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == len("to")
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 6
    prompt = encode_prompt(ref.tokenizer, "to")
    generated = [token_id(ref.tokenizer, t) for t in lp.tokens]
    table = forward_logprobs(ref.model, prompt + generated)[len(prompt) - 1 :]
    expected = table.gather(1, torch.tensor(generated).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(torch.tensor(lp.token_logprobs), expected, atol=1e-5, rtol=0)


def test_chat_logprobs_match_a_forward_pass_and_carry_bytes(served):
    client, ref, name = served
    reply = client.chat.completions.create(
        model=name, messages=HELLO, max_completion_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert content and all(len(item.top_logprobs) == 2 for item in content)
    tok = ref.tokenizer
    generated = [token_id(tok, item.token) for item in content]
    for item, i in zip(content, generated, strict=True):
        raw = tok.decode_bytes([i]) if item.token not in tok.special_tokens else item.token.encode()
        assert item.bytes == list(raw) and bytes(item.bytes).decode() == item.token
        # Greedy decoding: every chosen token is the best alternative, and alternatives come sorted.
        assert item.top_logprobs[0].token == item.token
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
    # The listed tokens are the answer (plus the end-of-turn token when the model stopped by itself).
    shown = "".join(item.token for item in content if item.token not in tok.special_tokens)
    assert shown == choice.message.content
    prompt = template_for(tok).prompt_ids(HELLO)
    table = forward_logprobs(ref.model, prompt + generated)[len(prompt) - 1 :]
    expected = table.gather(1, torch.tensor(generated).unsqueeze(1)).squeeze(1)
    got = torch.tensor([item.logprob for item in content])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_two_choices_repeatable_with_a_seed(served):
    client, _, name = served
    ask = dict(model=name, messages=HELLO, max_tokens=8, n=2, seed=7, temperature=1.5)
    reply = client.chat.completions.create(**ask, extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == 16
    again = client.chat.completions.create(**ask, extra_body={"ignore_eos": True})
    texts = [c.message.content for c in reply.choices]
    assert [c.message.content for c in again.choices] == texts
    assert texts[0] != texts[1]  # two draws, not one copied


def test_streamed_chat_joins_to_the_whole_answer(served):
    client, _, name = served
    ask = dict(model=name, messages=HELLO, max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**ask)
    pieces, finishes, usage = [], [], None
    stream = client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    assert "".join(pieces) == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_completion_joins_to_the_whole_answer(served):
    client, _, name = served
    ask = dict(model=name, prompt="to be", max_tokens=10, temperature=0)
    whole = client.completions.create(**ask).choices[0].text
    assert "".join(c.choices[0].text for c in client.completions.create(**ask, stream=True)) == whole


def test_modern_message_shapes_read_as_system_and_text(served):
    client, _, name = served
    modern = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "say "}, {"type": "text", "text": "to"}]},
    ]
    ask = dict(model=name, max_tokens=8, temperature=0, logprobs=True)
    plain = client.chat.completions.create(messages=HELLO, **ask).choices[0]
    again = client.chat.completions.create(messages=modern, **ask).choices[0]
    assert again.message.content == plain.message.content
    # The same prompt ids, not merely the same greedy text: the scores agree to the last digit.
    assert [t.logprob for t in again.logprobs.content] == [t.logprob for t in plain.logprobs.content]


def test_models_list_and_retrieve(served):
    client, _, name = served
    assert [m.id for m in client.models.list()] == [name]
    card = client.models.retrieve(name)
    assert card.id == name and card.object == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4")
    assert caught.value.param == "model" and "gpt-4" in caught.value.message


@pytest.mark.parametrize(
    "api, field, value",
    [
        ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("chat", "response_format", {"type": "json_object"}),
        ("completions", "suffix", "the end"),
        ("chat", "verbosity", "low"),
        ("chat", "prompt_cache_retention", "24h"),
    ],
)
def test_unsupported_fields_are_refused_by_name(served, api, field, value):
    client, _, name = served
    with pytest.raises(openai.BadRequestError) as caught:
        if api == "chat":
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=4, **{field: value})
        else:
            client.completions.create(model=name, prompt="to", max_tokens=4, **{field: value})
    assert field in caught.value.message and caught.value.param == field


def test_unknown_field_and_bad_value_are_refused_by_name(served):
    client, _, name = served
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=name, prompt="to", max_tokens=4, extra_body={"mirostat": 2})
    assert "mirostat" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=name, prompt="to", max_tokens=4, seed=2**70)
    assert caught.value.param == "seed"


# Arguments of the client's create() that are the client's own, not fields of the request body.
CLIENT_SETTINGS = {"extra_headers", "extra_query", "extra_body", "timeout"}


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_every_field_the_client_can_send_is_declared(api):
    """A field the client knows and the schema does not would be refused as 'not a field of this API':
    each one must be implemented, accepted as a label, or refused with its own reason. A newer client
    with new fields makes this fail until the schema takes a stand on them."""
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused")
    create = client.chat.completions.create if api == "chat" else client.completions.create
    schema = schemas.ChatRequest if api == "chat" else schemas.CompletionRequest
    sent = set(inspect.signature(create).parameters) - CLIENT_SETTINGS
    assert sent - set(schema.model_fields) == set()


def test_labels_are_accepted_and_change_nothing(served):
    client, _, name = served
    ask = dict(model=name, messages=HELLO, max_tokens=6, temperature=0)
    plain = client.chat.completions.create(**ask).choices[0].message.content
    labelled = client.chat.completions.create(
        **ask, user="u1", safety_identifier="u1", prompt_cache_key="k", metadata={"a": "b"}, store=False
    )
    assert labelled.choices[0].message.content == plain


def test_an_empty_token_prompt_is_refused_in_the_api_s_terms(served):
    client, _, name = served
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=name, prompt=[[]], max_tokens=2)
    assert caught.value.param == "prompt" and "token ids" in caught.value.message


def test_wrong_key_is_an_authentication_error(served):
    client, _, name = served
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="wrong").models.list()


def test_busy_server_is_a_rate_limit_error_with_retry_after(tiny_run):
    config = ServeConfig(max_concurrent=1, max_queue=0, max_tokens_cap=64)
    loaded = runs.load_run(tiny_run)
    knobs = Knobs(loaded.model)
    srv = ThreadServer(create_app(loaded, config), config)
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        knobs.delay = 0.05  # the held generation lasts seconds: long enough to be busy when asked
        held = client.completions.create(
            model=tiny_run.name, prompt="to", max_tokens=64, stream=True, extra_body={"ignore_eos": True}
        )
        next(iter(held))  # the generation has its slot
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model=tiny_run.name, prompt="to", max_tokens=2)
        assert caught.value.response.headers.get("retry-after") == "1"
        held.close()  # the client leaving frees the slot at once
        assert wait_idle(srv.port, 2)["running"] == 0  # not the seconds the rest would take
        # A client that retries (the default) waits as told by Retry-After and then gets its answer.
        knobs.delay = 0.03  # the holder below lasts well under a second, unless the machine is slow
        hold = dict(model=tiny_run.name, prompt="to", max_tokens=20, extra_body={"ignore_eos": True})
        holder = threading.Thread(target=client.completions.create, kwargs=hold, daemon=True)
        holder.start()
        deadline = time.monotonic() + 10
        while call(srv.port, "GET", "/health")[2]["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        patient = client.with_options(max_retries=4)
        raw = patient.completions.with_raw_response.create(model=tiny_run.name, prompt="to", max_tokens=2)
        assert raw.retries_taken >= 1 and raw.parse().choices[0].finish_reason in ("stop", "length")
        holder.join(10)
    finally:
        client.close()
        srv.stop()
