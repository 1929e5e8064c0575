"""Training throughput on identical shapes: lmforge vs a plain reference loop vs GPT2LMHeadModel.

Issue 4, target 2: lmforge's GPT-2-style model trains at >= 1.3x the tokens/s of a plain reference
(a straightforward GPT-2 written here, nanoGPT-style, in a plain AdamW loop) and of Hugging Face's
GPT2LMHeadModel, same batch, context and optimiser, each in its own best precision setting.
Target 3: utilisation against the measured matmul ceiling of this machine.

All contenders run in this one process, interleaved round by round, so machine noise hits them alike.

    python bench/bench_train.py [--shapes small,large] [--rounds 3] [--steps 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmforge.config import load_config  # noqa: E402
from lmforge.hardware import cpu_description, measure_peak_flops, physical_cores  # noqa: E402
from lmforge.models.registry import MODELS  # noqa: E402

SHAPES = {
    # nanoGPT's CPU recipe for Tiny Shakespeare characters
    "small": dict(n_layer=4, n_head=4, n_embd=128, seq_len=64, batch=12, vocab=65),
    # nanoGPT's GPU-sized Shakespeare shape
    "large": dict(n_layer=6, n_head=6, n_embd=384, seq_len=256, batch=16, vocab=65),
}


# --- the plain reference: a straightforward GPT-2, as one would write it from the paper --------
class RefBlock(nn.Module):
    def __init__(self, d: int, h: int, attn: str = "sdpa"):
        super().__init__()
        self.h, self.plain = h, attn == "math"
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))  # (B, h, T, hd)
        if self.plain:  # nanoGPT's non-flash path: matmul, mask, softmax, matmul
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, h, T, T)
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v  # (B, h, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class RefGPT(nn.Module):
    def __init__(self, s: dict, attn: str = "sdpa"):
        super().__init__()
        d = s["n_embd"]
        self.wte, self.wpe = nn.Embedding(s["vocab"], d), nn.Embedding(s["seq_len"], d)
        self.blocks = nn.ModuleList(RefBlock(d, s["n_head"], attn) for _ in range(s["n_layer"]))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, s["vocab"], bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x)).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def build(name: str, s: dict):
    if name.startswith("lmforge"):
        attn = "math" if name == "lmforge-math" else "sdpa"
        cfg = load_config(
            None,
            {
                "model.style": "gpt2",
                "model.mlp": "gelu",
                "model.tie_embeddings": True,
                "model.n_layer": s["n_layer"],
                "model.n_head": s["n_head"],
                "model.n_embd": s["n_embd"],
                "model.seq_len": s["seq_len"],
                "model.attn_impl": attn,
            },
            vocab_size=s["vocab"],
        )
        model = MODELS["gpt"][1](cfg.model)
        model.init_weights()
        return model, lambda x, y: model(x, y), model.flops_per_token()
    if name.startswith("reference"):
        model = RefGPT(s, "math" if name == "reference-math" else "sdpa")
        return model, lambda x, y: model(x, y), None
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=s["vocab"],
            n_positions=s["seq_len"],
            n_embd=s["n_embd"],
            n_layer=s["n_layer"],
            n_head=s["n_head"],
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )
    return hf, lambda x, y: hf(input_ids=x, labels=y).loss, None


def time_steps(step_fn, steps: int) -> float:
    """Median seconds per optimizer step after two warm-up steps."""
    for _ in range(2):
        step_fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_step(model, loss_fn, s: dict, dtype: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=gen)
    y = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=gen)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    def step():
        with amp:
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="small,large")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument(
        "--json", default=str(Path(__file__).parent / ".work" / "train.json"), help="results file"
    )
    args = ap.parse_args()
    torch.set_num_threads(physical_cores())

    def ceilings() -> dict[str, float]:
        return {
            d: measure_peak_flops(torch.device("cpu"), "bfloat16" if d == "bf16" else "float32", size=2048)
            for d in ("fp32", "bf16")
        }

    # The machine's speed drifts (a shared VM: up to a third within minutes here), so the ceiling is
    # measured again before every round and each round's utilisation uses its own ceiling.
    peaks = ceilings()
    print(f"machine: {cpu_description()}, torch {torch.__version__}")
    print(f"matmul ceiling: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    results: dict = {"cpu": cpu_description()}  # bench/targets.py reads only results of this CPU
    for shape in args.shapes.split(","):
        s = SHAPES[shape]
        contenders = {}
        for name in ("lmforge", "lmforge-math", "reference", "reference-math", "hf"):
            for dtype in ("fp32", "bf16"):
                torch.manual_seed(0)
                model, loss_fn, fpt = build(name, s)
                contenders[(name, dtype)] = (make_step(model, loss_fn, s, dtype), fpt)
        lm_fpt = contenders[("lmforge", "fp32")][1]
        rates: dict = {k: [] for k in contenders}
        mfus: dict = {k: [] for k in contenders}
        round_peaks = []
        for _ in range(args.rounds):
            round_peaks.append(ceilings())
            for key, (step, _) in contenders.items():
                rate = s["batch"] * s["seq_len"] / time_steps(step, args.steps)
                rates[key].append(rate)
                mfus[key].append(lm_fpt * rate / round_peaks[-1][key[1]])
        fp32_peak = statistics.median(p["fp32"] for p in round_peaks) / 1e9
        bf16_peak = statistics.median(p["bf16"] for p in round_peaks) / 1e9
        print(f"matmul ceiling during the rounds: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s")
        print(f"\nshape {shape}: {s}")
        print(f"{'contender':<18}{'tok/s median':>14}{'spread':>18}{'MFU':>8}")
        for key, values in rates.items():
            med = statistics.median(values)
            mfu = statistics.median(mfus[key])
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            print(f"{key[0] + ' ' + key[1]:<18}{med:>14,.0f}{spread:>18}{mfu:>8.0%}")
            results[f"{shape}/{key[0]}/{key[1]}"] = {
                "median": med,
                "min": min(values),
                "max": max(values),
                "mfu": mfu,
            }
        names = ("lmforge", "lmforge-math", "reference", "reference-math", "hf")
        best = {n: max(statistics.median(rates[(n, d)]) for d in ("fp32", "bf16")) for n in names}
        best["lmforge"] = max(best["lmforge"], best.pop("lmforge-math"))  # each at its best attention
        best["reference"] = max(best["reference"], best.pop("reference-math"))
        print(
            f"best lmforge / best reference = {best['lmforge'] / best['reference']:.2f}x, "
            f"/ best GPT2LMHeadModel = {best['lmforge'] / best['hf']:.2f}x"
        )
        results[f"{shape}/ratio_vs_reference"] = best["lmforge"] / best["reference"]
        results[f"{shape}/ratio_vs_hf"] = best["lmforge"] / best["hf"]
    for shape in args.shapes.split(","):
        bf16 = max(results[f"{shape}/{n}/bf16"]["mfu"] for n in ("lmforge", "lmforge-math"))
        fp32 = max(results[f"{shape}/{n}/fp32"]["mfu"] for n in ("lmforge", "lmforge-math"))
        print(f"{shape}: lmforge utilisation {fp32:.0%} of the fp32 ceiling, {bf16:.0%} of the bf16 ceiling")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    assert all(math.isfinite(v["median"]) for k, v in results.items() if isinstance(v, dict))


if __name__ == "__main__":
    main()
