"""
model.py - the minihcx language model: a Llama-style decoder-only transformer, hand-written.

HyperCLOVA X technical report §2.1 (model architecture): a decoder-only transformer with
pre-normalization (RMSNorm), rotary position embeddings and grouped-query attention; like Llama it
uses a SwiGLU feed-forward. Module names equal those of Hugging Face `LlamaForCausalLM` (minus its
"model." prefix), and RoPE uses the same half-split ("rotate_half") layout, so weights map to HF by
name alone and `tests/test_model.py` checks the logits against HF to 1e-4 (the name mapping,
to_hf_state_dict / from_hf_state_dict, lives in convert.py).

Top to bottom: the config, the building blocks, the Transformer (logits, masked loss, a static KV
cache), generation (generate) and scoring (sequence_logprobs, last_position_logits).

Use (a module, not a script; bench_model.py times it next to HF Llama):
  model = Transformer(config_from_preset("demo"))   # 6.5M parameters at the demo's vocab 4096
  _, loss = model(idx, targets)                     # idx, targets (B, T) token ids
  generate(model, [[1, 2, 3]], max_new_tokens=16, temperature=0)   # [[16 new ids]]
"""

import contextlib
import functools
import math
import os
import sysconfig
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# -- Config ----------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    dim: int = 256  # residual stream width
    n_layers: int = 6
    n_heads: int = 8  # query heads
    n_kv_heads: int = 4  # key/value heads (GQA); == n_heads is plain multi-head attention
    ffn_hidden: int | None = None  # SwiGLU width; None -> Llama's rule from multiple_of (below)
    multiple_of: int = 64
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False  # lm_head shares the token-embedding matrix
    dropout: float = 0.0  # on each block's two residual branches, training only
    reward_head: bool = False  # lm_head gives one scalar per position, not logits (reward_model.py)

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"ModelConfig: {what} (got {self})")

        dim, heads, kv_heads = self.dim, self.n_heads, self.n_kv_heads
        need(dim % heads == 0, f"dim={dim} must be divisible by n_heads={heads}")
        need(heads % kv_heads == 0, f"n_heads={heads} must be a multiple of n_kv_heads={kv_heads}")
        need(self.head_dim % 2 == 0, f"head_dim=dim/n_heads={self.head_dim} must be even for RoPE")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1)")
        tied_reward = self.reward_head and self.tie_embeddings
        need(not tied_reward, "a reward head cannot be tied to the embeddings")
        if self.ffn_hidden is None:
            hidden = int(2 * 4 * self.dim / 3)  # Llama: 2/3 of 4*dim (SwiGLU: 3 matrices, not 2)
            self.ffn_hidden = self.multiple_of * math.ceil(hidden / self.multiple_of)  # rounded up

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# One preset a row, its columns ModelConfig fields ("-": the default). tiny: tests; demo: the CPU
# demo (6.5M parameters); gpt2-small: GPT-2 small's geometry (110M); 1b: TinyLlama-1.1B's.
PRESET_TABLE = """
name       vocab_size  dim n_layers n_heads n_kv_heads ffn_hidden multiple_of max_seq_len
tiny              512   64        4       4          2          -          32         128
demo             4096  256        6       8          4          -          64         512
gpt2-small      32000  768       12      12         12          -         256        1024
1b              32000 2048       22      32          4       5632           -        2048
"""
_header, *_rows = (line.split() for line in PRESET_TABLE.strip().splitlines())
PRESETS: dict[str, dict] = {
    name: {field: int(v) for field, v in zip(_header[1:], row) if v != "-"} for name, *row in _rows
}
PRESETS["gpt2-small"]["tie_embeddings"] = True  # like GPT-2
del _header, _rows


def config_from_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


