"""Analog ``Conv3d`` and ``ConvTranspose1d/2d``, and the geometry check of convolutions a parent performs.

``AnalogConv3d`` shares the code of ``AnalogConv1d/2d`` (``aimc.nn.layers._AnalogConvNd``) for the training,
digital and ideal-periphery paths; its matrix path (output noise, ADC, dynamic input ranges) unfolds the 3-d
patches into columns and runs them through :func:`aimc.nn.mvm.tiles_forward`.

``AnalogConvTranspose1d/2d``: a transposed convolution is one matrix product per input pixel followed by a
digital overlap-add (col2im): with the weight ``(C_in, C_out, *k)`` seen as the crossbar matrix
``(C_out·prod(k), C_in)``, each input pixel's channel vector drives the crossbar and ``F.fold`` adds the
overlapping outputs. Only ``groups=1`` (a grouped transposed convolution stays digital, said in the report).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ShapeError, UnsupportedLayerError
from aimc.nn.cache import in_dtype
from aimc.nn.layers import AnalogLayer, _AnalogConvNd, _check_input
from aimc.nn.mvm import tiles_forward
from aimc.nn.tile import AnalogMatrix
from aimc.nn.weight import plain, same_geometry

__all__ = ["AnalogConv3d", "AnalogConvTranspose1d", "AnalogConvTranspose2d", "same_geometry"]


class AnalogConv3d(_AnalogConvNd, nn.Conv3d):
    """``nn.Conv3d`` on analog crossbars. Input ``(N, C_in, D, H, W)``, output ``(N, C_out, D_out, H_out, W_out)``."""

    def aimc_uses_lanes(self) -> None:
        """No preference: its matrix path is :func:`aimc.nn.mvm.tiles_forward` (see ``aimc.nn.threads``)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x, 3)
        if x.dim() == 4:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return self._analog_forward(x)

    @torch.compiler.disable
    def _unfolded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Matrix path: pad, patches ``(B, C·kd·kh·kw, L)`` (one strided copy), per-tile MVMs, reshape back."""
        x = self._pad(x).contiguous()
        b, c = x.shape[:2]
        k, dil, st = self.kernel_size, self.dilation, self.stride
        out = [(n - d * (kk - 1) - 1) // s + 1 for n, kk, d, s in zip(x.shape[2:], k, dil, st)]
        sb, sc, *ss = x.stride()
        view = x.as_strided((b, c, *k, *out), (sb, sc, *(d * s_ for d, s_ in zip(dil, ss)),
                                               *(s * s_ for s, s_ in zip(st, ss))), x.storage_offset())

        def cols() -> torch.Tensor:
            return view.reshape(b, c * math.prod(k), math.prod(out))

        y = tiles_forward(self.analog, cols(), self.aimc_name, owned=True, rebuild=cols)
        y = y.view(b, self.out_channels, *out)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1, 1)


class _AnalogConvTransposeNd(AnalogLayer):
    """Shared code of the analog transposed convolutions (mixin before ``nn.ConvTransposeNd``)."""

    _nd: int

    @classmethod
    def from_torch(cls, m: nn.modules.conv._ConvTransposeNd, config: AnalogConfig):  # noqa: ANN206
        if m.groups != 1:
            raise UnsupportedLayerError(f"{type(m).__name__} with groups={m.groups}: only groups=1 is analog")
        if m.padding_mode != "zeros":
            raise UnsupportedLayerError(f"{type(m).__name__} with padding_mode={m.padding_mode!r}")
        new = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                  output_padding=m.output_padding, groups=m.groups, bias=m.bias is not None, dilation=m.dilation,
                  device=m.weight.device, dtype=m.weight.dtype)
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        new.analog = AnalogMatrix(m.out_channels * math.prod(m.kernel_size), m.in_channels, config)
        return new

    def _matrix(self) -> torch.Tensor:
        """The crossbar matrix ``(C_out·prod(k), C_in)`` of the weight ``(C_in, C_out, *k)`` (a transposed view)."""
        return plain(self.weight).reshape(self.in_channels, -1).t()

    def analog_matrices(self) -> dict[str, tuple[AnalogMatrix, torch.Tensor]]:
        """{".weight": (matrix state, the weight as the ``(C_out·prod(k), C_in)`` view)}. The key names the weight
        (not ``""``): the matrix is a transposed view, which ``aimc.clip`` must write through, not reshape."""
        return {".weight": (self.analog, self._matrix())}

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        nd = self._nd
        if x.dim() not in (nd + 1, nd + 2) or x.shape[-nd - 1] != self.in_channels:
            raise ShapeError(f"layer {self.aimc_name!r}: expected input (N, {self.in_channels}, *spatial) with "
                             f"{nd} spatial dimension(s) for {type(self).__name__}, got {tuple(x.shape)}.")
        if x.dim() == nd + 1:
            return self.forward(x.unsqueeze(0), output_size).squeeze(0)
        op = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, nd, self.dilation)
        conv = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
        mode = self._mode()

        def run(inp: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = self.bias) -> torch.Tensor:
            return conv(inp, w, bias, self.stride, self.padding, op, self.groups, self.dilation)

        if mode == "train":
            hook = self.aimc_train_mvm
            if hook is not None:
                raise UnsupportedLayerError(f"layer {self.aimc_name!r}: mixed-precision training does not support "
                                            "transposed convolutions; exclude the layer.")
            if self.analog.trains_through_periphery:
                raise UnsupportedLayerError(f"layer {self.aimc_name!r}: training.periphery does not support "
                                            "transposed convolutions; exclude the layer or set training.periphery "
                                            "to false.")
            return run(self._train_input(x), self.analog.train_weight(plain(self.weight)))
        if mode == "digital":
            return run(x, plain(self.weight))
        _check_input(x, self.aimc_name)
        # in the compute dtype (float32 for a bfloat16 model: aimc.nn.cache)
        if not self.analog.config.periphery.needs_matrix_path:
            w = self.analog.effective_weight().t().reshape(self.weight.shape)
            return in_dtype(w.dtype, lambda x, w, b: run(self._static_dac(x), w, b), x, w, self.bias)
        return in_dtype(self.analog.compute_dtype, lambda x: self.analog.run_tiles(self._fold_forward, x, op), x)

    @torch.compiler.disable
    def _fold_forward(self, x: torch.Tensor, op: tuple[int, ...]) -> torch.Tensor:
        """Matrix path: every input pixel's channels through the tiles, then the digital overlap-add (col2im)."""
        one_d = self._nd == 1
        if one_d:
            x = x.unsqueeze(2)
        b, c, h, w = x.shape
        def two(t: tuple[int, ...], lead: int) -> tuple[int, ...]:  # a 1-d geometry as 2-d with height 1
            return (lead, *t) if one_d else tuple(t)

        k, st, dil = two(self.kernel_size, 1), two(self.stride, 1), two(self.dilation, 1)
        pad, opad = two(self.padding, 0), two(op, 0)
        size = [(n - 1) * s - 2 * p + d * (kk - 1) + o + 1 for n, s, p, d, kk, o in zip((h, w), st, pad, dil, k, opad)]
        cols = tiles_forward(self.analog, x.reshape(b, c, h * w), self.aimc_name)  # a view of x: not owned
        y = F.fold(cols, size, k, dilation=dil, padding=pad, stride=st)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.squeeze(2) if one_d else y

    def aimc_conv(self, key: str, x: torch.Tensor, bias: torch.Tensor | None, nd: int, transposed: bool,
                  geometry: dict) -> torch.Tensor:
        """A transposed convolution with ``self.weight`` performed elsewhere (see ``aimc.nn.weight``)."""
        same_geometry(self, bias, nd, transposed, geometry)
        return self(x)


class AnalogConvTranspose1d(_AnalogConvTransposeNd, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` on analog crossbars (``groups=1``). Input ``(N, C_in, L)``, output
    ``(N, C_out, L_out)``."""

    _nd = 1


class AnalogConvTranspose2d(_AnalogConvTransposeNd, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` on analog crossbars (``groups=1``). Input ``(N, C_in, H, W)``, output
    ``(N, C_out, H_out, W_out)``."""

    _nd = 2
