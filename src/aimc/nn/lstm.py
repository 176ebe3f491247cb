"""``AnalogLSTM``: ``nn.LSTM`` whose input-to-hidden and hidden-to-hidden matrices sit on analog crossbars.

Gate non-linearities, the cell state and the biases stay digital. The recurrence is written out with torch ops
(so every matrix product can go through the analog tiles); gate order i, f, g, o as in PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from aimc.config import AnalogConfig
from aimc.errors import ShapeError, StateError, UnsupportedLayerError
from aimc.nn.layers import _check_input
from aimc.nn.mvm import tiles_forward
from aimc.nn.tile import AnalogMatrix

__all__ = ["AnalogLSTM"]


class AnalogLSTM(nn.LSTM):
    """``nn.LSTM`` on analog crossbars (no ``proj_size``, no ``PackedSequence``). A static DAC needs a fixed or
    calibrated input range (``training.learn_input_range`` does not apply to LSTMs).

    Input ``(T, N, input_size)`` (or ``(N, T, input_size)`` with ``batch_first``, or unbatched ``(T, input_size)``);
    output and ``(h_n, c_n)`` exactly as ``nn.LSTM``.
    """

    aimc_name: str = ""

    @classmethod
    def from_torch(cls, m: nn.LSTM, config: AnalogConfig) -> AnalogLSTM:
        if m.proj_size:
            raise UnsupportedLayerError("nn.LSTM with proj_size > 0 is not supported by AnalogLSTM; "
                                        "exclude this layer from conversion or drop the projection.")
        new = cls(m.input_size, m.hidden_size, num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first,
                  dropout=m.dropout, bidirectional=m.bidirectional, device=m.weight_ih_l0.device,
                  dtype=m.weight_ih_l0.dtype)
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        new.analog = nn.ModuleDict({
            name: AnalogMatrix(p.shape[0], p.shape[1], config, learn_range=False)
            for name, p in new.named_parameters(recurse=False) if name.startswith("weight_")
        })
        return new

    @property
    def analog_config(self) -> AnalogConfig:
        return next(iter(self.analog.values())).config

    def analog_matrices(self) -> dict[str, tuple[AnalogMatrix, torch.Tensor]]:
        return {"." + name: (mat, getattr(self, name)) for name, mat in self.analog.items()}

    def _mode(self) -> str:
        mats = list(self.analog.values())
        if self.training:
            return "train"
        if not mats[0].programmed:
            return "digital"
        if not all(m.drifted for m in mats):
            raise StateError(f"layer {self.aimc_name!r} is programmed but has no time yet; call "
                             "aimc.at_time(model, t_seconds, seed=...) before the forward pass.")
        return "analog"

    def _mvm(self, name: str, x: torch.Tensor, mode: str) -> torch.Tensor:
        """``x @ W.T`` for ``x`` ``(N, in)`` with the weight ``name`` in the given mode."""
        mat: AnalogMatrix = self.analog[name]
        if mode == "train":
            # hook point of mixed-precision training (aimc.train.MixedPrecision attaches it): the MVM runs on the
            # simulated PCM devices with per-read noise; absent otherwise
            hook = self.__dict__.get("aimc_train_mvm")
            if hook is not None:
                return hook(self, name, x)
            return F.linear(x, mat.train_weight(getattr(self, name)))
        if mode == "digital":
            return F.linear(x, getattr(self, name))
        p = mat.config.periphery
        if p.needs_matrix_path:
            return tiles_forward(mat, x.t().unsqueeze(0), f"{self.aimc_name}.{name}")[0].t()
        return F.linear(mat.static_dac(x, f"{self.aimc_name}.{name}"), mat.effective_weight())

    def forward(self, input, hx=None):  # noqa: A002, ANN001, ANN201
        if isinstance(input, PackedSequence):
            raise UnsupportedLayerError("AnalogLSTM does not take PackedSequence inputs; pad the sequences "
                                        "(torch.nn.utils.rnn.pad_packed_sequence) and pass a tensor.")
        mode = self._mode()
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ShapeError(f"layer {self.aimc_name!r}: expected input (T, N, {self.input_size}) "
                             f"(or batch_first / unbatched), got {tuple(input.shape)}.")
        if mode == "analog":
            _check_input(input, self.aimc_name)
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        steps, n = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        if hx is None:
            h0 = x.new_zeros(self.num_layers * dirs, n, self.hidden_size)
            c0 = torch.zeros_like(h0)
        else:
            h0, c0 = hx if batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        h_n, c_n = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                gi = self._mvm("weight_ih" + sfx, layer_in.reshape(steps * n, -1), mode).view(steps, n, -1)
                if self.bias:
                    gi = gi + getattr(self, "bias_ih" + sfx) + getattr(self, "bias_hh" + sfx)
                h, c = h0[layer * dirs + d], c0[layer * dirs + d]
                seq: list[torch.Tensor] = [x.new_empty(0)] * steps
                for t in (range(steps) if d == 0 else reversed(range(steps))):
                    g = gi[t] + self._mvm("weight_hh" + sfx, h, mode)
                    i, f, gg, o = g.chunk(4, dim=1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    seq[t] = h
                outs.append(torch.stack(seq))
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out = layer_in
        h_n_t, c_n_t = torch.stack(h_n), torch.stack(c_n)
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out, h_n_t, c_n_t = out.squeeze(1), h_n_t.squeeze(1), c_n_t.squeeze(1)
        return out, (h_n_t, c_n_t)
