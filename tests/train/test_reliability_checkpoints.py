"""Checkpoints are atomic and verified: damaged ones are skipped (saying so), incomplete ones refused
by the name of the missing piece, the last K and the best are kept, a full disk leaves the old ones
intact, and changed data or tokenizer is refused on resume."""

from __future__ import annotations

import json
import resource
import shutil
import signal

import pytest
from safetensors.torch import load_file, save_file
from test_reliability_support import (
    all_checkpoints_verify,
    assert_same_run,
    cli,
    copy_until,
    fix_manifest,
    meta,
    reference_run,
    train_args,
)

from lmforge import runs
from lmforge.cli import main
from lmforge.errors import UserError


@pytest.fixture(scope="module")
def reference(char_data, tmp_path_factory):
    return reference_run(char_data, tmp_path_factory)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file"),
    [(truncate, "model.safetensors"), (flip_byte, "optim.safetensors"), (flip_byte, "meta.json")],
    ids=["truncated-model", "bit-flipped-optim", "bit-flipped-meta"],
)
def test_damaged_checkpoint_falls_back_to_the_previous_good_one(
    damage, file, reference, char_data, tmp_path, capsys
):
    out = copy_until(reference, tmp_path / "run", 25)
    damage(out / "ckpt" / "step_000025" / file)
    assert main(train_args(char_data, out, "--resume")) == 0
    printed = capsys.readouterr()
    said = printed.out + printed.err
    assert f"skipping damaged checkpoint step_000025: file '{file}' does not match its checksum" in said
    assert "resuming from step_000020" in said
    assert_same_run(out, reference)  # and the run is still bit-exact from there
    assert all_checkpoints_verify(out)  # the damaged step_25 was re-saved over


def test_leftover_temporary_folders_are_removed_on_resume(reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 25)
    (out / "ckpt" / ".tmp-step_000030").mkdir()
    (out / "ckpt" / ".tmp-step_000030" / "model.safetensors").write_bytes(b"half")
    (out / "ckpt" / ".tmp-prune-step_000005").mkdir()  # an interrupted prune
    assert main(train_args(char_data, out, "--resume")) == 0
    said = capsys.readouterr().out
    assert "removed unfinished checkpoint .tmp-step_000030" in said
    assert all_checkpoints_verify(out)  # also: no .tmp-* left
    assert_same_run(out, reference)


def _drop_optim_file(ckpt):
    (ckpt / "optim.safetensors").unlink()


def _drop_meta_key(key):
    def drop(ckpt):
        data = json.loads((ckpt / "meta.json").read_text())
        del data[key]
        (ckpt / "meta.json").write_text(json.dumps(data))

    return drop


@pytest.mark.parametrize(
    ("remove", "piece"),
    [
        (_drop_optim_file, "required piece 'optim.safetensors' is missing from the manifest"),
        (_drop_meta_key("step"), "required piece 'step' is missing from meta.json"),
        (_drop_meta_key("max_steps"), "required piece 'max_steps' is missing from meta.json"),
    ],
    ids=["optim.safetensors", "meta.step", "meta.max_steps"],
)
def test_checkpoint_missing_a_piece_is_refused_by_name(remove, piece, reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 25)
    ckpt = out / "ckpt" / "step_000025"
    remove(ckpt)
    fix_manifest(ckpt)  # the checksums agree: only the piece check can catch it
    assert runs.verify_checkpoint(ckpt) == f"step_000025: {piece}"
    with pytest.raises(UserError, match=piece):
        runs.load_run(out, step=25)
    # a resume refuses it by name and uses the previous good checkpoint
    assert main(train_args(char_data, out, "--resume")) == 0
    printed = capsys.readouterr()
    assert f"skipping damaged checkpoint step_000025: {piece}" in printed.err  # a warning
    assert "resuming from step_000020" in printed.out
    assert_same_run(out, reference)


