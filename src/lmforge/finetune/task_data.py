"""Labelled examples for the fine-tuning tasks: JSONL, CSV or a Hugging Face dataset, checked row by row.

    classify / sentiment   {"text": "...", "label": "comedy"}
    ner                    {"tokens": ["Good", "Horatio"], "tags": ["O", "B-PER"]}   (BIO tags)
    translate              {"source": "vnfold your selfe", "target": "unfold yourself"}

CSV files have the same columns (NER tokens and tags space-separated in their cells); `hf:NAME[:SPLIT]`
(or a `save_to_disk` folder) needs columns of those names. Every mistake names its place (`file:line`
or `dataset[row]`) and what to do: a fine-tuning set that silently loses rows is worse than none.

Without `--val`, a validation split is taken by a stable hash of each example (sha256 of its JSON,
about one in ten), so the split does not depend on file order and never changes between runs.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

from lmforge.errors import UserError

FIELDS = {"classify": ("text", "label"), "ner": ("tokens", "tags"), "translate": ("source", "target")}
KIND = {"classify": "classify", "sentiment": "classify", "ner": "ner", "translate": "translate"}


def task_kind(task: str) -> str:
    if task not in KIND:
        raise UserError(f"unknown task '{task}'; use one of {', '.join(KIND)}")
    return KIND[task]


def check_example(record, kind: str, where: str) -> dict:
    """The validated example, or a UserError naming `where`."""
    a, b = FIELDS[kind]
    shape = f'{{"{a}": ..., "{b}": ...}}'
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object {shape}")
    for name in (a, b):
        if record.get(name) is None or record.get(name) == "":
            raise UserError(f'{where}: "{name}" is missing; each example needs {shape}')
    if kind == "classify":
        label = record["label"]
        if not isinstance(label, str | int) or isinstance(label, bool):
            raise UserError(f'{where}: "label" must be a string or an integer, got {label!r}')
        return {"text": str(record["text"]), "label": str(label)}
    if kind == "translate":
        return {"source": str(record["source"]), "target": str(record["target"])}
    tokens, tags = record["tokens"], record["tags"]
    tokens = tokens.split() if isinstance(tokens, str) else tokens
    tags = tags.split() if isinstance(tags, str) else tags
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise UserError(f'{where}: "tokens" and "tags" must be lists (or space-separated strings)')
    if len(tokens) != len(tags):
        raise UserError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token")
    for tag in tags:
        if not isinstance(tag, str) or not (tag == "O" or tag[:2] in ("B-", "I-")):
            raise UserError(f"{where}: tag {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE)")
    return {"tokens": [str(t) for t in tokens], "tags": list(tags)}


def _records(path: Path):
    """(where, record) for each row of a .jsonl / .csv file (optionally .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{number}", row
            return
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield f"{path}:{number}", json.loads(line)
                except ValueError as exc:
                    raise UserError(
                        f"{path}:{number}: not valid JSON ({exc.msg}); one example per line"
                    ) from None


def load_hf_split(spec: str, what: str = "data"):
    """`hf:NAME[:SPLIT]` -> (name, datasets.Dataset); NAME may be a folder saved with save_to_disk."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf: {what} needs the `datasets` package; pip install 'lmforge[hf]'") from None
    name, _, split = spec[3:].partition(":")
    split = split or "train"
    try:
        if Path(name).exists():
            ds = datasets.load_from_disk(name)
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types; a load failure is the user's to fix
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"could not load Hugging Face dataset '{name}' split '{split}' ({why})") from None
    return name, ds


def _hf_records(spec: str):
    name, ds = load_hf_split(spec)
    for i, row in enumerate(ds):
        yield f"{name}[{i}]", row


def read_examples(spec: str | Path, task: str) -> list[dict]:
    """Every example of a .jsonl / .csv file or `hf:NAME[:SPLIT]`, validated; at least one."""
    kind, spec = task_kind(task), str(spec)
    if spec.startswith("hf:"):
        rows = _hf_records(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"data file '{path}' does not exist; pass a .jsonl or .csv file (or hf:NAME)")
        rows = _records(path)
    try:
        examples = [check_example(record, kind, where) for where, record in rows]
    except UnicodeDecodeError:
        raise UserError(f"data file '{spec}' is not UTF-8 text") from None
    if not examples:
        a, b = FIELDS[kind]
        raise UserError(f'\'{spec}\' holds no examples; one {{"{a}", "{b}"}} object per line')
    return examples


def in_val(example: dict, percent: int = 10) -> bool:
    """Stable split: the example's sha256 decides, independent of order and run."""
    digest = hashlib.sha256(json.dumps(example, sort_keys=True).encode()).hexdigest()
    return int(digest[:8], 16) % 100 < percent


def split_examples(examples: list[dict], percent: int = 10) -> tuple[list[dict], list[dict]]:
    train = [e for e in examples if not in_val(e, percent)]
    val = [e for e in examples if in_val(e, percent)]
    if not val or not train:
        raise UserError(
            f"{len(examples)} example(s) are too few to hold out a validation split; pass --val FILE"
        )
    return train, val


def label_list(examples: list[dict], kind: str) -> list[str]:
    """The label vocabulary: sorted class names, or 'O' then the B-/I- tags sorted."""
    if kind == "classify":
        return sorted({e["label"] for e in examples})
    tags = {t for e in examples for t in e["tags"]} - {"O"}
    types = sorted({t[2:] for t in tags})
    return ["O", *[f"{p}-{t}" for t in types for p in ("B", "I")]]


def check_labels(examples: list[dict], labels: list[str], kind: str, where: str) -> None:
    """An unknown label (one the run was not trained on) is a UserError naming it."""
    known = set(labels)
    for i, e in enumerate(examples):
        found = [e["label"]] if kind == "classify" else e["tags"]
        for label in found:
            if label not in known:
                raise UserError(
                    f"{where}: example {i + 1} has label '{label}', which the run was not trained on "
                    f"(known: {', '.join(labels[:12])})"
                )
