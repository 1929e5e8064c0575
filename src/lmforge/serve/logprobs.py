"""Log-probabilities in OpenAI's two wire formats, from one scoring forward over prompt + completion.

Legacy completions (`logprobs: k`, optionally `echo`) give parallel lists -- `tokens`,
`token_logprobs`, `top_logprobs` (a dict token -> log-prob per position), `text_offset` -- and the
first token of a prompt that has no context gets `null`. Chat completions (`logprobs: true`,
`top_logprobs: k`) give a list of objects with `token`, `logprob`, `bytes` and `top_logprobs`.

A byte-level token need not be whole UTF-8 text: such a token is written as OpenAI does,
`bytes:\\xe2\\x80` in the legacy format, and with its raw `bytes` in the chat one. Special tokens are
written by name (they have no bytes). The token that ended a completion (an end-of-text or end-of-turn
id) is listed too, as OpenAI and vLLM do, though its text is not part of the answer: scorers such as
lm-evaluation-harness rely on the last listed token being the generated one.

Scores are the model's own distribution (before temperature, top-p or penalties), from
`generate.scoring`, so they equal a direct forward pass of the served model.
"""

from __future__ import annotations

from lmforge.generate.scoring import token_logprobs


class TokenWriter:
    """Token ids -> the bytes and the wire text OpenAI gives them."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.names = {i: name for name, i in tokenizer.special_tokens.items()}

    def raw(self, token_id: int) -> bytes:
        if token_id in self.names:
            return self.names[token_id].encode("utf-8")
        return self.tokenizer.decode_bytes([token_id])

    def text(self, token_id: int) -> str:
        raw = self.raw(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def legacy(model, writer: TokenWriter, ids: list[int], first: int, top: int, offset0: int = 0) -> dict:
    """`choices[i].logprobs` of a completion whose scored ids are ids[first:] (ids[0] is never scored:
    it has no context). `offset0`: the character offset of ids[first] in the returned text."""
    chosen, best = token_logprobs(model, ids, top)
    tokens, values, tops, offsets = [], [], [], []
    text_bytes = b""
    for k in range(first, len(ids)):
        tokens.append(writer.text(ids[k]))
        offsets.append(offset0 + len(text_bytes.decode("utf-8", errors="ignore")))
        text_bytes += writer.tokenizer.decode_bytes([ids[k]])
        if k == 0:
            values.append(None)
            tops.append(None)
            continue
        values.append(chosen[k - 1])
        alternatives = {}
        for token_id, logprob in best[k - 1]:
            alternatives.setdefault(writer.text(token_id), logprob)
        tops.append(alternatives if top > 0 else None)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat(model, writer: TokenWriter, ids: list[int], first: int, top: int) -> dict:
    """`choices[i].logprobs` of a chat completion: the generated ids[first:], first >= 1."""
    chosen, best = token_logprobs(model, ids, top)

    def entry(token_id: int, logprob: float) -> dict:
        return {"token": writer.text(token_id), "logprob": logprob, "bytes": list(writer.raw(token_id))}

    content = []
    for k in range(first, len(ids)):
        item = entry(ids[k], chosen[k - 1])
        item["top_logprobs"] = [entry(t, lp) for t, lp in best[k - 1]] if top > 0 else []
        content.append(item)
    return {"content": content, "refusal": None}
