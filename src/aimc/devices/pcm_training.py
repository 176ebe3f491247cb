"""Pulse-level PCM device model for training: nonlinear, stochastic SET steps, RESET, drift and read noise.

The law is the statistical model of Nandakumar et al., "A phase-change memory model for neuromorphic computing",
J. Appl. Phys. 124, 152135 (2018), doi:10.1063/1.5042408 (mushroom PCM, 90 nm, doped Ge2Sb2Te5), in the form and
with the constants of its public re-implementation ``YigitDemirag/srnn-pcm`` (``xbar.py``, commit ``2d91783``,
whose README reproduces the JAP figures 2, 5 and 7); reference sheet ``pcm-training-facts.md`` §1.2. Those
constants are a third party's reading of the paper and were not checked against the JAP PDF (unreachable here).

One SET pulse on a device with conductance G (µS) and pulse-history variable P (1 right after a RESET):

    P ← P·exp(−1/a)
    μ(G, P) = m1·G + c1 + A1·P                  (mean step, µS)
    σ(G, P) = m2·G + c2 + A2·P                  (std of the step over devices and cycles, µS)
    ΔG = γ·μ(G, P) + σ_c2c(G, P)·ξ,    σ_c2c = sqrt(σ² − (s_d2d·μ)²),   ξ ~ N(0, 1) fresh per pulse
    G ← clip(G + ΔG, 0, g_max)

γ ~ N(1, s_d2d) is a per-device gain drawn once (device-to-device variation, ``d2d_std``; 0.2 is aihwkit's
``dw_min_dtod`` of its PCM preset, reference C.3). The JAP fit describes the spread of the step over many
devices and cycles together, so the cycle-to-cycle part σ_c2c is what is left of σ after the device-to-device
part: over devices and cycles the step then has exactly mean μ and std σ (tested). The mean step falls linearly
with G and reaches zero at ``g_sat`` = −c1/m1 ≈ 10.5 µS (steps shrink towards saturation); near saturation the
noise is larger than the mean step, as in the measured devices.

RESET: G ~ N(g_reset, g_reset_std) clipped to [0, g_max], and P = 1.

Between reads: drift G(t) = G_prog·max((t − t_prog)/t0, 1)^(−ν) with one ν for all devices, and additive Gaussian
read noise σ_read = r1·G + r0 drawn fresh on every read (JAP 2018 via srnn-pcm).

All functions are pure: they take tensors and a ``torch.Generator`` and return new tensors, except ``pulse_`` (the
in-place form of ``pulse`` for the optimizer's hot path). Units: µS, seconds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from aimc._checks import is_number
from aimc.errors import ConfigError, NonFiniteError

__all__ = ["PCMTrainingDevice"]


@dataclass(frozen=True)
class PCMTrainingDevice:
    """Statistical pulse-response model of one PCM device for training (µS, seconds, pulses).

    Defaults: Nandakumar et al., J. Appl. Phys. 124, 152135 (2018), via ``srnn-pcm`` (see the module docstring);
    the device-to-device split of the spread follows aihwkit's PCM preset.

    Attributes:
        g_max: hard upper bound of the conductance, µS (srnn-pcm clip, 12 µS). The lower bound is 0.
        history_decay: a, pulses; the history variable P decays as exp(−n/a) over the n pulses since RESET (2.6).
        step_mean: (m1, c1, A1) of μ(G, P) = m1·G + c1 + A1·P; (−0.084, 0.880 µS, 1.40 µS).
        step_std: (m2, c2, A2) of σ(G, P) = m2·G + c2 + A2·P; (0.091, 0.260 µS, 2.15 µS).
        d2d_std: relative std of the per-device gain γ of the mean step (device-to-device variation); 0.2
            (aihwkit ``PCMPresetDevice.dw_min_dtod``). 0 = all devices alike.
        g_reset: mean conductance after RESET, µS (0.1).
        g_reset_std: std of the conductance after RESET, µS (0.01).
        drift_nu: drift exponent ν (0.04); 0 = no drift.
        drift_t0: time after programming at which G_prog is read, s (38.6 s).
        read_noise: (r1, r0) of σ_read = r1·G + r0 µS (0.03, 0.13 µS); (0, 0) = no read noise.
        eps_g_ref: conductance, µS, at which the granularity ε is taken (the mean step at low conductance with
            settled history, μ(eps_g_ref, 0)); ``None`` = ``g_reset``. Default ε = 0.872 µS.
    """

    g_max: float = 12.0
    history_decay: float = 2.6
    step_mean: tuple[float, float, float] = (-0.084, 0.880, 1.40)
    step_std: tuple[float, float, float] = (0.091, 0.260, 2.15)
    d2d_std: float = 0.2
    g_reset: float = 0.1
    g_reset_std: float = 0.01
    drift_nu: float = 0.04
    drift_t0: float = 38.6
    read_noise: tuple[float, float] = (0.03, 0.13)
    eps_g_ref: float | None = None
    kind: str = field(default="pcm_training", init=False)

    def __post_init__(self) -> None:
        p: list[str] = []
        for name in ("g_max", "history_decay", "drift_t0"):
            v = getattr(self, name)
            if not (is_number(v) and v > 0):
                p.append(f"{name}={v!r} must be a finite number > 0")
        for name in ("d2d_std", "g_reset", "g_reset_std", "drift_nu"):
            v = getattr(self, name)
            if not (is_number(v) and v >= 0):
                p.append(f"{name}={v!r} must be a finite number ≥ 0")
        for name, n in (("step_mean", 3), ("step_std", 3), ("read_noise", 2)):
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)) or len(v) != n or not all(is_number(c) for c in v):
                p.append(f"{name}={v!r} must be {n} finite numbers")
            else:
                object.__setattr__(self, name, tuple(float(c) for c in v))
        if self.eps_g_ref is not None and not (is_number(self.eps_g_ref) and 0 <= self.eps_g_ref):
            p.append(f"eps_g_ref={self.eps_g_ref!r} must be a finite conductance ≥ 0 µS or None")
        if not p:
            m1, c1, _ = self.step_mean
            m2, c2, a2 = self.step_std
            if is_number(self.g_max) and is_number(self.g_reset) and self.g_reset >= self.g_max:
                p.append(f"g_reset={self.g_reset} must be below g_max={self.g_max} µS")
            if c1 <= 0:
                p.append(f"step_mean c1={c1} must be > 0 µS (the mean step at low conductance, the granularity ε)")
            if m1 >= 0:
                p.append(f"step_mean m1={m1} must be < 0 (steps shrink towards saturation)")
            if c2 < 0 or m2 < 0 or a2 < 0:
                p.append(f"step_std={self.step_std} must be ≥ 0 (a standard deviation)")
            if any(r < 0 for r in self.read_noise):
                p.append(f"read_noise={self.read_noise} must be ≥ 0")
            if self.d2d_std > 0 and not p and self._max_d2d() < self.d2d_std:
                p.append(f"d2d_std={self.d2d_std} is larger than the fitted spread allows (≤ {self._max_d2d():.3g}): "
                         "the device-to-device part s·μ must not exceed the total σ of the step")
        if not p and self.epsilon <= 0:
            p.append(f"the granularity ε = μ(eps_g_ref, 0) = {self.epsilon:.4g} µS must be > 0; choose a lower "
                     "eps_g_ref")
        if p:
            raise ConfigError("invalid PCMTrainingDevice parameters: " + "; ".join(p) + ". Units: µS, seconds, "
                              "pulses.")

    def _max_d2d(self) -> float:
        # σ/μ is smallest at P = 0 or P = 1 and G = 0 or G = g_sat (both linear in G and P; check the corners)
        best = math.inf
        for g in (0.0, min(self.g_max, self.g_sat)):
            for pp in (0.0, 1.0):
                mu = self.step_mean[0] * g + self.step_mean[1] + self.step_mean[2] * pp
                sd = self.step_std[0] * g + self.step_std[1] + self.step_std[2] * pp
                if mu > 1e-12:
                    best = min(best, sd / mu)
        return best

    # ---- closed forms ------------------------------------------------------------------------------------------
    @property
    def g_sat(self) -> float:
        """Conductance (µS) where the settled mean step μ(G, 0) reaches zero: −c1/m1 (≈ 10.5 µS)."""
        return -self.step_mean[1] / self.step_mean[0]

    @property
    def epsilon(self) -> float:
        """Device granularity ε in µS: the mean step at low conductance, μ(eps_g_ref, P = 0)."""
        g = self.g_reset if self.eps_g_ref is None else self.eps_g_ref
        return self.step_mean[0] * g + self.step_mean[1]

    def step_stats(self, g: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) in µS of the next SET step at conductance ``g`` (µS) with history ``p`` *after* its decay.

        σ is the spread over devices and cycles together (the JAP fit); see :meth:`c2c_std` for the per-pulse part.
        """
        m1, c1, a1 = self.step_mean
        m2, c2, a2 = self.step_std
        return m1 * g + c1 + a1 * p, m2 * g + c2 + a2 * p

    def c2c_std(self, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Cycle-to-cycle std (µS) of one step: sqrt(σ² − (d2d_std·μ)²)."""
        mu, sd = self.step_stats(g, p)
        return torch.sqrt(torch.clamp(sd * sd - (self.d2d_std * mu) ** 2, min=0.0))

    def read_std(self, g: torch.Tensor) -> torch.Tensor:
        """Read-noise σ (µS) of a device of conductance ``g``: r1·|g| + r0."""
        r1, r0 = self.read_noise
        return r1 * g.abs() + r0

    def drift_factor(self, age: torch.Tensor) -> torch.Tensor:
        """max(age/t0, 1)^(−ν) for the time ``age`` (s) since programming."""
        if self.drift_nu == 0:
            return torch.ones_like(age)
        return torch.exp(-self.drift_nu * torch.log(torch.clamp(age / self.drift_t0, min=1.0)))

    def mean_trajectory(self, n_pulses: int) -> torch.Tensor:
        """Mean-law trajectory from RESET: ``(n_pulses + 1,)`` float64, G_0 = g_reset, G_k+1 = G_k + μ(G_k, P_k+1).

        The nominal response used for open-loop programming (initial weights, refresh); without noise, clipping
        and device-to-device spread.
        """
        traj = [self.g_reset]
        g, p = self.g_reset, 1.0
        decay = math.exp(-1.0 / self.history_decay)
        for _ in range(int(n_pulses)):
            p *= decay
            g = min(max(g + self.step_mean[0] * g + self.step_mean[1] + self.step_mean[2] * p, 0.0), self.g_max)
            traj.append(g)
        return torch.tensor(traj, dtype=torch.float64)

    @functools.lru_cache(maxsize=8)  # noqa: B019 (frozen, hashable dataclass; a handful of instances)
    def _rise_midpoints(self, max_pulses: int) -> torch.Tensor:
        """Midpoints between successive rises G_n − g_reset of the mean trajectory (float64)."""
        with torch.inference_mode(False):  # the cached tensor must be a normal one, whoever asks first
            rise = torch.cummax(self.mean_trajectory(max_pulses) - self.g_reset, dim=0).values
            # stop where a further pulse adds less than 1 % of ε on average: more pulses would only add noise
            useful = int((torch.diff(rise) > 0.01 * self.epsilon).sum())
            rise = rise[: useful + 1]
            return (rise[1:] + rise[:-1]) / 2

    def nominal_pulses(self, delta_g: torch.Tensor, *, max_pulses: int = 100) -> torch.Tensor:
        """Number of SET pulses from RESET whose mean trajectory rise G_n − g_reset is nearest to ``delta_g`` (µS).

        Targets beyond the reachable rise get the pulse count after which a pulse adds < 1 % of ε on average.
        Returns an int64 tensor of ``delta_g``'s shape (0 for delta_g ≤ half the first step).
        """
        if delta_g.numel() and not torch.isfinite(delta_g).all():
            raise NonFiniteError("delta_g holds NaN/Inf; conductance targets must be finite.")
        mid = self._rise_midpoints(int(max_pulses)).to(delta_g.device)
        # n = the number of midpoints between successive rises below delta_g (ties go to the smaller count)
        return torch.searchsorted(mid, delta_g.to(torch.float64).reshape(-1)).reshape(delta_g.shape)

    # ---- sampling ------------------------------------------------------------------------------------------------
    def sample_gain(self, shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-device gains γ ~ N(1, d2d_std), clamped ≥ 0, float32 of ``shape`` (drawn once per device)."""
        z = torch.randn(tuple(shape), generator=generator, device=device)
        return torch.clamp(1.0 + self.d2d_std * z, min=0.0)

    def reset(self, shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """RESET ``shape`` devices: returns (G, P) with G ~ N(g_reset, g_reset_std) clipped to [0, g_max], P = 1."""
        z = torch.randn(tuple(shape), generator=generator, device=device)
        g = torch.clamp(self.g_reset + self.g_reset_std * z, 0.0, self.g_max)
        return g, torch.ones_like(g)

    def pulse(self, g: torch.Tensor, p: torch.Tensor, gain: torch.Tensor, n: torch.Tensor | int, *,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``n`` blind SET pulses to each device (no verification).

        Args:
            g: conductances, µS (any shape).
            p: history variables (same shape).
            gain: per-device gains γ (same shape).
            n: pulses per device, integers ≥ 0 (tensor of the same shape, or one int for all).
            generator: source of the cycle-to-cycle noise.

        Returns:
            New (G, P) tensors; devices with n = 0 are unchanged.

        Raises:
            ConfigError: a pulse count is negative or not an integer.
        """
        n_t = torch.as_tensor(n, device=g.device)
        if n_t.dtype == torch.bool or (n_t.is_floating_point()
                                       and not (torch.isfinite(n_t).all() and torch.equal(n_t, n_t.round()))):
            raise ConfigError("pulse counts n must be integers ≥ 0 (a pulse is applied whole or not at all).")
        n_t = n_t.to(torch.int64)
        if n_t.numel() and int(n_t.min()) < 0:
            raise ConfigError(f"pulse counts n must be ≥ 0, got a minimum of {int(n_t.min())}; SET pulses only "
                              "raise G, use the other device of the pair (or reset) to lower a weight.")
        n_t = n_t.expand(g.shape) if n_t.dim() == 0 else n_t
        g, p = g.clone(memory_format=torch.contiguous_format), p.clone(memory_format=torch.contiguous_format)
        n_max = int(n_t.max()) if g.numel() else 0
        if n_max > 0:
            self.pulse_(g.view(-1), p.view(-1), gain.expand(g.shape).reshape(-1), n_t.reshape(-1), n_max,
                        generator=generator)
        return g, p

    def pulse_(self, g: torch.Tensor, p: torch.Tensor, gain: torch.Tensor, n: torch.Tensor, n_max: int, *,
               generator: torch.Generator, all_active: bool = False) -> None:
        """:meth:`pulse` in place and without argument checks (the optimizer's hot path).

        ``g``, ``p``, ``gain``, ``n``: 1-D, same length (``g`` and ``p`` are overwritten; strided views are fine);
        ``n`` holds whole numbers ≥ 0 (any dtype), ``n_max`` = max(n) ≥ 1; ``all_active`` promises n ≥ 1 everywhere.
        Pulse k acts only on the devices with n > k: they are sorted by n (most pulses first), so that each pulse
        updates a leading slice; the step law is the same for every device and pulse.
        """
        decay = math.exp(-1.0 / self.history_decay)
        if all_active and n_max == 1:  # the optimizer's usual case: one pulse on every device given
            self._step(g, p.mul_(decay), gain, self._noise(g.numel(), g, generator))
            return
        if int(n.min()) == n_max:  # all devices get the same count (e.g. one refreshed pair): no sorting
            z = self._noise(n_max * g.numel(), g, generator).view(n_max, -1)
            for k in range(n_max):
                self._step(g, p.mul_(decay), gain, z[k])
            return
        order = torch.argsort(n, descending=True, stable=True)
        counts = torch.bincount(n.to(torch.int64), minlength=n_max + 1)
        active = (counts.sum() - counts.cumsum(0))[:n_max].tolist()  # active[k] = #devices with n > k
        gs, ps, gains = g[order], p[order], gain[order]
        z, off = self._noise(sum(active), g, generator), 0
        for m in active:
            self._step(gs[:m], ps[:m].mul_(decay), gains[:m], z[off:off + m])
            off += m
        g.index_copy_(0, order, gs)
        p.index_copy_(0, order, ps)

    @staticmethod
    def _noise(n: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """ξ ~ N(0, 1) for ``n`` pulses (drawn at once)."""
        return torch.randn(n, generator=generator, device=like.device, dtype=like.dtype)

    def _step(self, g: torch.Tensor, p: torch.Tensor, gain: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One SET pulse on ``g`` in place, ``p`` already decayed, ``z`` ~ N(0, 1):
        G ← clip(G + γ·μ + σ_c2c·ξ, 0, g_max)."""
        coef, const, c2c_w = self._step_coefs(g.device, g.dtype)
        ms = torch.addmm(const, torch.stack([g, p], dim=1), coef)  # (k, 2): μ(G, P), σ(G, P)
        c2c = torch.mv(ms.square(), c2c_w).clamp_(min=0.0).sqrt_()  # sqrt(σ² − (d2d·μ)²)
        return g.addcmul_(gain, ms[:, 0]).addcmul_(c2c, z).clamp_(0.0, self.g_max)

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _step_coefs(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """[G, P]·coef + const = [μ, σ]; [μ², σ²]·c2c_w = σ² − (d2d·μ)²."""
        (m1, c1, a1), (m2, c2, a2) = self.step_mean, self.step_std
        t = functools.partial(torch.tensor, dtype=dtype, device=device)
        with torch.inference_mode(False):
            return t([[m1, m2], [a1, a2]]), t([c1, c2]), t([-self.d2d_std**2, 1.0])

    def read(self, g_prog: torch.Tensor, age: torch.Tensor | float, *, generator: torch.Generator | None,
             read_noise: bool = True) -> torch.Tensor:
        """Conductance read ``age`` seconds after programming: drift, then fresh read noise, clamped ≥ 0 (µS)."""
        age_t = torch.as_tensor(age, dtype=g_prog.dtype, device=g_prog.device)
        g = g_prog * self.drift_factor(age_t)
        if read_noise and (self.read_noise[0] > 0 or self.read_noise[1] > 0):
            z = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            g = torch.clamp(g + self.read_std(g) * z, min=0.0)
        return g

    def pulse_response(self, n_pulses: int, n_devices: int, *, generator: torch.Generator) -> torch.Tensor:
        """G of ``n_devices`` fresh devices (RESET, then one SET pulse at a time): ``(n_pulses + 1, n_devices)`` µS."""
        if n_pulses < 0 or n_devices < 1:
            raise ConfigError(f"n_pulses={n_pulses} must be ≥ 0 and n_devices={n_devices} ≥ 1.")
        gain = self.sample_gain((n_devices,), generator=generator)
        g, p = self.reset((n_devices,), generator=generator)
        out = [g]
        for _ in range(n_pulses):
            g, p = self.pulse(g, p, gain, 1, generator=generator)
            out.append(g)
        return torch.stack(out)
