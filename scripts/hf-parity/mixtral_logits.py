#!/usr/bin/env python3
"""Logits of a Switchyard checkpoint computed in PyTorch, for the Mixtral parity test.

Usage:
    python3 scripts/hf-parity/mixtral_logits.py CHECKPOINT_DIR TOKENS_JSON OUT_JSON

Two implementations, both run when available:
  * transformers: MixtralForCausalLM.from_pretrained(CHECKPOINT_DIR) with eager attention
    (needs `pip install torch transformers safetensors`);
  * reference: an independent PyTorch forward written from transformers' modeling_mixtral.py
    (MixtralRMSNorm, MixtralRotaryEmbedding with the default rope type, rotate_half,
    repeat_kv, eager attention with an additive causal mask, MixtralSparseMoeBlock), reading
    model.safetensors with a small parser of the safetensors format. Needs only torch and numpy.

OUT_JSON receives the token ids, the logits [B, S, V] of the transformers implementation when it
ran (else of the reference), which implementation produced them, the sha256 of model.safetensors,
and the largest absolute difference between the two implementations when both ran.
"""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch


def read_safetensors(path):
    """Parses a safetensors file: u64 little-endian header size, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    dtypes = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[base + begin : base + end]
        if entry["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtypes[entry["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(entry["shape"]).copy())
    return out


class Reference:
    """MixtralForCausalLM's forward pass (no cache, no padding mask), in float32."""

    def __init__(self, config, weights):
        self.c = config
        self.w = weights
        self.head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        # MixtralRotaryEmbedding, default rope type: inv_freq = 1 / base^(arange(0, dim, 2) / dim).
        dim = self.head_dim
        base = config["rope_theta"]
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))

    def rms_norm(self, x, weight):
        # MixtralRMSNorm: variance in float32, eps inside the rsqrt, weight applied after.
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.c["rms_norm_eps"])
        return weight * x

    def rotary(self, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    @staticmethod
    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    @staticmethod
    def repeat_kv(x, n_rep):
        b, h, s, d = x.shape
        if n_rep == 1:
            return x
        return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)

    def attention(self, i, x, cos, sin):
        p = f"model.layers.{i}.self_attn."
        b, s, _ = x.shape
        hd = self.head_dim
        q = (x @ self.w[p + "q_proj.weight"].T).view(b, s, -1, hd).transpose(1, 2)
        k = (x @ self.w[p + "k_proj.weight"].T).view(b, s, -1, hd).transpose(1, 2)
        v = (x @ self.w[p + "v_proj.weight"].T).view(b, s, -1, hd).transpose(1, 2)
        cos_u, sin_u = cos.unsqueeze(1), sin.unsqueeze(1)
        q = (q * cos_u) + (self.rotate_half(q) * sin_u)
        k = (k * cos_u) + (self.rotate_half(k) * sin_u)
        n_rep = self.c["num_attention_heads"] // self.c["num_key_value_heads"]
        k = self.repeat_kv(k, n_rep)
        v = self.repeat_kv(v, n_rep)
        scores = torch.matmul(q, k.transpose(2, 3)) * (hd**-0.5)
        mask = torch.full((s, s), torch.finfo(torch.float32).min).triu(1)
        scores = scores + mask[None, None]
        probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, -1)
        return out @ self.w[p + "o_proj.weight"].T

    def moe(self, i, x):
        p = f"model.layers.{i}.block_sparse_moe."
        b, s, d = x.shape
        h = x.view(-1, d)
        router_logits = h @ self.w[p + "gate.weight"].T
        routing_weights = torch.nn.functional.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, self.c["num_experts_per_tok"], dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(h)
        mask = torch.nn.functional.one_hot(selected, num_classes=self.c["num_local_experts"]).permute(2, 1, 0)
        for e in range(self.c["num_local_experts"]):
            idx, top_x = torch.where(mask[e])
            if top_x.numel() == 0:
                continue
            xe = h[top_x]
            w1 = self.w[f"{p}experts.{e}.w1.weight"]
            w2 = self.w[f"{p}experts.{e}.w2.weight"]
            w3 = self.w[f"{p}experts.{e}.w3.weight"]
            ye = (torch.nn.functional.silu(xe @ w1.T) * (xe @ w3.T)) @ w2.T
            out.index_add_(0, top_x, ye * routing_weights[top_x, idx, None])
        return out.view(b, s, d)

    def logits(self, input_ids):
        x = self.w["model.embed_tokens.weight"][input_ids]
        b, s = input_ids.shape
        position_ids = torch.arange(s)[None, :].expand(b, s)
        cos, sin = self.rotary(position_ids)
        for i in range(self.c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = x + self.attention(i, self.rms_norm(x, self.w[p + "input_layernorm.weight"]), cos, sin)
            x = x + self.moe(i, self.rms_norm(x, self.w[p + "post_attention_layernorm.weight"]))
        x = self.rms_norm(x, self.w["model.norm.weight"])
        head = self.w["model.embed_tokens.weight"] if self.c["tie_word_embeddings"] else self.w["lm_head.weight"]
        return x @ head.T


def transformers_logits(ckpt, input_ids):
    try:
        import transformers
        from transformers import MixtralForCausalLM
    except ImportError as e:  # transformers is optional
        sys.stderr.write(f"transformers not available ({e}); using the reference implementation only\n")
        return None, None
    model = MixtralForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits, transformers.__version__


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ckpt, tokens_path, out_path = sys.argv[1:]
    torch.manual_seed(0)
    with open(os.path.join(ckpt, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "mixtral":
        sys.exit(f"{ckpt} is not configured as Mixtral (model_type {config.get('model_type')!r})")
    weights_path = os.path.join(ckpt, "model.safetensors")
    with open(weights_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with open(tokens_path) as f:
        tokens = json.load(f)
    input_ids = torch.tensor(tokens, dtype=torch.int64)

    with torch.no_grad():
        ref = Reference(config, read_safetensors(weights_path)).logits(input_ids)
    hf, version = transformers_logits(ckpt, input_ids)
    result = {
        "tokens": tokens,
        "weightsSha256": sha,
        "implementation": f"transformers {version} MixtralForCausalLM" if hf is not None else "pytorch-reference",
        "torchVersion": torch.__version__,
        "maxAbsDiffTransformersVsReference": None if hf is None else float((hf - ref).abs().max()),
        # float32 values to 8 significant digits (enough to round-trip them).
        "logits": [[[float(f"{v:.8g}") for v in row] for row in seq] for seq in (hf if hf is not None else ref).tolist()],
    }
    with open(out_path, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path} ({result['implementation']}); max |logit| {float(ref.abs().max()):.4f}")
    if hf is not None:
        print(f"transformers vs reference: max abs diff {result['maxAbsDiffTransformersVsReference']:.3e}")


if __name__ == "__main__":
    main()
