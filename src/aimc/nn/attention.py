"""``AnalogMultiheadAttention``: ``nn.MultiheadAttention`` whose input and output projections sit on analog
crossbars.

torch's ``nn.MultiheadAttention`` hands ``in_proj_weight`` to ``F.multi_head_attention_forward`` (or to a fused C++
kernel in eval mode), which no module swap reaches. This version writes the attention out with torch ops: the
projections go through the crossbar tiles (``in_proj_weight`` packed ``(3E, E)``, or ``q/k/v_proj_weight``
separately; ``out_proj`` is an ``AnalogLinear``), the attention itself (``softmax(q·kᵀ/√d)·v``, a product of two
activations, not of a stored weight) stays digital. A packed crossbar computes all ``3E`` outputs for whatever
drives it: in cross-attention the query's pass keeps the ``q`` part, the key's the ``k`` part, the value's ``v``.

Not supported (the layer stays digital, said in the report): ``add_bias_kv``, ``add_zero_attn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ShapeError, UnsupportedLayerError
from aimc.nn.layers import AnalogLinear
from aimc.nn.matrix import MatrixOwner
from aimc.nn.tile import AnalogMatrix

__all__ = ["AnalogMultiheadAttention"]


def _float_mask(m: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = not allowed) as an additive float mask; a float mask unchanged."""
    if m is None:
        return None
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(m, float("-inf"))
    return m.to(dtype)


class AnalogMultiheadAttention(MatrixOwner, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` on analog crossbars; same arguments, outputs and state-dict keys.

    Inputs ``(L, N, E)`` (``(N, L, E)`` with ``batch_first``, or unbatched ``(L, E)``); output as
    ``nn.MultiheadAttention``: ``(attn_output, attn_weights or None)``.
    """

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention, config: AnalogConfig) -> AnalogMultiheadAttention:
        if m.bias_k is not None or m.add_zero_attn:
            raise UnsupportedLayerError("nn.MultiheadAttention with add_bias_kv or add_zero_attn has no analog "
                                        "version")
        m.__class__ = cls  # in place (on the converted copy, or with inplace=True): parameters and keys unchanged
        e = m.embed_dim
        if m._qkv_same_embed_dim:
            mats = {"in_proj_weight": AnalogMatrix(3 * e, e, config, learn_range=False)}
        else:
            mats = {"q_proj_weight": AnalogMatrix(e, e, config, learn_range=False),
                    "k_proj_weight": AnalogMatrix(e, m.kdim, config, learn_range=False),
                    "v_proj_weight": AnalogMatrix(e, m.vdim, config, learn_range=False)}
        m.analog = nn.ModuleDict(mats)
        out = AnalogLinear.from_torch(m.out_proj, config)
        out.aimc_torch_type = type(m.out_proj)
        m.out_proj = out
        return m

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,  # noqa: D102
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or query.shape[-1] != self.embed_dim:
            raise ShapeError(f"layer {self.aimc_name!r}: expected query (L, N, {self.embed_dim}) (or batch_first / "
                             f"unbatched), got {tuple(query.shape)}.")
        self_attn, kv_same = query is key and key is value, key is value
        if batched and self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        n_q, bsz, e = query.shape
        n_k = key.shape[0]
        heads, hd = self.num_heads, self.head_dim
        b = self.in_proj_bias
        if self._qkv_same_embed_dim:
            if self_attn:
                q, k, v = self._mvm("in_proj_weight", query, b).chunk(3, dim=-1)
            else:
                q = self._mvm("in_proj_weight", query, b)[..., :e]
                if kv_same:
                    k, v = self._mvm("in_proj_weight", key, b)[..., e:].chunk(2, dim=-1)
                else:
                    k = self._mvm("in_proj_weight", key, b)[..., e:2 * e]
                    v = self._mvm("in_proj_weight", value, b)[..., 2 * e:]
        else:
            bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
            q = self._mvm("q_proj_weight", query, bq)
            k = self._mvm("k_proj_weight", key, bk)
            v = self._mvm("v_proj_weight", value, bv)
        # (L, N, E) -> (N, heads, L, head_dim)
        # contiguous: torch.compile's SDPA gave wrong results on these permuted views when the projections came from
        # the tiles (a graph break), while eager was right (torch 2.13 CPU)
        q, k, v = (t.reshape(t.shape[0], bsz, heads, hd).permute(1, 2, 0, 3).contiguous() for t in (q, k, v))
        mask = _float_mask(attn_mask, q.dtype)
        if mask is None and is_causal:
            mask = torch.full((n_q, n_k), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        if mask is not None:
            mask = mask.view(1, 1, n_q, n_k) if mask.dim() == 2 else mask.view(bsz, heads, n_q, n_k)
        kpm = _float_mask(key_padding_mask, q.dtype)
        if kpm is not None:
            kpm = kpm.view(bsz, 1, 1, n_k)
            mask = kpm if mask is None else mask + kpm
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        else:
            scores = (q * hd ** -0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            attn = torch.softmax(scores, dim=-1)
            if p_drop > 0:
                attn = F.dropout(attn, p_drop)
            out = attn @ v
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if not batched:
                weights = weights.squeeze(0)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(n_q, bsz, e))
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        return out, weights
