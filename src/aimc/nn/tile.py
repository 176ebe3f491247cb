"""``AnalogMatrix``: the crossbar state of one weight matrix (tiles, devices, drift, GDC, cached weights).

An analog layer owns one ``AnalogMatrix`` per weight matrix (a Linear or convolution one, an LSTM one per gate
matrix). The layer keeps its digital master weight as the usual ``nn.Parameter``; the matrix holds the device
state in buffers, so ``state_dict`` round-trips it.

Buffers (all persistent):
    g_target, g_prog, nu: ``(2, out, rows)`` device state of the differential pairs, µS / µS / dimensionless.
    w_max: ``(out, n_row_tiles)`` the |W| mapped to g_max, weight units.
    gdc_base: ``(n_col_tiles, n_row_tiles)`` GDC read-out right after programming (``(out, n_row_tiles)``, one per
        output column of each row tile, with ``compensation.granularity = "column"``; likewise gdc_noise, gdc_alpha).
    gdc_noise: ``(n_col_tiles, n_row_tiles)`` read-noise variance of one read-out output, estimated from the two
        baseline reads of the correlation read-out (``aimc.nn.gdc``; NaN in states saved before it existed).
    gdc_ref: ``(n_row_tiles, n_readout, out)`` reference outputs of the correlation read-out.
    gdc_amp: ``(n_row_tiles,)`` amplitude a of the ±a correlation read-out inputs of each row tile, fixed at
        programming so the reads stay inside the ADC range (``aimc.nn.gdc.readout_amplitude``; empty = 1, as in
        states saved before it existed).
    input_range: ``()`` static DAC input range of the layer (NaN = not calibrated).
    learned_input_range: ``()`` parameter (only with ``training.learn_input_range`` and a static DAC), trained with a
        straight-through estimator; ``aimc.clip`` copies it into ``input_range``.
    t_seconds, read_seed, gdc_on: the last ``at_time`` call, so a loaded model recomputes the same weights.
    half_cache: ``()`` bool, the cached weights are held in float16 (``aimc.at_time(..., cache_dtype=...)``,
        ``aimc.nn.cache``); False in states saved before it existed.
    prog_seed: ``()`` int64 key of the counter-based programming noise (``aimc.rng``; -1 = not programmed, or
        a state saved before it existed): with the master weight and ``w_max`` it regenerates g_target, g_prog and
        nu bit-exactly (:meth:`AnalogMatrix.regenerate`), which is how ``aimc.save`` leaves them out of the file.

Randomness: programming noise and drift exponents come from a counter-based stream keyed by
``derive_seed(seed, layer, 1)``, read noise from one keyed by the ``at_time`` read seed (``aimc.rng.CounterStream``),
so the same seed gives the same chip on CPU and CUDA; the periphery noise of the GDC read-out and of the forward
pass uses ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aimc import mapping
from aimc.config import AnalogConfig
from aimc.devices import DeviceState
from aimc.errors import FileFormatError, NonFiniteError, StateError
from aimc.nn import cache as _cache
from aimc.nn import gdc as _gdc
from aimc.periphery import quantize_input
from aimc.nn.seeds import derive_seed
from aimc.nn.master import checksum as _checksum, master as _master, same_weight
from aimc.nn.tile_gdc import GdcReadout
from aimc.rng import CounterStream

__all__ = ["AnalogMatrix", "derive_seed"]

_EMPTY = ("g_target", "g_prog", "nu", "w_max", "gdc_base", "gdc_noise", "gdc_ref", "gdc_alpha", "gdc_amp",
          "prog_check")
# weights regenerated at once by program/at_time on CPU (transient: about 100 B each, ~13 MB): the device physics'
# elementwise passes stay closer to the cores (2^17 was 1.2x faster than 2^19 at one and at two threads); fixed, so
# that the numbers do not depend on the thread count
_BLOCK = 1 << 17


def _host_float(t: torch.Tensor, cache: dict) -> float:
    """``float(t)`` of a 0-d buffer, read from the device only when the buffer was replaced or written in place
    (the cache holds the tensor itself, so its identity cannot be reused, and its in-place version counter), so
    the forward pass makes no host-device synchronisation for it."""
    try:
        version = t._version
    except RuntimeError:  # inference tensors keep no version counter: always read
        return float(t)
    if cache.get("tensor") is not t or cache.get("version") != version:
        cache.update(tensor=t, version=version, value=float(t))
    return cache["value"]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class AnalogMatrix(GdcReadout, nn.Module):
    """Device state and effective weights of one ``(out, rows)`` weight matrix laid out on crossbar tiles.

    Args:
        out_features: output columns (over all groups).
        rows: input lines per group.
        config: the analog configuration.
        groups: convolution groups.
        row_unit: rows that stay together on one tile (kernel size of a convolution).
        learn_range: allow a learned input range (layers whose training forward does not quantise pass False).
    """

    def __init__(self, out_features: int, rows: int, config: AnalogConfig, *, groups: int = 1, row_unit: int = 1,
                 learn_range: bool = True):
        super().__init__()
        self.config = config
        m = config.mapping
        self.layout = mapping.make_layout(out_features, rows, groups=groups, row_unit=row_unit,
                                          tile_rows=m.tile_rows, tile_cols=m.tile_cols)
        for name in _EMPTY:
            self.register_buffer(name, torch.empty(0))
        bound = config.periphery.input_bound
        self.register_buffer("input_range", torch.tensor(float("nan") if bound is None else float(bound)))
        # learned static DAC range (TrainingConfig.learn_input_range; NaN until the first training batches set it);
        # the layers' training forward learns it, aimc.clip copies it into input_range
        p, learn = config.periphery, config.training.learn_input_range
        self.register_parameter("learned_input_range", nn.Parameter(self.input_range.clone())
                                if learn and learn_range and p.dac_bits is not None and p.input_range == "static"
                                else None)
        self.register_buffer("t_seconds", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("read_seed", torch.tensor(-1, dtype=torch.int64))
        self.register_buffer("prog_seed", torch.tensor(-1, dtype=torch.int64))
        self.register_buffer("gdc_on", torch.tensor(False))
        self.register_buffer("half_cache", torch.tensor(False))
        self.register_buffer("w_analog", torch.empty(0), persistent=False)
        self.register_buffer("out_scale", torch.empty(0), persistent=False)
        self.register_buffer("w_eff", torch.empty(0), persistent=False)
        self._forward_gen: torch.Generator | None = None
        self._w_eff_scale = 1.0  # w_eff held in float16 is w_eff · this power of two (aimc.nn.cache.to_cache)
        self._switch: dict | None = None  # at_time(keep=True): what set_gdc switches between
        self.gdc_info: dict | None = None  # how the last at_time's GDC factors were obtained (aimc.gdc_report)
        self._t_cache: dict = {}  # host copies of t_seconds and input_range (_host_float)
        self._range_cache: dict = {}

    # ---- state -----------------------------------------------------------------------------------------------
    @property
    def programmed(self) -> bool:
        return self.w_max.numel() > 0

    @property
    def stores_devices(self) -> bool:
        """Whether g_target, g_prog and nu are held in buffers (measured devices, states from older versions)
        rather than regenerated from the master weight and ``prog_seed`` when needed."""
        return self.g_prog.numel() > 0

    @property
    def drifted(self) -> bool:
        return self.programmed and not math.isnan(_host_float(self.t_seconds, self._t_cache))

    def device_state(self, weight: torch.Tensor | None = None) -> DeviceState:
        """The programmed devices, ``(2, out, rows)`` each: the stored buffers, or regenerated from the master
        ``weight`` ``(out, rows)`` (needed then) and ``prog_seed``."""
        if self.stores_devices:
            return DeviceState(g_target=self.g_target, g_prog=self.g_prog, nu=self.nu)
        if weight is None:
            raise StateError("the device state of this matrix is regenerated from its master weight; pass it: "
                             "mat.device_state(weight) (layer.analog_matrices() gives both).")
        return self.regenerate(weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # saved before they existed
        for key, fill in (("prog_seed", -1), ("prog_check", float("nan")), ("half_cache", False)):
            if prefix + key not in state_dict:
                state_dict[prefix + key] = torch.full_like(getattr(self, key), fill)
        if prefix + "w_max" in state_dict and prefix + "gdc_amp" not in state_dict:  # read-out amplitude 1 (older)
            state_dict[prefix + "gdc_amp"] = torch.empty(0, dtype=torch.float64)
        base = state_dict.get(prefix + "gdc_base")
        if base is not None and base.dim() == 2 and base.shape[0] != self._gdc_groups:
            raise FileFormatError(
                f"{prefix.rstrip('.') or 'matrix'}: the stored GDC state has {base.shape[0]} column groups, this "
                f"layer's layout and GDC granularity {self._gdc_groups} (grouped convolutions are packed several groups a tile since this "
                "version; states saved with one tile per group cannot be read). Load the weights without the "
                "device state and call aimc.program again.")
        if base is not None and prefix + "gdc_noise" not in state_dict:  # saved before the noise was stored
            state_dict[prefix + "gdc_noise"] = torch.full_like(base, float("nan"))
        for name in _EMPTY:  # programmed buffers take the shape of what is loaded
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def restore_time(self, name: str, weight: torch.Tensor | None = None) -> None:
        """After loading a state dict: recompute the cached weights of the stored ``at_time`` call (``weight``: the
        master weight ``(out, rows)``, needed when the devices are regenerated)."""
        if self.drifted and int(self.read_seed) >= 0:
            self._drift(float(self.t_seconds), int(self.read_seed), bool(self.gdc_on), weight, name)

    # ---- programming -----------------------------------------------------------------------------------------
    def program(self, weight: torch.Tensor, *, seed: int, name: str) -> None:
        """Map ``weight`` ``(out, rows)`` to conductances and program the devices (sampled once).

        Statistical devices are not stored: only the scales, the GDC baselines, ``prog_seed`` and a checksum of
        the weight; :meth:`at_time` regenerates the devices block by block. Measured devices (which cannot be
        regenerated) keep g_target, g_prog and nu in buffers.
        """
        w = _master(weight)
        if not torch.isfinite(w).all():
            raise NonFiniteError(f"layer {name!r}: the weights hold NaN/Inf, they cannot be programmed; "
                                 "check the training run that produced them.")
        lay = self.layout
        self.w_max = mapping.weight_scale(w, lay, self.config.mapping.scale, clip_std=self.config.mapping.clip_std)
        self.prog_seed.fill_(derive_seed(seed, name, 1))
        empty = torch.empty(0, device=w.device)
        self.g_target, self.g_prog, self.nu = empty, empty.clone(), empty.clone()
        if getattr(self.config.device, "kind", "") == "measured":
            st = self.regenerate(w)
            self.g_target, self.g_prog, self.nu = st.g_target, st.g_prog, st.nu
        self.t_seconds.fill_(float("nan"))
        self.read_seed.fill_(-1)
        self._clear_cache()
        # GDC baseline from the programmed conductances, before any drift or read noise (reference B.7)
        w_a, check, _ = self._blocks(w, None, name)
        self.prog_check = check
        gen = _generator(derive_seed(seed, name, 2), w.device)
        self.gdc_amp = (_gdc.readout_amplitude(w_a, lay, self.config.periphery)
                        if self.config.compensation.readout == "correlation" else torch.empty(0)).to(w.device)
        self.gdc_base, self.gdc_noise, self.gdc_ref = self._baseline(w_a, gen)

    def regenerate(self, weight: torch.Tensor, w_max: torch.Tensor | None = None, *,
                   cols: tuple[int, int] | None = None) -> DeviceState:
        """The device state :meth:`program` produced, recomputed from the master ``weight`` ``(out, rows)``, the
        scales ``w_max`` (default: this matrix's) and the stored ``prog_seed``; bit-identical when ``weight`` is
        the weight that was programmed. ``cols=(c0, c1)``: only output columns c0:c1, ``(2, c1 - c0, rows)``, the
        same numbers they have in the whole (counter-based streams, ``aimc.rng``)."""
        g_t, stream = self._targets(weight, w_max, cols)
        return self.config.device.program(g_t, generator=stream)

    def _targets(self, weight: torch.Tensor, w_max: torch.Tensor | None,
                 cols: tuple[int, int] | None) -> tuple[torch.Tensor, CounterStream]:
        """Target conductances ``(2, c1 - c0, rows)`` (µS) of output columns ``cols`` and the programming stream
        their devices draw from (:meth:`regenerate`)."""
        if int(self.prog_seed) < 0:
            raise StateError("this matrix was not programmed with a counter-based seed (not programmed, or state "
                             "saved by an older aimc); call aimc.program(model, seed=...).")
        w_max = self.w_max if w_max is None else w_max
        out, rows = weight.shape
        c0, c1 = (0, out) if cols is None else cols
        g_t = mapping.weights_to_conductances(_master(weight[c0:c1]), w_max[c0:c1], self.layout,
                                              self.config.device.g_max)
        if cols is None:
            return g_t, CounterStream(int(self.prog_seed), size=2 * out * rows)
        # the devices of columns c0:c1 in the (2, out, rows) whole: elements c0·rows … c1·rows − 1 of each half
        return g_t, CounterStream.pairs(int(self.prog_seed), c0 * rows, c1 * rows, 2 * out * rows, device=g_t.device)

    def _blocks(self, weight: torch.Tensor | None, t: float | None, name: str,
                read_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
        """Analog weights ``(out, rows)`` of the programmed devices (``t`` None) or read ``t`` seconds after
        programming, regenerated and read in blocks of output columns (transient memory: one block), with the
        weight's checksum and the GDC physical bounds at ``t``."""
        dev = self.config.device
        lo, hi = math.inf, -math.inf
        if self.stores_devices:
            st = self.device_state()
            g = st.g_prog if t is None else dev.read(st, t, generator=CounterStream(read_seed))
            if t is not None:
                lo, hi = _gdc.physical_bounds(dev, st.g_target, t)
            check = self.prog_check if weight is None else _checksum(_master(weight))
            return self._analog_weights(g), check, (lo, hi)
        if weight is None:
            raise StateError(f"layer {name!r}: its devices are regenerated from the master weight; pass it "
                             "(aimc.at_time does).")
        out, rows = weight.shape
        step = max(1, (_BLOCK if weight.device.type == "cpu" else 1 << 19) // max(rows, 1))  # GPUs: larger
        w_a = torch.empty(out, rows, dtype=torch.promote_types(weight.dtype, torch.float32), device=weight.device)
        # the statistical devices (PCM, HERMES) program only the conductances when no drift is needed, and share
        # the drift statistics of the targets between the drift exponents and the GDC bounds (same numbers)
        fast = hasattr(dev, "program_conductance") and hasattr(dev, "drift_stats")
        for c0 in range(0, out, step):
            c1 = min(out, c0 + step)
            g_t, stream = self._targets(weight, None, (c0, c1))
            if t is None:
                g = dev.program_conductance(g_t, generator=stream) if fast else dev.program(g_t, generator=stream).g_prog
            else:
                stats = dev.drift_stats(g_t) if fast else None
                st = dev.program(g_t, generator=stream, drift_stats=stats) if fast else dev.program(g_t, generator=stream)
                # the read noise: each device's counter in the whole, under the read key
                g = dev.read(st, t, generator=stream.with_key(read_seed))
                b = _gdc.physical_bounds(dev, g_t, t, drift_stats=stats)
                lo, hi = min(lo, b[0]), max(hi, b[1])
            w_a[c0:c1] = self._analog_weights(g, cols=(c0, c1))
        return w_a, _checksum(weight.detach()), (lo, hi)

    @property
    def _gdc_columns(self) -> bool:
        return self.config.compensation.granularity == "column"

    @property
    def _gdc_groups(self) -> int:
        """First dimension of the GDC buffers: output columns (granularity ``"column"``) or column tiles."""
        return self.layout.out_features if self._gdc_columns else self.layout.n_col_tiles

    def _clear_cache(self) -> None:
        self._switch = None
        self.w_analog = torch.empty(0, device=self.w_max.device)
        self.out_scale = torch.empty(0, device=self.w_max.device)
        self.w_eff = torch.empty(0, device=self.w_max.device)
        self._w_eff_scale = 1.0

    def _analog_weights(self, g: torch.Tensor, cols: tuple[int, int] | None = None) -> torch.Tensor:
        """Analog matrix the tile computes with: weight units, or g/g_max for ``output_units='normalized'``
        (``cols``: ``g`` holds output columns c0:c1 only)."""
        g_max = self.config.device.g_max
        if self.config.periphery.output_units == "normalized":
            return (g[0] - g[1]) / g_max
        w_max = self.w_max if cols is None else self.w_max[cols[0]:cols[1]]
        return mapping.conductances_to_weights(g, w_max, self.layout, g_max)

    def _digital_scale(self) -> torch.Tensor:
        """``(out, n_row_tiles)`` factor from analog outputs back to weight units (before GDC)."""
        if self.config.periphery.output_units == "normalized":
            return self.w_max
        return torch.ones_like(self.w_max)

    # ---- time ------------------------------------------------------------------------------------------------
    def at_time(self, t_seconds: float, *, seed: int, name: str, gdc: bool,
                weight: torch.Tensor | None = None, half_cache: bool | None = None, keep: bool = False) -> None:
        """Conductances ``t_seconds`` after programming (drift + fresh read noise); cache effective weights.

        ``weight``: the master weight ``(out, rows)`` the devices are regenerated from (all but measured ones).
        ``half_cache``: hold the cached weights in float16 (``aimc.nn.cache``); ``None`` keeps the current choice.
        ``keep``: also compute the GDC factors when ``gdc`` is False and keep what :meth:`set_gdc` needs to switch
        compensation on or off without drawing the conductances again (costs one more copy of the analog weights)."""
        if not self.programmed:
            raise StateError(f"layer {name!r} is not programmed; call aimc.program(model, seed=...) "
                             "before aimc.at_time(...).")
        if half_cache is not None:
            self.half_cache.fill_(half_cache)
        self._drift(float(t_seconds), derive_seed(seed, name, 3, float(t_seconds)), gdc, weight, name, keep=keep)

    def _drift(self, t: float, read_seed: int, gdc: bool, weight: torch.Tensor | None = None,
               name: str = "", *, keep: bool = False) -> None:
        w_a, check, bounds = self._blocks(weight, t, name, read_seed)
        if not self.stores_devices and not same_weight(weight, self.prog_check, check):
            raise StateError(f"layer {name!r}: the master weight changed since aimc.program (the devices are "
                             "regenerated from it); call aimc.program(model, seed=...) again after changing weights.")
        self._forward_gen = _generator(read_seed ^ 0x1F2E3D, w_a.device)
        fresh_gen = self._forward_gen.get_state()
        ones = torch.ones_like(self.gdc_base)
        alpha, info = ones, None
        self.gdc_info = None
        if gdc or keep:
            alpha = self._gdc_factor(w_a, t, weight, bounds)
            info = self.gdc_info
        self.t_seconds.fill_(t)
        self._t_cache.update(tensor=self.t_seconds, version=self.t_seconds._version, value=t)  # known: no read
        self.read_seed.fill_(read_seed)
        # the physics ran in float32 (at least); the cache is float32+ or, when asked for, float16 (aimc.nn.cache)
        dtype = _cache.cache_dtype(w_a.dtype if weight is None else weight.dtype, bool(self.half_cache))
        self._clear_cache()  # the previous time's cache goes before the new one is stored
        # what set_gdc needs: the unscaled analog weights, both GDC settings' factors and forward-noise states
        self._switch = ({"w_a": w_a, "dtype": dtype, True: (alpha, info, self._forward_gen.get_state()),
                         False: (ones, None, fresh_gen)} if keep else None)
        self._apply_gdc(w_a, alpha if gdc else ones, dtype, own=not keep)
        self.gdc_info = info if gdc else None
        if not gdc:
            self._forward_gen.set_state(fresh_gen)
        self.gdc_on.fill_(gdc)

    def _apply_gdc(self, w_a: torch.Tensor, alpha: torch.Tensor, dtype: torch.dtype, *, own: bool) -> None:
        """Cache the forward's weights from the analog weights ``w_a`` and the GDC factors ``alpha`` (``own``: w_a
        may be scaled in place; otherwise it is copied first)."""
        self.gdc_alpha = alpha
        scale = self._digital_scale() * (alpha if self._gdc_columns else alpha[self.layout.col_tile_index(alpha.device)])
        empty = torch.empty(0, device=w_a.device)
        if self.config.periphery.needs_matrix_path:
            src = w_a if own or dtype != torch.float16 else w_a.clone()  # to_cache scales float16 in place only
            self.w_analog, s = _cache.to_cache(src, dtype)
            self.out_scale = scale.to(_cache.cache_dtype(dtype, False)) * s
            self.w_eff, self._w_eff_scale = empty, 1.0
        else:
            src = w_a if own else w_a.clone()
            for k, (s, e) in enumerate(self.layout.row_bounds):  # in place, a row tile at a time: no (out, rows) copy
                src[:, s:e].mul_(scale[:, k:k + 1])
            self.w_eff, self._w_eff_scale = _cache.to_cache(src, dtype)
            self.w_analog = self.out_scale = empty

    def set_gdc(self, on: bool) -> None:
        """Switch GDC on or off on the conductances of the last ``at_time(..., keep=True)``: the same weights,
        factors and forward-noise stream as ``at_time`` with that ``gdc`` gives, without drawing them again."""
        sw = getattr(self, "_switch", None)
        if sw is None or not self.drifted:
            raise StateError("set_gdc needs the state of at_time(..., keep=True); call that first.")
        alpha, info, gen_state = sw[bool(on)]
        self._apply_gdc(sw["w_a"], alpha, sw["dtype"], own=False)
        self.gdc_info = info
        self._forward_gen.set_state(gen_state)
        self.gdc_on.fill_(bool(on))

    # ---- forward ---------------------------------------------------------------------------------------------
    def effective_weight(self) -> torch.Tensor:
        """``(out, rows)`` weights of the ideal-output path (drifted, GDC folded in), in :attr:`compute_dtype`: a
        float16 cache is upcast (a new float32 tensor: transient memory of one layer)."""
        return _cache.upcast(self.w_eff, self._w_eff_scale)

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype the analog products of the forward pass run in (float32 or wider; a bfloat16 model's inputs are
        cast to it and its outputs back)."""
        w = self.w_eff if self.w_eff.numel() else self.w_analog
        return torch.float32 if w.dtype == torch.float16 else w.dtype

    @torch.compiler.disable  # eager, like the matrix path it wraps (it swaps a buffer)
    def run_tiles(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        """``fn(*args, **kwargs)`` (a matrix-path forward reading ``w_analog``) with ``w_analog`` in
        :attr:`compute_dtype` while it runs: a float16 cache is upcast for this one call (transient: one layer)."""
        half = self.w_analog
        if half.dtype != torch.float16:
            return fn(*args, **kwargs)
        self.w_analog = half.float()  # its power-of-two factor is in out_scale
        try:
            return fn(*args, **kwargs)
        finally:
            self.w_analog = half

    def static_range(self, name: str) -> torch.Tensor | float:
        """The layer's static input range (1.0 when no DAC needs one and none is set)."""
        r = _host_float(self.input_range, self._range_cache)
        if math.isnan(r):
            if self.config.periphery.dac_bits is None:
                return 1.0
            raise StateError(
                f"layer {name!r} has a static DAC input range that was never set; call "
                "aimc.calibrate_input_ranges(model, data) on digital data first, or set periphery.input_bound."
            )
        return r

    def static_dac(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Elementwise DAC at the layer's static input range (``x`` unchanged without a DAC), in input units."""
        p = self.config.periphery
        if p.dac_bits is None:
            return x
        r = self.static_range(name)
        return quantize_input(x / r, p) * r

    def train_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Weight of a training forward pass: ``aimc.nn.noise.noisy_weight`` with this matrix's training config.

        Fresh noise and drop-connect on every call (torch's default RNG, like dropout); gradients pass straight
        through to ``weight``. ``"pcm_programming"`` noise uses the configured device when it is a PCM or HERMES.
        """
        from aimc.devices import PCM, Hermes
        from aimc.nn.noise import noisy_weight

        dev = self.config.device
        return noisy_weight(weight, self.config.training, device=dev if isinstance(dev, (PCM, Hermes)) else None)

    @property
    def trains_through_periphery(self) -> bool:
        """Whether training forwards go through the periphery (``training.periphery`` and a non-ideal periphery)."""
        from aimc.nn.hwa_periphery import uses_periphery

        return uses_periphery(self)

    def train_periphery_mvm(self, layer: nn.Module, name: str, x: torch.Tensor,
                            weight: torch.Tensor) -> torch.Tensor:
        """Training forward (no bias) through the periphery on :meth:`train_weight` of ``weight``
        (``aimc.nn.hwa_periphery``); ``name``: "" for Linear/Conv, the LSTM weight's name for an LSTM matrix."""
        from aimc.nn.hwa_periphery import periphery_train_forward

        return periphery_train_forward(layer, name, x, self.train_weight(weight), weight, self)
