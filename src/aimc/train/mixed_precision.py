"""Mixed-precision training with PCM synapses (Nandakumar et al., Front. Neurosci. 14:406 (2020)).

The weights of the analog layers live on differential pairs of simulated PCM devices (``W = β·(G+ − G−)``,
:class:`aimc.devices.PCMTrainingDevice`). Per mini-batch:

1. forward and backward MVMs run on the devices: the weight parameter holds the drifted conductances as weights,
   β·(G+ − G−), and the analog layers' training forward (a hook that ``MixedPrecision`` attaches,
   ``aimc.train._mp_mvm``) adds device read noise drawn fresh for every read, i.e. per input vector, in the
   forward and in the backward MVM; autograd's weight gradient δ·xᵀ stays the exact digital outer product. While
   attached, the hook replaces the layers' hardware-aware training noise (``TrainingConfig.noise`` is not used).
   ``periphery=True`` also puts both MVMs through the layers' DAC, output noise, bound management and ADC, tile by
   tile (``aimc.nn.train_periphery``);
2. ``step()`` accumulates the SGD update in a float32 variable χ per weight: χ ← χ − lr·∂L/∂W;
3. where |χ| ≥ ε (ε = the device's mean step at low conductance, in weight units: β·μ(g_reset, 0)), the device of
   the matching sign gets n = ⌊|χ|/ε⌋ blind SET pulses (no verification) and χ ← χ − sign(χ)·n·ε
   (``rounding="stochastic"``: n = ⌊|χ|/ε⌋ or ⌈|χ|/ε⌉ with the probabilities that make E[n·ε] = |χ|; the
   residual then lies in (−ε, ε), so a transfer still needs |χ| to reach ε again);
4. refresh: a pair whose larger device exceeds ``refresh_upper``·g_sat while the smaller exceeds
   ``refresh_lower``·g_sat (aihwkit's two-threshold rule, 0.75 / 0.25) is RESET and the difference is re-written
   open-loop onto one device with the nominal pulse count of the mean response. Only pairs pulsed in this step can
   newly cross the upper threshold (drift only lowers G), so only those are checked;
5. parameters outside the analog matrices (biases, batch norm) are updated digitally with SGD at the same lr.

``accumulate=False`` is the ablation without χ: each step's update −lr·∂L/∂W becomes the nearest whole number
of pulses and the remainder is discarded.

Simulated time advances ``seconds_per_batch`` per step; drift (one ν, reference §1.2) is re-evaluated for all
devices every ``drift_every`` steps (devices pulsed in between read at their fresh value, which is exact while
their age is below the device's t0 = 38.6 s; the default 100 steps are 1 simulated second).

Implementation: the device state of all analog matrices lives in flat buffers (``aimc.train._mp_pairs``: one
index per weight; χ in units of each matrix's ε), so one step costs a fixed number of tensor operations whatever
the number of layers; the weight parameters are views into the flat weight buffer, and the weights and read-noise
variances are cached and rewritten only where devices changed. The training MVMs are in ``aimc.train._mp_mvm``,
the counters in ``aimc.train._mp_report``.

Usage::

    model = aimc.convert(net, config)                  # any config: its training noise is not used
    opt = aimc.train.MixedPrecision(model, lr=0.1, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    for x, y in data:
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    print(opt.epoch_report())                          # pulses, fraction of weights updated, refreshes

Move or cast the model (``model.to(...)``, ``.double()``) *before* building the optimizer: its analog weights are
views of the devices' buffer, and a later move gives them new storage; every step and training MVM then raises
:class:`aimc.StateError` instead of training nothing.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from aimc.devices.pcm_training import PCMTrainingDevice
from aimc.errors import ConfigError, StateError
from aimc.nn.convert import analog_layers
from aimc.nn.train_periphery import TileRun
from aimc.train._mp_mvm import MVMHook
from aimc.train._mp_pairs import BANK_KEYS, DevicePairs
from aimc.train._mp_report import Counters, MixedPrecisionReport, NonFiniteGradientWarning

__all__ = ["MixedPrecision", "MixedPrecisionReport", "NonFiniteGradientWarning"]


def _check(cond: bool, problems: list[str], msg: str) -> None:
    if not cond:
        problems.append(msg)


def _sum_of_sums(grads: list[torch.Tensor]) -> torch.Tensor:
    """Σ of all gradient elements: NaN/Inf if any element is (or, rarely, if the sum overflows)."""
    sums = [g.sum() for g in grads]
    try:
        return torch.stack(sums).sum()
    except RuntimeError:  # gradients on different devices or of different dtypes
        return torch.tensor(sum(float(s) for s in sums))


class MixedPrecision(torch.optim.Optimizer):
    """Mixed-precision optimizer: χ accumulation in float32, blind SET pulses on PCM differential pairs.

    Args:
        model: a model converted with ``aimc.convert`` (Linear, Conv1d/2d and LSTM analog layers); its analog
            weights are programmed onto fresh devices at construction (open loop, nominal pulse counts of the mean
            response) and the weight parameters then hold the devices' weights β·(G+ − G−).
        lr: learning rate of the analog (χ) and the digital (SGD) updates; schedulers change ``param_groups``.
        device: the device model (default ``PCMTrainingDevice()``).
        seed: seed of all device randomness (gains, pulses, resets, read noise, stochastic rounding).
        weight_range: weight (per matrix) that a conductance difference of g_sat maps to, so β = weight_range/g_sat
            weight units per µS; ``None`` = ``range_factor``·max|W₀| of each matrix's initial weights.
        range_factor: see ``weight_range`` (default 6: the initial weights use ≤ 1/6 of the range, so trained
            weights can grow; ε = β·0.872 µS ≈ 0.5·max|W₀|).
        accumulate: keep the remainder in χ (True, the paper) or discard it (False, ablation).
        rounding: pulses per transfer: ``"floor"`` (⌊|χ|/ε⌋, default with χ), ``"stochastic"`` (unbiased
            stochastic rounding of |χ|/ε where |χ| ≥ ε; without χ: ⌊χ/ε + u⌋ for every weight) or ``"nearest"``
            (default without χ).
        refresh: refresh saturated pairs; refresh_upper, refresh_lower: thresholds as fractions of g_sat.
        read_noise: device read noise in every training MVM (fresh per read, forward and backward).
        drift: conductance drift over the simulated time.
        seconds_per_batch: simulated time per step, s (default 0.01); drift_every: steps between drift updates.
        max_pulses: cap on the pulses of one device per step (χ keeps what was not applied); ``None`` = no cap.
        periphery: run the training MVMs through each layer's periphery (``config.periphery``: DAC, output noise,
            bound management, ADC), tile by tile as at inference; the backward MVM scales δ per vector by its
            abs-max. Off (default): ideal periphery, the devices' weights and read noise only. See
            ``aimc.nn.train_periphery``.

    Raises:
        StateError: the model has no analog layers. ConfigError: an argument is out of range.
    """

    def __init__(self, model: nn.Module, lr: float, *, device: PCMTrainingDevice | None = None, seed: int = 0,
                 weight_range: float | None = None, range_factor: float = 6.0, accumulate: bool = True,
                 rounding: str | None = None, refresh: bool = True, refresh_upper: float = 0.75,
                 refresh_lower: float = 0.25, read_noise: bool = True, drift: bool = True,
                 seconds_per_batch: float = 0.01, drift_every: int = 100, max_pulses: int | None = None,
                 periphery: bool = False):
        dev = PCMTrainingDevice() if device is None else device
        rounding = rounding if rounding is not None else ("floor" if accumulate else "nearest")
        p: list[str] = []
        _check(isinstance(model, nn.Module), p, f"model must be a torch.nn.Module, got {type(model).__name__}")
        _check(isinstance(dev, PCMTrainingDevice), p, f"device={dev!r} must be an aimc.devices.PCMTrainingDevice")
        _check(isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0, p, f"lr={lr!r} must be a number > 0")
        _check(weight_range is None or (isinstance(weight_range, (int, float)) and math.isfinite(weight_range)
                                        and weight_range > 0), p, f"weight_range={weight_range!r} must be > 0")
        _check(isinstance(range_factor, (int, float)) and math.isfinite(range_factor) and range_factor > 0, p,
               f"range_factor={range_factor!r} must be > 0")
        _check(rounding in ("floor", "stochastic", "nearest"), p,
               f"rounding={rounding!r} is not one of ['floor', 'stochastic', 'nearest']")
        _check(0 < refresh_lower < refresh_upper, p, f"refresh thresholds need 0 < refresh_lower "
               f"({refresh_lower}) < refresh_upper ({refresh_upper}) (fractions of g_sat)")
        _check(isinstance(seconds_per_batch, (int, float)) and seconds_per_batch >= 0, p,
               f"seconds_per_batch={seconds_per_batch!r} must be ≥ 0")
        _check(isinstance(drift_every, int) and drift_every >= 1, p, f"drift_every={drift_every!r} must be ≥ 1")
        _check(max_pulses is None or (isinstance(max_pulses, int) and max_pulses >= 1), p,
               f"max_pulses={max_pulses!r} must be an integer ≥ 1 or None")
        _check(isinstance(periphery, bool), p, f"periphery={periphery!r} must be True or False")
        if p:
            raise ConfigError("invalid MixedPrecision arguments: " + "; ".join(p) + ".")
        names: dict[nn.Parameter, str] = {}
        layers = []
        for name, layer in analog_layers(model):
            layers.append(layer)
            for sfx in layer.analog_matrices():
                names[layer.weight if sfx == "" else getattr(layer, sfx[1:])] = f"{name}{sfx}" or "<root>"
        if not names:
            raise StateError("MixedPrecision needs a model with analog layers (convert it with aimc.convert); this "
                             "one has none, so there is nothing to put on PCM devices. Use torch.optim.SGD for a "
                             "digital model.")
        first = next(iter(names))
        if any(q.device != first.device or q.dtype != first.dtype for q in names):
            raise ConfigError("MixedPrecision needs all analog weights on one device with one dtype; move the "
                              "model with model.to(...) first.")
        super().__init__(list(model.parameters()), {"lr": float(lr)})
        self.device, self.accumulate, self.rounding = dev, bool(accumulate), rounding
        self.refresh, self.read_noise, self.drift = bool(refresh), bool(read_noise), bool(drift)
        self.refresh_upper, self.refresh_lower = float(refresh_upper), float(refresh_lower)
        self.seconds_per_batch, self.drift_every, self.max_pulses = float(seconds_per_batch), drift_every, max_pulses
        self.periphery = periphery
        self._device_noise = any(r > 0 for r in dev.read_noise)
        self._gen = torch.Generator(device=first.device)
        self._gen.manual_seed(int(seed))
        self._names = names
        self._layers = layers
        self._t = 0
        self._dirty = False
        self._pairs = DevicePairs(names, dev, self._gen, weight_range=weight_range, range_factor=range_factor,
                                  accumulate=self.accumulate, rounding=rounding, max_pulses=max_pulses,
                                  refresh=self.refresh, refresh_upper=self.refresh_upper,
                                  refresh_lower=self.refresh_lower, drift=self.drift)
        offsets = torch.tensor([off for off, _ in self._pairs.slices.values()], dtype=torch.int64)
        self._counters = Counters(list(names.values()), offsets, self._pairs.n, first.device)
        self.totals = MixedPrecisionReport()
        hook = MVMHook(self)
        for layer in layers:  # the layers' training MVMs now run on the devices (aimc.train._mp_mvm)
            layer.aimc_train_mvm = hook  # the documented hook point of the analog layers

    # ---- public ------------------------------------------------------------------------------------------------
    @property
    def read_noise_on(self) -> bool:
        """Whether the training MVMs add device read noise."""
        return self.read_noise and self._device_noise

    @property
    def simulated_time(self) -> float:
        """Simulated seconds since the devices were first programmed."""
        return self._t * self.seconds_per_batch

    def read_variance(self, param: nn.Parameter) -> torch.Tensor | None:
        """Per-weight read-noise variance (weight units², shape of ``param``), ``None`` if not ours or noise off.

        Raises:
            StateError: ``param`` was moved or cast after the optimizer was built (see :meth:`check_attached`).
        """
        if param in self._pairs.slices:
            self.check_attached((param,))
        return self._pairs.var_views.get(param) if self.read_noise_on else None

    def check_attached(self, params: object = None) -> None:
        """Raise if an analog weight (of ``params``, default all) no longer shares memory with the devices.

        The weight parameters are views of the devices' weight buffer. ``model.to(torch.float64)``, ``.double()``,
        ``.half()``, ``.to("cuda")`` or ``param.data = ...`` after the optimizer was built give them new storage;
        pulses would then change devices the model no longer reads, and training would silently do nothing. Every
        step and every training MVM checks this (a pointer comparison, no device synchronisation).

        Raises:
            StateError: naming the parameters and how to fix it.
        """
        bad = self._pairs.detached(params)
        if bad:
            b = self._pairs.buf["w"]
            now = {(str(q.dtype), str(q.device)) for q in bad}
            raise StateError(
                f"MixedPrecision: analog weight(s) {[self._names[q] for q in bad]} no longer share memory with "
                f"the simulated devices (the devices' weights are {b.dtype} on {b.device}, the model's now "
                f"{sorted(now)}): the model was moved or cast (model.to/.double()/.half()/.cuda()) or a weight's "
                ".data was replaced after MixedPrecision was built, so its updates would never reach the model. "
                "Move or cast the model first, then build MixedPrecision on it (the devices then take the model's "
                "dtype and device)."
            )

    def _tile_run(self, layer: nn.Module, name: str, param: nn.Parameter) -> TileRun:
        """Layout, periphery, input range and weight scale of one analog matrix's training MVMs."""
        mat = layer.analog[name] if name else layer.analog
        p = mat.config.periphery
        label = f"{getattr(layer, 'aimc_name', '')}.{name}" if name else getattr(layer, "aimc_name", "")
        r = mat.static_range(label) if p.input_range == "static" else None
        o = self._pairs.slices[param][0]
        w_scale = float(self._pairs.buf["beta"][o]) * self.device.g_sat if p.output_units == "normalized" else 1.0
        return TileRun(mat.layout, p, r, w_scale, self._gen)

    def granularity(self) -> dict[str, float]:
        """{analog matrix name: ε in weight units}."""
        return {self._names[q]: e for q, e in self._pairs.eps.items()}

    def device_state(self, param: nn.Parameter) -> dict[str, torch.Tensor | float]:
        """Views of one analog matrix's devices: g, hist, gain, t_prog, g_read ``(2, *shape)`` (index 0 = G+),
        plus chi (a copy, weight units), eps and beta (floats). Writing into the views changes the devices."""
        o, n = self._pairs.slices[param]
        b, shape, eps = self._pairs.buf, param.shape, self._pairs.eps[param]
        out: dict[str, torch.Tensor | float] = {k: b[k][:, o:o + n].view(2, *shape)
                                               for k in ("g", "hist", "gain", "t_prog", "g_read")}
        out.update(chi=b["chi"][o:o + n].view(shape) * eps, eps=eps,
                   beta=float(b["beta"][o]))
        return out

    @torch.no_grad()
    def read_weights(self, *, noise: bool = True) -> None:
        """Write one read of the devices into the analog weight parameters, e.g. for evaluation in eval mode.

        ``noise=True``: drifted conductances plus one draw of read noise per device (one read of the array, used
        for every test input); ``noise=False``: drifted, noise-free. The next training step restores the
        noise-free weights (the training MVMs draw their own read noise per read).
        """
        self.check_attached()
        self._pairs.read_all(self.simulated_time)
        if noise and self.read_noise_on:
            b = self._pairs.buf
            z = torch.randn(b["w"].shape, generator=self._gen, device=b["w"].device, dtype=b["w"].dtype)
            b["w"].addcmul_(b["w_var"].sqrt(), z)
            self._dirty = True

    def detach(self) -> None:
        """Remove the mixed-precision MVM hooks from the model's layers (they then train as plain analog layers)."""
        for layer in self._layers:
            layer.aimc_train_mvm = None

    def step(self, closure=None):  # noqa: ANN001, ANN201
        """One update; returns ``closure()``'s loss if given. Skips everything if any gradient is NaN/Inf."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.inference_mode():  # like no_grad, with less overhead per (small) tensor operation
            self._update()
        return loss

    def _update(self) -> None:
        pairs = self._pairs
        self.check_attached()
        grads = [(q, q.grad, group["lr"]) for group in self.param_groups for q in group["params"]
                 if q.grad is not None]
        if grads and not math.isfinite(float(_sum_of_sums([g for _, g, _ in grads]))):
            bad = [self._names.get(q, f"digital parameter {i} of group {j}") for j, group in
                   enumerate(self.param_groups) for i, q in enumerate(group["params"])
                   if q.grad is not None and not torch.isfinite(q.grad).all()]
            if bad:
                self._counters.skipped += 1
                warnings.warn(f"MixedPrecision.step skipped: non-finite gradient in {bad}; χ, devices and digital "
                              "parameters are unchanged. A diverging loss or a bad input batch is the usual cause.",
                              NonFiniteGradientWarning, stacklevel=4)
                return
        self._t += 1
        if self._dirty or (self.drift and self._t % self.drift_every == 0):
            pairs.read_all(self.simulated_time, caches=self._dirty)
            self._dirty = False
        for q, g, lr in grads:
            if q in pairs.slices:
                pairs.add_to_chi(q, g, lr)
            else:
                q.add_(g, alpha=-lr)
        pairs.step(self.simulated_time, self._counters)
        self._counters.steps += 1

    def epoch_report(self) -> MixedPrecisionReport:
        """Counters since the last call (or construction), then reset them; also added to ``totals``."""
        c = self._counters
        rep = c.report()
        tot = self.totals
        tot.steps += rep.steps
        tot.skipped_steps += rep.skipped_steps
        tot.weights, tot.pulses, tot.refreshes = rep.weights, tot.pulses + rep.pulses, tot.refreshes + rep.refreshes
        tot.refresh_pulses += rep.refresh_pulses
        self._counters = Counters(c.names, c.offsets, c.total, c.pulses.device)
        return rep

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["mixed_precision"] = {"t": self._t, "generator": self._gen.get_state(),
                                 **{k: v.clone() for k, v in self._pairs.buf.items()}}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        extra = sd.pop("mixed_precision", None)
        super().load_state_dict(sd)
        if extra is None:
            return
        buf = self._pairs.buf
        for k in BANK_KEYS:
            if tuple(extra[k].shape) != tuple(buf[k].shape):
                raise ConfigError(f"state_dict device state {k!r} has shape {tuple(extra[k].shape)}, this optimizer "
                                  f"{tuple(buf[k].shape)}: it belongs to another model.")
        with torch.no_grad():
            for k in BANK_KEYS:
                buf[k].copy_(extra[k])
        self._t = int(extra["t"])
        self._gen.set_state(extra["generator"])
        self._pairs.reload_eps()
        with torch.no_grad():
            self._pairs.update_cache()  # the saved weights may hold a noisy read (read_weights)
