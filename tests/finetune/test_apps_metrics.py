"""Task metrics against hand-computed values, beam search, pooling, target masks, LoRA merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.eval import task_metrics as M
from lmforge.finetune import encode as E
from lmforge.finetune.backbones import TaskTokenizer
from lmforge.generate.beam import beam_search, sample_decode
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.heads import pool
from lmforge.models.lora import LoRALinear, add_lora, merge_lora


def test_confusion_accuracy_macro_f1_by_hand():
    true, pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    matrix = M.confusion_matrix(true, pred, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert M.accuracy(matrix) == pytest.approx(4 / 6)
    # F1 = 2 tp / (true + predicted): class 0: 2/4, class 1: 4/5, class 2: 2/3
    np.testing.assert_allclose(M.per_class_f1(matrix), [0.5, 0.8, 2 / 3])
    assert M.macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    report = M.classification_report(true, pred, ["a", "b", "c"])
    assert report["n"] == 6 and report["per_class_f1"]["b"] == 0.8


def test_macro_f1_skips_absent_classes_and_handles_perfect():
    matrix = M.confusion_matrix([0, 0, 1], [0, 0, 1], 4)  # classes 2 and 3 never occur
    assert M.macro_f1(matrix) == 1.0 and M.accuracy(matrix) == 1.0


def test_seqeval_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-LOC"]]
    # entity 1 found whole, entity 2 missed, a wrong-boundary guess ("B-PER" alone) and a right LOC
    pred = [["B-PER", "O", "O", "O"], ["O", "B-LOC"]]
    scores = M.entity_scores(true, pred)
    # true entities: PER(0-1), PER(3), LOC(1); predicted: PER(0), LOC(1); correct: LOC only
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_bleu_chrf_sanity():
    refs = ["stand and unfold yourself", "long live the king"]
    same = M.translation_scores(refs, refs)
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    none = M.translation_scores(["xq zv", "wp"], refs)
    assert none["bleu"] == pytest.approx(0.0) and none["chrf"] < 10
    part = M.translation_scores(["stand and vnfold your selfe", "long liue the king"], refs)
    assert 0 < part["bleu"] < 100 and none["chrf"] < part["chrf"] < 100


def _table_logits(table):
    """A next-token function from {prefix tuple: probabilities}."""

    def next_logits(idx):
        return torch.stack([torch.tensor(table[tuple(row.tolist())]).log() for row in idx])

    return next_logits


def test_beam_search_beats_greedy_on_a_hand_made_distribution():
    # vocab: 0 = end, 1 = "a", 2 = "b". Greedy takes "a" (0.6) and then ends weakly; "b" leads to a
    # certain end: P(b, end) = 0.4 * 1.0 > P(a, *, end) = 0.6 * 0.5 * ...
    end = 0
    table = {
        (9,): [0.0001, 0.6, 0.3999],
        (9, 1): [0.5, 0.25, 0.25],
        (9, 2): [0.999, 0.0005, 0.0005],
        (9, 1, 1): [1.0, 1e-9, 1e-9],
        (9, 1, 2): [1.0, 1e-9, 1e-9],
    }
    fn = _table_logits(table)
    assert beam_search(fn, [9], 3, end, beam_size=1, length_alpha=0.0) == [1]  # greedy: a, then end
    assert beam_search(fn, [9], 3, end, beam_size=3, length_alpha=0.0) == [2]  # 0.3999 > 0.6 * 0.5
    assert sample_decode(fn, [9], 3, end, temperature=0.0) == [1]


def test_pool_last_real_token_mean_and_first():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # (B, T, C)
    idx = torch.tensor([[0, 5, 6, 0], [0, 7, 8, 9]])  # pad 0 after the text; position 0 is a bos = pad
    assert pool(hidden, idx, 0, "last").flatten().tolist() == [2.0, 7.0]
    assert pool(hidden, idx, 0, "first").flatten().tolist() == [0.0, 4.0]
    assert pool(hidden, idx, 0, "mean").flatten().tolist() == pytest.approx([1.0, 5.5])


class _CharTok(TaskTokenizer):
    """A tokenizer of single characters: id = ord(c) - 90, end/pad = 0."""

    vocab_size, hash, pad_id, eos_id, prefix, suffix = 40, "x", 0, 0, [0], []

    def encode(self, text):
        return [ord(c) - 90 if c != " " else 1 for c in text]

    def decode(self, ids):
        return "".join(" " if i == 1 else chr(i + 90) for i in ids if i)


def test_translate_targets_only_on_target_and_end():
    x, y = E.encode_translate(_CharTok(), "ab", "cd", seq_len=16)
    # ids: [bos, a, b, sep, c, d, end]; x drops the last, y learns c, d, end only
    assert x == [0, 7, 8, 0, 9, 10] and y == [-1, -1, -1, 9, 10, 0]


def test_ner_labels_on_first_or_last_subtoken_never_on_the_joining_space():
    tok = _CharTok()
    ids, owner = E.encode_words(tok, ["ab", "cd"], 32, "first")
    assert ids == [0, 7, 8, 1, 9, 10] and owner == [-1, 0, -1, -1, 1, -1]
    _, owner = E.encode_words(tok, ["ab", "cd"], 32, "last")
    assert owner == [-1, -1, 0, -1, -1, 1]


def test_lora_merge_gives_the_same_outputs():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=2, n_embd=32))
    model.init_weights()
    names = add_lora(model, rank=4, alpha=8.0, exclude=("lm_head", "wte"))
    assert names and all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0, 0.05)  # as if trained
    idx = torch.randint(0, 50, (3, 16))
    before = model(idx)
    assert merge_lora(model) == len(names)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(idx), before, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == set(GPT(model.config).state_dict())  # plain names again


def test_task_examples_from_a_saved_hugging_face_dataset(tmp_path):
    import datasets

    from lmforge.finetune.task_data import read_examples

    rows = {"text": ["a fine day", "a foul night"], "label": ["comedy", "tragedy"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    examples = read_examples(f"hf:{tmp_path / 'ds'}", "classify")
    assert [(e["text"], e["label"]) for e in examples] == list(zip(rows["text"], rows["label"], strict=True))


def test_baselines_by_hand():
    labels = ["a", "b", "c"]
    base = M.majority_baseline([0, 1, 1, 1, 2], labels)  # always "b": 3 of 5 right
    assert base["name"] == "majority class (b)" and base["accuracy"] == pytest.approx(0.6)
    assert base["macro_f1"] == pytest.approx((0 + 2 * 3 / (3 + 5) + 0) / 3)
    true = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC"]]
    all_o = M.all_o_baseline(true)
    assert all_o["f1"] == 0.0 and all_o["token_accuracy"] == pytest.approx(3 / 6)
    assert M.entity_scores(true, true)["token_accuracy"] == 1.0
    copy = M.copy_baseline(
        ["stand and vnfold your selfe", "long liue the king of france"],
        ["stand and unfold yourself", "long live the king of france"],
    )
    assert copy["name"] == "copy the source" and 0 < copy["bleu"] < 100 and 0 < copy["chrf"] < 100


def test_word_alignment_and_in_place_rewrite():
    from lmforge.finetune.words import aligned_words, rewrite, unique_words, word_examples

    pairs = aligned_words("Stand and vnfold it.", "Stand, and unfold it!")
    assert pairs == [("Stand", "Stand"), ("and", "and"), ("vnfold", "unfold"), ("it", "it")]
    pairs = aligned_words("I vnfold your selfe", "I unfold yourself")
    assert pairs == [("I", "I")]  # 3 words -> 2: not guessed
    assert word_examples([{"source": "I haue it", "target": "I have it"}])[1] == {
        "source": "haue",
        "target": "have",
    }
    assert unique_words(["the king, the queen"]) == ["the", "king", "queen"]
    # spacing and punctuation stay the source's; an empty translation keeps the word
    assert rewrite("Long liue  the King!", {"liue": "live", "King": ""}) == "Long live  the King!"


def test_edit_distance_and_plausible_respellings():
    from lmforge.finetune.words import edit_distance, plausible

    assert edit_distance("haue", "have") == 1 and edit_distance("", "abc") == 3
    assert edit_distance("Scarlet", "Scartle") == 2 and edit_distance("selfe", "self") == 1
    assert plausible("haue", "have") and plausible("thinke", "think") and plausible("Iohn", "John")
    assert not plausible("Scarlet", "Scartle") and not plausible("Balthasar", "Bathartath")
