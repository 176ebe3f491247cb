"""``aimc fit-device`` and ``aimc export-targets``: typer command functions, and the fit's Markdown report.

Registered in ``aimc.cli`` with ``app.command("fit-device")(fit_device)`` and
``app.command("export-targets")(export_targets)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from aimc.errors import AimcError

__all__ = ["fit_device", "export_targets", "write_fit_report", "goodness_of_fit", "resolve_model"]


def _fail(e: BaseException, debug: bool) -> None:
    if debug:
        raise e
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


# ---- report ---------------------------------------------------------------------------------------------------------
def goodness_of_fit(diag: pd.DataFrame) -> pd.DataFrame:
    """Per target level, over the read times: mean and largest |z| of the mean, RMS relative error of the mean and of
    the spread (model vs measured)."""
    rows = []
    for g, d in diag.groupby("g_target_uS"):
        rel_m = (d["mean_model"] - d["mean_meas"]) / np.maximum(d["mean_meas"].abs(), 1e-12)
        rel_s = d["sd_model"] / np.maximum(d["sd_meas"], 1e-12) - 1
        rows.append({"g_target_uS": g, "times": len(d), "reads": int(d["n"].sum()),
                     "mean |z| of mean": float(d["z_mean"].abs().mean()),
                     "max |z| of mean": float(d["z_mean"].abs().max()),
                     "RMS rel. error of mean (%)": 100 * float(np.sqrt((rel_m ** 2).mean())),
                     "RMS rel. error of spread (%)": 100 * float(np.sqrt((rel_s ** 2).mean()))})
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame, fmt: dict[str, str] | None = None) -> str:
    fmt = fmt or {}
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            cells.append(fmt.get(c, "{:.4g}").format(v) if isinstance(v, (float, np.floating)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(result: Any, diag: pd.DataFrame, stem: Path, truth: Any = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    paths: list[Path] = []

    def save(fig: Any, suffix: str) -> None:
        fig.tight_layout()
        paths.append(stem.with_name(stem.name + suffix))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    levels = sorted(diag["g_target_uS"].unique())
    cmap = plt.get_cmap("viridis")
    # 1. measured vs modelled mean and spread of g over time
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, g in enumerate(levels):
        d = diag[diag["g_target_uS"] == g].sort_values("t_seconds")
        c = cmap(i / max(len(levels) - 1, 1))
        for ax, m, s in ((axes[0], "mean_meas", "mean_model"), (axes[1], "sd_meas", "sd_model")):
            ax.plot(d["t_seconds"], d[m], "o", color=c, ms=4, label=f"{g:g} µS" if ax is axes[0] else None)
            ax.plot(d["t_seconds"], d[s], "-", color=c, lw=1)
    axes[0].set(xscale="log", yscale="log", xlabel="time after programming (s)", ylabel="mean g (µS)",
                title="mean conductance: measured (o) vs fitted model (—)")
    axes[1].set(xscale="log", xlabel="time after programming (s)", ylabel="std of g across devices (µS)",
                title="spread: measured (o) vs fitted model (—)")
    axes[0].legend(fontsize=7, ncol=2, title="target")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    save(fig, "_mean_spread.png")
    # 2. drift-exponent distributions (per-device log-log slopes, measured vs the same estimator on the model)
    meas = result.measurements
    lev_sim, nu_sim = result.nu_hat_model
    show = [k for k in range(len(meas.levels)) if np.isfinite(result.nu_hat[meas.level == k]).sum() >= 5]
    ncol = min(len(show), 4) or 1
    nrow = max(math.ceil(len(show) / ncol), 1)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, k in zip(axes.ravel(), show):
        a = result.nu_hat[(meas.level == k) & np.isfinite(result.nu_hat)]
        b = nu_sim[(lev_sim == k) & np.isfinite(nu_sim)]
        lo, hi = np.percentile(np.concatenate([a, b]), [1, 99])
        bins = np.linspace(lo, hi, 40)
        ax.hist(a, bins=bins, density=True, alpha=0.5, label="measured")
        ax.hist(b, bins=bins, density=True, histtype="step", lw=1.5, label="fitted model")
        ax.set_title(f"{meas.levels[k]:g} µS", fontsize=9)
        ax.set_xlabel("ν̂ (log-log slope)", fontsize=8)
    for ax in axes.ravel()[len(show):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("per-device drift exponents ν̂ (estimation noise included in both)", fontsize=10)
    save(fig, "_drift_exponents.png")
    # 3. per-level estimates with 95 % CIs vs the fitted forms (and the truth, if known)
    lv = result.levels
    dev = result.device
    g = torch.linspace(0, dev.g_max, 400, dtype=torch.float64)

    def forms(d: Any) -> dict[str, torch.Tensor]:
        mu, sd = d.drift_stats(g)
        return {"prog_std": d.prog_std(g), "drift_mean": mu, "drift_std": sd, "read_q": d.read_q_s(g)}

    curves = forms(dev)
    tcurves = forms(truth) if truth is not None else None
    titles = {"prog_std": "σ_prog (µS)", "drift_mean": "μ_ν", "drift_std": "σ_ν", "read_q": "Q_s (read noise)"}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    for ax, c in zip(axes, titles):
        ok = np.isfinite(lv[c])
        ax.errorbar(lv["g_target_uS"][ok], lv[c][ok], yerr=1.96 * lv[c + "_se"][ok].fillna(0), fmt="o", ms=4,
                    capsize=2, label="per-level estimate ± 95 %")
        ax.plot(g.numpy(), curves[c].numpy(), "-", label="fitted form")
        if tcurves is not None:
            ax.plot(g.numpy(), tcurves[c].numpy(), "k--", lw=1, label="truth")
        ax.set_title(titles[c])
        ax.set_xlabel("g (µS)")
        if c == "read_q":
            ax.set(xscale="symlog", yscale="log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    save(fig, "_levels.png")
    return paths


def write_fit_report(result: Any, yaml_path: str | Path, *, command: str | None = None, truth: Any = None,
                     md_path: str | Path | None = None) -> list[Path]:
    """Write the Markdown page of a fit (``DEVICE.md`` next to ``DEVICE.yaml``) and its PNG plots.

    Args:
        result: a :class:`aimc.devices.FitResult`.
        yaml_path: the device file the fit was saved to (named in the page; the page and plots go next to it).
        command: the command that made it (shown on the page).
        truth: the true device, for synthetic data: adds a "truth" column and curves.
        md_path: where to write the page (default: ``yaml_path`` with suffix ``.md``).

    Returns:
        The written paths (page first).
    """
    yaml_path = Path(yaml_path)
    md = Path(md_path) if md_path is not None else yaml_path.with_suffix(".md")
    stem = md.with_suffix("")
    diag = result.diagnostics()
    pngs = _plots(result, diag, stem, truth)
    gof = goodness_of_fit(diag)
    par = result.params.copy()
    table = pd.DataFrame({"parameter": par["name"], "PCM field": par["field"] + "[" + par["index"].astype(str) + "]",
                          "fitted": par["value"],
                          "95 % CI": [f"[{lo:.4g}, {hi:.4g}]" if idf else "—" for lo, hi, idf in
                                      zip(par["ci_low"], par["ci_high"], par["identified"])]})
    if truth is not None:
        tv = [v for f in ("prog_coeffs", "drift_mean", "drift_std", "read_q") for v in getattr(truth, f)]
        table["truth"] = tv
        table["truth in CI"] = ["yes" if (idf and lo <= t <= hi) else ("—" if not idf else "**no**")
                                for t, lo, hi, idf in zip(tv, par["ci_low"], par["ci_high"], par["identified"])]
    table["reference default"] = par["default"]
    table["identified"] = ["yes" if v else "**no**" for v in par["identified"]]
    d = result.design
    lines = [f"# Device fit: `{yaml_path.name}`", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    src, src_sha = result.source.get("file"), result.source.get("sha256")
    lines += [f"Measurements: {f'`{src}` (sha256 `{src_sha}`), ' if src else ''}"
              f"{d['n_devices']:,} devices, {d['n_reads']:,} reads, {len(d['levels_uS'])} target levels "
              f"({', '.join(f'{v:g}' for v in d['levels_uS'])} µS), reads from {d['t_min_s']:g} s to "
              f"{d['t_max_s']:g} s after programming (median {d['reads_per_device_median']:g} per device).", "",
              "Load it with `aimc.devices.load(\"" + yaml_path.name + "\")`, or `device: {file: " + yaml_path.name
              + "}` in a config or experiment file.", "",
              "## Fitted parameters", "",
              "σ_prog = c0 + c1·r + c2·r² (µS, r = g_T/g_max); μ_ν = clip(mu_a·ln r + mu_b, mu_lo, mu_hi); "
              "σ_ν = clip(sigma_a·ln r + sigma_b, sigma_lo, sigma_hi); Q_s = min(q0 / max(r_prog^q_exponent, "
              f"q_floor), q_cap). g_max = {result.device.g_max:g} µS, t0 = {result.device.t0:g} s, "
              f"t_read = {result.device.t_read:g} s (model constants, not fitted). Confidence intervals: bootstrap "
              f"over devices ({result.settings['n_bootstrap']} resamples).", "",
              _md_table(table), ""]
    if result.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in result.notes] + [""]
    lines += ["## Per-level estimates", "",
              "Each level's statistics after the simulation correction (indirect inference), ± standard error; "
              "`form` = the fitted functional form at that level.", "",
              _md_table(result.levels[["g_target_uS", "n_devices", "prog_std", "prog_std_se", "prog_std_form",
                                       "drift_mean", "drift_mean_se", "drift_mean_form", "drift_std", "drift_std_se",
                                       "drift_std_form", "read_q", "read_q_se", "read_q_form"]]), "",
              f"![per-level estimates]({pngs[2].name})", "",
              "## Goodness of fit", "",
              "Measured vs modelled (fitted device, same design, simulated) mean and spread of g at each target and "
              "read time; z = (measured − model mean) / standard error.", "",
              _md_table(gof, {"g_target_uS": "{:g}", "mean |z| of mean": "{:.2f}", "max |z| of mean": "{:.2f}",
                              "RMS rel. error of mean (%)": "{:.2f}", "RMS rel. error of spread (%)": "{:.1f}"}), "",
              f"![mean and spread over time]({pngs[0].name})", "",
              f"![drift exponents]({pngs[1].name})", ""]
    md.write_text("\n".join(lines), encoding="utf-8")
    return [md, *pngs]


# ---- commands -------------------------------------------------------------------------------------------------------
def fit_device(measurements: Path = typer.Argument(..., help="CSV or Parquet: device_id, g_target_uS, t_seconds, g_uS "
                                                             "[, array, chip], one row per read"),
               out: Path = typer.Option(Path("DEVICE.yaml"), "--out", help="device file to write (DEVICE.md and "
                                                                            "PNG plots go next to it)"),
               g_max: float = typer.Option(None, help="g_max of the device, µS (default: the highest target level)"),
               min_devices: int = typer.Option(20, min=2, help="minimum devices per target level"),
               bootstrap: int = typer.Option(200, min=2, help="bootstrap resamples for the confidence intervals"),
               seed: int = typer.Option(0, min=0, help="seed of the bootstrap and simulations"),
               tabulated: bool = typer.Option(False, help="also write DEVICE_tabulated.yaml: the per-level "
                                                          "estimates as a Tabulated device (no functional form)"),
               debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Fit the statistical PCM model to measured conductances; write DEVICE.yaml, DEVICE.md and plots."""
    from aimc.devices.fit import fit_pcm

    try:
        res = fit_pcm(measurements, g_max=g_max, min_devices=min_devices, n_bootstrap=bootstrap, seed=seed)
        sha = res.save(out)
        written = [out]
        if tabulated:
            tab = out.with_name(out.stem + "_tabulated.yaml")
            res.save(tab, tabulated=True)
            written.append(tab)
        cmd = f"aimc fit-device {measurements} --out {out}" + (f" --g-max {g_max:g}" if g_max else "")
        written += write_fit_report(res, out, command=cmd)
    except (AimcError, OSError) as e:
        _fail(e, debug)
        return
    typer.echo(res.to_markdown())
    for n in res.notes:
        typer.echo(f"note: {n}")
    typer.echo(f"wrote {', '.join(str(p) for p in written)} (sha256 of {out.name}: {sha})")


