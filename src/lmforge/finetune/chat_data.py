"""Conversations for chat fine-tuning: JSONL files or Hugging Face datasets, validated line by line.

One conversation per line: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}`.
A Hugging Face dataset (`hf:NAME`, or `hf:NAME:SPLIT`; also a `save_to_disk` folder) must have a
`messages` column of the same shape. Every mistake is reported with its place (`file:line` or
`dataset[row]`) and what to do, because a fine-tuning run that silently drops half its data is worse
than one that refuses to start.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from lmforge.data.chat_template import ROLES
from lmforge.errors import UserError
from lmforge.finetune.task_data import load_hf_split


def check_conversation(record, where: str) -> list[dict]:
    """The validated message list of one record, or a UserError naming `where`."""
    if not isinstance(record, dict) or "messages" not in record:
        raise UserError(f'{where}: expected an object with a "messages" list, e.g. {{"messages": [...]}}')
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise UserError(f'{where}: "messages" must be a non-empty list of {{"role", "content"}} objects')
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise UserError(f'{where}: message {i} must be an object with a string "content"')
        if m.get("role") not in ROLES:
            raise UserError(f"{where}: message {i} has unknown role {m.get('role')!r}; use one of {ROLES}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" and m["content"] for m in out):
        raise UserError(f"{where}: the conversation has no non-empty assistant message to learn from")
    return out


def read_jsonl(path: Path) -> list[list[dict]]:
    if not path.is_file():
        raise UserError(f"conversation file '{path}' does not exist; pass a .jsonl file or hf:NAME")
    opener = gzip.open if path.suffix == ".gz" else open
    conversations = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise UserError(
                        f"{where}: not valid JSON ({exc.msg}); one conversation per line"
                    ) from None
                conversations.append(check_conversation(record, where))
    except UnicodeDecodeError:
        raise UserError(f"conversation file '{path}' is not UTF-8 text") from None
    return conversations


def read_hf(spec: str) -> list[list[dict]]:
    name, ds = load_hf_split(spec, "conversations")
    if "messages" not in ds.column_names:
        raise UserError(f"dataset '{name}' has no 'messages' column (has: {', '.join(ds.column_names[:8])})")
    return [check_conversation(row, f"{name}[{i}]") for i, row in enumerate(ds.select_columns(["messages"]))]


def read_conversations(spec: str | Path) -> list[list[dict]]:
    """All conversations of a JSONL file (optionally .gz) or `hf:NAME[:SPLIT]`; at least one."""
    spec = str(spec)
    conversations = read_hf(spec) if spec.startswith("hf:") else read_jsonl(Path(spec))
    if not conversations:
        raise UserError(f"'{spec}' holds no conversations; one JSON object per line with a messages list")
    return conversations
