"""The verbs of analog inference: ``program``, ``at_time``, ``calibrate_input_ranges``, ``calibrate_output_ranges``.

Randomness is always an argument: ``program(model, seed=s)`` samples programming noise and drift exponents of
every device once; ``at_time(model, t, seed=s)`` draws fresh read noise (seeded by ``s``, ``t`` and the layer name),
so calls at different times share programming noise and ν but not read noise (ensemble semantics, as aihwkit).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
from collections.abc import Iterable

import torch
from torch import nn

from aimc.errors import ConfigError, DataError, StateError
from aimc.nn import checks, threads
from aimc.nn.cache import half_choice
from aimc.nn.convert import analog_layers

__all__ = ["program", "at_time", "set_gdc", "calibrate_input_ranges", "calibrate_output_ranges", "check_seed",
           "check_time", "device_state_bytes", "model_device", "gdc_report"]

log = logging.getLogger("aimc")
_SOURCES = ("measured", "pooled", "model")
_heap_settled = False


def _settle_heap() -> None:
    """Once per process: allocate and free one 31 MiB block before the first ``program``/``at_time``.

    glibc's ``malloc`` serves large blocks with ``mmap`` and returns them to the system when freed; it raises that
    threshold to the size of the largest such block freed (up to 32 MiB) and keeps up to twice that free at the top
    of its heap. ``program`` and ``at_time`` allocate and free a few MiB of temporaries per block of devices; with
    the low starting thresholds every block's memory went back to the system and was faulted in again (SmolLM2,
    ``at_time`` at one thread: 0.1–0.6 M page faults and up to 1.2 s of system time in 11 s, varying with what
    the process had allocated before; after this, 0.02–0.03 M and 0.05 s). It changes no number; elsewhere it is
    one allocation."""
    global _heap_settled
    if not _heap_settled:
        torch.empty(31 << 20, dtype=torch.uint8)  # freed at once and never touched: no page is faulted in
        _heap_settled = True


@functools.lru_cache(maxsize=1)
def _malloc_trim():  # noqa: ANN202
    """glibc's ``malloc_trim`` (``None`` where the C library has none: macOS, musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int  # int malloc_trim(size_t pad)
    return trim


_TRIM_WEIGHTS = 1 << 22
"""Matrices from this size on (4 M weights: ~1 s of ``at_time``) are followed by :func:`_trim_heap` at once."""


def _trim_heap() -> None:
    """Hand the resident pages of freed temporaries back to the system (after ``program``/``at_time``, and after
    each matrix of ≥ :data:`_TRIM_WEIGHTS` weights).

    With the thresholds of :func:`_settle_heap`, the temporaries of each block of devices come from glibc's heap,
    and the holes they leave between long-lived tensors (cached weights, GDC references) stay resident. At 1.1 B
    weights (float16 cache, ``benchmarks/bench_memory.py``) that held 0.45 GiB above the live tensors at the end of
    ``at_time``. ``malloc_trim`` takes ~0.5 ms; smaller matrices are not followed by one, so that their
    temporaries' pages are not faulted in again and again (what :func:`_settle_heap` is for). Changes no number."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_seed(seed: object) -> int:
    """Validate a seed: an integer ≥ 0."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer ≥ 0 (it names one programmed chip).")
    return seed


def check_time(t: object) -> float:
    """Validate a time since programming in seconds: finite and ≥ 0."""
    try:
        v = float(t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"time {t!r} is not a number of seconds since programming.") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"time {t!r} s is invalid: times since programming must be finite and ≥ 0 "
                          "(e.g. 25, 3600, 86400, 3.15e7).")
    return v


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = list(analog_layers(model))
    if not layers:
        raise StateError("the model has no analog layers; convert it first: analog = aimc.convert(model, config).")
    return layers


def program(model: nn.Module, *, seed: int) -> None:
    """Program every analog layer: map weights to conductances and sample programming noise and drift exponents.

    In place. Call again (with any seed) to re-program from the current master weights. Also adds the NaN/Inf
    checks of ``model``'s input and output (one per batch, ``aimc.nn.checks``) and the hooks that hand torch's
    threads to aimc's worker lanes during its forward (``aimc.nn.threads``).
    """
    check_seed(seed)
    checks.install(model)
    threads.install(model)
    _settle_heap()
    mats = _matrices(model)
    for _, mat, _ in mats:  # the cached weights of a previous at_time go first: not held next to the transients
        mat._clear_cache()
    with torch.no_grad():
        for name, mat, w in mats:
            mat.program(w, seed=seed, name=name)
            if w.numel() >= _TRIM_WEIGHTS:
                _trim_heap()
    _trim_heap()


