"""Each task fine-tuned from a tiny lmforge run on a small learnable set the test makes, then judged
against its trivial baseline (majority class, all-O, copying the source) on held-out examples: a
broken loss or a frozen optimizer leaves the model at or below the baseline and these tests red.
Also eval --task, predict, probing and LoRA weight checks, and bad input."""

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
from lmforge.models.heads import TaskModel

WORDS = ["to", "be", "or", "not", "the", "question", "sleep", "die"]
NAMES = ["Hamlet", "Horatio"]  # (the char tokenizer maps unseen capitals to <|unk|>: fine)
# a word -> word "translation" that copying cannot do: each word spelled backwards (none of which is
# itself a word of the list, so the word aligner pairs them by position)
RENAME = {w: w[::-1] for w in WORDS}
# a respelling (one letter added) for the word-by-word recipe, which only accepts rewrites close to the word
RESPELL = {w: w[0] + w for w in WORDS}
FAST = [
    "--no-progress",
    "train.eval_every=100",
    "train.batch_size=16",
    "train.ckpt_every=1000",
    "train.threads=1",
    "optim.lr=3e-3",
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def classify_rows(n=60, seed=0):
    """Four filler words and one keyword ("sleep" or "die") that decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS[:5]) for _ in range(4)]
        words.insert(rng.randrange(5), "sleep" if i % 2 else "die")
        rows.append({"text": " ".join(words), "label": "sleepy" if i % 2 else "deadly"})
    return rows


def ner_rows(n=40, seed=1):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(WORDS) for _ in range(5)]
        tags = ["O"] * 5
        k = rng.randrange(4)
        tokens[k : k + 2], tags[k : k + 2] = [rng.choice(NAMES), "be"], ["B-PER", "O"]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def translate_rows(n=40, seed=2, words=3, mapping=RENAME):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        line = [rng.choice(WORDS) for _ in range(words)]
        rows.append({"source": " ".join(line), "target": " ".join(mapping[w] for w in line)})
    return rows


def finetune(base, task, train, out, *extra):
    args = ["finetune", str(base), "--task", task, "--train", str(train), "--out", str(out), *FAST, *extra]
    assert main(args) == 0, args


def cli_json(capsys, args) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(runs.find_latest_good(run_dir).path / "model.safetensors"))


def initial_weights(run_dir) -> dict[str, torch.Tensor]:
    """The task model as finetune built it before step 1 (same seed, same constructor)."""
    config = runs.read_run_config(run_dir)
    torch.manual_seed(config.train.seed)
    model = TaskModel(config.model)
    model.init_weights()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def cls_run(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    train = write_jsonl(folder / "train.jsonl", classify_rows(300))
    val = write_jsonl(folder / "val.jsonl", classify_rows(60, seed=10))
    finetune(tiny_run, "classify", train, folder / "run", "--val", str(val), "--max-steps", "120")
    return folder / "run", val


def test_classify_beats_the_majority_class_then_predicts(cls_run, capsys, monkeypatch):
    run_dir, val = cls_run
    info = json.loads((run_dir / "task.json").read_text())
    assert info["labels"] == ["deadly", "sleepy"] and info["kind"] == "classify"
    result = cli_json(capsys, ["eval", str(run_dir), "--task", "classify", "--data", str(val)])
    assert sum(map(sum, result["confusion"])) == result["n"] == 60
    base = result["baseline"]
    assert base["name"].startswith("majority class") and base["accuracy"] == pytest.approx(0.5)
    assert result["accuracy"] >= base["accuracy"] + 0.3, result
    assert result["macro_f1"] >= base["macro_f1"] + 0.4, result
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--task", "classify", "--data", str(val)]) == 0
    text = capsys.readouterr().out
    assert "baseline" in text and "majority class" in text
    monkeypatch.setattr("sys.stdin", io.StringIO("to be or sleep\nnot to die\n"))
    assert main(["predict", str(run_dir)]) == 0
    assert capsys.readouterr().out.split() == ["sleepy", "deadly"]


def test_report_on_a_task_run_shows_model_and_baseline(cls_run):
    run_dir, _ = cls_run
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "| accuracy |" in report and "majority class" in report


def test_a_probe_moves_the_head_and_leaves_the_backbone_bit_identical(tiny_run, tmp_path):
    lines = ["text,label"] + [
        f"{r['text']},{'positive' if r['label'] == 'sleepy' else 'negative'}" for r in classify_rows(40)
    ]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "probe"
    finetune(tiny_run, "sentiment", tmp_path / "s.csv", out, "--max-steps", "10", "--freeze-backbone")
    base, tuned, start = weights(tiny_run), weights(out), initial_weights(out)
    for name, tensor in base.items():
        torch.testing.assert_close(tuned[f"backbone.{name}"], tensor, rtol=0, atol=0)
    for name in ("head.weight", "head.bias"):
        if name in start:
            assert (tuned[name] - start[name]).abs().max() > 1e-3, f"{name} did not move"
    assert load_task_run(out).task == "sentiment"


def test_ner_with_lora_beats_all_o_and_moves_only_the_adapters(tiny_run, tmp_path, capsys):
    train = write_jsonl(tmp_path / "ner.jsonl", ner_rows(300))
    val = write_jsonl(tmp_path / "ner_val.jsonl", ner_rows(60, seed=11))
    out = tmp_path / "ner"
    finetune(tiny_run, "ner", train, out, "--val", str(val), "--max-steps", "120", "--lora-rank", "4")
    base, tuned, start = weights(tiny_run), weights(out), initial_weights(out)
    adapters = [k for k in tuned if "lora_" in k]
    assert adapters and any((tuned[k] - start[k]).abs().max() > 1e-3 for k in adapters)
    assert all(not torch.equal(tuned[k], start[k]) for k in adapters if "lora_B" in k)
    frozen = [k for k in tuned if k.startswith("backbone.") and "lora_" not in k]
    for key in frozen:
        name = key.removeprefix("backbone.").replace(".base.", ".")
        torch.testing.assert_close(tuned[key], base[name], rtol=0, atol=0)
    result = cli_json(capsys, ["eval", str(out), "--data", str(val)])  # --task read from the run
    assert result["baseline"]["f1"] == 0.0 and result["f1"] >= 0.6, result
    assert result["token_accuracy"] >= result["baseline"]["token_accuracy"] + 0.1, result
    (tmp_path / "in.txt").write_text("to be Hamlet or not\n", encoding="utf-8")
    assert main(["predict", str(out), "--input", str(tmp_path / "in.txt")]) == 0
    words = capsys.readouterr().out.split()
    assert words == ["to/O", "be/O", "Hamlet/B-PER", "or/O", "not/O"]


def test_translate_beats_copying_the_source(tiny_run, tmp_path, capsys):
    train = write_jsonl(tmp_path / "tr.jsonl", translate_rows(300, words=1))
    few = write_jsonl(tmp_path / "few.jsonl", translate_rows(24, seed=12, words=1))
    out = tmp_path / "tr"
    finetune(tiny_run, "translate", train, out, "--max-steps", "120", "--val", str(few))
    result = cli_json(capsys, ["eval", str(out), "--task", "translate", "--data", str(few), "--beam", "2"])
    assert result["n"] == 24 and result["baseline"]["name"] == "copy the source"
    assert result["chrf"] >= result["baseline"]["chrf"] + 40, result
    (tmp_path / "src.txt").write_text("to\nnot\n", encoding="utf-8")
    assert main(["predict", str(out), "--input", str(tmp_path / "src.txt"), "--beam", "1", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["source"] for line in lines] == ["to", "not"]


def test_translate_word_by_word_rebuilds_lines_and_beats_copying(tiny_run, tmp_path, capsys):
    train = write_jsonl(tmp_path / "tr.jsonl", translate_rows(100, words=4, mapping=RESPELL))
    val = write_jsonl(tmp_path / "val.jsonl", translate_rows(24, seed=13, words=4, mapping=RESPELL))
    out = tmp_path / "trw"
    finetune(tiny_run, "translate", train, out, "--max-steps", "120", "--val", str(val), "--unit", "word")
    assert json.loads((out / "task.json").read_text())["unit"] == "word"
    result = cli_json(capsys, ["eval", str(out), "--data", str(val), "--beam", "2"])
    assert result["bleu"] >= result["baseline"]["bleu"] + 50, result
    assert result["chrf"] >= result["baseline"]["chrf"] + 25, result


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
