"""Each task fine-tuned a few steps from a tiny lmforge run; eval --task, predict, probing, bad input."""

from __future__ import annotations

import io
import json
import random

import pytest
import torch
from safetensors.torch import load_file

from lmforge import runs
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.finetune.predict import load_task_run

WORDS = ["to", "be", "or", "not", "the", "question", "sleep", "die"]
NAMES = ["Hamlet", "Horatio"]  # (the char tokenizer maps unseen capitals to <|unk|>: fine)
FAST = [
    "--no-progress",
    "train.eval_every=3",
    "train.batch_size=8",
    "train.ckpt_every=100",
    "train.threads=1",
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def classify_rows(n=60):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS[:5]) for _ in range(4)]
        words.insert(rng.randrange(5), "sleep" if i % 2 else "die")
        rows.append({"text": " ".join(words), "label": "sleepy" if i % 2 else "deadly"})
    return rows


def ner_rows(n=40):
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(WORDS) for _ in range(5)]
        tags = ["O"] * 5
        k = rng.randrange(4)
        tokens[k : k + 2], tags[k : k + 2] = [rng.choice(NAMES), "be"], ["B-PER", "O"]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def translate_rows(n=40):
    rng = random.Random(2)
    return [
        {"source": " ".join(w), "target": " ".join(reversed(w))}
        for w in ([rng.choice(WORDS) for _ in range(3)] for _ in range(n))
    ]


def finetune(base, task, train, out, *extra):
    args = ["finetune", str(base), "--task", task, "--train", str(train), "--out", str(out), *FAST, *extra]
    assert main(args) == 0, args


def cli_json(capsys, args) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cls_run(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    train = write_jsonl(folder / "train.jsonl", classify_rows())
    finetune(tiny_run, "classify", train, folder / "run", "--max-steps", "6")
    return folder / "run", train


def test_classify_trains_evaluates_and_predicts(cls_run, capsys, monkeypatch):
    run_dir, train = cls_run
    info = json.loads((run_dir / "task.json").read_text())
    assert info["labels"] == ["deadly", "sleepy"] and info["kind"] == "classify"
    assert runs.list_checkpoints(run_dir) and (run_dir / "metrics.jsonl").is_file()
    result = cli_json(capsys, ["eval", str(run_dir), "--task", "classify", "--data", str(train)])
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
    assert sum(map(sum, result["confusion"])) == result["n"] == 60
    monkeypatch.setattr("sys.stdin", io.StringIO("to be or sleep\nnot to die\n"))
    assert main(["predict", str(run_dir)]) == 0
    assert capsys.readouterr().out.split() in ([a, b] for a in info["labels"] for b in info["labels"])


def test_sentiment_from_csv_with_a_probe_leaves_the_backbone_unchanged(tiny_run, tmp_path):
    lines = ["text,label"] + [
        f"{r['text']},{'positive' if r['label'] == 'sleepy' else 'negative'}" for r in classify_rows(40)
    ]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "probe"
    finetune(tiny_run, "sentiment", tmp_path / "s.csv", out, "--max-steps", "4", "--freeze-backbone")
    base = load_file(str(runs.find_latest_good(tiny_run).path / "model.safetensors"))
    tuned = load_file(str(runs.find_latest_good(out).path / "model.safetensors"))
    for name, tensor in base.items():
        torch.testing.assert_close(tuned[f"backbone.{name}"], tensor, rtol=0, atol=0)
    assert not torch.equal(tuned["head.weight"], torch.zeros_like(tuned["head.weight"]))
    assert load_task_run(out).task == "sentiment"


def test_ner_with_lora_then_eval_and_predict(tiny_run, tmp_path, capsys):
    train = write_jsonl(tmp_path / "ner.jsonl", ner_rows())
    out = tmp_path / "ner"
    finetune(tiny_run, "ner", train, out, "--max-steps", "4", "--lora-rank", "4")
    tuned = load_file(str(runs.find_latest_good(out).path / "model.safetensors"))
    assert any("lora_A" in k for k in tuned)
    result = cli_json(capsys, ["eval", str(out), "--data", str(train)])  # --task read from the run
    assert {"precision", "recall", "f1"} <= set(result)
    (tmp_path / "in.txt").write_text("to be Hamlet or not\n", encoding="utf-8")
    assert main(["predict", str(out), "--input", str(tmp_path / "in.txt")]) == 0
    words = capsys.readouterr().out.split()
    assert [w.split("/")[0] for w in words] == ["to", "be", "Hamlet", "or", "not"]
    assert all(w.split("/")[1] in ("O", "B-PER", "I-PER") for w in words)


def test_translate_trains_on_targets_and_decodes(tiny_run, tmp_path, capsys):
    train = write_jsonl(tmp_path / "tr.jsonl", translate_rows())
    few = write_jsonl(tmp_path / "few.jsonl", translate_rows(4))
    out = tmp_path / "tr"
    finetune(tiny_run, "translate", train, out, "--max-steps", "4", "--val", str(few))
    result = cli_json(capsys, ["eval", str(out), "--task", "translate", "--data", str(few), "--beam", "2"])
    assert 0 <= result["bleu"] <= 100 and 0 <= result["chrf"] <= 100 and result["n"] == 4
    (tmp_path / "src.txt").write_text("to be or\nnot the die\n", encoding="utf-8")
    assert main(["predict", str(out), "--input", str(tmp_path / "src.txt"), "--beam", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["to be or", "not the die"]


# --- bad input: one clear line each ---------------------------------------------------------------


def error_of(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_label_and_mismatched_tags_are_one_line(tiny_run, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "to be", "label": "a"}, {"text": "or not"}])
    err = error_of(
        capsys,
        ["finetune", str(tiny_run), "--task", "classify", "--train", str(bad), "--out", str(tmp_path / "x")],
    )
    assert f"{bad}:2" in err and '"label" is missing' in err
    bad = write_jsonl(tmp_path / "ner.jsonl", [{"tokens": ["to", "be"], "tags": ["O"]}])
    err = error_of(
        capsys,
        ["finetune", str(tiny_run), "--task", "ner", "--train", str(bad), "--out", str(tmp_path / "y")],
    )
    assert "2 tokens but 1 tags" in err


def test_unknown_label_at_evaluation(cls_run, tmp_path, capsys):
    run_dir, _ = cls_run
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "to be", "label": "happy"}])
    err = error_of(capsys, ["eval", str(run_dir), "--task", "classify", "--data", str(data)])
    assert "'happy'" in err and "not trained on" in err
    err = error_of(capsys, ["eval", str(run_dir), "--task", "ner", "--data", str(data)])
    assert "fine-tuned for classify" in err


def test_a_classification_run_refuses_to_generate(cls_run, capsys):
    run_dir, _ = cls_run
    err = error_of(capsys, ["generate", str(run_dir), "--prompt", "to be"])
    assert "classify run" in err and "lmforge predict" in err


def test_a_swapped_tokenizer_is_refused(cls_run, tmp_path):
    import shutil

    from lmforge.data.tokenizer import train_tokenizer

    run_dir, _ = cls_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "tokenizer")
    train_tokenizer(["a different alphabet: xyz 123"], "char", None, copy / "tokenizer")
    with pytest.raises(UserError, match="tokenizer/backbone mismatch"):
        load_task_run(copy)