def at_time(model: nn.Module, t_seconds: float, *, seed: int, gdc: bool | None = None,
            cache_dtype: torch.dtype | str | None = None, keep: bool = False) -> None:
    """Set every analog layer to ``t_seconds`` after programming: drift with the stored exponents, fresh read noise,
    effective weights cached for all following forward passes, GDC factors updated.

    Args:
        model: a converted and programmed model.
        t_seconds: time since programming, s (≥ 0).
        seed: seed of the read noise (use the programming seed to name one chip).
        gdc: apply global drift compensation; ``None`` = ``config.compensation.gdc``.
        cache_dtype: dtype the drifted weights are cached in for the forward passes: ``torch.float32`` (default;
            float64 for a float64 model) or ``torch.float16`` (2 B instead of 4 B per weight; step 2⁻¹¹ of the
            weight, ~0.012 µS at 25 µS; each layer upcast to float32 in its forward). The device physics always
            runs in float32 or wider. ``None`` keeps each matrix's current choice (float32 until set; saved with
            the model). See ``aimc.nn.cache``.
        keep: also compute the GDC factors when not applying them, and keep the drawn conductances so that
            :func:`set_gdc` switches compensation on or off without drawing them again (one more copy of the
            analog weights on the ideal-output path; ``aimc.evaluate`` uses it to score ``none`` and ``gdc`` of a
            time from one draw).
    """
    t = check_time(t_seconds)
    check_seed(seed)
    half = half_choice(cache_dtype)
    _settle_heap()
    fallback = []
    # largest matrices first: each matrix's transient (its float32 analog weights, about 1.5x its size with a
    # float16 cache) then coincides with the fewest finished caches; every matrix has its own seeds, so the order
    # changes no number
    in_order = _matrices(model)
    mats = sorted(in_order, key=lambda m: -m[2].numel())
    with torch.no_grad():
        for name, mat, w in mats:
            use = mat.config.compensation.gdc if gdc is None else bool(gdc)
            mat.at_time(t, seed=seed, name=name, gdc=use, weight=w, half_cache=half, keep=keep)
            if w.numel() >= _TRIM_WEIGHTS:
                _trim_heap()
            info = mat.gdc_info
            if info is not None and (bool(info["source"].any()) or bool(info["bounded"].any())):
                fallback.append(name)
    _trim_heap()
    order = {name: i for i, (name, _, _) in enumerate(in_order)}
    fallback.sort(key=order.__getitem__)
    if fallback:
        log.info("aimc.at_time(t=%g s): the correlation GDC read-out of %d matrices (%s) was too noisy or out of "
                 "the physical bounds on some tiles; aimc.gdc_report(model) says which factor each tile used.",
                 t, len(fallback), ", ".join(fallback[:5]) + (", ..." if len(fallback) > 5 else ""))


