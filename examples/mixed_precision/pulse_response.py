"""Pulse response of the training PCM model (``aimc.devices.PCMTrainingDevice``): G vs SET pulse number.

Left: 10,000 fresh devices (RESET, then one blind SET pulse at a time), 100 of them drawn as thin lines, the sample
mean ± std, the mean-law trajectory (G_k+1 = G_k + μ(G_k, P_k+1)) and the JAP-2018 anchors of the reference sheet
(≈ 1.9 / 5.8 / 7.8 / 9.4 µS after 1 / 5 / 10 / 20 pulses). Right: the step ΔG against G (settled history P = 0):
sampled steps and the model's μ(G) ± σ(G).

Usage (from the repository root)::

    .venv/bin/python examples/mixed_precision/pulse_response.py            # writes docs/results/pcm_pulse_response.png
    .venv/bin/python examples/mixed_precision/pulse_response.py --out /tmp/pr.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aimc.devices import PCMTrainingDevice

ANCHORS = {1: 1.9, 5: 5.8, 10: 7.8, 20: 9.4}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results/pcm_pulse_response.png"))
    ap.add_argument("--pulses", type=int, default=40)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = PCMTrainingDevice()
    gen = torch.Generator().manual_seed(args.seed)
    r = dev.pulse_response(args.pulses, args.devices, generator=gen)  # (pulses + 1, devices)
    k = torch.arange(args.pulses + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for j in range(min(100, args.devices)):
        ax1.plot(k, r[:, j], color="tab:blue", alpha=0.12, lw=0.7)
    m, s = r.mean(1), r.std(1)
    ax1.plot(k, m, color="black", lw=2, label=f"sample mean ({args.devices:,} devices)")
    ax1.fill_between(k, m - s, m + s, color="gray", alpha=0.3, label="± 1 std")
    ax1.plot(k, dev.mean_trajectory(args.pulses), "r--", lw=1.5, label="mean law μ(G, P) iterated")
    ax1.plot(list(ANCHORS), list(ANCHORS.values()), "o", color="orange", ms=7,
             label="anchors (JAP 2018 via srnn-pcm)")
    ax1.axhline(dev.g_sat, color="green", ls=":", label=f"g_sat = {dev.g_sat:.1f} µS (mean step 0)")
    ax1.set_xlabel("SET pulse number after RESET")
    ax1.set_ylabel("conductance G (µS)")
    ax1.set_ylim(0, dev.g_max + 0.3)
    ax1.set_title("PCM pulse response: 100 devices shown")
    ax1.legend(fontsize=8, loc="lower right")

    n = 4000
    g = torch.rand(n, generator=gen) * dev.g_max
    gain = dev.sample_gain((n,), generator=gen)
    g1, _ = dev.pulse(g, torch.zeros(n), gain, 1, generator=gen)
    ax2.scatter(g, g1 - g, s=3, alpha=0.25, color="tab:blue", label="sampled ΔG (one pulse, P = 0)")
    gg = torch.linspace(0, dev.g_max, 200)
    mu, sd = dev.step_stats(gg, torch.zeros_like(gg))
    ax2.plot(gg, mu, "r-", lw=2, label="μ(G) = −0.084·G + 0.880")
    ax2.plot(gg, mu + sd, "r--", lw=1, label="μ ± σ, σ(G) = 0.091·G + 0.260")
    ax2.plot(gg, mu - sd, "r--", lw=1)
    ax2.axhline(dev.epsilon, color="purple", ls=":", label=f"ε = μ(g_reset) = {dev.epsilon:.3f} µS")
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_xlabel("conductance before the pulse G (µS)")
    ax2.set_ylabel("step ΔG (µS)")
    ax2.set_title("step vs conductance (settled history)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}: mean G after 1/5/10/20 pulses = "
          + ", ".join(f"{float(m[i]):.2f}" for i in (1, 5, 10, 20) if i <= args.pulses) + " µS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
