"""What the loop trains on (`TrainData`), and `open_data` to build it from a prepared data folder.

The loop sees data only through this shape -- a sampler factory and an evaluation function -- so
fine-tuning (masked targets, packed conversations, labelled rows) hands its own to the same `train()`.
The batches of a step are a pure function of (seed, step, rank, micro_step), so resuming needs only
the step number -- see data/batches.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from lmforge import runs
from lmforge.data.batches import BatchSampler, Pool
from lmforge.errors import UserError
from lmforge.eval.loss import evaluate_tokens


class Sampler(Protocol):
    def batch(self, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of one micro-step: a pure function of the step, so a resume replays none."""
        ...


class MakeSampler(Protocol):
    def __call__(
        self, batch_size: int, seq_len: int, seed: int, rank: int, world_size: int = 1
    ) -> Sampler: ...


@dataclass
class TrainData:
    """What the loop trains on: a batch source, a validation measure, and the tokenizer.

    `open_data(DATA_DIR)` builds it from token shards; fine-tuning builds its own (masked targets,
    conversation packing) and hands it to the same `train()`.
    """

    tokenizer: Any
    tokenizer_dir: Path  # copied into the run folder
    fingerprint: str  # sha256 of what the batches are drawn from; a change is refused on resume
    source: str  # a description for run.json (the data folder)
    make_sampler: MakeSampler  # (batch_size, seq_len, seed, rank, world_size) -> a Sampler
    evaluate: Callable[..., dict]  # (model, max_tokens, batch_size, device, autocast) -> metrics


def open_data(data_dir: Path, weights: dict[str, float]) -> TrainData:
    """Token shards of a DATA_DIR as TrainData: one pool per source, the val split for evaluation.

    Mixture weights: `data.weights` from the run config when given, else the weights the sources
    were collected with (sources.json); a source without a weight gets none of the batches.
    """
    from lmforge.data.shards import open_split, open_split_by_source, read_manifest
    from lmforge.data.tokenizer import load_tokenizer

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"data folder '{data_dir}' does not exist; make it with `lmforge data prepare --out {data_dir}`"
        )
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    shards_dir = data_dir / "shards"
    manifest = read_manifest(shards_dir)
    if manifest.get("tokenizer_hash") != tokenizer.hash:
        raise UserError(
            f"shards in '{shards_dir}' were made with another tokenizer than '{data_dir / 'tokenizer'}'; "
            "re-run `lmforge data encode`"
        )
    by_source = open_split_by_source(shards_dir, "train", expected_tokenizer_hash=tokenizer.hash)
    val = open_split(shards_dir, "val", expected_tokenizer_hash=tokenizer.hash)
    if weights:
        unknown = set(weights) - set(by_source)
        if unknown:
            raise UserError(
                f"data.weights names unknown source(s) {sorted(unknown)}; known: {sorted(by_source)}"
            )
    else:
        sources_path = data_dir / "sources.json"
        saved = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
        weights = {name: float(saved.get(name, {}).get("weight", 1.0)) for name in by_source}
    pools = [Pool(name, arrays, float(weights.get(name, 0.0))) for name, arrays in by_source.items()]
    if not any(p.weight > 0 for p in pools):
        raise UserError("every data.weights entry is 0; give at least one source a positive weight")

    def make_sampler(
        batch_size: int, seq_len: int, seed: int, rank: int, world_size: int = 1
    ) -> BatchSampler:
        return BatchSampler(pools, batch_size, seq_len, seed, rank=rank, world_size=world_size)

    def evaluate(model, max_tokens, batch_size, device, autocast) -> dict:
        seq_len = runs.unwrap(model).config.seq_len
        return evaluate_tokens(
            model, val, tokenizer.token_bytes, seq_len, max_tokens, batch_size, device, autocast
        )

    return TrainData(
        tokenizer=tokenizer,
        tokenizer_dir=data_dir / "tokenizer",
        fingerprint=runs.sha256_file(shards_dir / "manifest.json"),
        source=str(data_dir.resolve()),
        make_sampler=make_sampler,
        evaluate=evaluate,
    )