# -- Building blocks -------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019; no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def rope_tables(head_dim: int, max_seq_len: int, theta: float):
    """cos and sin of the rotation angle pos * theta^(-2i/head_dim), each (max_seq_len, hd/2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (S, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each pair (x[i], x[i + hd/2]) by its angle: the half-split layout of HF Llama's
    rotate_half. x (B, T, H, hd); cos, sin broadcast to (B, T, 1, hd/2)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # as HF does; a no-op in fp32
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, H, hd/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def attention(q, k, v, mask, use_sdpa: bool, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(hd) + mask) v with grouped-query heads: q (B, H, T, hd), k and v
    (B, KV, S, hd); query head h reads kv head h // (H/KV). mask: None = causal with T == S, else
    (B, 1, T, S) or (T, S), bool (True = may attend) or float, added to the scores (0 or -inf: the
    cached forward builds it once). On CPU a decode step (T == 1) takes the written-out path:
    SDPA's CPU kernel costs ~4x its two small matmuls there (bench_model.py); under torch.compile
    they are a multiply and sum each, which inductor fuses into its own loops (compiled decode 7-9 %
    faster than with two bmm calls a layer)."""
    if use_sdpa and (q.size(2) > 1 or not q.is_cpu):  # fused kernel: flash / memory-efficient
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None, enable_gqa=True
        )
    # the same computation written out: the n_rep query heads of a kv head form one matrix, so k
    # and v are read as they are, never repeated
    B, H, T, hd = q.shape
    KV, S = k.size(1), k.size(2)
    n_rep = H // KV
    q = q.reshape(B, KV, n_rep * T, hd)  # head h = g * n_rep + r sits in group g
    loops = T == 1 and q.is_cpu and torch.compiler.is_compiling()  # inductor's loops, not bmm
    if loops:  # (B, KV, n_rep, 1, hd) * (B, KV, 1, S, hd), summed over hd
        scores = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)
    else:
        scores = q @ k.transpose(-2, -1)  # (B, KV, n_rep * T, S)
    scores = scores.view(B, KV, n_rep, T, S) / math.sqrt(hd)
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
    else:
        mask = mask.unsqueeze(-3)  # (B, 1, 1, T, S) or (1, T, S): the same for every n_rep
    if mask.dtype == torch.bool:
        mask = additive_mask(mask, scores.dtype)
    probs = (scores + mask).softmax(dim=-1)  # (B, KV, n_rep, T, S)
    probs = F.dropout(probs, dropout_p).view(B, KV, n_rep * T, S)
    if loops:  # (B, KV, n_rep, S, 1) * (B, KV, 1, S, hd), summed over S
        return (probs.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2).view(B, H, T, hd)
    return (probs @ v).view(B, H, T, hd)


def additive_mask(allowed, dtype):
    """A bool mask (True = may attend) as the float one added to attention scores: 0 or -inf."""
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill(~allowed, float("-inf"))


class Linear(nn.Linear):
    """nn.Linear with faster paths for a decode step's few rows on CPU, the same product x W^T:
    - one row under torch.compile: a multiply and sum, which inductor writes as its own vectorised
      loop over W, 3-5x faster than MKL's matrix-vector call at 2 threads (eagerly it would build an
      (out, in) product: MKL's call stays);
    - 2-64 rows: (W x^T)^T, column-major: MKL splits W over threads, x W^T barely.
    Figures: bench_model.py's notes."""

    def forward(self, x):  # (..., in) -> (..., out)
        rows = x.numel() // x.size(-1)
        plain = self.bias is None and x.is_cpu
        if plain and rows == 1 and torch.compiler.is_compiling():  # (inductor's loop, see above)
            return (x.unsqueeze(-2) * self.weight).sum(-1)  # (..., 1, in) * (out, in) -> (..., out)
        if not (plain and 1 < rows <= 64):
            return super().forward(x)
        return (self.weight @ x.reshape(-1, x.size(-1)).t()).t().reshape(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.dropout_p = cfg.dropout  # on attention probabilities, training only
        self.k_cache = self.v_cache = None  # (B, KV, S, hd) each, from Transformer.setup_cache

    def forward(self, x, cos, sin, mask, start_pos, use_sdpa):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hd)
        if torch.is_tensor(start_pos):  # static decode: write slots start_pos.., read every slot
            slots = start_pos + torch.arange(T, device=x.device)  # (T,)
            self.k_cache.index_copy_(2, slots, k)  # the cache is exactly (B, KV, S, hd) here
            self.v_cache.index_copy_(2, slots, v)
            k, v = self.k_cache, self.v_cache  # (B, KV, S, hd): the mask hides unwritten slots
        elif start_pos is not None:  # write slots [start_pos, start_pos+T), read all so far
            end = start_pos + T
            self.k_cache[:B, :, start_pos:end] = k
            self.v_cache[:B, :, start_pos:end] = v
            if start_pos > 0:  # else the cache holds just k and v (a prefill reads them as made)
                k, v = self.k_cache[:B, :, :end], self.v_cache[:B, :, :end]  # (B, KV, end, hd)
        y = attention(q, k, v, mask, use_sdpa, self.dropout_p if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.up_proj = Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.down_proj = Linear(cfg.ffn_hidden, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, mask, start_pos, use_sdpa):
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, start_pos, use_sdpa)
        x = x + F.dropout(h, self.dropout, self.training)
        h = self.mlp(self.post_attention_layernorm(x))
        return x + F.dropout(h, self.dropout, self.training)


