"""A Llama (LlamaForCausalLM) in plain PyTorch, with Hugging Face's parameter names and
conventions (RMSNorm in float32, RoPE by `rotate_half`, GQA by repeating each KV head for its
consecutive query heads, SwiGLU MLP, optional tied LM head), so its state dict is a Hugging Face
checkpoint as it stands. Works on torch 1.13 (CPU smoke runs) and 2.x (the GPU run).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim, max_pos, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)  # (max_pos, head_dim)
    return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def attend(q, k, v):
    """Causal attention; torch 1.13 (the CPU smoke run) has no scaled_dot_product_attention."""
    if hasattr(F, 'scaled_dot_product_attention'):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.size(-2)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.size(-1))
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float('-inf'))
    return s.softmax(-1) @ v


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
        h = c['hidden_size']
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos[:T].to(q.dtype), sin[:T].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = attend(q, k, v)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, f = c['hidden_size'], c['intermediate_size']
        self.gate_proj = nn.Linear(h, f, bias=False)
        self.up_proj = nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c['vocab_size'], c['hidden_size'])
        self.layers = nn.ModuleList(Block(c) for _ in range(c['num_hidden_layers']))
        self.norm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])


class Llama(nn.Module):
    """`model.*` and `lm_head` as in transformers' LlamaForCausalLM; `config` is its config.json dict."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Inner(c)
        self.lm_head = nn.Linear(c['hidden_size'], c['vocab_size'], bias=False)
        if c['tie_word_embeddings']:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(c['head_dim'], c['max_position_embeddings'], c['rope_theta'])
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)
        std = c['initializer_range']
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # residual outputs scaled down with depth (GPT-2's recipe)
                s = std / math.sqrt(2 * c['num_hidden_layers']) if name.endswith(('o_proj.weight', 'down_proj.weight')) else std
                nn.init.normal_(p, 0.0, s)

    def forward(self, ids):
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, self.cos, self.sin)
        return self.lm_head(self.model.norm(x))

    @torch.no_grad()
    def generate(self, ids, max_new, eos_ids):
        """Greedy decoding (no KV cache: small models, short samples); returns (new ids, hit_eos)."""
        out = list(ids)
        for _ in range(min(max_new, self.config['max_position_embeddings'] - len(ids))):  # stops at the context, as engines do
            ctx = torch.tensor([out], device=self.cos.device)
            nxt = int(self(ctx)[0, -1].float().argmax())
            out.append(nxt)
            if nxt in eos_ids:
                return out[len(ids):], True
        return out[len(ids):], False
