"""Optimisers: SGD, Adam, AdamW, and Muon for hidden matrices with AdamW for the rest.

Weight decay goes to matrices only. Decaying gains of norms and biases pulls them towards zero for no
benefit (they don't grow with width the way weight matrices do), so they form a group with no decay.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers") orthogonalises each hidden
matrix's momentum with a few Newton-Schulz iterations; it is meant for 2-D hidden weights only, so the
embedding, the output head and every vector stay on AdamW. Which parameter is which is decided by its
role in the model (`param_roles`: the module that owns it), not by its shape: with a character
vocabulary of 65 a hidden matrix is larger than the embedding, and a shape rule sent every matrix to
AdamW. `torch.optim.Muon` does the maths; we use Keller Jordan's original shape adjustment
("original"), with which the usual Muon rate 0.02 applies.

Every optimiser gets a `base_lr` in each param group; the loop sets `lr = base_lr * lr_factor(step)`.

AdamW is our own small class on torch's fused kernel (see `AdamW`), and Muon torch's class with the
same plain bookkeeping (see `Muon`), except under FSDP, whose sharded parameters need torch.optim's
DTensor handling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import OptimConfig

HEAD_MODULES = ("lm_head", "head")  # the modules that map hidden states to logits / labels


def param_roles(model: nn.Module) -> dict[str, str]:
    """Each trainable parameter's role, by the module that owns it: "embedding" (an nn.Embedding's
    table, also when tied to the head), "head" (the output layer), "hidden" (a matrix inside the
    network: attention, MLP, recurrent weights, LoRA factors) or "vector" (norm gains, biases)."""
    roles: dict[str, str] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        leaf = module_name.rsplit(".", 1)[-1]
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue  # a tied matrix keeps the role of the module that registered it first
            seen.add(id(param))
            if isinstance(module, nn.Embedding):
                role = "embedding"
            elif leaf in HEAD_MODULES:
                role = "head"
            else:
                role = "hidden" if param.ndim == 2 else "vector"
            roles[f"{module_name}.{name}" if module_name else name] = role
    return roles


class AdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter 2019) on torch's fused kernel: a ``torch.optim.Optimizer`` whose
    methods do not import the compiler.

    Why not ``torch.optim.AdamW``: building or stepping any torch.optim optimizer imports
    ``torch._dynamo`` (``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are
    wrapped in ``torch._disable_dynamo``, which imports it on first call) -- a second or more of every
    run's start-up on a 2-core CPU, a twentieth of the Tiny Shakespeare speedrun (BENCHMARKS.md, "What
    made the steps and start-up cheaper"). This class overrides exactly those four with plain code;
    the update is the very kernel ``torch.optim.AdamW(fused=True)`` calls (``torch._fused_adamw_``),
    and the state dict has torch's layout, so checkpoints move freely between this class and torch's
    (FSDP runs use torch's).
    """

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float], eps: float) -> None:
        # The keys torch's AdamW keeps in each group, so it can load a state dict saved from here.
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": 0.01,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": True,
            "decoupled_weight_decay": True,
        }
        super().__init__(groups, defaults)

    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        self.param_groups.append({**self.defaults, **param_group, "params": params})

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state.get(p)
        if st is None:
            st = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return st

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            # The fused kernel takes one device and dtype per call.
            buckets: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    buckets.setdefault((p.device, p.dtype), []).append(p)
            beta1, beta2 = group["betas"]
            for params in buckets.values():
                states = [self._state(p) for p in params]
                steps = [st["step"] for st in states]
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(
                    params,
                    [p.grad for p in params],
                    [st["exp_avg"] for st in states],
                    [st["exp_avg_sq"] for st in states],
                    [],
                    steps,
                    amsgrad=False,
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=False,
                )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict:
        """torch's layout: state keyed by the parameter's position across groups."""
        index, state, groups = 0, {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                if p in self.state:
                    state[index] = dict(self.state[p])
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        def restore(st: dict, p: torch.Tensor) -> dict:
            return {
                "step": torch.as_tensor(st["step"], dtype=torch.float32).to(p.device).clone(),
                "exp_avg": st["exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": st["exp_avg_sq"].to(p.device, p.dtype).clone(),
            }

        _load_plain_state(self, state_dict, "betas", restore)


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (same update, options and state layout) without the compiler import, and
    with the Newton-Schulz iteration in float32 on the CPU.

    Like `AdamW`: torch.optim's ``add_param_group``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` import ``torch._dynamo`` on first call, a second or more of start-up on a
    2-core CPU -- an eighth of the Tiny Shakespeare speedrun, which runs Muon (BENCHMARKS.md, "Time to
    quality"); those four are replaced by plain code. torch runs the iteration in bfloat16, which pays
    on a GPU; on a CPU the matrices of a small model are too small for bf16 matmuls to pay for their
    casts and set-up, and float32 took less than half the time on the Intel Xeon (AMX) of BENCHMARKS.md
    (float32 is also the plain path, right on every CPU). ``ns_dtype=torch.bfloat16`` gives torch's
    update exactly (tests/train/test_optim.py).
    """

    def __init__(self, params, *args, ns_dtype: torch.dtype | None = None, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype  # None: float32 on the CPU, bfloat16 elsewhere (torch's choice)

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
            ns = (group["ns_coefficients"], group["ns_steps"], group["eps"])
            for p, update in zip(params, self._orthogonalised(updates, *ns), strict=True):
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-_muon_lr(lr, group["adjust_lr_fn"], p.shape))

    def _orthogonalised(self, updates: list[torch.Tensor], coefficients, steps: int, eps: float) -> list:
        """Each update through Newton-Schulz. On the CPU's float32 path, matrices of one shape (a
        model's blocks repeat theirs) go through it together as one batch: the same arithmetic in
        fewer, larger calls -- about half the time at 3 or 6 blocks of width 64 on 2 cores."""
        out: list = [None] * len(updates)
        batches: dict[tuple, list[int]] = {}
        for i, u in enumerate(updates):
            dtype = self.ns_dtype or (torch.float32 if u.device.type == "cpu" else torch.bfloat16)
            if dtype != torch.float32 or u.device.type != "cpu":
                out[i] = _newton_schulz(u, coefficients, steps, eps, dtype)
            else:  # oriented (rows <= cols), as _newton_schulz would orient it
                batches.setdefault((min(u.shape), max(u.shape)), []).append(i)
        for members in batches.values():
            if len(members) == 1:
                i = members[0]
                out[i] = _newton_schulz(updates[i], coefficients, steps, eps, torch.float32)
                continue
            tall = [updates[i].size(0) > updates[i].size(1) for i in members]
            oriented = [updates[i].T if t else updates[i] for i, t in zip(members, tall, strict=True)]
            done = _newton_schulz(torch.stack(oriented), coefficients, steps, eps, torch.float32)
            for j, (i, t) in enumerate(zip(members, tall, strict=True)):
                out[i] = done[j].T if t else done[j]
        return out

    add_param_group = AdamW.add_param_group
    zero_grad = AdamW.zero_grad
    state_dict = AdamW.state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        def restore(st: dict, p: torch.Tensor) -> dict:
            return {"momentum_buffer": st["momentum_buffer"].to(p.device, p.dtype).clone()}

        _load_plain_state(self, state_dict, "ns_coefficients", restore)


def _load_plain_state(optimizer, state_dict: dict, tuple_key: str, restore) -> None:
    """torch's ``load_state_dict`` without its compiler import, for `AdamW` and `Muon`: the groups'
    options back (``tuple_key``'s list as a tuple, as torch keeps it) and each parameter's state as
    ``restore(saved_state, param)`` makes it, on the parameter's device and dtype."""
    saved = state_dict["param_groups"]
    if len(saved) != len(optimizer.param_groups) or any(
        len(s["params"]) != len(g["params"]) for s, g in zip(saved, optimizer.param_groups, strict=True)
    ):
        raise ValueError("optimizer state has a different number of parameters or groups")
    state = state_dict["state"]
    optimizer.state.clear()
    for s, group in zip(saved, optimizer.param_groups, strict=True):
        for key, value in s.items():
            if key != "params":
                group[key] = tuple(value) if key == tuple_key else value
        for i, p in zip(s["params"], group["params"], strict=True):
            if i in state:
                optimizer.state[p] = restore(state[i], p)


def _newton_schulz(
    grad: torch.Tensor, coefficients, steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """torch.optim's quintic Newton-Schulz orthogonalisation (``_zeropower_via_newtonschulz``, Keller
    Jordan's), with the working dtype as an argument; in bfloat16 it is torch's, op for op. ``grad``
    is one matrix, or a batch (n, rows, cols) with rows <= cols, each orthogonalised on its own."""
    a, b, c = coefficients
    x = grad.to(dtype)
    if x.dim() == 3:
        x = x.div(x.norm(dim=(1, 2), keepdim=True).clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x
    wide = grad.size(0) > grad.size(1)
    if wide:
        x = x.T  # (min, max): the Gram matrix below is the small one
    x = x.div(x.norm().clamp(min=eps))  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if wide else x


def _muon_lr(lr: float, adjust: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's rate per matrix; "original" (Keller Jordan's): x sqrt(max(1, rows / cols))."""
    rows, cols = shape[:2]
    if adjust is None or adjust == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


def build_optimizers(cfg: OptimConfig, model: nn.Module, device_type: str = "cpu", sharded: bool = False):
    """A list of optimizers covering every trainable parameter exactly once (one, or two for Muon).

    ``sharded``: the parameters are FSDP DTensors, which need torch.optim's implementations.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [p for _, p in named if p.ndim >= 2]
    vectors = [p for _, p in named if p.ndim < 2]
    fused = device_type == "cuda"

    def groups(decay: list, no_decay: list, lr: float) -> list[dict]:
        out = []
        if decay:
            out.append({"params": decay, "weight_decay": cfg.weight_decay, "base_lr": lr, "lr": lr})
        if no_decay:
            out.append({"params": no_decay, "weight_decay": 0.0, "base_lr": lr, "lr": lr})
        return out

    if cfg.name == "sgd":
        return [
            torch.optim.SGD(
                groups(matrices, vectors, cfg.lr),
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov and cfg.momentum > 0,
            )
        ]
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "adam":
        # Adam with L2-free updates: plain Adam has no decoupled decay, so decay is simply off.
        return [torch.optim.Adam(groups([], matrices + vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps)]
    if cfg.name == "adamw" and not sharded:
        return [AdamW(groups(matrices, vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps)]
    if cfg.name == "adamw":
        return [
            torch.optim.AdamW(
                groups(matrices, vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused or None
            )
        ]
    # muon: hidden matrices on Muon, embeddings / head / vectors on AdamW.
    roles = param_roles(model)
    hidden = [p for n, p in named if roles.get(n) == "hidden"]
    hidden_ids = {id(p) for p in hidden}
    rest_matrices = [p for p in matrices if id(p) not in hidden_ids]
    rest = groups(rest_matrices, vectors, cfg.lr)
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(rest, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused or None)
        if sharded
        else AdamW(rest, lr=cfg.lr, betas=betas, eps=cfg.eps)
    ]
    if hidden:
        optimizers.append(
            (torch.optim.Muon if sharded else Muon)(
                [
                    {
                        "params": hidden,
                        "base_lr": cfg.muon_lr,
                        "lr": cfg.muon_lr,
                        "weight_decay": cfg.weight_decay,
                    }
                ],
                lr=cfg.muon_lr,
                momentum=cfg.muon_momentum,
                adjust_lr_fn="original",
            )
        )
    return optimizers


def set_lr(optimizers, factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