def cache_mask_and_positions(q_slot, n_keys: int, left_pad, B: int):
    """Attention mask (B, 1, T, n_keys) and RoPE positions (B, T) for queries at cache slots
    q_slot (T,) long. A query at slot i sees key slot j iff left_pad[b] <= j <= i: causal,
    bottom-right-aligned (SDPA's is_causal is top-left aligned when T < n_keys), hiding a static
    cache's slots after i. A padding query sees only itself, so its row stays finite."""
    if left_pad is None:
        left_pad = torch.zeros(B, dtype=torch.long, device=q_slot.device)
    q_slot = q_slot[None, :, None]  # (1, T, 1)
    k_slot = torch.arange(n_keys, device=q_slot.device)[None, None, :]  # (1, 1, n_keys)
    pad = left_pad.view(B, 1, 1)
    mask = ((k_slot <= q_slot) & (k_slot >= pad)) | (k_slot == q_slot)  # (B, T, n_keys)
    pos = (q_slot[..., 0] - left_pad.view(B, 1)).clamp(min=0)  # (B, T)
    return mask.unsqueeze(1), pos


# -- The model -------------------------------------------------------------------------------------


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.use_sdpa = True  # False: the written-out attention (same numbers, slower)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = Linear(cfg.dim, 1 if cfg.reward_head else cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)  # (S, hd/2) each
        self.register_buffer("rope_cos", cos, persistent=False)  # not saved in checkpoints
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self):
        """The one place weights are initialised. Every matrix ~ N(0, 0.02) (GPT-2/Llama); the two
        that write into the residual stream (o_proj, down_proj) get 0.02/sqrt(2*n_layers), so its
        variance does not grow with depth (GPT-2 paper §2.3); RMSNorm gains are 1."""
        std, resid_std = 0.02, 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, resid_std)
            elif p.dim() == 2:  # embeddings, q/k/v, gate/up, lm_head
                nn.init.normal_(p, 0.0, std)
            else:  # norm gains
                nn.init.ones_(p)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # parameters() counts a tied matrix once
        if exclude_embeddings and not self.cfg.tie_embeddings:  # a tied matrix is still the LM head
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward) for MFU: 6 per weight of every
        matmul (blocks + LM head; the embedding is a lookup), plus causal attention: q.k and p.v
        cost 2*t*d each at position t, t averages seq_len/2 -> 6*n_layers*seq_len*d."""
        c = self.cfg
        d_attn, d_kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        per_layer = c.dim * d_attn * 2 + c.dim * d_kv * 2 + 3 * c.dim * c.ffn_hidden  # exact ints
        matmul_weights = c.n_layers * per_layer + c.dim * (1 if c.reward_head else c.vocab_size)
        return 6.0 * matmul_weights + 6.0 * c.n_layers * seq_len * d_attn

    # -- KV cache ----------------------------------------------------------------------------------
    def setup_cache(self, batch_size: int, seq_len: int, exact: bool = False, compiled=False):
        """Allocate each layer's K and V cache, (batch_size, n_kv_heads, seq_len, head_dim), unless
        the one there is big enough (exact=True: that shape) and laid out for (compiled) decode."""
        if seq_len > self.cfg.max_seq_len:
            raise ValueError(
                f"setup_cache: seq_len={seq_len} exceeds ModelConfig.max_seq_len="
                f"{self.cfg.max_seq_len}; shorten the prompt or max_new_tokens"
            )
        w = self.lm_head.weight
        transpose_k = w.is_cpu and not compiled
        for layer in self.layers:
            a = layer.self_attn
            shape = (batch_size, a.n_kv_heads, seq_len, a.head_dim)
            c = a.k_cache
            same_kind = c is not None and (c.device, c.dtype) == (w.device, w.dtype)
            same_kind = same_kind and (c.stride(-1) != 1) == transpose_k
            large_enough = same_kind and c.size(0) >= batch_size and c.size(2) >= seq_len
            if same_kind and (c.shape == shape if exact else large_enough):
                continue  # keep it
            a.v_cache = torch.zeros(shape, dtype=w.dtype, device=w.device)
            # eager on CPU, K is stored (B, KV, hd, S): the written-out decode's q @ k^T reads it
            # in order (2.7x at batch 32); SDPA's GPU and inductor's CPU kernels want hd contiguous
            stored = (*shape[:2], shape[3], shape[2]) if transpose_k else shape
            k = torch.zeros(stored, dtype=w.dtype, device=w.device)
            a.k_cache = k.transpose(-2, -1) if transpose_k else k

    def keep_cache_rows(self, rows):
        """Keep cache rows `rows` ((n,) long) in that order, in setup_cache's memory layout."""
        for layer in self.layers:
            a = layer.self_attn
            a.k_cache, a.v_cache = a.k_cache[rows], a.v_cache[rows]

    def free_cache(self):
        for layer in self.layers:
            layer.self_attn.k_cache = layer.self_attn.v_cache = None

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        idx,
        targets=None,
        loss_mask=None,
        start_pos=None,
        left_pad=None,
        last_only=False,
        reduction="mean",
    ):
        """idx (B, T) token ids -> (logits (B, T, V), None), or (None, loss) given targets.

        Training / scoring (start_pos None): causal attention over idx alone, positions 0..T-1.
          targets (B, T): each position's next token (already shifted), -100 = ignore (padding).
          loss_mask (B, T), optional weights (0: not counted): loss = sum(ce * mask) / sum(mask).
          reduction "none": each position's weighted cross-entropy (B, T) instead of the loss.
        Cached decoding (start_pos int, after setup_cache): idx fills cache slots start_pos.. and
          attends to slots 0..start_pos+T-1; left_pad (B,) long: row b's first left_pad[b] slots
          are padding, never attended to, and its positions start there.
        Static decoding (start_pos a (1,) long tensor, after setup_cache(B, S, exact=True)): the
          same over all S slots with a mask: every step has the same shapes, so torch.compile
          captures it once (decode_one_token). No bounds check on slots.
        last_only: logits (B, 1, V) of the last position only, or of position last_only[b] in row
          b if a (B,) long tensor (right-padded prompts of different lengths)."""
        B, T = idx.shape
        mask = None  # causal
        if start_pos is None:
            if T > (max_len := self.cfg.max_seq_len):
                raise ValueError(f"sequence length {T} exceeds ModelConfig.max_seq_len={max_len}")
            cos, sin = self.rope_cos[:T, None], self.rope_sin[:T, None]  # (T, 1, hd/2)
        else:
            cache = self.layers[0].self_attn.k_cache
            static = torch.is_tensor(start_pos)  # queries at start_pos.., keys at all cache slots
            n_keys = cache.size(2) if static else start_pos + T
            if not static and (cache is None or n_keys > cache.size(2) or B > cache.size(0)):
                raise ValueError(
                    f"KV cache too small for batch {B}, slots {start_pos}..{start_pos + T}: "
                    "call setup_cache(batch_size, seq_len) first"
                )
            q_slot = start_pos + torch.arange(T, device=idx.device)  # (T,)
            allowed, pos = cache_mask_and_positions(q_slot, n_keys, left_pad, B)
            mask = additive_mask(allowed, self.lm_head.weight.dtype)  # once for all layers
            # (B, T, 1, hd/2)
            cos, sin = self.rope_cos[pos].unsqueeze(2), self.rope_sin[pos].unsqueeze(2)
        x = self.embed_tokens(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, start_pos, self.use_sdpa)
        x = self.norm(x)
        if torch.is_tensor(last_only):  # the LM head at one position per row, not at all T
            x = x[torch.arange(B, device=x.device), last_only].unsqueeze(1)  # (B, 1, C)
        elif last_only:
            x = x[:, -1:]
        if targets is None:
            return self.lm_head(x), None  # (B, T, V)
        weight = ((targets != -100) * (1 if loss_mask is None else loss_mask)).view(-1).float()
        # the LM head only where a loss_mask counts (else everywhere: text; one graph to compile)
        every = loss_mask is None or torch.compiler.is_compiling()
        at = slice(None) if every else weight.nonzero().squeeze(1)  # (N,)
        logits = self.lm_head(x.reshape(B * T, -1)[at]).float()  # (N, V)
        ce = F.cross_entropy(logits, targets.reshape(-1)[at], ignore_index=-100, reduction="none")
        ce = ce * weight[at]  # (N,), 0 where ignored
        if reduction == "none":  # back to (B, T), 0 where not counted
            return None, (ce if every else weight.new_zeros(B * T).index_copy(0, at, ce)).view(B, T)
        return None, ce.sum() / torch.where((total := weight.sum()) > 0, total, 1.0)  # 0 if none


