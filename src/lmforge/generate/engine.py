"""Autoregressive decoding: token ids in, a stream of token ids (and text pieces) out.

With the cache the prompt is processed once (prefill) and then each new token costs one position:
the GPT keeps keys/values in a preallocated ``KVCache``, the GRU carries its hidden state. Per-token
Python work is kept to a handful of calls, because at batch 1 on a CPU that overhead, not arithmetic,
limits speed: for our GPT each new position goes through ``GPT.decode`` (each block's own one-row
``decode`` beside its ``forward``; models/decode.py), other models through ``model(ids, cache=...)``.

Past the context: when a GPT's window is full, the oldest half is dropped and the newest
``seq_len // 2`` tokens are prefilled again (positions restart at 0, which is what RoPE and learned
positions saw in training), so a long generation costs one half-window prefill every ``seq_len // 2``
tokens instead of one per token. The uncached path recomputes the *same* window every token, so the
two paths give the same tokens at any length; it is the reference in tests and a fallback. The GRU
has no window: its state summarises all history.

``inference_mode`` is entered around each step rather than around the generator's whole life, so it
never leaks into the caller's code between ``next()`` calls; the model's train/eval mode is restored
when the generator ends or is closed.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence

import torch

from lmforge.errors import UserError
from lmforge.generate.sampling import sample_next
from lmforge.models.decode import Decoder, covers


def encode_prompt(tokenizer, text: str) -> list[int]:
    """The ids a prompt stands for: eot first, because training put an eot before every document, so
    the model reads the prompt as the start of a document (and "" means "start a document")."""
    return [tokenizer.eot_id, *tokenizer.encode(text)]


def generate_tokens(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
    eot_id: int | None = None,
    adjust_logits=None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new ids after ``prompt_ids`` (batch 1). Sampling eot_id ends
    the stream (eot itself is not yielded). Temperature 0 is greedy; ``seed`` makes draws repeatable.
    The prompt is checked here, at the call, so a bad one fails before anything is printed.
    ``adjust_logits(logits (1, V), generated ids (1, k)) -> logits`` runs before each draw (the
    server's OpenAI penalties and logit_bias)."""
    if not prompt_ids:
        raise UserError("the prompt has no tokens; start it with the eot id (see encode_prompt)")
    limit = model.max_context  # None: no window (GRU)
    if limit is not None and len(prompt_ids) > limit:
        raise UserError(
            f"the prompt is {len(prompt_ids)} tokens but the model's context is {limit}; shorten the prompt"
        )
    vocab_size = model.config.vocab_size
    if not all(0 <= i < vocab_size for i in prompt_ids):
        raise UserError(
            f"prompt ids must lie in [0, {vocab_size}); was it encoded with this run's tokenizer?"
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    sampling = (temperature, top_k, top_p, repetition_penalty, generator, adjust_logits)
    n = len(prompt_ids)
    history = torch.zeros(1, n + max(max_new_tokens, 0), dtype=torch.long, device=device)  # (1, all ids)
    history[0, :n] = torch.tensor(prompt_ids, dtype=torch.long)
    return _run(model, history, n, max_new_tokens, limit, use_cache, eot_id, sampling)


def _run(model, history, n, max_new_tokens, limit, use_cache, eot_id, sampling) -> Iterator[int]:
    """Put the model in eval mode for the stream, and give it back in the mode it came in."""
    if max_new_tokens <= 0:
        return
    was_training = model.training
    model.eval()
    fast = use_cache and covers(model)
    try:
        yield from _decode(model, history, n, max_new_tokens, limit, use_cache, fast, eot_id, sampling)
    finally:
        model.train(was_training)


def _decode(model, history, n, max_new_tokens, limit, use_cache, fast, eot_id, sampling) -> Iterator[int]:
    """The loop of ``generate_tokens``; history (1, n + max_new_tokens) holds the prompt in [:n].
    With ``fast`` each new position goes through the model's ``decode`` instead of ``model(...)``."""
    temperature, top_k, top_p, repetition_penalty, generator, adjust = sampling
    first = n  # generated ids start here
    penalise = repetition_penalty != 1.0
    param = next(model.parameters())
    keep = max(1, limit // 2) if limit is not None else 0
    start = 0  # ids before `start` have slid out of the window
    with torch.inference_mode():
        cache = model.new_cache(1, limit, device=param.device, dtype=param.dtype) if use_cache else None
        logits = model(history[:, :n], cache=cache)[:, -1]  # (1, vocab_size)
        step = Decoder(model, cache).step if fast else None
    ids = history[0]  # (n + max_new_tokens,)
    for i in range(max_new_tokens):
        with torch.inference_mode():
            prev = history[:, :n] if penalise else None
            if adjust is not None:
                logits = adjust(logits, history[:, first:n])
            token = sample_next(logits, temperature, top_k, top_p, generator, repetition_penalty, prev)
            token_id = ids[n] = int(token)
        n += 1
        if token_id == eot_id:
            return
        yield token_id
        if i == max_new_tokens - 1:
            return
        with torch.inference_mode():
            if limit is not None and n - start > limit:  # window full: keep the newest half
                start = n - keep
                if cache is not None:
                    cache.reset()
                    logits = model(history[:, start:n], cache=cache)[:, -1]  # prefill the kept half
                    continue
            if step is not None:
                logits = step(token_id)  # one new position, the fast way
            elif cache is not None:
                logits = model(history[:, n - 1 : n], cache=cache)[:, -1]  # one new position
            else:
                logits = model(history[:, start:n])[:, -1]  # the whole window again


class TextStreamer:
    """Turns token ids into printable text pieces, one ``put`` per id, then ``finish()``.

    Bytes are decoded incrementally, so a character split across tokens is printed once complete
    (invalid bytes become U+FFFD). Stop strings: text is held back while its end could still be the
    beginning of a stop string, so nothing past a stop string is ever returned, even when the stop
    string spans several tokens. After a stop, ``stopped`` is True and further input is ignored.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text not yet returned: could be the start of a stop string
        self.text = ""  # everything returned so far
        self.stopped = False

    def put(self, token_id: int) -> str:
        if self.stopped:
            return ""
        return self._emit(self._decoder.decode(self.tokenizer.decode_bytes([token_id])), final=False)

    def finish(self) -> str:
        """Flush what is held (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        return self._emit(self._decoder.decode(b"", final=True), final=True)

    def _emit(self, new: str, final: bool) -> str:
        buf = self._held + new
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self._held, self.stopped = buf[: min(hits)], "", True
        else:
            hold = 0 if final else _partial_stop_length(buf, self.stop)
            out, self._held = buf[: len(buf) - hold], buf[len(buf) - hold :]
        self.text += out
        return out


def _partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def generate_text(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    **sampling,
) -> Iterator[str]:
    """Text pieces generated after ``prompt`` (see ``generate_tokens`` for ``sampling`` options),
    ending at eot, a stop string or ``max_new_tokens``."""
    streamer = TextStreamer(tokenizer, stop)
    ids = encode_prompt(tokenizer, prompt)
    tokens = generate_tokens(model, ids, max_new_tokens, eot_id=tokenizer.eot_id, **sampling)
    for token_id in tokens:
        piece = streamer.put(token_id)
        if piece:
            yield piece
        if streamer.stopped:
            tokens.close()
            return
    tail = streamer.finish()
    if tail:
        yield tail
