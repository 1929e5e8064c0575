"""The metrics people report for the fine-tuning tasks, as small functions of labels and texts.

- Classification: accuracy, macro-F1 (the unweighted mean of per-class F1, so a rare class counts as
  much as a common one; a class never predicted nor present is left out, as scikit-learn's
  ``labels=`` present-only default does) and the confusion matrix (rows = true, columns = predicted).
  Written with numpy: three lines do not justify a scikit-learn dependency.
- NER: entity-level precision / recall / F1 over BIO spans, exactly as the `seqeval` package computes
  them (its default CoNLL-style mode: an entity counts only if type, start and end all match). We
  call seqeval rather than re-derive it: the edge cases (an I- without a B-, adjacent entities) are
  where home-made versions disagree with published numbers.
- Translation: corpus BLEU (4-gram, brevity penalty, 13a tokenisation) and chrF (character 6-grams,
  beta 2) through `sacrebleu`, the reference implementation behind reported numbers. Both on 0-100.

Every figure has a trivial baseline computed on the same examples, because a number alone does not say
whether anything was learned (0.49 accuracy is good on 3 balanced classes, useless when one class
holds 0.6 of the data): the majority class of the evaluated examples for classification (the best
any constant answer can do there), all-``O`` for NER (entity F1 0, token accuracy = the share of
``O`` tags), and the source line copied unchanged for translation (high when the two sides share
most of their words, as spelling normalisation does).
"""

from __future__ import annotations

import numpy as np

from lmforge.errors import UserError


def confusion_matrix(true: list[int], pred: list[int], n_labels: int) -> np.ndarray:
    """(n_labels, n_labels) counts: row = true label, column = predicted label."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / max(1, matrix.sum()))


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 per class (0 where a class has no true and no predicted example)."""
    tp = np.diag(matrix).astype(np.float64)
    denom = matrix.sum(0) + matrix.sum(1)  # predicted + true = 2 tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur (as truth or prediction)."""
    present = (matrix.sum(0) + matrix.sum(1)) > 0
    return float(per_class_f1(matrix)[present].mean()) if present.any() else 0.0


def classification_report(true: list[int], pred: list[int], labels: list[str]) -> dict:
    matrix = confusion_matrix(true, pred, len(labels))
    return {
        "accuracy": accuracy(matrix),
        "macro_f1": macro_f1(matrix),
        "per_class_f1": dict(zip(labels, per_class_f1(matrix).round(4).tolist(), strict=True)),
        "labels": labels,
        "confusion": matrix.tolist(),
        "n": int(matrix.sum()),
    }


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this metric needs the {module} package; pip install 'lmforge[apps]'") from None


def majority_baseline(true: list[int], labels: list[str]) -> dict:
    """Accuracy and macro-F1 of always answering the most frequent true label (ties: the first)."""
    counts = np.bincount(np.asarray(true, dtype=np.int64), minlength=len(labels))
    top = int(counts.argmax())
    matrix = confusion_matrix(true, [top] * len(true), len(labels))
    return {
        "name": f"majority class ({labels[top]})",
        "accuracy": accuracy(matrix),
        "macro_f1": macro_f1(matrix),
    }


def token_accuracy(true: list[list[str]], pred: list[list[str]]) -> float:
    """Share of words whose tag is exactly right."""
    pairs = [(a, b) for t, p in zip(true, pred, strict=True) for a, b in zip(t, p, strict=True)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def entity_scores(true: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision, recall, F1 (seqeval's default mode) over tag sequences, and token accuracy."""
    metrics = _need("seqeval.metrics")
    return {
        "precision": float(metrics.precision_score(true, pred, zero_division=0)),
        "recall": float(metrics.recall_score(true, pred, zero_division=0)),
        "f1": float(metrics.f1_score(true, pred, zero_division=0)),
        "token_accuracy": token_accuracy(true, pred),
        "n": len(true),
    }


def all_o_baseline(true: list[list[str]]) -> dict:
    """Tagging every word ``O``: no entity found (F1 0), token accuracy = the share of O tags."""
    scores = entity_scores(true, [["O"] * len(tags) for tags in true])
    return {"name": "all O", **{k: scores[k] for k in ("precision", "recall", "f1", "token_accuracy")}}


def translation_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF (0-100) of hypotheses against one reference each."""
    sacrebleu = _need("sacrebleu")
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "n": len(hypotheses),
    }


def copy_baseline(sources: list[str], references: list[str]) -> dict:
    """BLEU and chrF of the source copied unchanged."""
    scores = translation_scores(sources, references)
    return {"name": "copy the source", "bleu": scores["bleu"], "chrf": scores["chrf"]}
