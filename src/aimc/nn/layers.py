"""Analog layers: each subclasses the torch layer it replaces, keeps its master weights and state-dict keys,
and adds an ``AnalogMatrix`` (``.analog``) holding the crossbar state.

Modes of the forward pass:
* ``train()``: master weights + hardware-aware training noise and drop-connect (torch ops, differentiable); with
  ``learn_input_range`` also the static DAC at a learned range (``aimc.nn.noise``).
* ``eval()`` before ``aimc.program``: the digital master weights (what HWA validation measures).
* ``eval()`` after ``aimc.program`` and ``aimc.at_time``: the drifted analog weights through the periphery.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import DataError, ShapeError, StateError
from aimc.nn.checks import check_layer_input, has_non_finite  # noqa: F401  (has_non_finite: aimc.evaluation)
from aimc.nn import cache
from aimc.nn.bands import bands_apply, bands_forward
from aimc.nn.cache import in_dtype
from aimc.nn.mvm import grouped_forward, static_conv_forward, tile_max, tile_to_groups, tiles_forward
from aimc.nn.unfold import _RowPadded, _patches, _unfold, batched_forward, patch_absmax, window_max
from aimc.nn.threads import torch_threads
from aimc.nn.tile import AnalogMatrix
from aimc.nn.weight import plain, same_geometry
from aimc.periphery import dac_step
from aimc.nn.noise import MIN_INPUT_RANGE, quantize_ste

__all__ = ["AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogLayer"]

_OWN_BIAS = object()
"""Default of ``AnalogLinear.forward(aimc_bias=...)``: the layer's own bias."""

_RANGE_WARMUP = 10
"""Training batches whose running max |x| initialises a learned input range that has no value yet."""


# bytes of unfolded columns processed at once by a convolution's matrix path (about an L2 cache on current CPUs).
# Changing it changes the order of output-noise draws in layers with several row tiles (same statistics, other
# numbers); 3-5 MB measured within the benchmark's noise of 2 MB, so it stays.
_CHUNK_BYTES = 2 << 20
_ROWS_MAX_WIDTH = 28
"""Grouped layers build row-padded patches (``aimc.nn.unfold._RowPadded``) up to this output width: EfficientNet-B0
at batch 8, one thread, with every width: the division 156 -> 119-134 ms but the divisor copies 21 -> 39-46 ms."""


def _check_input(x: torch.Tensor, name: str) -> None:
    """Per-layer NaN/Inf check: a no-op in the normal forward (the model's input and output are checked once per
    batch instead, ``aimc.nn.checks``); active while a batch with a non-finite output is re-run to name the layer."""
    check_layer_input(x, name)


