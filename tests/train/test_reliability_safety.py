"""No code runs from a file, hostile files fail fast and cleanly, hostile corpora are survived.

- a crafted pickle in place of a checkpoint's safetensors is refused and never executed, also with
  TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which would turn `torch.load` back into plain unpickling);
- hostile safetensors headers give a UserError in well under a second, without a large allocation;
- invalid UTF-8, NUL bytes, a BOM, an empty file and a 50 MB single line go through `data prepare`
  in bounded memory; a corrupt token shard is refused when training opens it, by name.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability_support import copy_until, fix_manifest, reference_run, train_args

from lmforge.cli import main
from lmforge.data.shards import open_shard, write_shard
from lmforge.errors import UserError

SRC = Path(__file__).resolve().parents[2] / "src" / "lmforge"


class Payload:
    """Unpickling this creates the file `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def reference(char_data, tmp_path_factory):
    return reference_run(char_data, tmp_path_factory)


@pytest.mark.parametrize("file", ["model.safetensors", "optim.safetensors"])
@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_crafted_pickle_is_refused_and_never_runs(
    kind, file, reference, char_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()  # the payload is live: unpickling it does run code
    out = copy_until(reference, tmp_path / "run", 30)
    ckpt = out / "ckpt" / "step_000030"
    if kind == "pickle":
        (ckpt / file).write_bytes(pickle.dumps({"weight": Payload(marker)}))
    else:
        torch.save({"weight": Payload(marker)}, ckpt / file)
    fix_manifest(ckpt)  # the checksums agree: the file itself must be refused
    if file == "model.safetensors":
        assert main(["eval", str(out), "--json"]) == 2
    assert main(train_args(char_data, out, "--resume", "--max-steps", "40")) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and "step_000030" in err and "Traceback" not in err
    assert not marker.exists()


def test_no_pickle_loading_in_the_source():
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pickle\.loads?\(|allow_pickle\s*=\s*True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


def _safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


HOSTILE = {
    "header-length-2**62": _safetensors(b"{}", length=2**62),
    "header-longer-than-file": _safetensors(b'{"a": 1}', length=1 << 20),
    "header-not-json": _safetensors(b"\x80\x04\x95" + b"\0" * 13),
    "offsets-out-of-bounds": _safetensors(
        {"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}}, b"\0" * 16
    ),
    "offsets-overlapping": _safetensors(
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        },
        b"\0" * 24,
    ),  # fmt: skip
    "offsets-reversed": _safetensors(
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, b"\0" * 16
    ),
    "shape-disagrees-with-offsets": _safetensors(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 16]}}, b"\0" * 16
    ),
    "empty-file": b"",
}

_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from lmforge import runs
    from lmforge.errors import UserError
    from lmforge.models.registry import MODELS
    from lmforge.train.optim import build_optimizers

    root, run = Path(sys.argv[1]), Path(sys.argv[2])
    config = runs.read_run_config(run)
    model = MODELS[config.model.family][1](config.model)
    optimizers = build_optimizers(config.optim, model, "cpu")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {}
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        start, error = time.perf_counter(), None
        try:
            if (case / "model.safetensors").exists():
                runs.load_model_weights(model, case)
            else:
                runs.load_training_state(case, model, optimizers)
        except UserError as exc:
            error = str(exc)
        report[case.name] = {"error": error, "seconds": time.perf_counter() - start}
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    print(json.dumps({"cases": report, "rss_growth_mb": growth / 1024}))
    """
)


@pytest.mark.slow
def test_hostile_safetensors_fail_fast_and_small(reference, tmp_path):
    good = reference / "ckpt" / "step_000030"
    for name, blob in HOSTILE.items():
        for file in ("model.safetensors", "optim.safetensors"):
            case = tmp_path / f"{file.split('.')[0]}-{name}"
            shutil.copytree(good, case)
            if file == "optim.safetensors":
                (case / "model.safetensors").unlink()
            (case / file).write_bytes(blob)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), str(reference)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert len(result["cases"]) == 2 * len(HOSTILE)
    for name, case in result["cases"].items():
        assert case["error"] and "\n" not in case["error"], name  # a clean one-line UserError
        assert case["seconds"] < 1.0, name
    assert result["rss_growth_mb"] < 50  # no allocation sized by what the header claims


def _hostile_corpus(folder: Path) -> None:
    import random

    folder.mkdir()
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler",
             "in", "the", "mind", "suffer", "slings", "arrows"]  # fmt: skip

    def lines(n):
        return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 12))) for _ in range(n)]

    for i in range(4):
        (folder / f"plain_{i}.txt").write_text("\n".join(lines(40)), encoding="utf-8")
    (folder / "bad_utf8.txt").write_bytes(
        b"\n".join(x.encode() + b" \xff\xfe caf\xc3\xa9 \xc3\x28" for x in lines(40))
    )
    (folder / "nul.txt").write_bytes(b"\n".join(x.encode().replace(b" ", b"\x00", 1) for x in lines(40)))
    (folder / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines(40)).encode())
    (folder / "empty.txt").write_bytes(b"")
    line = b"to be or not to be that is the question "  # 40 bytes
    (folder / "one_line_50mb.txt").write_bytes((line * (50 * 2**20 // len(line) + 1))[: 50 * 2**20])


_PEAK = (
    "import resource, subprocess, sys; proc = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(proc.returncode)"
)


@pytest.mark.slow
def test_hostile_corpus_is_prepared_in_bounded_memory(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "data"
    _hostile_corpus(corpus)
    argv = [sys.executable, "-m", "lmforge", "data", "prepare", "--source", str(corpus), "--out", str(out),
            "--tokenizer", "char", "--split", "tail", "--json"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *report_lines, peak_mb = proc.stdout.strip().splitlines()
    assert int(peak_mb) < 600  # the 50 MB line never sits in memory many times over
    report = json.loads(report_lines[-1])
    source = report["sources"]["corpus"]
    assert source["files"] == 9 and source["invalid_utf8_bytes"] == 120  # 3 bad bytes x 40 lines
    assert source["oversized_docs"] == 1  # the 50 MB line, cut into document-sized pieces at spaces
    clean = report["steps"]["clean"]
    assert clean["dropped"]["exact_dedup"] >= 1 and clean["changed"]["control_chars"] >= 1  # NULs
    assert report["tokens"]["train"] > 0 and report["tokens"]["val"] > 0
    texts = [
        json.loads(x)["text"] for f in (out / "clean").glob("*.jsonl") for x in f.read_text().splitlines()
    ]
    assert texts and not any("\x00" in t for t in texts)


def test_byte_order_mark_is_not_kept_in_the_text(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "data"
    corpus.mkdir()
    text = "\n".join(f"line {i} of a small file that starts with a byte order mark" for i in range(40))
    (corpus / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (corpus / "plain.txt").write_text(text.replace("small", "plain"), encoding="utf-8")
    assert main(["data", "collect", "--source", str(corpus), "--out", str(out)]) == 0
    docs = [json.loads(x)["text"] for f in out.rglob("docs_*.jsonl") for x in f.read_text().splitlines()]
    assert docs and not any("\ufeff" in d for d in docs)


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))


def _id_beyond_vocab(path):
    tokens = np.array(open_shard(path))
    tokens[-1] = 60000  # the char tokenizer has a few dozen ids
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["splits"]["train"]["shards"] if e["name"] == path.name)
    entry["sha256"] = write_shard(path, tokens)["sha256"]  # a consistent manifest: only the id check is left
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_flip, "does not match its sha256"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"NOTSHARD" + p.read_bytes()[8:]), "bad magic"),
        (_id_beyond_vocab, "token id 60000 >= vocab_size"),
    ],
    ids=["flipped-byte", "truncated", "wrong-header", "id-beyond-vocab"],
)
def test_corrupt_shard_refused_when_training_opens_it(corrupt, match, char_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    corrupt(data / "shards" / "train_00000.bin")
    assert main(train_args(data, tmp_path / "run", "--max-steps", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shard train_00000.bin") and match in err and "\n" not in err
    assert not (tmp_path / "run" / "ckpt").exists()


def test_fault_spec_is_checked():
    from lmforge.train.faults import Faults, parse_faults

    faults = parse_faults("step:3,sigint:5,ckpt_data_written:6:INT,nan:7,slow:9:0.5,step:4@1")
    assert faults.signals[("step", 3)].name == "SIGKILL" and faults.signals[("step", 5)].name == "SIGINT"
    assert faults.signals[("ckpt_data_written", 6)].name == "SIGINT" and str(faults.losses[7]) == "nan"
    assert (faults.slow_from, faults.slow_seconds) == (9, 0.5) and ("step", 4) not in faults.signals
    assert type(parse_faults("")) is Faults and type(parse_faults(None)) is Faults
    for bad in ("step:x", "step", "step:3:HUP", "slow:3"):
        with pytest.raises(UserError, match=f"LMFORGE_FAULT item '{bad}'"):
            parse_faults(bad)
