"""Completions and chat on top of the decoding engine: what the terminal chat and the server share.

`Completion` streams text pieces for a prompt and knows afterwards how many tokens it produced and
why it ended (`finish_reason`: "stop" at a stop string, an end token or eot; "length" at max_tokens;
"cancelled" when its cancel event was set -- the server sets it when a client goes away). Iterating
it runs the model in the caller's thread; the server runs it in a worker thread.

`ChatSession` keeps the conversation: each user turn is rendered with the run's chat template
(`data/chat_template.py`; special tokens after `lmforge finetune --task sft`, a plain transcript
otherwise) and, when the prompt would not leave room for an answer in the context window, the oldest
turns are dropped (the system message stays) and the caller is told how many.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from lmforge.data.chat_template import template_for
from lmforge.errors import UserError
from lmforge.generate.engine import TextStreamer, generate_tokens


class Completion:
    """Iterate for text pieces; then read `completion_tokens` and `finish_reason`."""

    def __init__(
        self,
        model,
        tokenizer,
        prompt_ids: list[int],
        max_tokens: int,
        stop: Sequence[str] = (),
        stop_ids: Sequence[int] = (),
        ignore_eos: bool = False,
        cancel: threading.Event | None = None,
        **sampling,
    ) -> None:
        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, prompt_ids
        self.max_tokens, self.stop, self.stop_ids = max_tokens, list(stop), set(stop_ids)
        self.ignore_eos, self.cancel, self.sampling = ignore_eos, cancel, sampling
        self.completion_tokens = 0
        self.token_ids: list[int] = []  # the ids counted in completion_tokens (for log-probs)
        self.end_id: int | None = None  # the stop id that ended it, if one did (not in token_ids)
        self.finish_reason: str | None = None
        self.text = ""
        # Checked here, so a bad prompt fails before anything is streamed.
        self._tokens = generate_tokens(model, prompt_ids, max_tokens, eot_id=None, **sampling)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def __iter__(self) -> Iterator[str]:
        streamer = TextStreamer(self.tokenizer, self.stop)
        tokens = self._tokens
        try:
            for token_id in tokens:
                if self.cancel is not None and self.cancel.is_set():
                    self.finish_reason = "cancelled"
                    return
                if token_id in self.stop_ids and not self.ignore_eos:
                    self.finish_reason, self.end_id = "stop", token_id
                    return
                self.completion_tokens += 1
                self.token_ids.append(token_id)
                piece = streamer.put(token_id)
                if piece:
                    self.text += piece
                    yield piece
                if streamer.stopped:
                    self.finish_reason = "stop"
                    return
            self.finish_reason = "length"
            tail = streamer.finish()
            if tail:
                self.text += tail
                yield tail
        finally:
            tokens.close()
            if self.finish_reason is None:  # the consumer stopped early (Ctrl-C, closed generator)
                self.finish_reason = "cancelled"


def fit_history(template, messages: list[dict], budget: int | None) -> tuple[list[dict], int]:
    """Drop the oldest non-system messages until the prompt is at most `budget` tokens.

    Returns (kept messages, number dropped). The last message (the new user turn) is never dropped;
    if it alone does not fit, that is a UserError.
    """
    kept, dropped = list(messages), 0
    while budget is not None and len(template.prompt_ids(kept)) > budget:
        droppable = [i for i, m in enumerate(kept[:-1]) if m["role"] != "system"]
        if not droppable:
            raise UserError(
                f"the message is {len(template.prompt_ids(kept))} tokens with the template, more than the "
                f"{budget} the context leaves for it; write a shorter one"
            )
        del kept[droppable[0]]
        dropped += 1
    return kept, dropped


class ChatSession:
    """A conversation with a run's model: `send(text)` -> (Completion, dropped turns)."""

    def __init__(self, model, tokenizer, system: str | None = None, max_new_tokens: int = 256, **sampling):
        self.model, self.tokenizer = model, tokenizer
        self.template = template_for(tokenizer)
        self.system, self.max_new_tokens, self.sampling = system, max_new_tokens, sampling
        self.history: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_budget(self) -> int | None:
        """Prompt tokens allowed: the context minus room for an answer (at most half the context)."""
        context = self.model.max_context
        if context is None:
            return None
        return context - min(self.max_new_tokens, context // 2)

    def send(self, text: str) -> tuple[Completion, int]:
        messages = [*self.history, {"role": "user", "content": text}]
        kept, dropped = fit_history(self.template, messages, self.prompt_budget())
        completion = Completion(
            self.model,
            self.tokenizer,
            self.template.prompt_ids(kept),
            self.max_new_tokens,
            stop=self.template.stop,
            stop_ids=self.template.stop_ids,
            **self.sampling,
        )
        self.history = kept
        return completion, dropped

    def record(self, answer: str) -> None:
        """Add the (possibly interrupted) answer to the history."""
        self.history.append({"role": "assistant", "content": answer.strip()})
