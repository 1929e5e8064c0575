"""Tokenizers: byte-level BPE (trained by Hugging Face `tokenizers`) and character-level.

Both are saved the same way, so every later stage loads them through one function:
  tokenizer/tokenizer.json  a Hugging Face `tokenizers` file (BPE, or WordLevel over characters)
  tokenizer/meta.json       type (= kind), vocab_size, eot_id, special tokens, hash (sha256 of kind +
                            tokenizer.json: the fingerprint shards and checkpoints pin), token_bytes
                            (UTF-8 bytes each id stands for, 0 for specials: bits-per-byte needs it),
                            and the encode engine chosen at training time.

Why two engines for BPE: `tokenizers` trains a 4k-vocabulary BPE on 10 MB in about a second, but it
encodes at ~1 MB/s per call (~3-5 MB/s with encode_batch on 2 threads). `tiktoken` runs the same
algorithm -- merges by rank, after the same pre-tokenisation regex -- at ~15 MB/s per thread, and
releases the GIL, so a thread pool uses both cores. We build a `tiktoken.Encoding` from the trained
vocabulary (rank = token id, which is merge order) and the *same* regex (GPT-2's, set explicitly as
a Split pre-tokenizer followed by a ByteLevel mapping without its own regex, so both sides split
identically). The two must give identical ids; `check_identity` compares them on a sample of the
training text and on adversarial strings (unicode, emoji, whitespace runs, digits, CRLF), at
training and again at load, and any difference falls back to the `tokenizers` engine.

Special tokens: `<|endoftext|>` (id 0) separates documents; the char tokenizer also has `<|unk|>`
(id 1) for characters not seen in training. `encode` never adds specials; `decode` drops them.

Char tokenizers over large alphabets (Chinese has thousands of characters, most seen once or twice):
when the training alphabet is not plain ASCII or does not fit the vocabulary (`--vocab-size`, else
CHAR_VOCAB_CAP), the char tokenizer keeps the most frequent characters and writes every other one as
its UTF-8 bytes (256 byte tokens `<0xNN>`, the `byte_fallback` of Hugging Face's BPE model with no
merges). Why bytes rather than `<|unk|>`: an unknown token stands for a different number of bytes each
time, so bits-per-byte could not be exact; a byte token is always one byte. Plain-ASCII corpora that
fit (Tiny Shakespeare) keep the compact alphabet-only vocabulary, so their recipes are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lmforge.data.files import atomic_dir
from lmforge.errors import UserError

EOT = "<|endoftext|>"
UNK = "<|unk|>"
CHAR_VOCAB_CAP = 4096  # default most tokens of a char vocabulary (specials + 256 bytes + characters)
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_base), used by both engines.
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ADVERSARIAL = [
    "Hello, World! It's 'quoted' -- you'll see; they've we'd I'm ID'S",
    "naïve café Ñandú ångström Ελληνικά русский 中文字符 日本語のテキスト 한국어 عربى עברית",
    "emoji 🎉🎉 👨‍👩‍👧‍👦 🇫🇷 ✨ skin 👍🏽 ❤️ \u200b\u200d zero-width",
    "   leading spaces\t\ttabs   \n\n\n   trailing   \r\n\r\nCRLF\rCR\n \n  \n",
    "digits 0 12 345 6789 1234567890 3.14159 -42 1e10 0x1F 2024-01-01 ١٢٣ ½",
    "symbols !!! ??? ... --- *** ### @@ $$$ %%% ^^^ &&& ((())) [[]] {{}} <<>> ||| ~~~ ``` '''",
    "a" * 300 + " " * 300 + "b" * 300 + "\n" * 50 + "x",
    "   ",
    "\u00a0nbsp\u3000ideographic\u2028line-sep\u2029para-sep\x0bvt\x0cff",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by ByteLevel."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


class Tokenizer:
    """A trained tokenizer: encode/decode plus the metadata every later stage needs."""

    def __init__(self, hf, meta: dict, num_threads: int | None = None):
        self.hf = hf  # tokenizers.Tokenizer
        self.meta = meta
        self.kind: str = meta["kind"]
        self.vocab_size: int = meta["vocab_size"]
        self.eot_id: int = meta["eot_id"]
        self.hash: str = meta["hash"]
        self.special_tokens: dict[str, int] = dict(meta["special_tokens"])
        self.token_bytes = np.asarray(meta["token_bytes"], dtype=np.int32)  # (vocab_size,)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.num_threads = num_threads or max(1, cores or 1)
        vocab = hf.get_vocab()  # token string -> id
        specials = set(self.special_tokens.values())
        self.byte_fallback = self.kind == "char" and UNK not in self.special_tokens
        self._id_bytes = [b""] * self.vocab_size
        for token, i in vocab.items():
            if i in specials:
                continue
            self._id_bytes[i] = (
                bytes(_UNICODE_TO_BYTE[c] for c in token) if self.kind == "bpe" else _char_token_bytes(token)
            )
        self._tiktoken = None
        self.engine = "tokenizers"
        if self.kind == "char":
            self.engine = "char"
            self._build_char_table(vocab)
        elif meta.get("engine") == "tiktoken":
            try:
                self._tiktoken = self._build_tiktoken(vocab)
            except Exception:  # any failure to build means we cannot promise identical ids
                self._tiktoken = None
            if self._tiktoken is not None and not check_identity(self, ADVERSARIAL):
                self.engine = "tiktoken"

    # --- engines -------------------------------------------------------------------------------
    def _build_tiktoken(self, vocab: dict[str, int]):
        import tiktoken

        specials = set(self.special_tokens.values())
        ranks = {self._id_bytes[i]: i for i in vocab.values() if i not in specials}
        return tiktoken.Encoding(
            f"lmforge-{self.hash[:12]}",
            pat_str=PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )

    def _build_char_table(self, vocab: dict[str, int]) -> None:
        miss = -1 if self.byte_fallback else self.special_tokens[UNK]
        chars = {ord(t): i for t, i in vocab.items() if len(t) == 1 and i not in self.special_tokens.values()}
        self._lut = np.full(max(chars, default=0) + 2, miss, dtype=np.int64)  # last slot: out of range
        for cp, i in chars.items():
            self._lut[cp] = i
        if self.byte_fallback:
            self._byte_ids = np.array([vocab[byte_token(b)] for b in range(256)], dtype=np.int64)

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of `text` as an int64 array (no specials added)."""
        if self.engine == "char":
            cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            ids = self._lut[np.minimum(cps, len(self._lut) - 1)]
            if not self.byte_fallback:
                return ids
            misses = np.flatnonzero(ids < 0)
            if not misses.size:
                return ids
            parts, start = [], 0
            for at in misses.tolist():  # rare characters: each becomes its UTF-8 bytes
                raw = chr(int(cps[at])).encode("utf-8", "surrogatepass")
                parts += [ids[start:at], self._byte_ids[np.frombuffer(raw, dtype=np.uint8)]]
                start = at + 1
            parts.append(ids[start:])
            return np.concatenate(parts)
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        if self.engine == "tiktoken":
            return self._tiktoken.encode_ordinary(text)
        if self.engine == "char":
            return self.encode_array(text).tolist()
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.engine == "tiktoken":
            return self._tiktoken.encode_ordinary_batch(texts, num_threads=self.num_threads)
        if self.engine == "char":
            return [self.encode(t) for t in texts]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_with_tokenizers(self, texts: list[str]) -> list[list[int]]:
        """The reference engine (`tokenizers` encode_batch), for identity checks and benchmarks."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids` (specials dropped); may end in the middle of a UTF-8 character."""
        table = self._id_bytes
        return b"".join(table[int(i)] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def check_identity(tok: Tokenizer, texts: Iterable[str]) -> list[str]:
    """Texts on which tiktoken and `tokenizers` give different ids (empty list = identical)."""
    texts = list(texts)
    ours = tok._tiktoken.encode_ordinary_batch(texts, num_threads=1)
    ref = tok.encode_with_tokenizers(texts)
    return [t for t, a, b in zip(texts, ours, ref, strict=True) if a != b]


def _char_token_bytes(token: str) -> bytes:
    """The bytes a char-tokenizer token stands for: its UTF-8, or one byte for `<0xNN>`."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.encode("utf-8", "surrogatepass")


def _hash(kind: str, content: str) -> str:
    return hashlib.sha256(f"{kind}\n{content}".encode()).hexdigest()


def _sampled(texts: Iterable[str], sample: list[str], budget: int = 1_000_000) -> Iterator[str]:
    """Pass `texts` through, keeping up to `budget` chars of them (in 20k-char pieces) in `sample`."""
    kept = 0
    for t in texts:
        if kept < budget:
            piece = t[:20_000]
            sample.append(piece)
            kept += len(piece)
        yield t


def bpe_pre_tokenizer():
    """GPT-2's regex as an explicit Split, then ByteLevel without its own regex (see the docstring)."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def char_pre_tokenizer():
    """Every character its own piece, so a WordLevel vocabulary of characters encodes text."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")


def _train_bpe(texts: Iterable[str], vocab_size: int, sample: list[str]):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise UserError(f"--vocab-size ({vocab_size}) is below 257 (256 byte tokens + {EOT}); use e.g. 4096")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = bpe_pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(_sampled(texts, sample), trainer)
    return hf, {EOT: hf.token_to_id(EOT)}


def byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def _train_char(texts: Iterable[str], vocab_size: int | None):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(t)
    alphabet = set(counts)
    needed = len(alphabet) + 2
    cap = vocab_size or CHAR_VOCAB_CAP
    if alphabet and (needed > cap or max(map(ord, alphabet)) > 127) and (vocab_size or cap) >= 2 + 256 + 1:
        return _train_char_bytes(counts, cap)
    if vocab_size is not None and vocab_size < needed:
        raise UserError(
            f"--vocab-size ({vocab_size}) is smaller than the alphabet ({len(alphabet)} distinct characters "
            f"+ {EOT} + {UNK}); use --vocab-size {needed} or leave it unset for char"
        )
    vocab = {EOT: 0, UNK: 1} | {c: i + 2 for i, c in enumerate(sorted(alphabet))}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    hf.pre_tokenizer = char_pre_tokenizer()
    hf.decoder = decoders.Fuse()
    return hf, {EOT: 0, UNK: 1}


def _train_char_bytes(counts: Counter[str], cap: int):
    """Characters by frequency up to `cap` tokens, every other character as its UTF-8 bytes."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    vocab = {EOT: 0} | {byte_token(b): b + 1 for b in range(256)}
    kept = sorted(counts, key=lambda c: (-counts[c], c))[: cap - len(vocab)]
    vocab |= {c: i + 257 for i, c in enumerate(sorted(kept))}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    hf.pre_tokenizer = char_pre_tokenizer()
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return hf, {EOT: 0}


def train_tokenizer(
    texts: Iterable[str], kind: str, vocab_size: int | None, out_dir: str | Path
) -> Tokenizer:
    """Train a `kind` ("bpe" | "char") tokenizer on `texts` (streamed) and save it in `out_dir`.

    `vocab_size` includes the special tokens; for char it is an upper bound (None: the alphabet).
    """
    sample: list[str] = []
    if kind == "bpe":
        hf, specials = _train_bpe(texts, vocab_size or 4096, sample)
    elif kind == "char":
        hf, specials = _train_char(texts, vocab_size)
    else:
        raise UserError(f"--tokenizer '{kind}' is not one of bpe, char")
    if not hf.get_vocab_size() > len(specials) + (0 if kind == "char" else 255):
        raise UserError("the tokenizer training text is empty; check the corpus")
    return save_tokenizer(hf, kind, specials, out_dir, sample=sample)


def save_tokenizer(
    hf,
    kind: str,
    specials: dict[str, int],
    out_dir: str | Path,
    sample: Iterable[str] = (),
    eot: str = EOT,
    content: str | None = None,
    try_tiktoken: bool = True,
) -> Tokenizer:
    """Fingerprint a `tokenizers.Tokenizer` and save it in `out_dir` (tokenizer.json + meta.json).

    Shared by training and by import (`lmforge import`), so an imported tokenizer gets the same hash,
    token_bytes and engine choice as a trained one. `specials` maps special-token strings to ids and
    `eot` names the one that ends a document; `content` is the tokenizer.json text when it must be
    kept byte for byte (the hash covers it); the tiktoken engine is only tried with `try_tiktoken`
    (ids = merge ranks and our pre-tokenisation, as our trainer makes them) and kept if identical.
    """
    content = hf.to_str() if content is None else content
    meta = {
        "type": kind,  # the spec's name for it
        "kind": kind,
        "vocab_size": hf.get_vocab_size(),
        "eot_id": specials[eot],
        "special_tokens": specials,
        "hash": _hash(kind, content),
        "engine": "char" if kind == "char" else "tiktoken" if try_tiktoken else "tokenizers",
        "pattern": PATTERN if kind == "bpe" else None,
    }
    vocab = hf.get_vocab()
    token_bytes = [0] * meta["vocab_size"]
    for token, i in vocab.items():
        if i not in specials.values():
            token_bytes[i] = (
                len(_char_token_bytes(token)) if kind == "char" else len(token)
            )  # ByteLevel: 1 char = 1 byte
    meta["token_bytes"] = token_bytes
    tok = Tokenizer(hf, meta)
    if kind == "bpe" and try_tiktoken:
        checked = [*sample, *ADVERSARIAL]
        differ = check_identity(tok, checked) if tok._tiktoken is not None else ["not built"]
        meta["engine"] = tok.engine = "tokenizers" if differ else "tiktoken"
        meta["identity_checked_chars"] = sum(map(len, checked))
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "tokenizer.json").write_text(content, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return tok


def add_special_tokens(tok: Tokenizer, names: list[str], out_dir: str | Path) -> Tokenizer:
    """A copy of `tok` with `names` appended as special tokens after the existing vocabulary, saved in
    `out_dir`. Existing ids are unchanged, so a model trained with `tok` keeps its meaning (its
    embedding and head just grow by len(names) rows). Names already present are left as they are."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(tok.hf.to_str())
    new = [n for n in names if n not in tok.special_tokens]
    hf.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in new])
    content = hf.to_str()
    meta = dict(tok.meta)
    meta["special_tokens"] = {**tok.special_tokens, **{n: hf.token_to_id(n) for n in new}}
    meta["vocab_size"] = hf.get_vocab_size()
    meta["token_bytes"] = list(meta["token_bytes"]) + [0] * (meta["vocab_size"] - len(meta["token_bytes"]))
    meta["hash"] = _hash(tok.kind, content)
    if [meta["special_tokens"][n] for n in new] != list(range(tok.vocab_size, meta["vocab_size"])):
        raise UserError(f"could not append special tokens {new} after the vocabulary of {tok.vocab_size}")
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "tokenizer.json").write_text(content, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return Tokenizer(hf, meta)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load DATA_DIR/tokenizer (or a run's copy); UserError if missing, corrupt or altered."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    try:
        content = (path / "tokenizer.json").read_text(encoding="utf-8")
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        kind = meta["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"no readable tokenizer in '{path}'; run `lmforge data tokenizer` (or prepare) first"
        ) from None
    if _hash(kind, content) != meta.get("hash"):
        raise UserError(
            f"tokenizer in '{path}' does not match its hash in meta.json; retrain: `lmforge data tokenizer`"
        )
    try:
        hf = HFTokenizer.from_str(content)
    except Exception as exc:  # the Rust side raises a plain Exception on a bad file
        raise UserError(f"tokenizer.json in '{path}' is corrupt ({str(exc)[:100]}); retrain it") from None
    return Tokenizer(hf, meta)
