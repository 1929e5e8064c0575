"""The chat template: a conversation as token ids, the same at fine-tuning and at inference time.

A chat run's tokenizer has four extra special tokens, appended after the base vocabulary by
`lmforge finetune --task sft` (so every base id keeps its meaning):

    <|endoftext|> <|system|> You are terse. <|end|> <|user|> Hi <|end|> <|assistant|> Hello. <|end|>

Each message is its role token, its content encoded as ordinary text, and `<|end|>`. The special
tokens are inserted as ids, never parsed out of text, so a user typing "<|end|>" cannot forge a turn.
A generation prompt ends with `<|assistant|>`; the model's `<|end|>` (or any other special) ends the
answer. Why this lives in data/: training (finetune/) and inference (generate/, serve/) both need
exactly this function, so it sits on the floor below both of them.

A run without chat fine-tuning has no such tokens; it gets `PlainTemplate`, a text transcript
("User: ...\\nAssistant: ...") that a plain language model can at least continue, stopping at the
next "\\nUser:".
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END = "<|end|>"
CHAT_SPECIALS = [*ROLE_TOKENS.values(), END]


def has_chat_tokens(tokenizer) -> bool:
    return all(name in tokenizer.special_tokens for name in CHAT_SPECIALS)


@dataclass
class SpecialTokenTemplate:
    """Role tokens + content + `<|end|>` per message (see the module docstring)."""

    tokenizer: object
    stop: list[str] = field(default_factory=list)  # no text stop strings: turns end with a token

    def __post_init__(self) -> None:
        sp = self.tokenizer.special_tokens
        self.role_ids = {role: sp[name] for role, name in ROLE_TOKENS.items()}
        self.end_id = sp[END]
        # Any special ends an answer: <|end|>, eot, or a role token the model should not produce.
        self.stop_ids = {self.end_id, self.tokenizer.eot_id, *self.role_ids.values()}

    def message_ids(self, message: dict) -> list[int]:
        role = message["role"]
        return [self.role_ids[role], *self.tokenizer.encode(message["content"]), self.end_id]

    def conversation(self, messages: list[dict]) -> tuple[list[int], list[bool]]:
        """(ids, trained): ids of the whole conversation, and for each id whether the model learns
        to produce it -- the assistant's content and its `<|end|>`, not its role token (the prompt
        supplies that)."""
        ids, trained = [self.tokenizer.eot_id], [False]
        for m in messages:
            piece = self.message_ids(m)
            ids += piece
            learn = m["role"] == "assistant"
            trained += [False] + [learn] * (len(piece) - 1)
        return ids, trained

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The conversation so far, then `<|assistant|>`: the model writes the next answer."""
        return self.conversation(messages)[0] + [self.role_ids["assistant"]]

    def parse(self, ids: list[int]) -> list[dict]:
        """Token ids back to messages (the inverse of `conversation`; tests use it)."""
        by_id = {i: r for r, i in self.role_ids.items()}
        messages, role, content = [], None, []
        for i in ids:
            if i in by_id:
                role, content = by_id[i], []
            elif i == self.end_id and role is not None:
                messages.append({"role": role, "content": self.tokenizer.decode(content)})
                role = None
            elif role is not None:
                content.append(i)
        return messages


@dataclass
class PlainTemplate:
    """A text transcript for runs without chat tokens: "System: ...\\n\\nUser: ...\\nAssistant: ..."."""

    tokenizer: object
    stop: list[str] = field(default_factory=lambda: ["\nUser:", "\nSystem:"])

    def __post_init__(self) -> None:
        self.end_id = None
        self.stop_ids = {self.tokenizer.eot_id}

    def text(self, messages: list[dict]) -> str:
        lines = [f"{m['role'].capitalize()}: {m['content'].strip()}" for m in messages]
        return "\n".join(lines) + "\nAssistant:"

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return [self.tokenizer.eot_id, *self.tokenizer.encode(self.text(messages))]


def template_for(tokenizer) -> SpecialTokenTemplate | PlainTemplate:
    """The special-token template when the tokenizer has the chat tokens, else the plain one."""
    return SpecialTokenTemplate(tokenizer) if has_chat_tokens(tokenizer) else PlainTemplate(tokenizer)
