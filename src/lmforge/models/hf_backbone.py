"""A Hugging Face model as a fine-tuning backbone, with the interface the task heads read.

The model is rebuilt from its ``config.json`` dictionary (``AutoConfig.for_model``) with
``AutoModel`` -- the bare network, whose ``last_hidden_state`` is the final-norm output -- or, for
translation, ``AutoModelForCausalLM``. Weights are not read here (no I/O in models/): the fine-tuning
stage loads them once into the first checkpoint, and every later load goes through the run folder.

Causal models (GPT-2, Llama, Qwen3, ...) read right-padded batches without an attention mask: a
token never attends to the padding after it. Encoders (BERT-style) attend both ways, so they get
``attention_mask = idx != pad_id`` (their tokenizers have a real [PAD] token that text never holds).
`transformers` is the `hf` extra and is imported only when such a backbone is built.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import UserError

ENCODER_TYPES = (
    "bert",
    "roberta",
    "distilbert",
    "electra",
    "albert",
    "deberta",
    "deberta-v2",
    "xlm-roberta",
    "camembert",
    "mpnet",
    "modernbert",
)


def auto_classes():
    try:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    except ImportError:
        raise UserError(
            "a Hugging Face backbone needs the transformers package; pip install 'lmforge[hf]'"
        ) from None
    return AutoConfig, AutoModel, AutoModelForCausalLM


class HFBackbone(nn.Module):
    def __init__(self, hf_config: dict, encoder: bool, lm: bool, pad_id: int) -> None:
        super().__init__()
        AutoConfig, AutoModel, AutoModelForCausalLM = auto_classes()
        values = dict(hf_config)
        try:
            config = AutoConfig.for_model(values.pop("model_type"), **values)
        except (KeyError, ValueError) as exc:
            raise UserError(f"cannot rebuild the Hugging Face backbone from its config ({exc})") from None
        self.net = (AutoModelForCausalLM if lm else AutoModel).from_config(config)
        self.encoder, self.lm, self.pad_id = encoder, lm, pad_id
        self.width = int(config.hidden_size)

    def init_weights(self) -> None:
        """Nothing to do: ``from_config`` initialised the network, and fine-tuning loads real weights."""

    def _mask(self, idx: torch.Tensor) -> torch.Tensor | None:
        return (idx != self.pad_id).long() if self.encoder else None

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.net(input_ids=idx, attention_mask=self._mask(idx), output_hidden_states=self.lm)
        return out.hidden_states[-1] if self.lm else out.last_hidden_state  # (B, T, C)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.lm:
            raise UserError("this backbone was loaded without its language-model head")
        return self.net(input_ids=idx, attention_mask=self._mask(idx)).logits  # (B, T, vocab)

    def flops_per_token(self) -> int:
        return 6 * sum(p.numel() for p in self.parameters())
