"""Device pairs of ``aimc.train.MixedPrecision``: flat state of all analog matrices, transfer, refresh, drift.

All analog matrices share flat buffers, one index per weight and the matrices one after another, so a step costs
a fixed number of tensor operations whatever the number of layers. Device ``d`` of the 2n devices is G+ of weight
``d`` (d < n) or G− of weight ``d − n``; its state is one row of a ``(2n, 5)`` table (G_read, P, γ, G, t_prog), so
reading or writing a device touches one cache line. The public buffers ``g``, ``hist``, ``gain``, ``t_prog`` and
``g_read`` are ``(2, n)`` views of its columns (row 0 = G+).

The weight parameters are views into the weight buffer ``w``. ``w`` and the read-noise variance ``w_var`` are
caches, functions of ``g_read`` alone: they are rewritten only where ``g_read`` changes (pulsed or refreshed
pairs; all pairs when drift is re-evaluated), never per MVM or per step. A step touches the full buffers only in
the χ update and one scan of |χ|; everything after works on the few weights that fire (about 0.07 % of them per
step early in training, far fewer later).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aimc.devices.pcm_training import PCMTrainingDevice
from aimc.errors import ConfigError
from aimc.train._mp_report import Counters

BANK_KEYS = ("g", "hist", "gain", "t_prog", "g_read", "chi", "beta", "w", "w_var")
"""Buffers saved in the optimizer's state dict (``g``…``g_read`` are ``(2, n)``: row 0 = G+)."""
G_READ, HIST, GAIN, G, T_PROG = range(5)
"""Columns of the device table."""
BLOCK = 64
"""χ's buffer is padded with zeros to a multiple of this many weights."""
ROWS = 32
"""χ is scanned as a ``(ROWS, padded/ROWS)`` matrix: the max |χ| of each column (ROWS weights padded/ROWS apart)
flags the columns whose weights are searched for transfers."""


