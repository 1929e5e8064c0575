"""A plain training loop, nanoGPT's train.py reduced to what runs on a CPU: the reference that
bench/bench_e2e.py runs as a whole process against `lmforge train`.

The model is bench_train.py's RefGPT (a straightforward GPT-2, nanoGPT-style: LayerNorm, GELU in
GPT-2's tanh form where nanoGPT's nn.GELU() is the erf one, biases, tied head) with SDPA or plain
matmul-softmax attention; batches come from the prepared train shard through a memmap as in
nanoGPT's `get_batch` (uniform random windows, torch.randint); AdamW (beta2 0.99, weight decay 0.1),
warm-up + cosine learning rate, gradient clipping at 1.0, the loss read back (`.item()`) only on log
steps. No evaluation, no checkpoints: the cheapest honest loop.

Prints one JSON line: tokens/s of every `--log-every` steps (the first two intervals are warm-up).

    python bench/plain_loop.py --data DATA_DIR --shape small --dtype bf16 --attn math --steps 300
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_train import SHAPES, RefGPT  # noqa: E402
from lmforge.data.shards import open_split  # noqa: E402
from lmforge.data.tokenizer import load_tokenizer  # noqa: E402
from lmforge.hardware import physical_cores  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="DATA_DIR made by `lmforge data prepare`")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--attn", choices=("sdpa", "math"), default="sdpa")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = physical cores")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or physical_cores())
    torch.manual_seed(1337)
    vocab = load_tokenizer(Path(args.data) / "tokenizer").vocab_size
    s = {**SHAPES[args.shape], "vocab": vocab}  # the data's vocabulary (specials included)
    B, T = s["batch"], s["seq_len"]
    data = np.concatenate([np.asarray(a) for a in open_split(Path(args.data) / "shards", "train")])

    def get_batch():  # nanoGPT's get_batch, CPU branch
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    model = RefGPT(s, args.attn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    warmup, lr, min_lr = 100, 1e-3, 1e-4

    def lr_at(it: int) -> float:
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / max(1, args.steps - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    rates, losses = [], []
    x, y = get_batch()
    start = time.perf_counter()
    for it in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        with amp:
            loss = model(x, y)
        x, y = get_batch()  # the next batch while nothing waits (as nanoGPT does)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (it + 1) % args.log_every == 0:
            losses.append(loss.item())
            now = time.perf_counter()
            rates.append(args.log_every * B * T / (now - start))
            start = now
    print(json.dumps({"rates": rates, "loss": losses[-1] if losses else None}))


if __name__ == "__main__":
    main()
