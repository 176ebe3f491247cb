"""``aimc cost`` support: resolve MODEL_OR_RUN (zoo name, experiment file, run directory), print and write reports."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from aimc.cost.layout import DATA_INPUT_SHAPES, ZOO_INPUT_SHAPES
from aimc.cost.model import CostReport
from aimc.errors import ConfigError

__all__ = ["Target", "resolve_target", "experiment_target", "to_json", "write_outputs", "print_report",
           "parse_shape", "fmt_energy", "fmt_time", "digital_summary"]


@dataclass
class Target:
    """What ``aimc cost`` was pointed at: the network, its input shape, the analog config it is simulated with."""

    model: nn.Module
    input_shape: tuple[int, ...] | None
    config: Any  # AnalogConfig | None
    label: str
    kind: str  # "zoo", "experiment" or "run"


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,32,32"`` / ``"3x32x32"`` → ``(3, 32, 32)``."""
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").replace("×", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"--input-shape {text!r} is not a shape; give positive sizes without the batch, e.g. "
                          "3,32,32.")
    return shape


def experiment_target(exp: Any, label: str, kind: str, analog: str | None = None) -> Target:
    """The architecture of an experiment (no weights are needed), its input shape and an analog config.

    ``analog``: the named analog config to use; default: that of the first evaluation sweep, else the first entry.
    """
    from aimc.experiment.build import build_model

    model = build_model(dataclasses.replace(exp.model, pretrained=None))
    name = analog or (exp.evaluation[0].analog if exp.evaluation else next(iter(exp.analog)))
    shape = DATA_INPUT_SHAPES.get(exp.data.name) or ZOO_INPUT_SHAPES.get(exp.model.name)
    return Target(model, shape, exp.analog_config(name), f"{label} (analog config {name})", kind)


def resolve_target(target: str) -> Target:
    """MODEL_OR_RUN → :class:`Target`: a zoo name, an experiment file (YAML/TOML) or a run directory."""
    from aimc.models import MODEL_NAMES, get_model

    p = Path(target)
    if p.is_dir():
        cfg = p / "config.yaml"
        if not cfg.is_file():
            raise ConfigError(f"{target!r} is a directory without config.yaml, so not a run directory of `aimc run`;"
                              f" give a zoo model ({', '.join(MODEL_NAMES)}), an experiment file or a run directory.")
        import yaml

        from aimc.experiment.spec import experiment_from_dict

        exp = experiment_from_dict(yaml.safe_load(cfg.read_text()), str(cfg))
        return experiment_target(exp, f"run {exp.name}", "run")
    if p.is_file():
        from aimc.experiment.spec import load_experiment

        exp = load_experiment(p)
        return experiment_target(exp, f"experiment {exp.name}", "experiment")
    if target in MODEL_NAMES:
        model = get_model(target)
        model.aimc_arch = target
        return Target(model, ZOO_INPUT_SHAPES.get(target), None, target, "zoo")
    raise ConfigError(f"{target!r} is neither a zoo model ({', '.join(MODEL_NAMES)}) nor an existing experiment file "
                      "or run directory.")


def digital_summary(report: CostReport) -> list[str]:
    """The modules that stay digital, grouped by type and reason: "31 × BatchNorm2d (why; e.g. bn1, …)"."""
    groups: dict[tuple[str, str], list] = {}
    for d in report.mapping.digital:
        groups.setdefault((d.kind, d.reason), []).append(d)
    out = []
    for (kind, why), ds in groups.items():
        names = ", ".join(d.name for d in ds[:3]) + (", …" if len(ds) > 3 else "")
        macs = sum(d.macs for d in ds)
        out.append(f"{len(ds)} × {kind} ({why}; {names}" + (f"; {macs:,} MACs" if macs else "") + ")")
    return out


