"""Regenerate the numbers, CSVs and figures of ``docs/results/cost_resnet.md``.

    python -m aimc.cost.results --out docs/results            # everything (the sweep evaluates ResNet-32)
    python -m aimc.cost.results --out /tmp/x --no-accuracy    # cost only, seconds

Prints the Markdown tables of the page; writes ``cost_resnet_presets.csv``, ``cost_resnet32_layers.csv``,
``cost_resnet34_layers.csv``, ``cost_resnet32_sweep.csv``, ``cost_resnet32_breakdown.png``,
``cost_resnet34_breakdown.png`` and ``cost_resnet32_sweep.png``. One torch thread.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from aimc.cost.checks import headline_checks
from aimc.cost.layout import CostWarning, mapping
from aimc.cost.model import estimate
from aimc.cost.presets import BASELINES, HARDWARE, get_hardware
from aimc.cost.plots import energy_bars_figure, sweep_figure
from aimc.cost.render import fmt_energy, fmt_time

__all__ = ["main"]

MODELS = ("resnet32_cifar", "resnet34_imagenet")


def _md(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def checks_table() -> str:
    rows = [[c.preset, c.figure, f"{c.published:g} {c.unit}", f"{c.reproduced:.4g} {c.unit}",
             f"{100 * c.rel_error:+.2f} %", c.kind, "yes" if c.ok else "**no**"] for c in headline_checks()]
    return _md(["preset", "published figure", "published", "model", "difference", "kind", "within tolerance"], rows)


def mapping_table(models: dict) -> str:
    rows = []
    for name, model in models.items():
        for tile in (128, 256, 512):
            t = mapping(model, tile=tile).totals
            rows.append([name, f"{tile} × {tile}", t["layers"], f"{t['weights']:,}", f"{t['devices']:,}", t["tiles"],
                         f"{100 * t['utilisation']:.1f} %", f"{t['mvms']:,}", f"{t['tile_mvms']:,}",
                         f"{t['dac_conversions']:,}", f"{t['adc_conversions']:,}", f"{t['partial_sums']:,}",
                         f"{t['macs']:,}"])
    return _md(["model", "tile", "analog layers", "weights", "PCM devices (2/weight)", "tiles", "utilisation",
                "MVMs", "tile-MVMs", "DAC conversions", "ADC conversions", "partial sums", "MACs"], rows)


def presets_table(models: dict, out: Path) -> str:
    import pandas as pd

    rows, recs = [], []
    for name, model in models.items():
        for hw in HARDWARE:
            r = estimate(model, hw)
            t, b = r.totals, r.totals["energy_breakdown_j"]
            base = {bl: estimate(r.mapping, hw, baseline=bl).totals for bl in BASELINES}
            recs.append({"model": name, "hardware": hw, "tile": r.mapping.tile_rows, "tiles": t["tiles"],
                         "chip_tiles": t["chip_tiles"], "n_chips": t["n_chips"], "devices": t["devices"],
                         "energy_j": t["energy_j"], **{f"energy_{k}_j": v for k, v in b.items()},
                         "latency_s": t["latency_s"], "latency_pipelined_s": t["latency_pipelined_s"],
                         "pipeline_interval_s": t["pipeline_interval_s"], "tops_per_w": t["tops_per_w"],
                         **{f"baseline_{bl}_energy_j": v["baseline_energy_j"] for bl, v in base.items()},
                         **{f"baseline_{bl}_latency_s": v["baseline_latency_s"] for bl, v in base.items()}})
            crossbar = b["array"] + b["dac"] + b["adc"]
            digital = b["post"] + b["psum"] + b["bn"] + b["activation"] + b["residual"] + b["pool"]
            rows.append([name, hw, f"{r.mapping.tile_rows}²", f"{t['tiles']} ({t['n_chips']} chip"
                         f"{'s' if t['n_chips'] > 1 else ''})", fmt_energy(t["energy_j"]), fmt_energy(crossbar),
                         fmt_energy(digital), fmt_energy(b["data"] + b["offchip"]), fmt_time(t["latency_s"]),
                         fmt_time(t["pipeline_interval_s"]), f"{t['tops_per_w']:.3g}",
                         f"{base['a100_int8']['baseline_energy_j'] / t['energy_j']:.2g}×",
                         f"{base['horowitz45_int8']['baseline_energy_j'] / t['energy_j']:.2g}×"])
        hw = get_hardware("hermes_4phase").replace(post_energy_j=0.3e-12, post_time_s=None, step_overhead_s=None)
        t = estimate(model, hw).totals
        rows.append([name, "hermes_4phase, INT8 post-processing [A]", "256²", f"{t['tiles']} ({t['n_chips']} chip"
                     f"{'s' if t['n_chips'] > 1 else ''})",
                     fmt_energy(t["energy_j"]), "—", "—", "—", fmt_time(t["latency_s"]),
                     fmt_time(t["pipeline_interval_s"]), f"{t['tops_per_w']:.3g}", "—", "—"])
        for bl in BASELINES:
            t = estimate(model, "hermes_4phase", baseline=bl).totals
            rows.append([name, f"digital: {bl}", "—", "—", fmt_energy(t["baseline_energy_j"]), "—", "—", "—",
                         "≥ " + fmt_time(t["baseline_latency_s"]), "≥ " + fmt_time(t["baseline_latency_s"]), "—", "—",
                         "—"])
    pd.DataFrame(recs).to_csv(out / "cost_resnet_presets.csv", index=False)
    return _md(["model", "hardware", "tile", "tiles", "energy / inference", "crossbar + DAC + ADC",
                "digital post, BN, act., add, pool", "data + off-chip", "latency (layer-serial)",
                "pipelined: one every", "TOPS/W (effective)", "A100 INT8 / analog energy",
                "45 nm INT8 / analog energy"], rows)


def breakdowns(models: dict, out: Path) -> None:
    for name, model in models.items():
        r = estimate(model, "hermes_4phase")
        short = name.split("_")[0]
        r.to_frame().to_csv(out / f"cost_{short}_layers.csv", index=False)
        fig = energy_bars_figure(r, f"{name} on hermes_4phase ({r.mapping.tile_rows}² tiles, 8-bit DAC and ADC): "
                                    f"{fmt_energy(r.totals['energy_j'])} per inference")
        fig.savefig(out / f"cost_{short}_breakdown.png", dpi=90, metadata={"Software": None})


def run_sweep(out: Path, with_accuracy: bool) -> str:
    from aimc.cost.sweep import CifarAccuracy, sweep
    from aimc.models import load_pretrained_resnet32, resnet32_cifar

    t0 = time.perf_counter()
    acc = CifarAccuracy(load_pretrained_resnet32()) if with_accuracy else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CostWarning)
        df = sweep(resnet32_cifar(), tiles=(128, 256, 512, 1024), adc_bits=(4, 5, 6, 7, 8, 10), accuracy=acc)
    secs = time.perf_counter() - t0
    df.to_csv(out / "cost_resnet32_sweep.csv", index=False)
    fig = sweep_figure(df, "ResNet-32 / CIFAR-10 on hermes_4phase constants: tile size × ADC bits")
    fig.savefig(out / "cost_resnet32_sweep.png", dpi=90, metadata={"Software": None})
    rows = [[f"{r.tile}²", r.adc_bits, r.tiles, fmt_energy(r.energy_j), fmt_energy(r.adc_energy_j),
             fmt_time(r.latency_s), fmt_time(r.pipeline_interval_s),
             "—" if r.accuracy_n == 0 else f"{100 * r.accuracy_mean:.1f} ± {100 * r.accuracy_std:.1f}"]
            for r in df.itertuples()]
    head = f"sweep: {secs:.0f} s on {torch.get_num_threads()} thread(s)"
    if acc is not None:
        head += (f"; digital accuracy on the subset {100 * acc.digital:.2f} %; ADC range chosen on training images: "
                 f"{acc.bound_scores} → out_bound {acc.out_bound:g}; evaluation time {acc.seconds:.0f} s")
    return head + "\n\n" + _md(["tile", "ADC bits", "tiles", "energy / inference", "of which ADC",
                                "latency (serial)", "pipelined: one every", "accuracy (%, t = 1 h, GDC)"], rows)


def main(argv: list[str] | None = None) -> None:
    from aimc.models import get_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-accuracy", action="store_true", help="skip the ResNet-32 evaluation of the sweep")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    models = {n: get_model(n) for n in MODELS}
    for n, m in models.items():
        m.aimc_arch = n
    print("## headline checks\n\n" + checks_table() + "\n")
    print("## mapping\n\n" + mapping_table(models) + "\n")
    print("## presets\n\n" + presets_table(models, a.out) + "\n")
    breakdowns(models, a.out)
    hw = get_hardware("hermes_4phase")
    print(f"## parameters of {hw.name}\n\n" + _md(["field", "value", "source"], [[k, v, s] for k, v, s in hw.table()]))
    print("\n## sweep\n\n" + run_sweep(a.out, not a.no_accuracy))


if __name__ == "__main__":
    main()