@contextlib.contextmanager
def eval_mode(model):
    """with eval_mode(model): eval mode (no dropout) and no gradients; the old mode is restored."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def unwrap(model):
    """The Transformer inside torch.compile (._orig_mod) and DDP (.module) wrappers."""
    inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
    return unwrap(inner) if isinstance(inner, nn.Module) else model


# -- Generation and scoring ------------------------------------------------------------------------


def nucleus(probs, top_p: float, head: int = 64):
    """Each row's nucleus, its smallest set of most likely tokens whose probabilities sum to >=
    top_p: probs (B, V) -> top (B, n) descending, ids (B, n) their token ids, keep (B, n) bool (a
    prefix of each row). It usually lies among the `head` most likely tokens (topk: ~8x faster than
    a full sort); only wider rows are sorted in full, n is then the widest nucleus."""
    top, ids = probs.topk(min(head, probs.size(-1)), dim=-1)  # (B, head), descending
    cum = top.cumsum(dim=-1)
    keep = F.pad(cum[:, :-1], (1, 0)) < top_p  # keep while the mass before a token is < top_p
    wide = cum[:, -1] < top_p  # (B,) rows whose nucleus is wider than head
    if bool(wide.any()):  # sort every token of those rows
        wide_top, wide_ids = probs[wide].sort(dim=-1, descending=True)  # (w, V)
        wide_keep = F.pad(wide_top.cumsum(dim=-1)[:, :-1], (1, 0)) < top_p
        n = max(int(wide_keep.sum(dim=-1).max()), top.size(-1))  # what lies past n is never kept
        pad = (0, n - top.size(-1))
        top, ids, keep = F.pad(top, pad), F.pad(ids, pad), F.pad(keep, pad, value=False)
        top[wide], ids[wide], keep[wide] = wide_top[:, :n], wide_ids[:, :n], wide_keep[:, :n]
    return top, ids, keep


def sample_next(logits, temperature: float, top_k: int | None, top_p: float | None, uniform):
    """logits (B, V) -> next token ids (B,); temperature 0 = greedy; top_p: within nucleus().
    uniform (B, 1), each in [0, 1): the row's random number (inverse_cdf_sample)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)  # (B, V)
    if top_p is None or top_p >= 1.0:
        return inverse_cdf_sample(probs, uniform)
    top, ids, keep = nucleus(probs, top_p)  # (B, n) each
    pick = inverse_cdf_sample(top * keep, uniform)  # (B,) index into the n
    return ids.gather(-1, pick[:, None]).squeeze(-1)


