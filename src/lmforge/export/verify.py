"""The equivalence check behind export and import: same logits, same greedy tokens, same token ids.

A converted model is only useful if it *is* the model it came from, so both directions end here and
refuse to finish otherwise: fp32 logits on a few prompts (and a window of random ids)
within ``atol``, 20 greedily generated tokens identical (ours: ``generate_tokens`` at temperature 0
with the KV cache; theirs: ``generate(do_sample=False)`` with an explicit generation config, so a
model's own sampling defaults such as a repetition penalty cannot interfere), and the Hugging Face
tokenizer giving lmforge's ids on sample text. Why greedy tokens as well as logits: logits test one
forward pass; generation also exercises both KV caches and the position handling past the prompt.
"""

from __future__ import annotations

import torch

from lmforge.data.tokenizer import ADVERSARIAL
from lmforge.errors import UserError
from lmforge.generate.engine import encode_prompt, generate_tokens

PROMPTS = ["The ", "To be, or not to be", "Hello, world!\n", "naïve café 🎉 1234  x"]
NEW_TOKENS = 20  # greedy tokens compared per prompt


def check_tokenizer(tokenizer, hf_tokenizer, texts=(*PROMPTS, *ADVERSARIAL)) -> int:
    """Compare ids on ``texts``; returns how many texts were compared, raises on the first difference."""
    for text in texts:
        ours = tokenizer.encode(text)
        theirs = hf_tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if ours != theirs:
            raise UserError(
                f"the Hugging Face tokenizer gives other ids than lmforge's on {text[:40]!r} "
                f"({theirs[:8]}... vs {ours[:8]}...); the conversion is not exact"
            )
    return len(texts)


@torch.no_grad()
def check_models(model, hf_model, tokenizer, atol: float = 1e-4) -> dict:
    """Compare our model and a transformers model (both fp32, eval); a report dict, or UserError."""
    model.eval()
    hf_model.eval()
    cfg = model.config
    seq_len, eot = cfg.seq_len, tokenizer.eot_id
    prompts = [encode_prompt(tokenizer, text)[: max(1, seq_len // 2)] for text in PROMPTS]
    generator = torch.Generator().manual_seed(0)
    windows = [torch.tensor([ids]) for ids in prompts]
    windows.append(torch.randint(0, cfg.vocab_size, (2, min(seq_len, 64)), generator=generator))
    worst = 0.0
    for idx in windows:  # (B, T)
        ours, theirs = model(idx), hf_model(input_ids=idx).logits.float()  # (B, T, vocab_size) each
        if ours.shape != theirs.shape:
            raise UserError(
                f"logits have shape {tuple(theirs.shape)} in transformers, {tuple(ours.shape)} here"
            )
        worst = max(worst, (ours - theirs).abs().max().item())
    if not worst <= atol:
        raise UserError(f"logits differ by up to {worst:.2e} (> {atol:g}); the conversion is not exact")
    tokens = 0
    for ids in prompts:
        n = min(NEW_TOKENS, seq_len - len(ids))
        ours = list(generate_tokens(model, ids, n, temperature=0.0, eot_id=eot))
        theirs = _hf_greedy(hf_model, ids, n, eot)
        if ours != theirs:
            raise UserError(
                f"greedy generation differs after {_common_prefix(ours, theirs)} tokens "
                f"(lmforge {ours[:10]}..., transformers {theirs[:10]}...); the conversion is not exact"
            )
        tokens += len(ours)
    return {"max_logit_diff": worst, "prompts": len(prompts), "greedy_tokens_compared": tokens}


def _hf_greedy(hf_model, ids: list[int], n: int, eot: int) -> list[int]:
    """transformers' greedy continuation of ``ids``, cut before the first eot (as ours stops there)."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=eot, pad_token_id=eot)
    idx = torch.tensor([ids])
    out = hf_model.generate(idx, attention_mask=torch.ones_like(idx), generation_config=config)
    new = out[0, len(ids) :].tolist()
    return new[: new.index(eot)] if eot in new else new


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