class DevicePairs:
    """Differential pairs of all analog matrices of one model; see the module docstring.

    Args:
        params: {analog weight parameter: its name}; the parameters become views of the weight buffer.
        dev: the device model. gen: the generator of all device randomness.
        weight_range, range_factor: as in ``MixedPrecision`` (β = weight range / g_sat per matrix).
        accumulate, rounding, max_pulses, refresh, refresh_upper, refresh_lower, drift: as in ``MixedPrecision``.
    """

    def __init__(self, params: dict[nn.Parameter, str], dev: PCMTrainingDevice, gen: torch.Generator, *,
                 weight_range: float | None, range_factor: float, accumulate: bool, rounding: str,
                 max_pulses: int | None, refresh: bool, refresh_upper: float, refresh_lower: float, drift: bool):
        self.dev, self.gen, self.drift = dev, gen, drift and dev.drift_nu != 0
        self.accumulate, self.rounding, self.max_pulses = accumulate, rounding, max_pulses
        self.refresh = refresh
        self.upper, self.lower = refresh_upper * dev.g_sat, refresh_lower * dev.g_sat
        with torch.no_grad():
            self._program(params, weight_range, range_factor)

    # ---- set-up ----------------------------------------------------------------------------------------------
    def _program(self, params: dict[nn.Parameter, str], weight_range: float | None, range_factor: float) -> None:
        """Flat device state; initial weights written open loop from RESET (nominal pulses of the mean law)."""
        dev, gen = self.dev, self.gen
        first = next(iter(params))
        self.slices: dict[nn.Parameter, tuple[int, int]] = {}
        self.eps: dict[nn.Parameter, float] = {}
        betas, targets = [], []
        off = 0
        for q, name in params.items():
            w0 = q.detach().reshape(-1)
            wr = weight_range
            if wr is None:
                w_abs = float(w0.abs().max()) if w0.numel() else 0.0
                if not (math.isfinite(w_abs) and w_abs > 0):
                    raise ConfigError(f"layer {name!r}: the initial weights are all zero or non-finite (max|W| = "
                                      f"{w_abs}), so no weight range can be derived; pass weight_range=... .")
                wr = range_factor * w_abs
            beta = wr / dev.g_sat
            self.slices[q] = (off, w0.numel())
            self.eps[q] = beta * dev.epsilon
            betas.append(torch.full_like(w0, beta))
            targets.append(w0.clone())
            off += w0.numel()
        self.n = off
        w0, beta = torch.cat(targets), torch.cat(betas)
        g, hist = dev.reset((2, off), generator=gen, device=first.device)
        gain = dev.sample_gain((2, off), generator=gen, device=first.device)
        n0 = dev.nominal_pulses(w0.abs() / beta).to(first.device)
        counts = torch.stack([torch.where(w0 > 0, n0, 0), torch.where(w0 < 0, n0, 0)])
        g, hist = dev.pulse(g, hist, gain, counts, generator=gen)
        # device state in the model's dtype, at least float32 (a float64 model keeps float64 conductances)
        state_dtype = torch.promote_types(w0.dtype, torch.float32)
        self.table = torch.stack([g, hist, gain, g, torch.zeros_like(g)], dim=-1).view(2 * off, 5).to(state_dtype)
        self.buf = {k: self.table[:, c].view(2, off) for k, c in
                    (("g", G), ("hist", HIST), ("gain", GAIN), ("t_prog", T_PROG), ("g_read", G_READ))}
        padded = -(-off // BLOCK) * BLOCK
        self.buf.update(chi=w0.new_zeros(padded), beta=beta, w=torch.empty_like(w0), w_var=torch.empty_like(w0))
        self._row_offsets = torch.arange(ROWS, device=first.device) * (padded // ROWS)
        self.update_cache()
        self.var_views: dict[nn.Parameter, torch.Tensor] = {}
        self.chi_views: dict[nn.Parameter, torch.Tensor] = {}
        for q, (o, n) in self.slices.items():
            q.data = self.buf["w"][o:o + n].view(q.shape)  # the parameter now is the devices' weight
            self.var_views[q] = self.buf["w_var"][o:o + n].view(q.shape)
            self.chi_views[q] = self.buf["chi"][o:o + n].view(q.shape)
        self._ptrs = {q: q.data_ptr() for q in self.slices}  # where each parameter's data must stay

    def detached(self, params: object = None) -> list[nn.Parameter]:
        """The parameters (of ``params``, default all) whose data is no longer their view of the weight buffer.

        ``model.to(dtype/device)``, ``.double()``, ``.cuda()`` or ``param.data = ...`` give a parameter new
        storage: the model would then compute with tensors this optimizer never writes. The old buffer stays
        alive here, so its address cannot be reused and a pointer comparison is exact (and needs no device sync).
        """
        qs = self.slices if params is None else params
        return [q for q in qs if q.data_ptr() != self._ptrs[q]]

    def reload_eps(self) -> None:
        """ε per matrix from the ``beta`` buffer (after a state dict was loaded)."""
        self.eps = {q: float(self.buf["beta"][o]) * self.dev.epsilon for q, (o, _) in self.slices.items()}

    # ---- caches and drift ----------------------------------------------------------------------------------------
    def update_cache(self) -> None:
        """Weights β·(G+ − G−) and read-noise variances β²·(σ+² + σ−²) (σ = r1·G + r0, G ≥ 0) of all pairs."""
        b = self.buf
        torch.sub(b["g_read"][0], b["g_read"][1], out=b["w"]).mul_(b["beta"])
        torch.mul(self._read_var(b["g_read"]).sum(0), b["beta"].square(), out=b["w_var"])

    def _read_var(self, g: torch.Tensor) -> torch.Tensor:
        """σ_read(G)² (µS²) of conductances ``g`` (a new tensor)."""
        r1, r0 = self.dev.read_noise
        return g.mul(r1).add_(r0).square_()

    def read_all(self, now: float, *, caches: bool = True) -> None:
        """``g_read`` of every device at the simulated time ``now`` (s; drifted if drift is on), then both caches
        of all pairs (if ``caches`` or if ``g_read`` changed).

        Until ``now`` exceeds the device's t0 every device is younger than t0, so every drift factor is 1 and
        ``g_read`` = G already: nothing is recomputed then."""
        t = self.table
        drifted = self.drift and now > self.dev.drift_t0
        if drifted:
            t[:, G_READ].copy_(t[:, G] * self.dev.drift_factor(now - t[:, T_PROG]))
        if drifted or caches:
            self.update_cache()

    # ---- one step ----------------------------------------------------------------------------------------------
    def add_to_chi(self, q: nn.Parameter, grad: torch.Tensor, lr: float) -> None:
        """χ ← χ − lr·grad/ε for the weight parameter ``q`` (χ in units of its ε)."""
        self.chi_views[q].add_(grad, alpha=-lr / self.eps[q])

    def _fire(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Weights that fire this step: (flat index, χ there in units of ε, pulse count ≥ 1) or ``None``.

        χ and the counts are float tensors; χ is not yet changed."""
        chi = self.buf["chi"]
        if self.rounding == "stochastic" and not self.accumulate:  # memoryless: ⌊χ/ε + u⌋ for every weight
            nf = torch.floor(chi + torch.rand(chi.shape, generator=self.gen, device=chi.device))
            idx = nf.nonzero().view(-1)
            if idx.numel() == 0:
                return None
            x = nf.index_select(0, idx)
            return idx, x, x.abs()
        thr = 0.5 if self.rounding == "nearest" else 1.0
        # max |χ| per column of the (ROWS, ·) view (two reads of χ, cheaper than writing |χ| or a nonzero over
        # all of χ): only columns that cross the threshold are searched
        view = chi.view(ROWS, -1)
        cols = (torch.maximum(view.amax(dim=0), view.amin(dim=0).neg_()) >= thr).nonzero().view(-1)
        if cols.numel() == 0:
            return None
        cand = torch.add(self._row_offsets, cols.unsqueeze(1)).view(-1)
        a = chi.index_select(0, cand).abs_()
        pos = (a >= thr).nonzero().view(-1)
        idx, m = cand.index_select(0, pos), a.index_select(0, pos)
        x = chi.index_select(0, idx)
        if self.rounding == "nearest":
            m.add_(0.5)
        m.floor_()
        if self.rounding == "stochastic":  # ⌊|χ|⌋ or ⌈|χ|⌉, unbiased; the residual stays in (−1, 1)
            m += torch.rand(m.shape, generator=self.gen, device=m.device) < x.abs() - m
        return idx, x, m

    def step(self, now: float, counters: Counters) -> None:
        """After the χ updates: pulses where |χ| ≥ ε, the new χ, refresh of saturated pairs, caches of the changed
        pairs."""
        b, n_w = self.buf, self.n
        fired = self._fire()
        if fired is None:
            if not self.accumulate:
                b["chi"].zero_()
            return
        idx, x, cnt = fired
        k = idx.numel()
        if self.max_pulses is not None:
            cnt.clamp_(max=self.max_pulses)
        up = x > 0  # pulses on G+ (χ > 0) or on G− (χ < 0)
        sign = torch.sign(x)
        devs = torch.cat([torch.add(idx, ~up, alpha=n_w), torch.add(idx, up, alpha=n_w)])  # pulsed, partner
        if self.accumulate:
            b["chi"].index_copy_(0, idx, x.sub_(cnt.copysign(x)))
        else:
            b["chi"].zero_()
        rows = self.table.index_select(0, devs)  # (2k, 5)
        mine = rows[:k]
        self.dev.pulse_(mine[:, G_READ], mine[:, HIST], mine[:, GAIN], cnt, int(cnt.max()), generator=self.gen,
                        all_active=True)
        mine[:, G].copy_(mine[:, G_READ])
        mine[:, T_PROG].fill_(now)
        self.table.index_copy_(0, devs[:k], mine)
        counters.add_pulses(idx, cnt)
        g = rows[:, G_READ].view(2, k)  # (pulsed, partner) of each pair
        diff = torch.sub(g[0], g[1]).mul_(sign)  # G+ − G−, µS
        if self.refresh and self._refresh(idx, g, diff, now, counters):
            g = self.table.index_select(0, torch.cat([idx, idx + n_w]))[:, G_READ].view(2, k)  # (G+, G−)
            diff = torch.sub(g[0], g[1])
        beta = b["beta"].index_select(0, idx)
        w_dt = b["w"].dtype  # the model's dtype (the device state is at least float32)
        b["w"].index_copy_(0, idx, diff.mul_(beta).to(w_dt))
        b["w_var"].index_copy_(0, idx, self._read_var(g).sum(0).mul_(beta).mul_(beta).to(w_dt))

    def _refresh(self, idx: torch.Tensor, g: torch.Tensor, diff: torch.Tensor, now: float,
                 counters: Counters) -> bool:
        """Pairs in ``idx`` (conductances ``g`` ``(2, k)`` in either order, G+ − G− = ``diff``) whose larger device
        > upper and smaller > lower: RESET both, re-write the difference open loop (nominal pulse count) onto the
        device of its sign. Returns whether any pair was refreshed."""
        lo, hi = torch.aminmax(g, dim=0)
        hit = (hi > self.upper).logical_and_(lo > self.lower)
        if not bool(hit.any()):
            return False
        dev, n_w = self.dev, self.n
        sel = hit.nonzero().view(-1)
        ridx, d = idx.index_select(0, sel), diff.index_select(0, sel)
        r = ridx.numel()
        # rows: first the device of the difference's sign (gets the pulses), then the other (stays RESET)
        devs = torch.cat([torch.add(ridx, d < 0, alpha=n_w), torch.add(ridx, d >= 0, alpha=n_w)])
        rows = self.table.index_select(0, devs)
        g_new, h_new = dev.reset((2 * r,), generator=self.gen, device=g.device)
        rows[:, G_READ], rows[:, HIST] = g_new, h_new
        n_re = dev.nominal_pulses(d.abs())
        n_max = int(n_re.max())
        if n_max > 0:
            tgt = rows[:r]
            dev.pulse_(tgt[:, G_READ], tgt[:, HIST], tgt[:, GAIN], n_re, n_max, generator=self.gen)
        rows[:, G].copy_(rows[:, G_READ])
        rows[:, T_PROG].fill_(now)
        self.table.index_copy_(0, devs, rows)
        counters.add_refreshes(ridx, int(n_re.sum()))
        return True
