"""Small versions of real architectures, built from configs with random weights (no downloads), for the conversion
tests and ``benchmarks/bench_models.py``.

torchvision's registry build does not import with our torch 2.13 CPU pin (``operator torchvision::nms does not
exist``), so the module patterns that matter for conversion are rebuilt here, each as its source writes it:
Swin's ``F.linear(x, self.qkv.weight, qkv_bias)`` from the parent, ViT's ``nn.MultiheadAttention`` blocks, torch's
own ``nn.TransformerEncoder`` (fused fast path) and ``nn.Transformer`` (cross-attention), a ResNet, a ConvNeXt
(depthwise 7x7, channels-last Linear MLP), a MobileNetV3 / EfficientNet (inverted residuals, depthwise convolutions,
squeeze-excitation), GPT-2's
``Conv1D`` (``torch.addmm`` on an ``(in, out)`` weight) with an ``lm_head`` tied to the token embedding, and a
Llama block (RMSNorm, rotary-free attention, SwiGLU) of ``nn.Linear``.

Each builder returns ``(model, example_inputs)``; every model is seeded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv1D(nn.Module):
    """Hugging Face ``transformers.pytorch_utils.Conv1D`` as GPT-2 defines it: ``(in, out)`` weight, ``addmm``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class _GPT2Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)
        self.c_fc, self.mlp_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT2Like(nn.Module):
    """GPT-2: token + position embeddings, Conv1D blocks, ``lm_head`` tied to the token embedding."""

    def __init__(self, vocab: int = 64, d: int = 32, heads: int = 4, layers: int = 2, ctx: int = 16):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(_GPT2Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


class _RMSNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class _LlamaBlock(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.input_layernorm, self.post_attention_layernorm = _RMSNorm(d), _RMSNorm(d)
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaLike(nn.Module):
    """Llama: embedding, RMSNorm + attention + SwiGLU blocks of bias-free ``nn.Linear``, untied ``lm_head``."""

    def __init__(self, vocab: int = 64, d: int = 32, heads: int = 4, layers: int = 2, hidden: int = 64):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(_LlamaBlock(d, heads, hidden) for _ in range(layers))
        self.norm = _RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for blk in self.layers:
            x = blk(x)
        return self.lm_head(self.norm(x))


class _SwinAttention(nn.Module):
    """torchvision ``ShiftedWindowAttention`` pattern: the parent multiplies ``self.qkv.weight`` itself."""

    def __init__(self, d: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        idx = torch.arange(window * window)
        n_rel = self.relative_position_bias_table.shape[0]
        self.register_buffer("rel_index", (idx[:, None] - idx[None, :]).abs() % n_rel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B·windows, N, C)
        b, n, c = x.shape
        qkv_bias = self.qkv.bias.clone()
        qkv_bias[c:2 * c].zero_()  # as Swin V2: no key bias
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias_table[self.rel_index].permute(2, 0, 1)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return F.linear(x, self.proj.weight, self.proj.bias)


class SwinLike(nn.Module):
    """Swin: patch embedding, windowed attention blocks with ``F.linear(x, self.qkv.weight)``, patch merging."""

    def __init__(self, d: int = 16, heads: int = 2, window: int = 4, classes: int = 10):
        super().__init__()
        self.window = window
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _SwinAttention(d, heads, window)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.merge = nn.Linear(4 * d, 2 * d, bias=False)
        self.head = nn.Linear(2 * d, classes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch(img).permute(0, 2, 3, 1)  # (B, H, W, C)
        b, h, w, c = x.shape
        s = self.window
        win = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        win = win + self.attn(self.norm1(win))
        x = win.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + self.mlp(self.norm2(x))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.head(self.merge(x).mean((1, 2)))


class _ViTBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ViTLike(nn.Module):
    """torchvision ViT: conv patch embedding, class token, position embedding, ``nn.MultiheadAttention`` blocks."""

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 2, patch: int = 8, image: int = 16,
                 classes: int = 10):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, d, patch, stride=patch)
        n = (image // patch) ** 2
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.layers = nn.Sequential(*[_ViTBlock(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.heads = nn.Linear(d, classes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embedding
        return self.heads(self.ln(self.layers(x))[:, 0])


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetLike(nn.Module):
    """torchvision ResNet-18 pattern (basic blocks, 1x1 downsampling, BN, global pooling, fc), narrow."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(_Basic(width, width, 1), _Basic(width, width, 1))
        self.layer2 = nn.Sequential(_Basic(width, 2 * width, 2), _Basic(2 * width, 2 * width, 1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


class _LayerNorm2d(nn.LayerNorm):
    """torchvision ConvNeXt's LayerNorm over the channels of ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _CNBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.dwconv = nn.Conv2d(d, d, 7, padding=3, groups=d)  # depthwise
        self.norm = nn.LayerNorm(d)
        self.pwconv1, self.pwconv2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        # torchvision initialises the layer scale at 1e-6; 0.1 keeps the block visible in a random-weight model
        self.layer_scale = nn.Parameter(torch.full((d, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))))
        return x + self.layer_scale * y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """torchvision ConvNeXt: patchify stem, depthwise 7x7 + channels-last Linear MLP blocks, layer scale,
    LayerNorm2d + strided-conv downsampling, LayerNorm + Linear head."""

    def __init__(self, d: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, d, 4, stride=4), _LayerNorm2d(d))
        self.stage1 = _CNBlock(d)
        self.down = nn.Sequential(_LayerNorm2d(d), nn.Conv2d(d, 2 * d, 2, stride=2))
        self.stage2 = _CNBlock(2 * d)
        self.norm, self.head = nn.LayerNorm(2 * d), nn.Linear(2 * d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


class _InvertedResidual(nn.Module):
    """MobileNetV3 / EfficientNet MBConv: 1x1 expand, depthwise 3x3, squeeze-excitation, 1x1 project."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), nn.Hardswish())
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, hidden // 4, 1), nn.Conv2d(hidden // 4, hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.expand(x))
        h = h * F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        y = self.project(h)
        return x + y if self.residual else y


class MobileNetLike(nn.Module):
    """torchvision MobileNetV3-small / EfficientNet-B0 pattern: strided stem, inverted residual blocks with depthwise
    convolutions and squeeze-excitation, 1x1 head conv, Linear classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.blocks = nn.Sequential(_InvertedResidual(8, 16, 8, 1), _InvertedResidual(8, 24, 12, 2))
        self.head_conv = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(32, 24), nn.Hardswish(), nn.Linear(24, classes))
        for m in self.modules():  # torchvision's MobileNetV3 initialisation (torch's default shrinks the SE input)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_conv(self.blocks(self.stem(x))).mean((2, 3)))


class Seq2Seq(nn.Module):
    """torch's ``nn.Transformer`` (encoder fast path + decoder cross-attention), ``batch_first`` as given."""

    def __init__(self, batch_first: bool, d: int = 16):
        super().__init__()
        self.batch_first = batch_first
        self.t = nn.Transformer(d, 2, 1, 1, 32, dropout=0.0, batch_first=batch_first)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        n = tgt.shape[1] if self.batch_first else tgt.shape[0]
        return self.t(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(n))


class RecurrentNet(nn.Module):
    """Embedding, GRU, LSTM, RNN and a classifier."""

    def __init__(self, vocab: int = 32, d: int = 12):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.lstm = nn.LSTM(d, d, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(2 * d, d, batch_first=True)
        self.fc = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.rnn(self.lstm(self.gru(self.emb(ids))[0])[0])[0]
        return self.fc(x)


class ConvZoo(nn.Module):
    """Conv1d, Conv3d, ConvTranspose1d/2d in one model (a decoder-like path)."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Conv3d(2, 4, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.c1 = nn.Conv1d(3, 5, 3)
        self.up1 = nn.ConvTranspose1d(5, 2, 4, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, D, H, W)
        y = F.relu(self.c3(x)).mean(2)  # (B, 4, H, W)
        y = F.relu(self.up2(y)).flatten(2)  # (B, 3, L)
        return self.up1(F.relu(self.c1(y)))


def _seeded(make, *inputs_fn):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    model = make().eval()
    g = torch.Generator().manual_seed(1)
    return model, tuple(f(g) for f in inputs_fn)


def build(name: str, batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(model, example inputs)`` of one of :data:`ARCHITECTURES`, a batch of ``batch``."""
    b = batch
    ids = lambda g: torch.randint(0, 64, (b, 12), generator=g)  # noqa: E731
    img = lambda size: (lambda g: torch.randn(b, 3, size, size, generator=g))  # noqa: E731
    seq = lambda shape: (lambda g: torch.randn(*shape, generator=g))  # noqa: E731
    table = {
        "transformer_encoder_bf": (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(
            16, 4, 32, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False), seq((b, 7, 16))),
        "transformer_encoder_sf": (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(
            16, 4, 32, dropout=0.0, batch_first=False), 2, enable_nested_tensor=False), seq((7, b, 16))),
        "transformer_seq2seq": (lambda: Seq2Seq(False), seq((7, b, 16)), seq((5, b, 16))),
        "swin_like": (SwinLike, img(32)),
        "vit_like": (ViTLike, img(16)),
        "resnet_like": (ResNetLike, img(16)),
        "convnext_like": (ConvNeXtLike, img(32)),
        "mobilenet_like": (MobileNetLike, img(16)),
        "gpt2_like": (GPT2Like, ids),
        "llama_like": (LlamaLike, ids),
        "recurrent": (lambda: RecurrentNet(), lambda g: torch.randint(0, 32, (b, 6), generator=g)),
        "conv_zoo": (ConvZoo, lambda g: torch.randn(b, 2, 4, 6, 6, generator=g)),
    }
    make, *fns = table[name]
    return _seeded(make, *fns)


ARCHITECTURES = ["transformer_encoder_bf", "transformer_encoder_sf", "transformer_seq2seq", "swin_like", "vit_like",
                 "resnet_like", "convnext_like", "mobilenet_like", "gpt2_like", "llama_like", "recurrent", "conv_zoo"]
