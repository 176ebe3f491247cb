"""A Llama-shaped model from ``nn.Linear``/``nn.Embedding`` with random weights, built without downloads."""

from __future__ import annotations

import torch
from torch import nn

TINYLLAMA = dict(hidden=2048, layers=22, intermediate=5632, heads=32, kv_heads=4, vocab=32000)  # 1.100 B parameters


class RMSNorm(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * self.weight


class Llama(nn.Module):
    """Llama-shaped stack of ``nn.Linear``/``nn.Embedding`` (RMSNorm, causal attention with grouped key/value
    heads, SiLU-gated MLP, untied head); random weights."""

    def __init__(self, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, intermediate, heads, kv_heads) for _ in range(layers))
        self.norm = RMSNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


class _Block(nn.Module):
    def __init__(self, h: int, inter: int, heads: int, kv_heads: int):
        super().__init__()
        self.heads, self.kv_heads, d = heads, kv_heads, h // heads
        self.n1, self.n2 = RMSNorm(h), RMSNorm(h)
        self.q, self.o = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.k, self.v = nn.Linear(h, kv_heads * d, bias=False), nn.Linear(h, kv_heads * d, bias=False)
        self.gate, self.up = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False)
        self.down = nn.Linear(inter, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        y = self.n1(x)
        q = self.q(y).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = (m(y).view(b, n, self.kv_heads, -1).transpose(1, 2).repeat_interleave(self.heads // self.kv_heads, 1)
                for m in (self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, n, h))
        y = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(y)) * self.up(y))
