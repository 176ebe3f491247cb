"""Energy per training image of the mixed-precision MNIST MLP vs a 32-bit digital design, with aimc.cost.

Reads the MLP's measured pulses per weight per epoch from docs/results/mixed_precision.csv's companion table
(passed on the command line, default 0.108 from docs/results/mixed_precision.md), prices both designs with
:func:`aimc.cost.training_energy` on the HERMES presets, batch 1 and batch 64, with and without SRAM traffic, and
a range of SET-pulse energies (no source gives the paper's), and writes docs/results/mixed_precision_energy.md.

    .venv/bin/python examples/mixed_precision/training_energy.py [--pulses-per-weight-epoch 0.108] [--out docs/results]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aimc.cost import training_energy
from aimc.models.small import mnist_mlp

TRAIN_IMAGES = 60_000
PAPER_MP_J, PAPER_DIGITAL_J = 83.2e-9, 14.35e-6


def fmt(j: float) -> str:
    if j < 1e-9:
        return f"{j * 1e12:,.2f} pJ"
    return f"{j * 1e9:,.1f} nJ" if j < 1e-6 else f"{j * 1e6:,.2f} µJ"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pulses-per-weight-epoch", type=float, default=0.108,
                    help="measured SET pulses per weight per epoch of the MLP (docs/results/mixed_precision.md)")
    ap.add_argument("--out", type=Path, default=None, help="write mixed_precision_energy.md here")
    args = ap.parse_args()
    model = mnist_mlp()
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    ppi = args.pulses_per_weight_epoch * weights / TRAIN_IMAGES
    lines = ["# Energy per training image: mixed-precision MLP vs 32-bit digital", "",
             f"Made by `{shlex.join(['python', *sys.argv])}` with `aimc.cost.training_energy` "
             "(every assumption in its docstring, `src/aimc/cost/training.py`). Network: the MNIST MLP 784-250-10 "
             f"({weights:,} weights) trained in docs/results/mixed_precision.md; measured "
             f"{args.pulses_per_weight_epoch} SET pulses per weight per epoch = **{ppi:.2f} pulses per training "
             "image**.", "",
             f"The paper (Nandakumar et al. 2020) estimates **{fmt(PAPER_MP_J)}** (mixed precision) against "
             f"**{fmt(PAPER_DIGITAL_J)}** (dedicated 32-bit digital design) per image: **172×**; its assumptions "
             "(node, ADC/DAC, what the digital unit includes, whether programming energy counts) could not be read "
             "(reference sheet: energy-latency-facts §5, tag U).", "",
             "| hardware preset | batch | SRAM traffic | mixed precision | of which crossbar MVMs | of which digital "
             "χ update (+ SRAM) | 32-bit digital | ratio digital / mixed |", "|---|---|---|---|---|---|---|---|"]
    cases = []
    for hw in ("hermes_1phase", "hermes_4phase"):
        for batch in (1, 64):
            for mem in (True, False):
                if not mem and batch != 1:
                    continue
                r = training_energy(model, hw, input_shape=(1, 784), pulses_per_image=ppi, count_memory=mem,
                                    batch=batch)
                cross = r.mixed_precision["forward MVMs (crossbar)"] + r.mixed_precision["backward MVMs (crossbar)"]
                chi = r.mixed_precision_total - cross
                cases.append(r)
                lines.append(f"| {hw} | {batch} | {'yes' if mem else 'no'} | {fmt(r.mixed_precision_total)} | "
                             f"{fmt(cross)} | {fmt(chi)} | {fmt(r.digital_total)} | **{r.ratio:.1f}×** |")
                print(lines[-1])
    r = cases[0]
    lines += ["", "Components, HERMES 1-phase, batch 1, with SRAM traffic:", "",
              "| design | component | energy per image |", "|---|---|---|"]
    lines += [f"| mixed precision | {k} | {fmt(v)} |" for k, v in r.mixed_precision.items()]
    lines += [f"| 32-bit digital | {k} | {fmt(v)} |" for k, v in r.digital.items()]
    lines += ["", "SET-pulse energy (no source in our reference sheets gives it for the paper's devices, so a sweep over "
              "four decades):", "", "| J per SET pulse | pulses' energy per image | share of the "
              "mixed-precision total (HERMES 1-phase, batch 1) |", "|---|---|---|"]
    for e in (1e-12, 1e-11, 1e-10, 1e-9):
        rp = training_energy(model, "hermes_1phase", input_shape=(1, 784), pulses_per_image=ppi, set_pulse_energy_j=e)
        lines.append(f"| {e:.0e} | {fmt(rp.mixed_precision['SET pulses'])} | "
                     f"{100 * rp.mixed_precision['SET pulses'] / rp.mixed_precision_total:.2g} % |")
    best = max(c.ratio for c in cases)
    upd = fmt(r.mixed_precision["gradient + χ update (FP32)"])
    lines += ["", "## What this says", "",
              f"* **Our model cannot support the 172× claim.** Its largest ratio here is **{best:.1f}×**. What "
              "keeps it small is the part of the algorithm that stays digital: the gradient δ·xᵀ and the χ "
              f"accumulation cost one FP32 multiply-add per weight per image ({upd} at Horowitz's 45 nm figures) in both designs, and reading and writing χ costs half "
              "the SRAM traffic of the digital design's weights. The paper's whole budget, 83.2 nJ per image, is "
              f"below the cost of the χ update alone in this model (it leaves {fmt(PAPER_MP_J / weights)} per "
              "weight per image for everything), so its estimate must assume a far cheaper digital unit or update "
              "path than the one priced here.",
              f"* **The crossbar is not the problem.** The forward and backward MVMs on HERMES-like tiles cost "
              f"{fmt(r.mixed_precision['forward MVMs (crossbar)'] + r.mixed_precision['backward MVMs (crossbar)'])}"
              " per image (1-phase); the digital design's forward MACs alone cost "
              f"{fmt(r.digital['forward MACs (FP32)'])}.",
              f"* **Pulses are cheap.** At {ppi:.2f} pulses per image even 1 nJ per SET pulse adds well under 1 % "
              "to the mixed-precision total; the claim does not hinge on the unknown pulse energy.",
              "* The digital design's total here is "
              f"{fmt(cases[0].digital_total)} (1-phase, batch 1, with SRAM) against the paper's "
              f"{fmt(PAPER_DIGITAL_J)}: the same order of magnitude, so the gap is on the mixed-precision side.",
              "* Not counted: refresh (RESET + re-programming of saturated pairs; refreshes per epoch are in "
              "mixed_precision.md), DAC/ADC of the backward pass beyond the forward's cost, control and I/O."]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mixed_precision_energy.md").write_text(text)
        print(f"wrote {args.out / 'mixed_precision_energy.md'}")
    else:
        print(text)


if __name__ == "__main__":
    main()
