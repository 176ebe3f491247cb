"""The ``aimc`` command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

app = typer.Typer(help="aimc: analog in-memory computing with phase-change memory for deep learning.",
                  no_args_is_help=True, add_completion=False)


THREADS_HELP = ("torch threads per process; 0 = torch's default (all cores). Default 1: small models run fastest on "
                "one thread, and on a busy machine more threads wait for each other (see README)")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (0: leave torch's default), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@app.callback()
def _main() -> None:
    """aimc: analog in-memory computing with phase-change memory for deep learning."""


@app.command()
def demo(out: Path = typer.Option(Path("aimc-demo"), help="output directory"),
         quick: bool = typer.Option(False, help="a tiny budget (seconds), for tests"),
         seeds: int = typer.Option(None, min=1, help="number of programming seeds (default 10; 2 with --quick)"),
         threads: int = typer.Option(1, min=0, help=THREADS_HELP),
         quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """Train a digits CNN (FP and hardware-aware), program it onto PCM, evaluate from 25 s to 1 year."""
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from aimc.demo import DemoSettings, run_demo
    from aimc.evaluation import format_time

    console = Console()
    s = DemoSettings.quick() if quick else DemoSettings()
    if seeds is not None:
        s = replace(s, seeds=seeds)
    from aimc.experiment.runner import check_out

    try:
        check_out(out)
        summ = run_demo(out, s, progress=not quiet, log=console.print, threads=threads)
    except (AimcErrorT, OSError) as e:
        _fail(e, False)
        return
    table = Table(title="accuracy (%) after programming: mean ± std [95 % CI]")
    for col in ("model", "compensation", "t", "mean", "std", "95 % CI", "n"):
        table.add_column(col, justify="right" if col not in ("model", "compensation") else "left")
    for _, r in summ.iterrows():
        ci = "—" if r["n"] < 2 else f"{100 * r['ci95_low']:.2f}–{100 * r['ci95_high']:.2f}"
        table.add_row(r["model"], r["compensation"], format_time(r["t_seconds"]) if r["t_seconds"] else "—",
                      f"{100 * r['mean']:.2f}", f"{100 * r['std']:.2f}", ci, str(int(r["n"])))
    console.print(table)


def _fail(e: BaseException, debug: bool) -> None:
    """One paragraph on stderr and exit code 2 (the traceback only with --debug)."""
    if debug:
        raise e
    import textwrap

    msg = str(e) if str(e) else type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, AimcErrorT):
        msg = f"{e.strerror or e} ({e.filename or ''}); nothing half-written was left behind."
    typer.echo(textwrap.indent(f"error: {msg}", ""), err=True)
    raise typer.Exit(2)


from aimc.errors import AimcError as AimcErrorT  # noqa: E402


@app.command()
def run(ctx: typer.Context,
        experiment: Path = typer.Argument(..., help="experiment file (YAML or TOML)"),
        out: Path = typer.Option(None, help="run directory (default: runs/<experiment name>)"),
        force: bool = typer.Option(False, help="start over if --out holds a different experiment"),
        workers: int = typer.Option(1, help="processes for independent evaluation cells (--backend local); CPUs "
                                            "of a local Ray instance (--backend ray, default all cores)"),
        backend: str = typer.Option("local", help="where evaluation cells run: local (a process pool) or ray "
                                                  "(Ray tasks; pip install 'aimc\\[ray]')"),
        address: str = typer.Option(None, help="--backend ray: address of a running Ray cluster (host:port of its "
                                               "head); default: start a local Ray instance"),
        threads: int = typer.Option(1, min=0, help=THREADS_HELP),
        nproc: int = typer.Option(1, help="training processes: N ≥ 2 trains with DDP in N local ranks launched "
                                          "through torchrun (data.batch_size stays the global batch)"),
        keep_good_rows: bool = typer.Option(False, help="a damaged results.csv keeps its intact rows (the file is "
                                                        "kept as results.csv.damaged); only the other cells are "
                                                        "recomputed"),
        quiet: bool = typer.Option(False, help="no progress bars"),
        debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Run (or resume) an experiment: training stages, digital baselines, evaluation sweeps, summary, report."""
    from aimc.experiment import distributed
    from aimc.experiment.runner import run_experiment
    from aimc.experiment.spec import load_experiment

    try:
        exp = load_experiment(experiment)
        if nproc != 1 and distributed.world_size() == 1:  # inside torchrun (WORLD_SIZE set) this is one rank
            distributed.check_world(exp.data.batch_size, nproc)
            raise typer.Exit(distributed.launch(distributed.relaunch_args(ctx), nproc))
        out = out or Path("runs") / exp.name
        with _torch_threads(threads):
            path = run_experiment(exp, out, force=force, quiet=quiet, workers=workers, backend=backend,
                                  address=address, keep_good_rows=keep_good_rows)
    except KeyboardInterrupt:
        if out is not None and distributed.is_main_process():
            typer.echo(f"\ninterrupted: every finished epoch and evaluation cell is saved in {out}. Resume where it "
                       f"stopped with the same command:\n  {_resume_command(ctx, out)}", err=True)
        raise typer.Exit(130) from None
    except (AimcErrorT, OSError, FloatingPointError) as e:
        _fail(e, debug)
        return
    if not distributed.is_main_process():  # ranks > 0 of DDP training print nothing
        return
    if not quiet:
        typer.echo((path / "summary.md").read_text())
    typer.echo(f"results in {path}")


