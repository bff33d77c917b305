#!/usr/bin/env python3
"""The `small` preset's model trained in PyTorch on one thread: a peer for switchyard-train's tokens/s.

The same model as @switchyard/model's `small` preset (packages/model/src/presets/small.json):
vocabulary 2048 (the size of switchyard-train's tokenizer on the Brown corpus; --vocab), width 128, 4 blocks, 4 query heads and 2 key/value heads (grouped-query attention,
head width 32), rotary embeddings (theta 10000, rotate-half), RMSNorm (eps 1e-5, pre-norm), an MoE
layer in every block (8 SwiGLU experts of hidden width 256, softmax top-2 router, the top-2
weights renormalised, dropless), tied input embedding and LM head, normal(0, 0.02) initialisation.
Objective as switchyard-train's defaults: mean token cross-entropy plus, per MoE layer, the Switch
balance loss alpha * E * sum_i f_i P_i (alpha 0.01, f_i = c_i / (T K), P_i the mean router score).
AdamW as the trainer's defaults: lr 3e-3 with 25 linear warm-up steps then cosine to 0.1 lr, betas
(0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices and embeddings (not norms), global-norm clip
1.0. Batch 8 x 128 tokens per step.

Token ids are uniform random over the vocabulary (throughput does not depend on the text; the
routing of random tokens at initialisation is close to uniform, as on real text at the start).
Experts run as a loop over experts on the tokens routed to each (index_select, index_add_).

    python3 benchmarks/peers/torch_small_preset.py [--steps 20] [--warmup 4] [--threads 1] [--vocab 2048] [--json]

Prints tokens/s as the median over the steps after the warm-up; --json prints one JSON line last.
Needs PyTorch (Debian/Ubuntu: apt install python3-torch; elsewhere: pip install torch).
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, D, LAYERS, HEADS, KV_HEADS = 2048, 128, 4, 4, 2  # VOCAB: --vocab
EXPERTS, EXPERT_FF, TOP_K = 8, 256, 2
SEQ, BATCH = 128, 8
ROPE_THETA, NORM_EPS, INIT_STD = 10000.0, 1e-5, 0.02
ALPHA = 1e-2
LR, MIN_LR_RATIO, WARMUP_STEPS, TOTAL_STEPS = 3e-3, 0.1, 25, 250
BETAS, EPS, WEIGHT_DECAY, CLIP = (0.9, 0.95), 1e-8, 0.1, 1.0


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq: int, head_dim: int, theta: float):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)  # [S, A/2]
    emb = torch.cat([angles, angles], dim=-1)  # [S, A]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def normal_parameter(*shape):
    return nn.Parameter(torch.randn(*shape) * INIT_STD)


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary embeddings, no biases (weights [in, out])."""

    def __init__(self):
        super().__init__()
        self.head_dim = D // HEADS
        self.wq = normal_parameter(D, HEADS * self.head_dim)
        self.wk = normal_parameter(D, KV_HEADS * self.head_dim)
        self.wv = normal_parameter(D, KV_HEADS * self.head_dim)
        self.wo = normal_parameter(HEADS * self.head_dim, D)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        a = self.head_dim
        q = (x @ self.wq).view(b, s, HEADS, a).transpose(1, 2)  # [B, H, S, A]
        k = (x @ self.wk).view(b, s, KV_HEADS, a).transpose(1, 2)  # [B, G, S, A]
        v = (x @ self.wv).view(b, s, KV_HEADS, a).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = HEADS // KV_HEADS
        k = k.repeat_interleave(rep, dim=1)  # query head h reads key/value head h // rep
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(a) + mask
        out = scores.softmax(-1) @ v  # [B, H, S, A]
        return out.transpose(1, 2).reshape(b, s, HEADS * a) @ self.wo


class MoE(nn.Module):
    """Softmax top-2 router (weights renormalised, dropless) over 8 SwiGLU experts; Switch balance loss."""

    def __init__(self):
        super().__init__()
        self.router = normal_parameter(D, EXPERTS)
        self.w1 = normal_parameter(EXPERTS, D, EXPERT_FF)
        self.w3 = normal_parameter(EXPERTS, D, EXPERT_FF)
        self.w2 = normal_parameter(EXPERTS, EXPERT_FF, D)

    def forward(self, x):  # x [T, D]
        t = x.shape[0]
        probs = (x @ self.router).softmax(-1)  # [T, E]
        top_w, top_i = probs.topk(TOP_K, dim=-1)  # [T, K]
        top_w = top_w / top_w.sum(-1, keepdim=True)
        counts = torch.bincount(top_i.flatten(), minlength=EXPERTS).to(probs.dtype)
        aux = ALPHA * EXPERTS * (counts / (t * TOP_K) * probs.mean(0)).sum()
        y = torch.zeros_like(x)
        flat_i = top_i.flatten()
        flat_w = top_w.flatten()
        token_of = torch.arange(t).repeat_interleave(TOP_K)
        for e in range(EXPERTS):
            rows = (flat_i == e).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            tokens = token_of[rows]
            xe = x.index_select(0, tokens)
            he = F.silu(xe @ self.w1[e]) * (xe @ self.w3[e])
            y.index_add_(0, tokens, (he @ self.w2[e]) * flat_w[rows, None])
        return y, aux


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = RMSNorm(D, NORM_EPS)
        self.attn = Attention()
        self.norm2 = RMSNorm(D, NORM_EPS)
        self.moe = MoE()

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        b, s, _ = x.shape
        y, aux = self.moe(self.norm2(x).reshape(b * s, D))
        return x + y.view(b, s, D), aux


class SmallPreset(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = normal_parameter(VOCAB, D)  # tied: the LM head is embed^T
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = RMSNorm(D, NORM_EPS)
        cos, sin = rope_tables(SEQ, D // HEADS, ROPE_THETA)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", torch.full((SEQ, SEQ), -1e9).triu(1))

    def forward(self, inputs, targets):
        x = self.embed[inputs]
        aux_total = x.new_zeros(())
        for block in self.blocks:
            x, aux = block(x, self.cos, self.sin, self.mask)
            aux_total = aux_total + aux
        logits = self.norm(x) @ self.embed.t()
        lm = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        return lm, aux_total


def lr_at(step: int) -> float:
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, TOTAL_STEPS - WARMUP_STEPS))
    return LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    global VOCAB
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary size (the tokenizer's)")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    VOCAB = args.vocab
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be greater than --warmup ({args.warmup})")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = SmallPreset()
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": WEIGHT_DECAY}, {"params": others, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
    )
    params = sum(p.numel() for p in model.parameters())
    tokens = BATCH * SEQ
    times, losses = [], []
    for step in range(args.steps):
        data = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        lm, aux = model(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        (lm + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        losses.append(lm.item())
        times.append(time.perf_counter() - t0)
    measured = times[args.warmup :]
    tokens_per_sec = tokens / statistics.median(measured)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {params / 1e6:.2f}M parameters")
    print(f"batch {BATCH} x {SEQ} tokens, median of steps {args.warmup + 1}..{args.steps}")
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} (random tokens: log V = {math.log(VOCAB):.3f})")
    print(f"training tokens/s: {tokens_per_sec:.0f}")
    if args.json:
        print(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "params": params,
                    "tokensPerSec": tokens_per_sec,
                    "stepSeconds": measured,
                    "losses": losses,
                }
            )
        )


if __name__ == "__main__":
    main()