def test_missing_optimizer_tensor_is_refused_by_name(reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 25)
    ckpt = out / "ckpt" / "step_000025"
    tensors = load_file(str(ckpt / "optim.safetensors"))
    gone = sorted(tensors)[0]
    del tensors[gone]
    save_file(tensors, str(ckpt / "optim.safetensors"))
    fix_manifest(ckpt)
    assert main(train_args(char_data, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"optimizer tensor '{gone}'" in err and "Traceback" not in err


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 5)
    truncate(out / "ckpt" / "step_000005" / "model.safetensors")
    assert main(train_args(char_data, out, "--resume")) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert (out / "metrics.jsonl").is_file()  # the run's history was not thrown away


def test_keep_last_k_and_the_best(tmp_path):
    for step in range(5, 35, 5):
        (tmp_path / "ckpt" / runs.ckpt_name(step)).mkdir(parents=True)
    runs.prune_checkpoints(tmp_path, keep_last=2, best_step=10)
    assert [s for s, _ in runs.list_checkpoints(tmp_path)] == [30, 25, 10]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "step_000010",
        "step_000025",
        "step_000030",
    ]


def test_a_run_keeps_last_k_and_the_best(reference, char_data, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(char_data, out, "train.keep_last=2", "--max-steps", "30")) == 0
    info = meta(out)
    kept = [s for s, _ in runs.list_checkpoints(out)]
    assert kept[:2] == [30, 25] and set(kept) == {30, 25, info["best_step"]}
    assert info["best_val"] == min(
        r["val/loss"] for r in runs.read_metrics(out) if "val/loss" in r and r["step"] % 5 == 0
    )


def _file_size_limit():
    # a "full disk": no file may grow past 200 kB (model.safetensors is 150 kB, optim 300 kB)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying


@pytest.mark.slow
def test_full_disk_leaves_old_checkpoints_and_stops_with_a_clear_error(reference, char_data, tmp_path):
    out = copy_until(reference, tmp_path / "run", 10)
    before = {p.name: runs.sha256_file(p / "model.safetensors") for _, p in runs.list_checkpoints(out)}
    proc = cli(train_args(char_data, out, "--resume"), preexec_fn=_file_size_limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: could not write checkpoint step_000015 (File too large)")
    assert "earlier checkpoints are intact" in lines[0]
    # the old checkpoints are untouched and nothing half-written is left
    after = {p.name: runs.sha256_file(p / "model.safetensors") for _, p in runs.list_checkpoints(out)}
    assert after == before and all_checkpoints_verify(out)
    # with space again, the run resumes as if nothing had happened
    assert main(train_args(char_data, out, "--resume")) == 0
    assert_same_run(out, reference)


def test_changed_shards_refused_unless_allowed(reference, char_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    manifest = json.loads((data / "shards" / "manifest.json").read_text())
    manifest["note"] = "re-encoded"  # the shards' fingerprint (manifest sha256) changes
    (data / "shards" / "manifest.json").write_text(json.dumps(manifest))
    out = copy_until(reference, tmp_path / "run", 25)
    assert main(train_args(data, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "training shards changed" in err and "--allow-data-change" in err
    assert main(train_args(data, out, "--resume", "--allow-data-change")) == 0


def test_changed_tokenizer_refused_even_when_allowed(reference, tiny_corpus, tmp_path, capsys):
    # a corpus with one letter swapped for an unused one: same vocabulary size, another tokenizer
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in tiny_corpus.iterdir():
        text = path.read_text()
        assert "#" not in text
        (corpus / path.name).write_text(text.replace("q", "#"))
    data = tmp_path / "data"
    assert main(["data", "prepare", "--source", str(corpus), "--out", str(data), "--tokenizer", "char",
                 "--split", "tail", "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    out = copy_until(reference, tmp_path / "run", 25)
    assert main(train_args(data, out, "--resume", "--allow-data-change")) == 2
    assert "the tokenizer changed" in capsys.readouterr().err
