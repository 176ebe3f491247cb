"""Analog recurrent layers: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` whose input-to-hidden and hidden-to-hidden
matrices sit on analog crossbars.

Gate non-linearities, the cell state and the biases stay digital. The recurrence is written out with torch ops
(so every matrix product can go through the analog tiles); gate orders as in PyTorch: LSTM i, f, g, o; GRU r, z, n
(``n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn))``); RNN ``h = tanh(W_ih·x + b_ih + W_hh·h + b_hh)`` (or ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from aimc.config import AnalogConfig
from aimc.errors import ShapeError, UnsupportedLayerError
from aimc.nn.matrix import MatrixOwner
from aimc.nn.tile import AnalogMatrix

__all__ = ["AnalogLSTM", "AnalogGRU", "AnalogRNN"]


class _AnalogRNNBase(MatrixOwner):
    """Shared code of the analog recurrent layers (mixin before ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``)."""

    @classmethod
    def from_torch(cls, m: nn.RNNBase, config: AnalogConfig):  # noqa: ANN206
        if getattr(m, "proj_size", 0):
            raise UnsupportedLayerError("nn.LSTM with proj_size > 0 is not supported by AnalogLSTM; "
                                        "exclude this layer from conversion or drop the projection.")
        kw = {"nonlinearity": m.nonlinearity} if isinstance(m, nn.RNN) else {}
        new = cls(m.input_size, m.hidden_size, num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first,
                  dropout=m.dropout, bidirectional=m.bidirectional, device=m.weight_ih_l0.device,
                  dtype=m.weight_ih_l0.dtype, **kw)
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        new.analog = nn.ModuleDict({
            name: AnalogMatrix(p.shape[0], p.shape[1], config, learn_range=False)
            for name, p in new.named_parameters(recurse=False) if name.startswith("weight_")
        })
        return new

    def _cell(self, gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, sfx: str,
              mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, input, hx=None):  # noqa: A002, ANN001, ANN201
        if isinstance(input, PackedSequence):
            raise UnsupportedLayerError(f"{type(self).__name__} does not take PackedSequence inputs; pad the "
                                        "sequences (torch.nn.utils.rnn.pad_packed_sequence) and pass a tensor.")
        mode = self._mode()
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ShapeError(f"layer {self.aimc_name!r}: expected input (T, N, {self.input_size}) "
                             f"(or batch_first / unbatched), got {tuple(input.shape)}.")
        lstm = isinstance(self, nn.LSTM)
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        steps, n = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        if hx is None:
            h0 = x.new_zeros(self.num_layers * dirs, n, self.hidden_size)
            c0 = torch.zeros_like(h0) if lstm else None
        elif lstm:
            h0, c0 = hx if batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        else:
            h0, c0 = (hx if batched else hx.unsqueeze(1)), None
        h_n, c_n = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                gi = self._mvm("weight_ih" + sfx, layer_in.reshape(steps * n, -1),
                               getattr(self, "bias_ih" + sfx) if self.bias else None).view(steps, n, -1)
                h, c = h0[layer * dirs + d], (c0[layer * dirs + d] if lstm else None)
                seq: list[torch.Tensor] = [x.new_empty(0)] * steps
                for t in (range(steps) if d == 0 else reversed(range(steps))):
                    h, c = self._cell(gi[t], h, c, sfx, mode)
                    seq[t] = h
                outs.append(torch.stack(seq))
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out, h_n_t = layer_in, torch.stack(h_n)
        c_n_t = torch.stack(c_n) if lstm else None
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out, h_n_t = out.squeeze(1), h_n_t.squeeze(1)
            c_n_t = c_n_t.squeeze(1) if lstm else None
        return out, ((h_n_t, c_n_t) if lstm else h_n_t)

    def _hh(self, h: torch.Tensor, sfx: str) -> torch.Tensor:
        return self._mvm("weight_hh" + sfx, h, getattr(self, "bias_hh" + sfx) if self.bias else None)


class AnalogLSTM(_AnalogRNNBase, nn.LSTM):
    """``nn.LSTM`` on analog crossbars (no ``proj_size``, no ``PackedSequence``). A static DAC needs a fixed or
    calibrated input range (``training.learn_input_range`` does not apply to recurrent layers).

    Input ``(T, N, input_size)`` (or ``(N, T, input_size)`` with ``batch_first``, or unbatched ``(T, input_size)``);
    output and ``(h_n, c_n)`` exactly as ``nn.LSTM``.
    """

    def _cell(self, gi, h, c, sfx, mode):  # noqa: ANN001, ANN202
        i, f, gg, o = (gi + self._hh(h, sfx)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        return torch.sigmoid(o) * torch.tanh(c), c


class AnalogGRU(_AnalogRNNBase, nn.GRU):
    """``nn.GRU`` on analog crossbars (no ``PackedSequence``); inputs and outputs as ``nn.GRU``."""

    def _cell(self, gi, h, c, sfx, mode):  # noqa: ANN001, ANN202
        gh = self._hh(h, sfx)
        ir, iz, i_n = gi.chunk(3, dim=1)
        hr, hz, h_n = gh.chunk(3, dim=1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        nn_ = torch.tanh(i_n + r * h_n)
        return (1 - z) * nn_ + z * h, None


class AnalogRNN(_AnalogRNNBase, nn.RNN):
    """``nn.RNN`` (tanh or ReLU) on analog crossbars (no ``PackedSequence``); inputs and outputs as ``nn.RNN``."""

    def _cell(self, gi, h, c, sfx, mode):  # noqa: ANN001, ANN202
        pre = gi + self._hh(h, sfx)
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)), None