def uniforms(n: int, generator=None, device="cpu"):
    """n random numbers in [0, 1), shape (n, 1) float32, drawn from generator, on device."""
    where = generator.device if generator is not None else device
    return torch.rand(n, 1, generator=generator, device=where).to(device)


def inverse_cdf_sample(probs, uniform):
    """Inverse CDF: one draw per row of probs (B, V) -> ids (B,); row b's uniform (B, 1) in [0, 1)
    scaled to (0, total] picks the first token whose cumulative mass reaches it (never p = 0)."""
    cdf = probs.cumsum(dim=-1)  # (B, V), non-decreasing; flat across zero-probability tokens
    u = (1.0 - uniform.to(cdf)) * cdf[:, -1:]  # (B, 1), in (0, total]: never past the last token
    return torch.searchsorted(cdf, u).squeeze(-1)  # first index with cdf >= u


def decode_one_token(model, idx, input_pos, left_pad):
    """One static decode step, the function torch.compile captures (gpt-fast's pattern): ids idx
    (B, 1) at cache slot input_pos ((1,) long) -> next-token logits (B, V); shapes never change."""
    logits, _ = model(idx, start_pos=input_pos, left_pad=left_pad)  # (B, 1, V)
    return logits[:, -1]


@functools.cache  # one per process and device type, built on first use
def compiled_decode_one_token(device_type: str):
    """decode_one_token under torch.compile: C++ kernels on CPU (cpp_wrapper if Python's headers are
    there), CUDA graphs on GPU (untested here). One graph per (batch, cache length): 10-30 s each on
    CPU, ~4 s on later runs (inductor's disk cache); generate() rounds both to powers of two."""
    python_h = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    how = {"mode": "reduce-overhead"} if device_type == "cuda" else {}  # CUDA graphs
    if device_type == "cpu" and os.path.exists(python_h):
        how = {"options": {"cpp_wrapper": True}}  # 1.6x at batch 1, 1.15x at 8 (1 thread)
    return torch.compile(decode_one_token, dynamic=False, **how)