def _matrices(model: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """``(layer name + suffix, AnalogMatrix, master weight as (out, rows))`` of every analog matrix, model order."""
    return [(name + sfx, mat, w.reshape(w.shape[0], -1)) for name, layer in _layers(model)
            for sfx, (mat, w) in layer.analog_matrices().items()]


def set_gdc(model: nn.Module, on: bool) -> None:
    """Switch GDC on or off after :func:`at_time` with ``keep=True``, without drawing the conductances again.

    The model then computes exactly what ``at_time(model, t, seed=s, gdc=on)`` gives (same weights, GDC factors
    and forward-noise stream), bit for bit.

    Raises:
        StateError: the last ``at_time`` was not called with ``keep=True``.
    """
    with torch.no_grad():
        for _, mat, _ in _matrices(model):
            mat.set_gdc(bool(on))


def gdc_report(model: nn.Module) -> list[dict]:
    """How the GDC factor of every tile was obtained at the last :func:`at_time` (correlation read-out).

    One dict per tile (per output column and row tile with ``granularity="column"``): ``layer``, ``col_tile``,
    ``row_tile``, ``column`` (the output column, ``None`` unless per column), ``factor`` (applied), ``measured`` (the read-out's own
    ratio b / c), ``rel_err`` (its relative standard error from the baseline's noise estimate), ``source``
    (``"measured"``: the tile's or, with ``granularity="layer"``, the layer's read-out; ``"pooled"``: too noisy, the
    ratio pooled over the matrix's tiles; ``"model"``: still too noisy, the device model's expected factor) and
    ``bounded`` (the factor was clamped to the device model's physical range ``bounds``). Empty for matrices
    without GDC or with aihwkit's ``identity_abs_mean`` read-out. See ``aimc.nn.gdc``.
    """
    rows = []
    for name, layer in _layers(model):
        for sfx, (mat, _) in layer.analog_matrices().items():
            info = mat.gdc_info
            if info is None:
                continue
            n_col, n_row = info["raw"].shape
            per_column = mat.config.compensation.granularity == "column"
            tile_of = mat.layout.col_tile_index().tolist() if per_column else range(n_col)
            for j in range(n_col):
                for k in range(n_row):
                    rows.append({"layer": name + sfx, "col_tile": tile_of[j], "row_tile": k,
                                 "column": j if per_column else None,
                                 "factor": float(mat.gdc_alpha[j, k]), "measured": float(info["raw"][j, k]),
                                 "rel_err": float(info["rel_err"][j, k]),
                                 "source": _SOURCES[int(info["source"][j, k])],
                                 "bounded": bool(info["bounded"][j, k]), "bounds": info["bounds"]})
    return rows


def calibrate_input_ranges(model: nn.Module, data: Iterable, *, n_batches: int = 10, quantile: float = 0.9999) -> None:
    """Set each layer's static DAC input range from data: the ``quantile`` of |input| over ``n_batches`` batches.

    Runs the model digitally (master weights) in eval mode; in place.
    """
    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile={quantile!r} must be in (0, 1].")
    layers = _layers(model)
    samples: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    hooks = []
    for name, layer in layers:
        def hook(mod, inp, _out, name=name):  # noqa: ANN001
            x = inp[0].detach().abs().flatten()
            if x.numel() > 200_000:
                x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
            samples[name].append(x.float().cpu())
        hooks.append(layer.register_forward_hook(hook))
    _run_digital(model, data, n_batches, hooks)
    if not any(samples.values()):
        raise DataError("calibrate_input_ranges got no batches; pass an iterable of (inputs, labels) batches.")
    for name, layer in layers:
        if samples[name]:
            r = torch.quantile(torch.cat(samples[name]), quantile).clamp_min(1e-8)
            for mat, _ in layer.analog_matrices().values():
                mat.input_range.fill_(float(r))


def calibrate_output_ranges(model: nn.Module, data: Iterable, *, n_batches: int = 4,
                            quantile: float = 0.9999) -> dict[str, float]:
    """One global ADC range per analog layer from data: ``periphery.out_bound`` = the ``quantile`` of |tile output|.

    For every analog ``Linear`` whose config has an ADC (``periphery.adc_bits``), the model runs digitally (master
    weights, eval mode) on ``n_batches`` batches and each tile's MVM output before output noise and ADC is formed as
    the tile computes it: per row tile k, the inputs in DAC units (x / static input range, clipped to ±1; each
    vector's abs-max over the tile for dynamic ranges) times the tile's analog weights in the config's output units
    (W / w_max clipped to ±1 for ``"normalized"``, w_max the mapping's scale with its outlier clipping; W for
    ``"weight"``). Each layer's bound is the value that a fraction 1 − ``quantile`` of those |outputs| (over all its
    tiles, columns and vectors) exceed (exact for batches of equal size; the largest values of each batch are
    kept, not all); the layer's matrices get their own config with that ``out_bound`` (saved by
    ``aimc.save`` like any per-layer config). The ADC's 2^bits − 2 steps then span the outputs the layer produces
    instead of a range fixed for every layer.

    Call it after :func:`calibrate_input_ranges` (static ranges) and before :func:`program`: the GDC read-out
    inputs are scaled to the ADC range (``aimc.nn.gdc.readout_amplitude``), so the bound must not change between
    programming and ``at_time``.

    Returns:
        ``{layer name: out_bound}`` of the calibrated layers (empty when no layer has an ADC).

    Raises:
        StateError: the model is programmed, or a static input range is not calibrated.
        UnsupportedLayerError: a layer with an ADC is not a Linear (convolutions: not implemented).
        DataError: ``data`` gave no batch.
    """
    import dataclasses as dc

    from aimc import mapping
    from aimc.errors import UnsupportedLayerError
    from aimc.nn.layers import AnalogLinear

    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile={quantile!r} must be in (0, 1].")
    todo = []
    for name, layer in _layers(model):
        mats = [m for m, _ in layer.analog_matrices().values() if m.config.periphery.adc_bits is not None]
        if not mats:
            continue
        if not isinstance(layer, AnalogLinear):
            raise UnsupportedLayerError(f"calibrate_output_ranges: layer {name!r} ({type(layer).__name__}) has an "
                                        "ADC but only Linear layers are calibrated; set its periphery.out_bound by "
                                        "hand (e.g. with convert(..., rules=...)).")
        if layer.analog.programmed:
            raise StateError(f"layer {name!r} is programmed; calibrate the ADC ranges before aimc.program (the GDC "
                             "read-out depends on them), e.g. on a freshly converted model.")
        p = layer.analog.config.periphery
        if p.input_range == "static" and p.dac_bits is not None and math.isnan(float(layer.analog.input_range)):
            raise StateError(f"layer {name!r}: its static input range is not set; call "
                             "aimc.calibrate_input_ranges(model, data) first.")
        todo.append((name, layer))
    if not todo:
        return {}
    tops: dict[str, list[torch.Tensor]] = {n: [] for n, _ in todo}
    counts = dict.fromkeys(tops, 0)
    hooks = []
    for name, layer in todo:
        def hook(mod, inp, _out, name=name, mat=layer.analog):  # noqa: ANN001
            cfg = mat.config
            p = cfg.periphery
            w = mod.weight.detach().float()
            if p.output_units == "normalized":  # the tile's analog weights (computed per batch: no copy is kept)
                w_max = mapping.weight_scale(w, mat.layout, cfg.mapping.scale, clip_std=cfg.mapping.clip_std)
                w = (w / mapping.expand_rows(w_max, mat.layout)).clamp_(-1.0, 1.0)
            x = inp[0].detach().float().reshape(-1, w.shape[1])
            ys = []
            for s, e in mat.layout.row_bounds:
                xk = x[:, s:e]
                if p.input_range == "static":
                    xk = (xk / float(mat.static_range(name))).clamp_(-1.0, 1.0)
                else:
                    xk = xk / xk.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
                ys.append((xk @ w[:, s:e].t()).abs_().flatten())
            y = torch.cat(ys)
            # the largest values this batch can hold among the k = ⌈(1 − q)·M⌉ largest of all M values: all of
            # them when the ≤ n_batches batches have equal sizes (LM windows do), so the bound is exact then
            k = min(y.numel(), math.ceil((1 - quantile) * y.numel() * n_batches) + 1)
            tops[name].append(y.topk(k).values)
            counts[name] += y.numel()
        hooks.append(layer.register_forward_hook(hook))
    _run_digital(model, data, n_batches, hooks)
    if not any(counts.values()):
        raise DataError("calibrate_output_ranges got no batches; pass an iterable of input batches.")
    bounds = {}
    for name, layer in todo:
        if not counts[name]:
            continue
        top = torch.cat(tops[name]).sort(descending=True).values
        k = max(1, math.ceil((1 - quantile) * counts[name]))  # the k-th largest |y|: a fraction 1 - q exceed it
        b = max(float(top[min(k, top.numel()) - 1]), 1e-8)
        for mat, _ in layer.analog_matrices().values():
            mat.config = dc.replace(mat.config, periphery=dc.replace(mat.config.periphery, out_bound=b))
        bounds[name] = b
    return bounds


def _run_digital(model: nn.Module, data: Iterable, n_batches: int, hooks: list) -> None:
    """The model's digital forward (eval mode, no grad) on the inputs of the first ``n_batches`` batches of ``data``
    (tuples/lists: their first element), for the forward ``hooks`` that calibrate; the hooks are removed and the
    training mode restored afterwards, also on error or interrupt."""
    was_training = model.training
    model.eval()
    layers, device = _layers(model), model_device(model)
    try:
        with torch.no_grad():
            for i, batch in enumerate(data):
                if i >= n_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                _digital_forward(model, layers, x.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _digital_forward(model: nn.Module, layers: list, x: torch.Tensor) -> None:
    """Forward with analog layers temporarily in their digital (unprogrammed) mode."""
    saved = []
    for _, layer in layers:
        for mat, _ in layer.analog_matrices().values():
            saved.append((mat, mat.w_max))  # an empty w_max reads as not programmed
            mat.w_max = torch.empty(0, device=mat.w_max.device)
    try:
        model(x)
    finally:
        for mat, w_max in saved:
            mat.w_max = w_max


def device_state_bytes(model: nn.Module) -> dict[str, float]:
    """Bytes of device state per weight (persistent buffers) and of cached weights, over all analog layers."""
    n_w = state = cache = 0
    for _, layer in _layers(model):
        for mat, w in layer.analog_matrices().values():
            n_w += w.numel()
            state += sum(b.numel() * b.element_size() for k, b in mat.named_buffers()
                         if k in ("g_target", "g_prog", "nu"))
            cache += sum(b.numel() * b.element_size() for k, b in mat.named_buffers()
                         if k in ("w_eff", "w_analog"))
    return {"weights": n_w, "state_bytes_per_weight": state / max(n_w, 1),
            "cache_bytes_per_weight": cache / max(n_w, 1)}