def _check_dtype(x: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    """A floating input of another dtype than the weights (outside autocast) is an error naming both dtypes
    (torch's own message names neither layer nor fix). ``aimc.evaluate`` casts its data before it gets here."""
    if x.dtype != weight.dtype and x.is_floating_point() and not torch.is_autocast_enabled(x.device.type):
        raise DataError(f"layer {name!r}: the input is {x.dtype} but the weights are {weight.dtype}; cast the input "
                        f"(e.g. x.to({weight.dtype}); float64 often comes from numpy) or the model "
                        f"(model.to({x.dtype})).")


class AnalogLayer:
    """Behaviour shared by the single-matrix analog layers (mixin; not a module on its own)."""

    analog: AnalogMatrix
    weight: nn.Parameter
    aimc_name: str = ""
    aimc_train_mvm: Callable[[nn.Module, str, torch.Tensor], torch.Tensor] | None = None
    """Replacement of the training-mode MVM, called as ``aimc_train_mvm(layer, matrix suffix, x)`` (suffix "" for a
    single-matrix layer, the weight's name for an LSTM matrix). ``aimc.train.MixedPrecision`` sets it (its MVMs then
    run on simulated PCM devices) and ``MixedPrecision.detach()`` resets it; ``None``: the hardware-aware training
    forward."""

    @property
    def analog_config(self) -> AnalogConfig:
        return self.analog.config

    def _matrix(self) -> torch.Tensor:
        return self.weight.reshape(self.weight.shape[0], -1)

    def analog_matrices(self) -> dict[str, tuple[AnalogMatrix, torch.Tensor]]:
        """{suffix: (matrix state, master weight as (out, rows))}."""
        return {"": (self.analog, self._matrix())}

    def _mode(self) -> str:
        if self.training:
            return "train"
        if torch.compiler.is_compiling():  # no tensor-to-Python reads in a graph: `drifted` is not checked here,
            return "analog" if self.analog.programmed else "digital"  # evaluate_seed calls at_time before compiling
        if not self.analog.programmed:
            return "digital"
        if not self.analog.drifted:
            raise StateError(f"layer {self.aimc_name!r} is programmed but has no time yet; call "
                             "aimc.at_time(model, t_seconds, seed=...) before the forward pass.")
        return "analog"

    def _train_input(self, x: torch.Tensor) -> torch.Tensor:
        """Input of a training forward pass.

        Without a learned range (``TrainingConfig.learn_input_range`` off or no static DAC): ``x`` unchanged, and
        the running max |x| becomes the static input range (:meth:`_track_range`).

        With a learned range r (``analog.learned_input_range``): the DAC quantisation of ``x`` at range r with
        straight-through / LSQ gradients (``aimc.nn.noise.quantize_ste``); r is then copied into the inference
        buffer ``analog.input_range``. r starts, on the first training pass, from its stored value (a loaded
        model, ``periphery.input_bound``), else from a calibrated ``input_range``, else it is the running max |x|
        of the first ``_RANGE_WARMUP`` training batches (max over DDP ranks) before it is learned.
        """
        r = self.analog.learned_input_range
        if r is None:
            self._track_range(x)
            return x
        with torch.no_grad():
            self._init_learned_range(x, r)
        x_q = quantize_ste(x, r, self.analog.config.periphery.dac_bits)
        with torch.no_grad():
            self.analog.input_range.copy_(r.clamp_min(MIN_INPUT_RANGE))
        return x_q

    def _init_learned_range(self, x: torch.Tensor, r: torch.Tensor) -> None:
        state = self.__dict__.get("_range_warmup")
        if state is None:  # first training pass of this layer in this process
            buf = self.analog.input_range
            if not math.isnan(float(r)):
                state = (0, None)
            elif not math.isnan(float(buf)):
                r.copy_(buf)
                state = (0, None)
            else:
                state = (_RANGE_WARMUP, None)
        left, running = state
        if left > 0:
            m = x.detach().abs().max().to(r.dtype).clamp_min(MIN_INPUT_RANGE)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(m, op=torch.distributed.ReduceOp.MAX)
            running = m if running is None else torch.maximum(running, m)
            r.copy_(running)
            left -= 1
        self._range_warmup = (left, running if left > 0 else None)

    def _track_range(self, x: torch.Tensor) -> None:
        """While training with a static DAC and no fixed range: running max|x| becomes the input range."""
        p = self.analog.config.periphery
        if p.dac_bits is None or p.input_range != "static" or p.input_bound is not None:
            return
        m = x.detach().abs().max().to(self.analog.input_range.dtype)
        r = self.analog.input_range
        self.analog.input_range = m if math.isnan(float(r)) else torch.maximum(r * 0.99 + 0.01 * m, 0.5 * r)

    def _static_dac(self, x: torch.Tensor) -> torch.Tensor:
        return self.analog.static_dac(x, self.aimc_name)


class AnalogLinear(AnalogLayer, nn.Linear):
    """``nn.Linear`` on analog crossbars. Input ``(*, in_features)``, output ``(*, out_features)``."""

    @classmethod
    def from_torch(cls, m: nn.Linear, config: AnalogConfig) -> AnalogLinear:
        # built on the meta device and given m's tensors (assign): no second weight allocated and initialised
        new = cls(m.in_features, m.out_features, bias=m.bias is not None, device="meta", dtype=m.weight.dtype)
        new.load_state_dict(m.state_dict(), assign=True)
        new.train(m.training)
        new.analog = AnalogMatrix(m.out_features, m.in_features, config)
        return new

    def forward(self, x: torch.Tensor, *, aimc_bias: torch.Tensor | None | object = _OWN_BIAS) -> torch.Tensor:
        """``x @ weight.T + bias``; ``aimc_bias`` replaces the layer's bias when a parent computes
        ``F.linear(x, layer.weight, other_bias)`` (``aimc.nn.weight.AnalogWeight`` routes that call here)."""
        bias = self.bias if aimc_bias is _OWN_BIAS else aimc_bias
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"layer {self.aimc_name!r}: input has {x.shape[-1]} features in its last dimension, "
                             f"expected in_features={self.in_features} (input shape {tuple(x.shape)}).")
        _check_dtype(x, self.weight, self.aimc_name)
        mode = self._mode()
        weight = plain(self.weight)  # the master weight as a plain tensor: this product is not intercepted again
        if mode == "train":
            # hook point of mixed-precision training (aimc.train.MixedPrecision attaches it): the MVM runs on the
            # simulated PCM devices with per-read noise; absent otherwise
            hook = self.aimc_train_mvm
            if hook is not None:
                with torch._C.DisableTorchFunctionSubclass():  # the hook multiplies self.weight itself
                    y = hook(self, "", self._train_input(x))
                return y if bias is self.bias else _rebias(y, self.bias, bias)
            if self.analog.trains_through_periphery:  # training.periphery: DAC/ADC/noise as at inference
                y = self.analog.train_periphery_mvm(self, "", self._train_input(x), weight)
                return y if bias is None else y + bias
            return F.linear(self._train_input(x), self.analog.train_weight(weight), bias)
        if mode == "digital":
            return F.linear(x, weight, bias)
        _check_input(x, self.aimc_name)
        # analog products in the matrix's compute dtype (float32 for a bfloat16 model: aimc.nn.cache)
        if not self.analog.config.periphery.needs_matrix_path:
            return cache.linear(self.analog, x, bias, self.aimc_name)
        return in_dtype(self.analog.compute_dtype, linear_tiles, x, self.analog, self.aimc_name, bias)

    def aimc_product(self, key: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """A product on ``self.weight`` performed elsewhere (``F.linear(x, layer.weight, bias)`` in a parent, a
        fused fast path): the module call, so forward hooks (``aimc.calibrate_input_ranges``) see it too."""
        return self(x, aimc_bias=bias)


def linear_tiles(x: torch.Tensor, mat: AnalogMatrix, name: str, bias: torch.Tensor | None) -> torch.Tensor:
    """Matrix path of a linear product on ``mat`` (drifted): ``x`` ``(*, in)`` → ``(*, out)`` row-major, plus
    ``bias``; ``x`` in ``mat.compute_dtype`` (the callers cast, :func:`aimc.nn.cache.in_dtype`)."""
    lead = x.shape[:-1]
    if bands_apply(mat):  # static range, no output noise: one GEMM per row band, row-major result
        y = mat.run_tiles(bands_forward, mat, x.reshape(-1, x.shape[-1]), name, bias)
        return y.reshape(*lead, mat.layout.out_features)
    cols = x.reshape(-1, x.shape[-1]).t().unsqueeze(0)  # (1, in, N) view: no copy
    # run_tiles gives (1, out, N): its transpose is column-major, so the result is laid out row-major once here
    # (a copy of the output, ~0.5 % of the product's time at 576 x 1536 x 512); a column-major result made
    # every later op on it slower and sent attention to SDPA's math path instead of the flash kernel
    y = mat.run_tiles(tiles_forward, mat, cols, name)
    return _row_major(y[0].t(), bias).reshape(*lead, mat.layout.out_features)


def _row_major(y_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y_t`` ``(N, out)`` (a transposed view) as a row-major tensor, with ``bias`` added in the same pass."""
    if bias is None:
        return y_t.contiguous()
    if torch.is_grad_enabled() and (y_t.requires_grad or bias.requires_grad):
        return (y_t + bias).contiguous()  # add's out= does not record autograd
    out = torch.empty(y_t.shape, dtype=torch.promote_types(y_t.dtype, bias.dtype), device=y_t.device)
    return torch.add(y_t, bias, out=out)


def _rebias(y: torch.Tensor, have: torch.Tensor | None, want: torch.Tensor | None) -> torch.Tensor:
    """``y`` computed with bias ``have``, returned with bias ``want`` instead."""
    if have is not None:
        y = y - have
    return y if want is None else y + want


class _AnalogConvNd(AnalogLayer):
    """Shared code of the analog convolutions (mixin before ``nn.ConvNd``)."""

    @classmethod
    def from_torch(cls, m: nn.modules.conv._ConvNd, config: AnalogConfig):  # noqa: ANN206
        new = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                  dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                  device="meta", dtype=m.weight.dtype)
        new.load_state_dict(m.state_dict(), assign=True)  # m's tensors: no second weight (as AnalogLinear)
        new.train(m.training)
        k = math.prod(m.kernel_size)
        new.analog = AnalogMatrix(m.out_channels, m.in_channels // m.groups * k, config, groups=m.groups,
                                  row_unit=k)
        return new

    def aimc_uses_lanes(self) -> bool | None:
        """Whether this layer's forward runs on aimc's worker lanes (``aimc.nn.threads`` hands them torch's threads
        during a model's forward): ``True`` for an ungrouped convolution on the matrix path with dynamic input ranges
        (``aimc.nn.unfold``), ``False`` for a grouped one (its chunks run on torch's threads), ``None`` otherwise
        (not programmed, training, or a static range, which keeps the convolution a torch convolution)."""
        p = self.analog.config.periphery
        if self.training or not self.analog.programmed or not p.needs_matrix_path or p.input_range != "dynamic":
            return None
        return self.groups == 1

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded as the convolution pads it (zeros or its ``padding_mode``)."""
        pad = self._reversed_padding_repeated_twice
        if not any(pad):
            return x
        return F.pad(x, pad, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)

    def _geometry(self, h: int, w: int, one_d: bool) -> tuple[tuple[int, int], ...]:
        """Kernel size, dilation, stride as 2-d tuples (a Conv1d runs as 2-d with height 1) and the output size
        ``(ho, wo)`` for a padded input of height ``h`` and width ``w``."""
        k = tuple(self.kernel_size) if not one_d else (1, *self.kernel_size)
        dil = tuple(self.dilation) if not one_d else (1, *self.dilation)
        st = tuple(self.stride) if not one_d else (1, *self.stride)
        ho = (h - dil[0] * (k[0] - 1) - 1) // st[0] + 1
        wo = (w - dil[1] * (k[1] - 1) - 1) // st[1] + 1
        return k, dil, st, (ho, wo)

    @torch.compiler.disable  # eager under torch.compile, like tiles_forward (chunk shapes vary per layer)
    def _unfolded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Matrix path: pad, unfold patches, per-tile MVMs, fold back. ``x`` is ``(B, C, *spatial)``.

        The batch runs a few images at a time through two buffers allocated once per call (a zero-padded chunk of
        the input and its unfolded columns): a fresh tensor per chunk would cost more in page faults than the copy
        itself, and zero padding into a reused buffer avoids padding (and allocating) the whole batch.
        """
        pad = self._reversed_padding_repeated_twice
        # reused buffers cannot be part of an autograd graph: with a gradient to x, every chunk gets new tensors
        reuse = not (x.requires_grad and torch.is_grad_enabled())
        zero_pad = self.padding_mode == "zeros" and reuse
        if not zero_pad:  # reflect / replicate / circular (or autograd): pad the whole input once
            x = self._pad(x)
        one_d = x.dim() == 3
        if one_d:  # Conv1d: run as 2-d with height 1
            x = x.unsqueeze(2)
        pl, pr, pt, pb = (((*pad, 0, 0) if one_d else tuple(pad)) if zero_pad else (0, 0, 0, 0))
        b, c, h, w = x.shape
        hp, wp = h + pt + pb, w + pl + pr  # padded size
        k, dil, st, (ho, wo) = self._geometry(hp, wp, one_d)
        p = self.analog.config.periphery
        dynamic = p.input_range == "dynamic"
        dac = dac_step(p.dac_bits) if p.dac_bits is not None else None
        lay, kk, c_pg = self.analog.layout, k[0] * k[1], self.in_channels // self.groups
        # the columns are kk times the input: built, quantised and multiplied a few images at a time so that they
        # stay in the CPU cache (one pass over the whole batch's columns costs more than the convolution itself)
        per_image = c * kk * ho * wo * x.element_size()
        step = min(b, max(1, _CHUNK_BYTES // max(per_image, 1)))
        scales: dict[tuple[int, int], torch.Tensor] = {}

        def batch_scale(tile: int, g: int) -> torch.Tensor:
            """Per-patch abs-max of one row tile's channels over the whole batch, ``(B, 1, L)``: a max-pool of |x|."""
            if (tile, g) not in scales:
                s, e = lay.row_bounds[tile]
                xs = x[:, g * c_pg + s // kk: g * c_pg + e // kk]
                # an all-zero patch gets a tiny scale, not 0/0
                scales[tile, g] = patch_absmax(xs, (pl, pr, pt, pb), k, dil, st, ho, wo).clamp_min_(1e-30)
            return scales[tile, g]

        grouped = self.groups > 1 and lay.whole_groups  # all tiles at once (aimc.nn.mvm.grouped_forward)
        per_c = lay.groups_per_tile * c_pg  # input channels of one (packed) tile
        tile_scales: list[torch.Tensor] = []

        def batch_tile_scale() -> torch.Tensor:
            """Per-patch abs-max over each tile's channels (all its packed groups), ``(B, n_tiles, L)``."""
            if not tile_scales:
                if c_pg == 1:  # depthwise: one channel a group
                    a = x.abs()
                else:
                    xs = x.unflatten(1, (self.groups, c_pg))
                    a = torch.maximum(xs.amax(dim=2), xs.amin(dim=2).neg_())  # (B, groups, H, W)
                a = tile_max(a, lay.groups_per_tile)
                if pl or pr or pt or pb:
                    a = F.pad(a, (pl, pr, pt, pb))
                tile_scales.append(window_max(a, k, dil, st, ho, wo).flatten(2).clamp_min_(1e-30))
            return tile_scales[0]

        if reuse and self.groups == 1:  # chunks and their periphery on the lanes (aimc.nn.unfold)
            y = batched_forward(self, x, (pl, pr, pt, pb), k, dil, st, ho, wo, step, dynamic)
            return self._finish(y, b, ho, wo, one_d)
        # grouped layouts and autograd: torch's threads (given back for this layer if the model's forward handed
        # them to the lanes, aimc.nn.threads)
        with torch_threads():
            # stride 1, as wide as the input: rows padded above and below only (aimc.nn.unfold._RowPadded), where
            # rows are short (the per-channel divisor with its padded taps costs more than it saves on wide rows)
            rows = (_RowPadded(x, step, (pl, pr, pt, pb), k, dil, ho)
                    if reuse and grouped and wo <= _ROWS_MAX_WIDTH and _RowPadded.fits((pl, pr, pt, pb), st, w, wo)
                    else None)
            padded = x.new_zeros(step, c, hp, wp) if (pl or pr or pt or pb) and rows is None else None
            cols_buf = x.new_empty(step, c * kk, ho * wo) if reuse else None
            y = x.new_empty(b, self.out_channels, ho * wo)
            for i in range(0, b, step):
                n = min(step, b - i)
                if rows is not None:
                    rows.load(x[i:i + n])
                    xc = None  # the rare bound-management rebuild pads the chunk itself
                elif padded is not None:
                    padded[:n, :, pt:pt + h, pl:pl + w] = x[i:i + n]
                    xc = padded[:n]
                else:
                    xc = x[i:i + n].contiguous()
                scale_fn = None
                if dynamic:
                    def scale_fn(tile: int, g: int, i: int = i, n: int = n) -> torch.Tensor:
                        return batch_scale(tile, g)[i:i + n]

                prescaled = dynamic and reuse
                if not reuse:
                    cols = _unfold(xc, k, dil, st, ho, wo)  # (n, C·kh·kw, L)
                else:
                    cols = cols_buf[:n]
                    src = rows.patches(n) if rows is not None else _patches(xc, k, dil, st, ho, wo)
                    dst = cols.view(n, c, k[0], k[1], ho, wo)
                if prescaled and grouped:  # one division: every channel's patches by its tile's DAC divisor
                    d = batch_tile_scale()[i:i + n]
                    d = tile_to_groups(d * dac if dac is not None else d, per_c, c).view(n, c, 1, 1, ho, wo)
                    torch.div(src, rows.edge_divisor(d) if rows is not None else d, out=dst)
                elif prescaled:  # unfold and scale in one pass: each row tile's patches divided by their DAC divisor
                    for tile, (s, e) in enumerate(lay.row_bounds):
                        for g in range(self.groups):
                            d = scale_fn(tile, g)
                            d = d * dac if dac is not None else d
                            c0, c1 = g * c_pg + s // kk, g * c_pg + e // kk
                            torch.div(src[:, c0:c1], d.view(n, 1, 1, 1, ho, wo), out=dst[:, c0:c1])
                elif reuse:
                    dst.copy_(src)
                    if rows is not None:
                        rows.clear_edges(dst)
                # bound-management retries (rare) rebuild the unquantised columns of this chunk into a new tensor
                if grouped:
                    grouped_forward(self.analog, cols, self.aimc_name, owned=True, prescaled=prescaled,
                                    tile_scale=batch_tile_scale()[i:i + n] if dynamic else None,
                                    rebuild=lambda xc=xc, i=i, n=n: _unfold(
                                        xc if xc is not None else F.pad(x[i:i + n], (pl, pr, pt, pb)),
                                        k, dil, st, ho, wo), out=y[i:i + n])
                    continue
                tiles_forward(self.analog, cols, self.aimc_name, owned=True, scale_fn=scale_fn, prescaled=prescaled,
                              rebuild=lambda xc=xc: _unfold(xc, k, dil, st, ho, wo), out=y[i:i + n])
            return self._finish(y, b, ho, wo, one_d)

    def _finish(self, y: torch.Tensor, b: int, ho: int, wo: int, one_d: bool) -> torch.Tensor:
        """``(B, C_out, ho·wo)`` matrix-path output as the convolution's output, plus the bias."""
        y = y.view(b, self.out_channels, ho, wo)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.squeeze(2) if one_d else y

    def _analog_forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self._mode()
        if mode == "train":
            # hook point of mixed-precision training (aimc.train.MixedPrecision), as in AnalogLinear.forward
            hook = self.aimc_train_mvm
            if hook is not None:
                with torch._C.DisableTorchFunctionSubclass():  # the hook multiplies self.weight itself
                    return hook(self, "", self._train_input(x))
            if self.analog.trains_through_periphery:  # training.periphery: DAC/ADC/noise as at inference
                y = self.analog.train_periphery_mvm(self, "", self._train_input(x), plain(self.weight))
                return y if self.bias is None else y + self.bias.view((1, -1) + (1,) * (y.dim() - 2))
            return self._conv_forward(self._train_input(x), self.analog.train_weight(plain(self.weight)), self.bias)
        if mode == "digital":
            return self._conv_forward(x, plain(self.weight), self.bias)
        _check_input(x, self.aimc_name)
        p = self.analog.config.periphery
        if not p.needs_matrix_path:  # in the compute dtype (float32 for a bfloat16 model: aimc.nn.cache)
            w = self.analog.effective_weight().view_as(self.weight)
            return in_dtype(w.dtype, lambda x, w, b: self._conv_forward(self._static_dac(x), w, b), x, w, self.bias)
        return in_dtype(self.analog.compute_dtype, self._matrix_forward, x)

    def _matrix_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog.config.periphery.input_range == "static":  # a convolution unless bound management retries
            y = self.analog.run_tiles(static_conv_forward, self, x)
            if y is not None:
                return y
        return self.analog.run_tiles(self._unfolded_forward, x)

    def aimc_conv(self, key: str, x: torch.Tensor, bias: torch.Tensor | None, nd: int, transposed: bool,
                  geometry: dict) -> torch.Tensor:
        """A convolution with ``self.weight`` performed elsewhere: the module call when it is this layer's own
        convolution (same geometry and bias), else an error (``aimc.nn.weight``)."""
        same_geometry(self, bias, nd, transposed, geometry)
        return self(x)

    def _check_shape(self, x: torch.Tensor, nd: int) -> None:
        if x.dim() not in (nd + 1, nd + 2) or x.shape[-nd - 1] != self.in_channels:
            raise ShapeError(
                f"layer {self.aimc_name!r}: expected input (N, {self.in_channels}, {', '.join('L' * nd)}) "
                f"for {type(self).__name__}, got {tuple(x.shape)}.")
        _check_dtype(x, self.weight, self.aimc_name)


class AnalogConv1d(_AnalogConvNd, nn.Conv1d):
    """``nn.Conv1d`` on analog crossbars. Input ``(N, C_in, L)``, output ``(N, C_out, L_out)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x, 1)
        if x.dim() == 2:
            return self._analog_forward(x.unsqueeze(0)).squeeze(0)
        return self._analog_forward(x)


class AnalogConv2d(_AnalogConvNd, nn.Conv2d):
    """``nn.Conv2d`` on analog crossbars. Input ``(N, C_in, H, W)``, output ``(N, C_out, H_out, W_out)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x, 2)
        if x.dim() == 3:
            return self._analog_forward(x.unsqueeze(0)).squeeze(0)
        return self._analog_forward(x)