def bucket(n: int, floor: int = 1) -> int:
    """n rounded up to a power of two, at least floor."""
    return max(floor, 1 << (n - 1).bit_length())


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature=1.0,
    top_k=None,
    top_p=None,
    stop_ids=(),
    generator: torch.Generator | None = None,
    pad_id: int = 0,
    on_token=None,
    compile: bool = False,
):
    """Sample continuations of prompts of different lengths; returns each row's new token ids,
    ending with the stop id where one was hit. Prompts are left-padded to one length (left_pad
    masks the padding and shifts positions), so a row's logits are what they would be alone, up to
    float rounding; each distinct prompt is prefilled once. on_token(tokens) is called each step
    with one entry per row: its new id, or None once it has stopped. Unwraps compile/DDP wrappers.

    Then one decode_one_token step per token over the static cache; compile=True compiles it (it
    pays over many calls: SELF-JUDGE's sampler, evaluation). Eager, once the rows going fit in half
    the batch, the cache keeps only them (compiled, each batch size would be another graph). One
    uniform per prompt a step: a row's samples do not depend on when the others stop."""
    model = unwrap(model)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    bad_top = not (top_p is None or 0.0 < top_p <= 1.0) or (top_k is not None and top_k < 1)
    if bad_top or temperature < 0:
        got = f"(got {temperature}, {top_k}, {top_p})"
        raise ValueError(f"generate: need temperature >= 0, top_k >= 1, 0 < top_p <= 1 {got}")
    device = model.lm_head.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    rows, S = B, P + max_new_tokens  # rows past B (compiled: a bucket) pad: never read
    if compile and S <= model.cfg.max_seq_len:  # else setup_cache raises
        rows, S = bucket(B), min(bucket(S, 64), model.cfg.max_seq_len)
    step_fn = compiled_decode_one_token(device.type) if compile else decode_one_token
    new_tokens, done, stop = [[] for _ in range(B)], [False] * B, set(stop_ids)
    in_row = list(range(B))  # the prompt each cache row holds (rows past these: padding)
    with eval_mode(model):  # (rows, V), (rows,)
        logits, left_pad, _ = prefill_once(model, prompts, pad_id, S, rows - B, True, compile)
        for step in range(max_new_tokens):
            going = [i for i, b in enumerate(in_row) if not done[b]]  # cache rows still sampling
            prompt_of = [in_row[i] for i in going]
            u = uniforms(B, generator, device)[prompt_of] if temperature else None  # one a prompt
            picked = sample_next(logits[going], temperature, top_k, top_p, u)  # (len(going),)
            step_tokens = [None] * B
            for b, t in zip(prompt_of, picked.tolist()):
                new_tokens[b].append(t)
                step_tokens[b], done[b] = t, t in stop
            if on_token is not None:
                on_token(step_tokens)
            if all(done) or step == max_new_tokens - 1:
                break
            next_ids = torch.full((rows,), pad_id, device=device)
            next_ids[going] = picked
            left = [i for i in going if not done[in_row[i]]]
            if not compile and len(left) <= rows // 2:  # (compiled: one graph a batch size)
                keep = torch.tensor(left, device=device)  # the cache keeps the rows going on
                model.keep_cache_rows(keep)
                rows, in_row = len(left), [in_row[i] for i in left]
                left_pad, next_ids = left_pad[keep], next_ids[keep]
            input_pos = torch.tensor([P + step], device=device)  # the cache slot of next_ids
            logits = step_fn(model, next_ids[:, None], input_pos, left_pad)  # (rows, V)
    return new_tokens


