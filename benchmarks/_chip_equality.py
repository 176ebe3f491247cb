"""The same chip on two devices (``benchmarks/gpu_check.py``, ``tests/test_gpu_equality.py``): distances in ulp
between the counter-based generator's outputs and between two programmed and drifted copies of a small model."""

from __future__ import annotations

import math

import torch
from torch import nn

# CPU vs CUDA tolerances. Devices and weights in ulp of the matrix's largest |value| (not elementwise: g+ − g−,
# g_target + noise and the mean drift exponent + its spread cancel); float32 pow/log/exp and fused multiply-adds
# round differently by 1-2 ulp each on a GPU. Normals (float32) elementwise: float64 log and sqrt, float32 cos/sin
# (≤ 2 ulp on CUDA) and one product.
ULP_COND = 8  # g_target, g_prog, nu
ULP_WEIGHT = 16  # effective weights (several float32 steps: read noise, drift, scales, GDC-free)
ULP_NORMAL = 8


def ulp_distance(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float | None = None) -> float:
    """Largest |a − b| in units of the float spacing (ulp) at ``max(|a|, |b|)`` elementwise, or at ``scale`` (e.g.
    a matrix's largest |w|) if given; ``a`` and ``b`` on any devices, same shape and dtype. inf if shapes differ."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape or a.dtype != b.dtype:
        return math.inf
    if a.numel() == 0:
        return 0.0
    ref = torch.maximum(a.abs(), b.abs()) if scale is None else torch.as_tensor(scale, dtype=a.dtype).abs()
    ulp = torch.nextafter(ref, torch.full_like(ref, math.inf)) - ref
    d = (a - b).abs() / ulp
    d = torch.where(a == b, torch.zeros_like(d), d)  # equal infinities / zeros
    return float(d.max())


def rng_distances(device: torch.device, n: int) -> dict[str, float]:
    """The generator on CPU and ``device``: raw integer words (count differing: 0 = bit-identical), uniforms (ulp:
    0 = equal), normals (elementwise ulp), over ``n`` counters near 0 and ``n`` past 2³², several keys and draws."""
    from aimc import rng

    idx = torch.cat([torch.arange(n), torch.arange(n) + (1 << 33)])
    out = {"threefry_words_differing": 0.0, "uniform_ulp": 0.0, "normal_ulp": 0.0}
    for key, draw in ((0, 0), (123, 4), (-7, 65535), (2**63 - 1, 1)):
        k = rng.split_key(key)
        words = [rng.threefry2x32(i & 0xFFFFFFFF, (i >> 32) + (draw << 16), k) for i in (idx, idx.to(device))]
        out["threefry_words_differing"] += float(sum(int((x != y.cpu()).sum()) for x, y in zip(*words)))
        u = [rng.uniform(key, draw, index=idx, device=d) for d in ("cpu", device)]
        out["uniform_ulp"] = max(out["uniform_ulp"], ulp_distance(*u))
        # a whole draw (cosines and sines of counters 0..n-1), and scattered elements of a draw of 2^34: sines of
        # counters 0..n-1 (first half of idx) and cosines (second half), through normal()'s general index path
        for kw in (dict(n=2 * n), dict(index=idx, size=1 << 34)):
            z = [rng.normal(key, draw, device=d, **kw) for d in ("cpu", device)]
            out["normal_ulp"] = max(out["normal_ulp"], ulp_distance(*z))
    return out


def small_model() -> nn.Module:
    """Convolutions (plain, strided/dilated/grouped) and Linears, several tiles per matrix at the presets' sizes."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=2, dilation=2, groups=4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 600), nn.ReLU(), nn.Linear(600, 10))


def programmed(preset: str, device: torch.device, seed: int, t: float | None, gdc: bool = False) -> nn.Module:
    import aimc

    m = aimc.convert(small_model(), aimc.presets.get(preset)).eval().to(device)
    aimc.program(m, seed=seed)
    if t is not None:
        aimc.at_time(m, t, seed=seed, gdc=gdc)
    return m


def _scaled_ulp(x: torch.Tensor, y: torch.Tensor) -> float:
    """ulp distance in units of the spacing at the larger tensor's largest |value| (robust where a small value is
    the difference of large ones: g+ − g−, g_target + noise, the mean drift exponent + its spread)."""
    if not (x.numel() and y.numel()):
        return 0.0 if x.numel() == y.numel() else math.inf
    return ulp_distance(x, y, torch.maximum(x.abs().max().cpu(), y.abs().max().cpu()))


def chip_distances(a: nn.Module, b: nn.Module) -> dict[str, float]:
    """Two programmed (and drifted) copies of one model, on any devices: per quantity the largest distance over the
    matrices, in ulp of each matrix's largest |value|, of its devices (g_target, g_prog, nu) and cached weights
    (w_eff or w_analog), and the number of integer seed buffers that differ."""
    from aimc.nn.convert import analog_layers

    def mats(m: nn.Module) -> list:
        return [(mat, w.reshape(w.shape[0], -1)) for _, layer in analog_layers(m)
                for mat, w in layer.analog_matrices().values()]

    out = {"g_target_ulp": 0.0, "g_prog_ulp": 0.0, "nu_ulp": 0.0, "weight_ulp": 0.0, "seeds_differing": 0.0}
    for (ma, wa), (mb, wb) in zip(mats(a), mats(b), strict=True):
        sa, sb = ma.device_state(wa), mb.device_state(wb)
        for k in ("g_target", "g_prog", "nu"):
            out[k + "_ulp"] = max(out[k + "_ulp"], _scaled_ulp(getattr(sa, k), getattr(sb, k)))
        for k in ("prog_seed", "read_seed"):
            out["seeds_differing"] += float(not torch.equal(getattr(ma, k).cpu(), getattr(mb, k).cpu()))
        for k in ("w_eff", "w_analog"):
            out["weight_ulp"] = max(out["weight_ulp"], _scaled_ulp(getattr(ma, k), getattr(mb, k)))
    return out


def chip_verdict(d: dict[str, float]) -> bool:
    return (d["seeds_differing"] == 0 and d["weight_ulp"] <= ULP_WEIGHT
            and max(d["g_target_ulp"], d["g_prog_ulp"], d["nu_ulp"]) <= ULP_COND)