def _resume_command(ctx: typer.Context, out: Path) -> str:
    """``aimc run`` with this call's experiment, its --out (explicit, even if it was the default) and every option
    that differs from its default, --force left out (resuming must not delete anything)."""
    import shlex

    words = ["aimc", "run", str(ctx.params["experiment"]), "--out", str(out)]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in ("experiment", "out", "force") or v == p.default or v is None:
            continue
        flag = "--" + p.name.replace("_", "-")
        words += [flag] if v is True else [str(flag), str(v)]
    return shlex.join(words)


@app.command()
def validate(experiment: Path = typer.Argument(..., help="experiment file (YAML or TOML)"),
             debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Check an experiment file without running it; lists every problem with its path, value and what is allowed."""
    from aimc.experiment.spec import load_experiment

    try:
        exp = load_experiment(experiment)
    except (AimcErrorT, OSError) as e:
        _fail(e, debug)
        return
    n_cells = sum(len(s.models) * len(s.seed_list()) * len(s.times) * len(s.compensations) for s in exp.evaluation)
    typer.echo(f"{experiment}: valid. {len(exp.training)} training stage(s), {len(exp.evaluation)} sweep(s), "
               f"{n_cells} evaluation cell(s), metric {exp.metric}.")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory written by `aimc run`"),
           debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """(Re)write summary.md and the self-contained report.html of a run directory."""
    from aimc.experiment.summary import rewrite

    try:
        paths = rewrite(run_dir)
    except (AimcErrorT, OSError) as e:
        _fail(e, debug)
        return
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
def cost(target: str = typer.Argument(..., metavar="MODEL_OR_RUN",
                                      help="a zoo model (e.g. resnet32_cifar), an experiment file or a run directory"),
         hardware: str = typer.Option("hermes_4phase", "--hardware", "--preset",
                                      help="hardware preset: hermes_4phase, hermes_1phase, ambrogio2023, isaac2016"),
         baseline: str = typer.Option("a100_int8", help="digital baseline: a100_int8, horowitz45_int8"),
         tile: str = typer.Option(None, help="tile size, e.g. 256 or 256x512 (default: the run's analog config, "
                                             "else the preset's)"),
         input_shape: str = typer.Option(None, help="one input without the batch, e.g. 3,32,32 (zoo models and "
                                                    "built-in data sets know theirs)"),
         input_bits: int = typer.Option(None, help="DAC bits (default: the analog config's, else the preset's)"),
         adc_bits: int = typer.Option(None, help="ADC bits (default: the analog config's, else the preset's)"),
         devices_per_weight: int = typer.Option(2, help="PCM devices per weight (2: differential pair)"),
         overflow: str = typer.Option("chips", help="more tiles than one chip has: chips, error or reprogram"),
         program_energy: float = typer.Option(None, help="assumed energy to program one PCM device, J (no source "
                                                         "gives it; needed by --overflow reprogram)"),
         batch: int = typer.Option(1, help="inferences per reprogramming (--overflow reprogram)"),
         fmt: str = typer.Option("table", "--format", help="table, json or csv (per layer) on stdout"),
         out: Path = typer.Option(None, help="directory to write cost.json and cost_layers.csv into"),
         debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Crossbar mapping, energy and latency per inference (tiles, devices, MVMs, conversions) vs a digital baseline."""
    import warnings

    from aimc.cost import CostWarning, estimate, get_hardware
    from aimc.cost.render import parse_shape, print_report, resolve_target, to_json, write_outputs
    from aimc.errors import ConfigError

    try:
        if fmt not in ("table", "json", "csv"):
            raise ConfigError(f"--format {fmt!r} must be table, json or csv.")
        hw = get_hardware(hardware)
        if program_energy is not None:
            hw = hw.replace(program_energy_per_device_j=program_energy)
        tgt = resolve_target(target)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CostWarning)
            rep = estimate(tgt.model, hw, baseline=baseline, batch=batch, tile=tile, config=tgt.config,
                           input_shape=parse_shape(input_shape) or tgt.input_shape, input_bits=input_bits,
                           devices_per_weight=devices_per_weight, adc_bits=adc_bits, on_overflow=overflow,
                           name=tgt.label)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        written = write_outputs(rep, out) if out is not None else []
    except (AimcErrorT, OSError) as e:
        _fail(e, debug)
        return
    if fmt == "json":
        typer.echo(to_json(rep))
    elif fmt == "csv":
        typer.echo(rep.to_frame().to_csv(index=False), nl=False)
    else:
        from rich.console import Console

        print_report(rep, Console(width=max(140, Console().width)), tgt.label)
    for p in written:
        typer.echo(f"wrote {p}", err=fmt != "table")  # stdout stays pure JSON / CSV


from aimc.cli_devices import export_targets, fit_device  # noqa: E402

app.command("fit-device")(fit_device)
app.command("export-targets")(export_targets)


@app.command()
def version() -> None:
    """Print the aimc and torch versions."""
    import torch

    import aimc

    typer.echo(f"aimc {aimc.__version__} (torch {torch.__version__})")


if __name__ == "__main__":
    app()