def sequence_logprobs(model, ids, mask):
    """Summed and mean log-probability of the masked tokens of each sequence (DPO, judging,
    evaluation). ids (B, T) long, right-padded; mask (B, T) 0/1, mask[b, t] = 1 counts
    log p(ids[b, t] | ids[b, :t]). Returns (sum (B,), mean (B,)); differentiable."""
    assert mask.shape == ids.shape, f"mask {tuple(mask.shape)} != ids {tuple(ids.shape)}"
    assert not mask[:, 0].any(), "mask[:, 0] must be 0: the first token has no prediction"
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)  # (B, T): position t predicts token t+1
    counted = F.pad(mask[:, 1:], (0, 1)).float()  # (B, T): 1 where token t+1 is counted
    total = -model(ids, targets, counted, reduction="none")[1].sum(dim=1)  # (B,)
    return total, total / counted.sum(dim=1).clamp(min=1.0)


def right_pad(seqs, pad_id):
    """list of id lists -> (B, T) long tensor, right-padded (causal attention never reads ahead)."""
    x = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        x[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return x


def prefill_once(model, prefixes, pad_id, seq_len, padding_rows=0, exact=False, compiled=False):
    """Each distinct prefix (id lists) runs once into a KV cache of seq_len slots (setup_cache's
    exact and compiled), left-padded to the longest (P), then is copied to every row that holds it
    (and padding_rows copies of the first). -> (the logits after each row's prefix (rows, V),
    left_pad (rows,) long, P)."""
    device, distinct = model.lm_head.weight.device, {}  # prefix -> its row before the copies
    copy_of = [distinct.setdefault(tuple(p), len(distinct)) for p in prefixes]
    P = max(map(len, distinct))
    ids = torch.stack([F.pad(torch.tensor(p), (P - len(p), 0), value=pad_id) for p in distinct])
    left_pad = torch.tensor([P - len(p) for p in distinct], device=device)  # (len(distinct),)
    model.setup_cache(len(distinct), seq_len, exact=exact, compiled=compiled)
    logits, _ = model(ids.to(device), start_pos=0, left_pad=left_pad, last_only=True)
    rows = torch.tensor(copy_of + [0] * padding_rows, device=device)
    model.keep_cache_rows(rows)
    return logits[rows, -1], left_pad[rows], P


def last_position_logits(model, prompts, pad_id, shared=None):
    """Next-token logits (B, V) after each prompt (id lists): one forward over the prompts
    right-padded, read at each row's last real position (judging, multiple choice). shared[b]
    (0 < shared[b] < len(prompts[b])): the prefix prompt b shares with others. Each distinct one
    then runs once into the KV cache, left-padded, copied to its rows, and the rest of each prompt
    runs over it, right-padded: the same logits up to float rounding, for fewer tokens."""
    cut = list(zip(prompts, shared or []))  # (prompt, the length of its shared prefix)
    assert all(0 < n < len(p) for p, n in cut), "need 0 < shared[b] < len(prompts[b])"
    device, rest = next(unwrap(model).parameters()).device, [p[n:] for p, n in cut]
    slots = max(shared or [0]) + max(map(len, rest), default=0)
    if not cut or slots > unwrap(model).cfg.max_seq_len:  # one plain forward
        last = torch.tensor([len(p) - 1 for p in prompts], device=device)  # (B,)
        logits, _ = model(right_pad(prompts, pad_id).to(device), last_only=last)  # (B, 1, V)
        return logits[:, 0]  # (B, V)
    # K laid out as for compiled decode (hd contiguous): SDPA's fused CPU kernel reads it as it is
    model = unwrap(model)
    _, left_pad, P = prefill_once(model, [p[:n] for p, n in cut], pad_id, slots, compiled=True)
    last = torch.tensor([len(r) - 1 for r in rest], device=device)  # (B,)
    ids = right_pad(rest, pad_id).to(device)  # (B, T): cache slots P..P+T-1
    logits, _ = model(ids, start_pos=P, left_pad=left_pad, last_only=last)  # (B, 1, V)
    return logits[:, 0]  # (B, V)