# ---- formatting ------------------------------------------------------------------------------------------------------
def fmt_energy(j: float) -> str:
    if not math.isfinite(j):
        return "—"
    for unit, f in (("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(j) >= f or unit == "pJ":
            return f"{j / f:.3g} {unit}"
    return f"{j} J"


def fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "—"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= f or unit == "ns":
            return f"{s / f:.3g} {unit}"
    return f"{s} s"


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(report: CostReport) -> str:
    """The report as JSON (``layers``, ``digital_layers``, ``totals``, …); infinities and NaN become null."""
    return json.dumps(_plain(report.to_dict()), indent=1, ensure_ascii=False, allow_nan=False)


def write_outputs(report: CostReport, out: Path) -> list[Path]:
    """Write ``cost.json`` and ``cost_layers.csv`` into the directory ``out`` (created)."""
    from aimc._files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    js, csv = out / "cost.json", out / "cost_layers.csv"
    text = to_json(report)
    atomic_write(js, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    frame = report.to_frame()
    atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False))
    return [js, csv]


def print_report(report: CostReport, console: Any, title: str) -> None:
    """A rich table per layer, the totals, the digital layers and the baseline comparison."""
    from rich.table import Table

    mp, hw, t = report.mapping, report.hardware, report.totals
    tab = Table(title=f"{title}: {mp.tile_rows} × {mp.tile_cols} tiles, {mp.devices_per_weight} PCM/weight, "
                      f"input {'×'.join(map(str, mp.input_shape))}, on {hw.name} ({report.input_bits}-bit inputs, "
                      f"{report.adc_bits}-bit ADC)")
    heads = ["layer", "type", "rows × cols", "tiles", "util. %", "devices", "MVMs", "DAC conv.", "ADC conv.",
             "partial sums", "energy", "latency"]
    for h in heads:
        tab.add_column(h, justify="left" if h in ("layer", "type") else "right")
    for lc in report.layers:
        lm = lc.layer
        tab.add_row(lm.name, lm.kind, f"{lm.rows} × {lm.cols}", f"{lm.row_tiles} × {lm.col_tiles}",
                    f"{100 * lm.utilisation:.1f}", f"{lm.devices:,}", f"{lm.mvms:,}", f"{lm.dac_conversions:,}",
                    f"{lm.adc_conversions:,}", f"{lm.partial_sums:,}", fmt_energy(lc.energy_j), fmt_time(lc.latency_s))
    tab.add_section()
    tab.add_row("total", f"{t['layers']} layers", "", str(t["tiles"]), f"{100 * t['utilisation']:.1f}",
                f"{t['devices']:,}", f"{t['mvms']:,}", f"{t['dac_conversions']:,}", f"{t['adc_conversions']:,}",
                f"{t['partial_sums']:,}", fmt_energy(t["energy_j"]), fmt_time(t["latency_s"]))
    console.print(tab)
    b = t["energy_breakdown_j"]
    parts = ", ".join(f"{k} {fmt_energy(v)}" for k, v in b.items() if v > 0)
    console.print(f"per inference: [bold]{fmt_energy(t['energy_j'])}[/bold] ({parts})")
    console.print(f"latency: layer-serial {fmt_time(t['latency_s'])}; pipelined {fmt_time(t['latency_pipelined_s'])}"
                  f", one inference every {fmt_time(t['pipeline_interval_s'])} "
                  f"({t['throughput_per_s']:.3g} inferences/s)")
    console.print(f"chip: {t['tiles']} of {t['chip_tiles']} tiles per chip → {t['n_chips']} chip(s); "
                  f"{t['devices']:,} PCM devices for {t['weights']:,} weights; {2 * t['macs'] / 1e6:.3g} MOPs, "
                  f"{t['tops_per_w']:.3g} TOPS/W effective")
    bl = report.baseline
    console.print(f"digital baseline {bl.name} ({bl.precision}, {bl.processor}): {fmt_energy(t['baseline_energy_j'])}"
                  f", {fmt_time(t['baseline_latency_s'])} → analog uses {1 / t['energy_ratio']:.3g}× its energy"
                  if t["energy_ratio"] and math.isfinite(t["energy_ratio"]) else "")
    if mp.digital:
        console.print("stays digital: " + "; ".join(digital_summary(report)))
    for n in report.notes:
        console.print(f"note: {n}")
