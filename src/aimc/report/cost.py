"""The report's cost section: energy, latency, devices and tiles of one inference from ``aimc.cost`` (once per
analog config, with a sentence saying how it compares with the digital baseline and why), the accuracy over time
next to it, and the per-layer energy breakdown as an inline SVG bar chart."""

from __future__ import annotations

import logging

from aimc.evaluation import format_time, summarize
from aimc.report.accuracy import ordered
from aimc.report.files import Run
from aimc.report.page import NO_RESULTS, e, note, pct, table

log = logging.getLogger("aimc.report")

COST_HARDWARE = "hermes_4phase"
"""Hardware preset of the report's cost section (HERMES in the 4-phase mode its accuracy results used)."""

_PARTS = {"array": "the crossbar reads", "dac": "DAC input conversions", "adc": "ADC conversions",
          "post": "digital post-processing of every column's output", "psum": "partial-sum accumulation",
          "bn": "batch norm", "activation": "activations", "residual": "residual additions", "pool": "pooling",
          "data": "on-chip data movement", "digital_layers": "layers kept digital", "offchip": "off-chip traffic",
          "reprogram": "reprogramming tiles"}


def layer_label(lc) -> str:  # noqa: ANN001 - an aimc.cost.model.LayerCost
    """``0 · Conv2d 16×1×3×3`` (an index name of an ``nn.Sequential`` says little alone): name, type, weight shape."""
    lm = lc.layer
    name = f"layer {lm.name}" if lm.name.split(".")[0].isdigit() else lm.name
    return f"{name} · {lm.kind} {'×'.join(str(s) for s in lm.weight_shape)}"


def verdict(rep) -> str:  # noqa: ANN001 - an aimc.cost.model.CostReport
    """One or two sentences: how the analog energy compares with the digital baseline's, and what dominates it."""
    from aimc.cost.render import fmt_energy

    t = rep.totals
    analog, digital = float(t["energy_j"]), float(t["baseline_energy_j"])
    if analog <= 0 or digital <= 0:
        return "The energy of one inference could not be compared with the digital baseline (a zero estimate)."
    if analog > digital:
        head = (f"The analog chip uses <b>{analog / digital:.1f}× the energy</b> of the digital baseline "
                f"(<code>{e(rep.baseline.name)}</code>) for one inference of this network: {e(fmt_energy(analog))} "
                f"vs {e(fmt_energy(digital))}.")
    else:
        head = (f"The analog chip uses <b>{digital / analog:.1f}× less energy</b> than the digital baseline "
                f"(<code>{e(rep.baseline.name)}</code>) for one inference of this network: {e(fmt_energy(analog))} "
                f"vs {e(fmt_energy(digital))}.")
    parts = sorted(((v, k) for k, v in rep.breakdown().items() if v > 0), reverse=True)
    top = [(v, k) for v, k in parts[:2]]
    share = ", ".join(f"{_PARTS.get(k, k)} {100 * v / analog:.0f} %" for v, k in top)
    macs, adc = int(t.get("macs", 0)), int(t.get("adc_conversions", 0))
    why = f" Where it goes: {e(share)} of the analog energy."
    if adc and {"adc", "post"} & {k for _, k in top}:
        why += (f" Those are paid per column read, not per multiply-accumulate: this network's {macs:,} MACs "
                f"need {adc:,} ADC conversions ({macs / adc:.0f} MACs each), and its weights fill "
                f"{100 * float(t.get('utilisation', 0)):.1f} % of the {t['tiles']} tile(s)' cross-points.")
        if analog > digital:
            why += (" Small layers leave most of every tile idle, so each conversion's cost is shared by few "
                    "multiply-accumulates.")
    why += f" The baseline: {e(rep.baseline.description)}."
    return f'<p class="verdict">{head}{why}</p>'


def cost_section(run: Run) -> str:
    from aimc.cost import estimate
    from aimc.cost.plots import energy_bars_svg
    from aimc.cost.render import digital_summary, experiment_target, fmt_energy, fmt_time

    names = list(dict.fromkeys(sw.analog for sw in run.exp.evaluation)) or list(run.exp.analog)[:1]
    intro = (f"<p>One inference (batch 1) on the <code>{e(COST_HARDWARE)}</code> hardware preset of "
             "<code>aimc.cost</code>, with the tile size and DAC/ADC bits of each analog config (the preset's where "
             "the config has none), next to the accuracy the sweeps measured. Estimates, not measurements: the "
             "presets are calibrated to published chip figures, other constants are sourced or assumed (see "
             "<code>aimc.cost.params</code>). Re-create with <code>aimc cost RUN_DIR</code>.</p>")
    parts = []
    for name in names:
        parts.append(f"<h3>Analog config <code>{e(name)}</code></h3>")
        try:
            tgt = experiment_target(run.exp, run.exp.name, "run", analog=name)
            rep = estimate(tgt.model, COST_HARDWARE, config=tgt.config, input_shape=tgt.input_shape,
                           on_overflow="chips", name=run.exp.model.name)
        except Exception as err:  # noqa: BLE001 - the report must not fail a finished run; say what went wrong
            log.warning("report: cost of analog config %s could not be estimated: %s", name, err)
            parts.append(note(f"could not estimate the cost ({type(err).__name__}: {err})"))
            continue
        t, mp = rep.totals, rep.mapping
        parts.append(table(
            ["tiles", "chips", "PCM devices", "energy / inference", "latency (layer-serial)", "pipelined: one every",
             f"digital baseline ({rep.baseline.name}): energy, latency"],
            [(f"{t['tiles']} of {mp.tile_rows}×{mp.tile_cols}", t["n_chips"], f"{t['devices']:,}",
              fmt_energy(t["energy_j"]), fmt_time(t["latency_s"]), fmt_time(t["pipeline_interval_s"]),
              f"{fmt_energy(t['baseline_energy_j'])}, {fmt_time(t['baseline_latency_s'])}")], [True] * 7))
        parts.append(verdict(rep))
        for sw in run.exp.evaluation:
            if sw.analog != name:
                continue
            rows = run.sweep_rows(sw.name)
            times = sorted({float(x) for x in sw.times})
            body = []
            if len(rows):
                s = ordered(summarize(rows, ("model", "compensation", "t_seconds"), run.value), list(sw.models))
                for (model, comp), g in s.groupby(["model", "compensation"], sort=False):
                    acc = {float(r.t_seconds): r.mean for r in g.itertuples()}
                    body.append((model, comp, *[pct(acc.get(x, float("nan"))) for x in times]))
            parts.append(f"<p>Sweep <code>{e(sw.name)}</code> on this chip (the energy and latency above hold for "
                         f"every row): {e(run.metric.label)} (%, mean over seeds) after programming"
                         + ("" if body else f" — {NO_RESULTS}") + "</p>")
            if body:
                parts.append(table(["model", "compensation", *[format_time(x) for x in times]], body,
                                   [False, False] + [True] * len(times)))
        parts.append(energy_bars_svg(rep, f"{run.exp.model.name} on {COST_HARDWARE}, analog config {name}: energy "
                                          "per inference by layer", labels=[layer_label(lc) for lc in rep.layers]))
        parts.append(note("Stays digital: " + "; ".join(digital_summary(rep)) if mp.digital else
                          "Every module with weights is analog.") + "".join(note(n) for n in rep.notes))
    return intro + "".join(parts)