def resolve_model(target: str, *, stage: str | None = None, analog: str | None = None):  # noqa: ANN201
    """RUN_OR_MODEL → a converted model: an ``aimc.save`` file, or a run directory (the weights of ``stage``, default
    the first model of the first evaluation sweep, converted with ``analog``, default that sweep's config)."""
    import aimc
    from aimc.errors import ConfigError

    p = Path(target)
    if p.is_file():
        return aimc.load(p)
    if p.is_dir() and (p / "config.yaml").is_file():
        from aimc.experiment.context import RunContext
        from aimc.experiment.spec import load_run_experiment

        exp = load_run_experiment(p)
        sw = exp.evaluation[0] if exp.evaluation else None
        st = stage or (next(iter(sw.models.values())) if sw else exp.training[-1].name if exp.training else "model")
        name = analog or (sw.analog if sw else next(iter(exp.analog)))
        if name not in exp.analog:
            raise ConfigError(f"--analog {name!r} is not a named analog config of the run ({list(exp.analog)}).")
        return aimc.convert(RunContext(exp, p).weights(st), exp.analog_config(name))
    raise ConfigError(f"{target!r} is neither a model file written by aimc.save nor a run directory of `aimc run`.")


def export_targets(target: str = typer.Argument(..., metavar="RUN_OR_MODEL",
                                                help="a model file (aimc.save) or a run directory (aimc run)"),
                   out: Path = typer.Option(..., "--out", help="directory for the per-tile CSV files"),
                   stage: str = typer.Option(None, help="run directory: the training stage whose weights to export "
                                                        "(default: the first model of the first sweep)"),
                   analog: str = typer.Option(None, help="run directory: the named analog config (default: that "
                                                         "sweep's)"),
                   debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Write the target conductances (g+ and g− in µS, with layer, tile, row, column) of every crossbar tile as CSV."""
    from aimc.measured import export_targets as _export

    try:
        model = resolve_model(target, stage=stage, analog=analog)
        paths = _export(model, out)
    except (AimcError, OSError) as e:
        _fail(e, debug)
        return
    typer.echo(f"wrote {len(paths) - 1} tile file(s) and {paths[0]}")
