"""Mixed-precision training with PCM synapses (Nandakumar et al., Front. Neurosci. 14:406 (2020)).

The weights of the analog layers live on differential pairs of simulated PCM devices (``W = β·(G+ − G−)``,
:class:`aimc.devices.PCMTrainingDevice`). Per mini-batch:

1. forward and backward MVMs run on the devices: the weight parameter holds the drifted conductances as weights,
   β·(G+ − G−), and the analog layers' training forward (a hook that ``MixedPrecision`` attaches,
   ``aimc.train._mp_mvm``) adds device read noise drawn fresh for every read, i.e. per input vector, in the
   forward and in the backward MVM; autograd's weight gradient δ·xᵀ stays the exact digital outer product. While
   attached, the hook replaces the layers' hardware-aware training noise (``TrainingConfig.noise`` is not used);
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

Implementation: the device state of all analog matrices lives in flat buffers (one index per weight; χ in units
of each matrix's ε), so one step costs a fixed number of tensor operations whatever the number of layers, and the
weight parameters are views into the flat weight buffer (updated in place where devices changed).

Usage::

    model = aimc.convert(net, config)                  # any config: its training noise is not used
    opt = aimc.train.MixedPrecision(model, lr=0.1, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    for x, y in data:
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    print(opt.epoch_report())                          # pulses, fraction of weights updated, refreshes
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from aimc.devices.pcm_training import PCMTrainingDevice
from aimc.errors import ConfigError, StateError
from aimc.train._mp_mvm import HOOK_ATTR, MVMHook
from aimc.train._mp_report import Counters, MixedPrecisionReport, NonFiniteGradientWarning

__all__ = ["MixedPrecision", "MixedPrecisionReport", "NonFiniteGradientWarning"]


_BANK = ("g", "hist", "gain", "t_prog", "g_read", "chi", "beta", "w", "w_var")
_BLOCK = 64
"""χ is scanned in blocks of this many weights (its buffer is padded with zeros to a multiple)."""


def _check(cond: bool, problems: list[str], msg: str) -> None:
    if not cond:
        problems.append(msg)


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

    Raises:
        StateError: the model has no analog layers. ConfigError: an argument is out of range.
    """

    def __init__(self, model: nn.Module, lr: float, *, device: PCMTrainingDevice | None = None, seed: int = 0,
                 weight_range: float | None = None, range_factor: float = 6.0, accumulate: bool = True,
                 rounding: str | None = None, refresh: bool = True, refresh_upper: float = 0.75,
                 refresh_lower: float = 0.25, read_noise: bool = True, drift: bool = True,
                 seconds_per_batch: float = 0.01, drift_every: int = 100, max_pulses: int | None = None):
        from aimc.nn.convert import analog_layers  # lazy: aimc.nn imports aimc.train

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
        self._gen = torch.Generator(device=first.device)
        self._gen.manual_seed(int(seed))
        self._names = names
        self._layers = layers
        self._t = 0
        self._dirty = False
        with torch.no_grad():
            self._program(weight_range, range_factor)
        offsets = torch.tensor([off for off, _ in self._slices.values()], dtype=torch.int64)
        self._counters = Counters(list(names.values()), offsets, self._n)
        self.totals = MixedPrecisionReport()
        hook = MVMHook(self)
        for layer in layers:  # the layers' training MVMs now run on the devices (aimc.train._mp_mvm)
            layer.__dict__[HOOK_ATTR] = hook

    # ---- set-up ----------------------------------------------------------------------------------------------
    def _program(self, weight_range: float | None, range_factor: float) -> None:
        """Flat device state of all analog matrices; initial weights written open loop from RESET."""
        dev, gen = self.device, self._gen
        first = next(iter(self._names))
        self._slices: dict[nn.Parameter, tuple[int, int]] = {}
        self._eps: dict[nn.Parameter, float] = {}
        betas, targets = [], []
        off = 0
        for q, name in self._names.items():
            w0 = q.detach().reshape(-1)
            wr = weight_range
            if wr is None:
                w_abs = float(w0.abs().max()) if w0.numel() else 0.0
                if not (math.isfinite(w_abs) and w_abs > 0):
                    raise ConfigError(f"layer {name!r}: the initial weights are all zero or non-finite (max|W| = "
                                      f"{w_abs}), so no weight range can be derived; pass weight_range=... .")
                wr = range_factor * w_abs
            beta = wr / dev.g_sat
            self._slices[q] = (off, w0.numel())
            self._eps[q] = beta * dev.epsilon
            betas.append(torch.full_like(w0, beta))
            targets.append(w0.clone())
            off += w0.numel()
        self._n = off
        w0 = torch.cat(targets)
        beta = torch.cat(betas)
        g, hist = dev.reset((2, off), generator=gen, device=first.device)
        gain = dev.sample_gain((2, off), generator=gen, device=first.device)
        n0 = dev.nominal_pulses(w0.abs() / beta).to(first.device)
        counts = torch.stack([torch.where(w0 > 0, n0, 0), torch.where(w0 < 0, n0, 0)])
        g, hist = dev.pulse(g, hist, gain, counts, generator=gen)
        self._bank = {"g": g, "hist": hist, "gain": gain, "t_prog": torch.zeros_like(g), "g_read": g.clone(),
                      "chi": w0.new_zeros(-(-off // _BLOCK) * _BLOCK), "beta": beta, "w": torch.empty_like(w0),
                      "w_var": torch.empty_like(w0)}
        self._arange = torch.arange(_BLOCK, device=first.device)
        self._update_cache(None)
        self._var_views = {}
        for q, (o, n) in self._slices.items():
            q.data = self._bank["w"][o:o + n].view(q.shape)  # the parameter now is the devices' weight
            self._var_views[q] = self._bank["w_var"][o:o + n].view(q.shape)

    def _update_cache(self, idx: torch.Tensor | None) -> None:
        """Weights β·(G+ − G−) and read-noise variances β²·(σ+² + σ−²) of all pairs or of the flat ``idx``
        (σ = r1·G + r0, G ≥ 0)."""
        b, (r1, r0) = self._bank, self.device.read_noise
        if idx is None:
            a, c, beta = b["g_read"][0], b["g_read"][1], b["beta"]
        else:
            a, c, beta = b["g_read"][0][idx], b["g_read"][1][idx], b["beta"][idx]
        w = (a - c).mul_(beta)
        var = torch.hypot(a * r1 + r0, c * r1 + r0).mul_(beta).square_()
        if idx is None:
            b["w"].copy_(w)
            b["w_var"].copy_(var)
        else:
            b["w"][idx] = w
            b["w_var"][idx] = var

    # ---- public ------------------------------------------------------------------------------------------------
    @property
    def read_noise_on(self) -> bool:
        """Whether the training MVMs add device read noise."""
        return self.read_noise and any(r > 0 for r in self.device.read_noise)

    @property
    def simulated_time(self) -> float:
        """Simulated seconds since the devices were first programmed."""
        return self._t * self.seconds_per_batch

    def read_variance(self, param: nn.Parameter) -> torch.Tensor | None:
        """Per-weight read-noise variance (weight units², shape of ``param``), ``None`` if not ours or noise off."""
        return self._var_views.get(param) if self.read_noise_on else None

    def granularity(self) -> dict[str, float]:
        """{analog matrix name: ε in weight units}."""
        return {self._names[q]: e for q, e in self._eps.items()}

    def device_state(self, param: nn.Parameter) -> dict[str, torch.Tensor | float]:
        """Views of one analog matrix's devices: g, hist, gain, t_prog, g_read ``(2, *shape)`` (index 0 = G+),
        plus chi (a copy, weight units), eps and beta (floats). Writing into the views changes the devices."""
        o, n = self._slices[param]
        b, shape = self._bank, param.shape
        out: dict[str, torch.Tensor | float] = {k: b[k][:, o:o + n].view(2, *shape)
                                               for k in ("g", "hist", "gain", "t_prog", "g_read")}
        out.update(chi=b["chi"][o:o + n].view(shape) * self._eps[param], eps=self._eps[param],
                   beta=float(b["beta"][o]))
        return out

    @torch.no_grad()
    def read_weights(self, *, noise: bool = True) -> None:
        """Write one read of the devices into the analog weight parameters, e.g. for evaluation in eval mode.

        ``noise=True``: drifted conductances plus one draw of read noise per device (one read of the array, used
        for every test input); ``noise=False``: drifted, noise-free. The next training step restores the
        noise-free weights (the training MVMs draw their own read noise per read).
        """
        self._drift_all()
        self._update_cache(None)
        if noise and self.read_noise_on:
            b = self._bank
            z = torch.randn(b["w"].shape, generator=self._gen, device=b["w"].device, dtype=b["w"].dtype)
            b["w"].addcmul_(b["w_var"].sqrt(), z)
            self._dirty = True

    def detach(self) -> None:
        """Remove the mixed-precision MVM hooks from the model's layers (they then train as plain analog layers)."""
        for layer in self._layers:
            layer.__dict__.pop(HOOK_ATTR, None)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        """One update; returns ``closure()``'s loss if given. Skips everything if any gradient is NaN/Inf."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        bad = [self._names.get(q, f"digital parameter {i} of group {j}") for j, g in enumerate(self.param_groups)
               for i, q in enumerate(g["params"]) if q.grad is not None and not torch.isfinite(q.grad.sum())
               and not torch.isfinite(q.grad).all()]
        if bad:
            self._counters.skipped += 1
            warnings.warn(f"MixedPrecision.step skipped: non-finite gradient in {bad}; χ, devices and digital "
                          "parameters are unchanged. A diverging loss or a bad input batch is the usual cause.",
                          NonFiniteGradientWarning, stacklevel=2)
            return loss
        self._t += 1
        if self._dirty or (self.drift and self._t % self.drift_every == 0):
            self._drift_all()
            self._update_cache(None)
            self._dirty = False
        chi = self._bank["chi"]
        for group in self.param_groups:
            lr = group["lr"]
            for q in group["params"]:
                if q.grad is None:
                    continue
                sl = self._slices.get(q)
                if sl is None:
                    q.add_(q.grad, alpha=-lr)
                else:  # χ in units of this matrix's ε
                    chi[sl[0]:sl[0] + sl[1]].view(q.shape).add_(q.grad, alpha=-lr / self._eps[q])
        self._transfer(self.simulated_time)
        self._counters.steps += 1
        return loss

    def epoch_report(self) -> MixedPrecisionReport:
        """Counters since the last call (or construction), then reset them; also added to ``totals``."""
        c = self._counters
        rep = c.report()
        tot = self.totals
        tot.steps += rep.steps
        tot.skipped_steps += rep.skipped_steps
        tot.weights, tot.pulses, tot.refreshes = rep.weights, tot.pulses + rep.pulses, tot.refreshes + rep.refreshes
        tot.refresh_pulses += rep.refresh_pulses
        self._counters = Counters(c.names, c.offsets, c.total)
        return rep

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["mixed_precision"] = {"t": self._t, "generator": self._gen.get_state(),
                                 **{k: v.clone() for k, v in self._bank.items()}}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        extra = sd.pop("mixed_precision", None)
        super().load_state_dict(sd)
        if extra is None:
            return
        for k in _BANK:
            if tuple(extra[k].shape) != tuple(self._bank[k].shape):
                raise ConfigError(f"state_dict device state {k!r} has shape {tuple(extra[k].shape)}, this optimizer "
                                  f"{tuple(self._bank[k].shape)}: it belongs to another model.")
        with torch.no_grad():
            for k in _BANK:
                self._bank[k].copy_(extra[k])
        self._t = int(extra["t"])
        self._gen.set_state(extra["generator"])
        self._eps = {q: float(self._bank["beta"][o]) * self.device.epsilon for q, (o, _) in self._slices.items()}

    # ---- internals ---------------------------------------------------------------------------------------------
    def _drift_all(self) -> None:
        b = self._bank
        if not self.drift or self.device.drift_nu == 0:
            return
        torch.mul(b["g"], self.device.drift_factor(self.simulated_time - b["t_prog"]), out=b["g_read"])

    def _transfer(self, now: float) -> None:
        """Pulses where |χ| ≥ ε (χ in units of ε), refresh of saturated pairs, weights of changed devices."""
        b, dev, gen, n_w = self._bank, self.device, self._gen, self._n
        chi = b["chi"]
        if self.rounding == "stochastic" and not self.accumulate:  # memoryless stochastic rounding
            nf = torch.floor(chi + torch.rand(chi.shape, generator=gen, device=chi.device))
            idx = nf.nonzero().squeeze(1)
            n = nf[idx]
        else:
            half = self.rounding == "nearest"
            thr = 0.5 if half else 1.0
            # per block of _BLOCK weights its max |χ| (cheaper than a nonzero over all of χ); only blocks that
            # cross the threshold are searched
            blocks = (chi.view(-1, _BLOCK).abs().amax(dim=1) >= thr).nonzero().squeeze(1)
            if blocks.numel() == 0:
                if not self.accumulate:
                    chi.zero_()
                return
            cand = (blocks[:, None] * _BLOCK + self._arange).view(-1)
            vals = chi[cand]
            sel = vals.abs() >= thr
            idx, x = cand[sel], vals[sel]
            m = (x.abs() + 0.5).floor_() if half else x.abs().floor_()
            if self.rounding == "stochastic":  # ⌊|χ|⌋ or ⌈|χ|⌉, unbiased; the residual stays in (−1, 1)
                m += torch.rand(m.shape, generator=gen, device=m.device) < x.abs() - m
            n = m.copysign_(x)
        if self.max_pulses is not None:
            n = n.clamp(-self.max_pulses, self.max_pulses)
        if self.accumulate:
            chi[idx] = x - n
        else:
            chi.zero_()
        if idx.numel() == 0:
            return
        flat = torch.where(n < 0, idx + n_w, idx)
        cnt = n.abs()
        g, hist, gr = b["g"].view(-1), b["hist"].view(-1), b["g_read"].view(-1)
        g1, h1 = dev.pulse_unchecked(gr[flat], hist[flat], b["gain"].view(-1)[flat], cnt, int(cnt.max()),
                                     generator=gen, all_active=True)
        g[flat], hist[flat], gr[flat] = g1, h1, g1
        b["t_prog"].view(-1)[flat] = now
        self._counters.add_pulses(idx, cnt)
        if self.refresh:
            self._refresh(idx, now)
        self._update_cache(idx)

    def _refresh(self, idx: torch.Tensor, now: float) -> None:
        """Pairs in ``idx`` whose larger device > upper·g_sat and smaller > lower·g_sat: RESET both, re-write the
        difference open loop (nominal pulse count) onto the device of its sign."""
        b, dev, n_w = self._bank, self.device, self._n
        gr = b["g_read"].view(-1)
        a, c = gr[idx], gr[idx + n_w]
        hit = (torch.maximum(a, c) > self.refresh_upper * dev.g_sat) & \
              (torch.minimum(a, c) > self.refresh_lower * dev.g_sat)
        ridx = idx[hit]
        if ridx.numel() == 0:
            return
        diff = a[hit] - c[hit]
        both = torch.cat([ridx, ridx + n_w])
        g_new, h_new = dev.reset((2 * ridx.numel(),), generator=self._gen, device=gr.device)
        n_re = dev.nominal_pulses(diff.abs())
        counts = torch.cat([torch.where(diff > 0, n_re, 0), torch.where(diff < 0, n_re, 0)])
        g_new, h_new = dev.pulse(g_new, h_new, b["gain"].view(-1)[both], counts, generator=self._gen)
        b["g"].view(-1)[both] = g_new
        b["hist"].view(-1)[both] = h_new
        gr[both] = g_new
        b["t_prog"].view(-1)[both] = now
        self._counters.add_refreshes(ridx, int(n_re.sum()))
